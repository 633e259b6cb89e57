//! Exponential reconnect backoff with jitter.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff: the n-th delay (from 0) is drawn uniformly from `[b/2, b]` where
/// `b = min(initial * 2^n, max)` ("equal jitter"), so delays never exceed `max` and never drop
/// below half the nominal value.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The nominal (un-jittered) delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before the next attempt; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let spread = nominal.saturating_sub(half);
        let nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }

    /// Start again from the initial delay (after a successful authentication).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays have been handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let initial = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        let mut b = Backoff::new(initial, max);
        let mut expected = initial;
        for _ in 0..80 {
            assert_eq!(b.nominal(), expected);
            let d = b.next_delay();
            assert!(d >= expected / 2 && d <= expected, "{d:?} vs {expected:?}");
            assert!(d <= max);
            expected = (expected * 2).min(max);
        }
        assert_eq!(b.nominal(), max);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.nominal(), initial);
        let d = b.next_delay();
        assert!(d >= initial / 2 && d <= initial);
    }

    #[test]
    fn jitter_actually_varies() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1);
    }

    #[test]
    fn tiny_and_huge_values_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_nanos(1), Duration::MAX);
        for _ in 0..200 {
            let _ = b.next_delay();
        }
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.nominal(), Duration::from_secs(5));
        assert!(b.next_delay() <= Duration::from_secs(5));
    }
}
