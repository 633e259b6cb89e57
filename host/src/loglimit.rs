//! Rate-limited logging for what strangers can trigger (refused frames, failed proofs,
//! refused connections): a flood cannot fill the disk. Past the allowance lines are counted,
//! and one line per second says how many were suppressed.

use std::sync::Mutex;

/// Allows at most `per_sec` lines per second.
#[derive(Debug)]
pub struct LogLimiter {
    per_sec: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    second: i64,
    lines: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(per_sec: u32) -> Self {
        LogLimiter {
            per_sec,
            state: Mutex::new(State {
                second: 0,
                lines: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be written now (`now`: Unix seconds).
    pub fn allow(&self, now: i64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.second != now {
            if s.suppressed > 0 {
                tracing::warn!(
                    suppressed = s.suppressed,
                    "log lines about refused peers were suppressed (rate limit)"
                );
                crate::metrics::log_lines_suppressed(s.suppressed);
            }
            *s = State {
                second: now,
                lines: 0,
                suppressed: 0,
            };
        }
        if s.lines < self.per_sec {
            s.lines += 1;
            true
        } else {
            s.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_few_per_second() {
        let l = LogLimiter::new(3);
        let allowed = (0..100).filter(|_| l.allow(5)).count();
        assert_eq!(allowed, 3);
        assert!(l.allow(6));
    }
}
