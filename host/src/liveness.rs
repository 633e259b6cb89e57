//! Liveness of authenticated followers: online → unstable → offline by heartbeat silence.
//!
//! [`evaluate`] is the pure rule; the sweep task in the server applies it on an interval with the
//! injectable clock, so tests drive it without waiting minutes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A follower's liveness as recorded in its trust record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Online,
    Unstable,
    #[default]
    Offline,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Online => "online",
            Liveness::Unstable => "unstable",
            Liveness::Offline => "offline",
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Publish the followers-by-liveness gauge from the trust store.
pub fn publish_gauge(hub: &crate::hub::Hub) {
    let (mut online, mut unstable, mut offline) = (0, 0, 0);
    for record in hub.store.snapshot() {
        match record.status {
            Liveness::Online => online += 1,
            Liveness::Unstable => unstable += 1,
            Liveness::Offline => offline += 1,
        }
    }
    crate::metrics::set_followers_by_liveness(online, unstable, offline);
}

/// Apply [`evaluate`] to every authenticated session once, then flush liveness lazily.
pub async fn sweep(hub: &crate::hub::Hub) {
    use crate::registry::FollowerEvent;
    let now = hub.now();
    let thresholds = hub.settings().thresholds();
    for (identifier, handle) in hub.registry.sessions() {
        // Decide and record in one step, so a heartbeat landing meanwhile is not overwritten.
        let Some(transition) = hub.store.update_existing(&identifier, |r| {
            let last = r
                .last_heartbeat_at
                .or(r.last_authenticated_at)
                .unwrap_or(now);
            let t = evaluate(r.status, last, now, thresholds);
            match t {
                Transition::Stay => {}
                Transition::Unstable { .. } => r.status = Liveness::Unstable,
                Transition::Offline { .. } => r.status = Liveness::Offline,
            }
            t
        }) else {
            continue;
        };
        match transition {
            Transition::Stay => {}
            Transition::Unstable { reason } => {
                tracing::warn!(identifier = %identifier, reason = %reason, "follower unstable");
                let _ = handle.send(crate::registry::Outbound::Text(
                    crate::reply::status_update(
                        &identifier,
                        Liveness::Unstable.as_str(),
                        &reason,
                        now,
                    ),
                ));
                hub.registry.emit(FollowerEvent::LivenessChanged {
                    identifier,
                    status: Liveness::Unstable,
                });
            }
            Transition::Offline { reason } => {
                tracing::warn!(identifier = %identifier, reason = %reason, "follower offline: disconnecting");
                let _ = handle.send(crate::registry::Outbound::Text(
                    crate::reply::disconnect_notice(&identifier, &reason, now),
                ));
                handle.close(1001, &reason);
                if hub.registry.remove(&identifier, handle.conn_id) {
                    hub.registry.emit(FollowerEvent::LivenessChanged {
                        identifier,
                        status: Liveness::Offline,
                    });
                }
            }
        }
    }
    publish_gauge(hub);
    if let Err(e) = hub.store.flush_if_dirty().await {
        tracing::warn!(error = %e, "cannot flush liveness to the state file");
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
