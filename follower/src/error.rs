//! The follower's error type.

use std::path::PathBuf;
use yonexus_protocol::validate::RuleIdError;

/// Everything the follower library can fail with.
///
/// Messages never contain the private key or the shared secret.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// The configuration cannot work (bad identifier, zero heartbeat interval, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The state file exists but cannot be used; it is left untouched.
    #[error("state file {}: {reason}", path.display())]
    StateCorrupt { path: PathBuf, reason: String },
    /// Reading or writing the state file (or its directory) failed.
    #[error("state file {}: {source}", path.display())]
    StateIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A rule id that cannot be sent (see `yonexus_protocol::validate::rule_id`).
    #[error("invalid rule id {0:?}: {1}")]
    InvalidRuleId(String, RuleIdError),
    /// The outbound buffer (messages waiting for authentication) is full.
    #[error("outbound buffer is full ({0} messages waiting); message not queued")]
    QueueFull(usize),
    /// The connection task has ended; nothing more can be sent.
    #[error("follower is stopped")]
    Stopped,
}
