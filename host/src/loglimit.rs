//! Rate-limited logging for what strangers can trigger (refused frames, failed proofs,
//! refused connections): a flood cannot fill the disk. A burst gets through (`per_sec` lines in
//! a second), a sustained flood far less (`per_min` lines a minute); past the allowance lines
//! are counted (`yonexus_log_lines_suppressed_total` at once) and one line a minute says how
//! many were suppressed. A flood that never stops writes at most `per_min + 1` lines a minute:
//! with the host's 20 / 60, about 90 000 lines (under 20 MB) a day.

use std::sync::Mutex;

/// Allows at most `per_sec` lines in any second and `per_min` in any minute.
#[derive(Debug)]
pub struct LogLimiter {
    per_sec: u32,
    per_min: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    second: i64,
    in_second: u32,
    minute: i64,
    in_minute: u32,
    /// Suppressed since the last summary line.
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(per_sec: u32, per_min: u32) -> Self {
        LogLimiter {
            per_sec,
            per_min,
            state: Mutex::new(State {
                second: 0,
                in_second: 0,
                minute: 0,
                in_minute: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be written now (`now`: Unix seconds).
    pub fn allow(&self, now: i64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let minute = now.div_euclid(60);
        if s.minute != minute {
            if s.suppressed > 0 {
                tracing::warn!(
                    suppressed = s.suppressed,
                    "log lines about refused peers were suppressed in the last minute (rate limit)"
                );
            }
            s.minute = minute;
            s.in_minute = 0;
            s.suppressed = 0;
        }
        if s.second != now {
            s.second = now;
            s.in_second = 0;
        }
        if s.in_second < self.per_sec && s.in_minute < self.per_min {
            s.in_second += 1;
            s.in_minute += 1;
            true
        } else {
            s.suppressed += 1;
            drop(s);
            crate::metrics::log_lines_suppressed(1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gets_through_a_sustained_flood_much_less() {
        let l = LogLimiter::new(3, 10);
        let allowed = (0..100).filter(|_| l.allow(600)).count();
        assert_eq!(allowed, 3, "per second");
        // The rest of that minute: 10 in all, however long the flood lasts.
        let minute: usize = (601..660)
            .map(|t| (0..100).filter(|_| l.allow(t)).count())
            .sum();
        assert_eq!(allowed + minute, 10, "per minute");
        // A new minute, a new allowance.
        assert!(l.allow(660));
        // A day of flood writes at most per_min lines a minute (the summaries aside).
        let l = LogLimiter::new(20, 60);
        let day: usize = (0..86_400)
            .map(|t| (0..5).filter(|_| l.allow(t)).count())
            .sum();
        assert_eq!(day, 60 * 1440);
    }
}
