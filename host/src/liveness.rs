//! Liveness of authenticated followers: online → unstable → offline by heartbeat silence.
//!
//! [`evaluate`] is the pure rule (a leaf: no hub, no store). The sweep that applies it on an
//! interval lives with the other background tasks in [`crate::tasks`].

pub use crate::trust::Liveness;

/// Silence thresholds, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub unstable_after: i64,
    pub offline_after: i64,
}

/// What the sweep must do for one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changes.
    Stay,
    /// Became unstable: send `status_update{status:"unstable", reason}`.
    Unstable { reason: String },
    /// Went offline: send `disconnect_notice{reason}` and close 1001.
    Offline { reason: String },
}

/// Human-readable threshold for reasons: `heartbeat_timeout_7m` for 420 s, `_90s` otherwise.
fn reason_for(secs: i64) -> String {
    if secs.is_positive() && secs % 60 == 0 {
        format!("heartbeat_timeout_{}m", secs / 60)
    } else {
        format!("heartbeat_timeout_{secs}s")
    }
}

/// Decide the transition for a follower last heard from at `last_heartbeat`.
pub fn evaluate(current: Liveness, last_heartbeat: i64, now: i64, t: Thresholds) -> Transition {
    let silence = now.saturating_sub(last_heartbeat);
    if silence >= t.offline_after {
        Transition::Offline {
            reason: reason_for(t.offline_after),
        }
    } else if silence >= t.unstable_after && current == Liveness::Online {
        Transition::Unstable {
            reason: reason_for(t.unstable_after),
        }
    } else {
        Transition::Stay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        unstable_after: 420,
        offline_after: 660,
    };

    #[test]
    fn transitions_by_silence() {
        assert_eq!(
            evaluate(Liveness::Online, 1000, 1000 + 419, T),
            Transition::Stay
        );
        assert_eq!(
            evaluate(Liveness::Online, 1000, 1000 + 420, T),
            Transition::Unstable {
                reason: "heartbeat_timeout_7m".into()
            }
        );
        // Already unstable: no second status_update.
        assert_eq!(
            evaluate(Liveness::Unstable, 1000, 1000 + 500, T),
            Transition::Stay
        );
        assert_eq!(
            evaluate(Liveness::Unstable, 1000, 1000 + 660, T),
            Transition::Offline {
                reason: "heartbeat_timeout_11m".into()
            }
        );
        assert_eq!(
            evaluate(
                Liveness::Online,
                0,
                5,
                Thresholds {
                    unstable_after: 2,
                    offline_after: 90
                }
            ),
            Transition::Unstable {
                reason: "heartbeat_timeout_2s".into()
            }
        );
    }
}
