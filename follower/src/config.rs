//! Follower configuration.

use crate::error::FollowerError;
use std::path::PathBuf;
use std::time::Duration;

/// Default interval between heartbeats once authenticated.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Default first reconnect delay.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Default longest reconnect delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default most events held for an application that has not read them yet.
pub const DEFAULT_EVENT_BACKLOG: usize = 4096;
/// Default most bytes of text (rule messages, host errors…) in that backlog.
pub const DEFAULT_EVENT_BACKLOG_BYTES: usize = 64 * 1024 * 1024;
/// The host's default WebSocket ping interval (`[limits] ping_interval_secs`): a live host
/// sends at least a ping this often, whatever the phase.
pub const HOST_PING_INTERVAL: Duration = Duration::from_secs(30);

/// How to reach the host and where to keep this follower's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The host(s): `ws://host:port/path` or `wss://…`. With several (hosts of one cluster,
    /// sharing their trust store), the follower fails over between them: see
    /// the crate README ("Several hosts") for the order.
    pub urls: Vec<String>,
    /// This follower's identifier (must be on the host's allowlist).
    pub identifier: String,
    /// Directory holding `<identifier>.json` (created with mode 0700 if missing).
    pub state_dir: PathBuf,
    /// Interval between `heartbeat` messages once authenticated.
    pub heartbeat_interval: Duration,
    /// How long the host may stay silent (no frame of any kind: message, `heartbeat_ack`,
    /// ping, pong) before the connection is taken as lost and the next URL is tried, for a host
    /// that died or dropped off the network without closing the socket. Halfway through a
    /// silence the follower sends a WebSocket ping, which a live host answers. `None` (the
    /// default): twice the longer of [`heartbeat_interval`](Self::heartbeat_interval) and the
    /// host's ping interval ([`HOST_PING_INTERVAL`]); see
    /// [`effective_liveness_timeout`](Self::effective_liveness_timeout).
    pub liveness_timeout: Option<Duration>,
    /// First reconnect delay; doubles per failed attempt.
    pub backoff_initial: Duration,
    /// Upper bound of the reconnect delay.
    pub backoff_max: Duration,
    /// Most events held, beyond the channel's [`EVENT_CHANNEL`](crate::EVENT_CHANNEL), for an
    /// application that has not read them yet. The connection never waits for the
    /// application: when the backlog is full the oldest rule messages are dropped and reported
    /// as [`Event::Dropped`](crate::Event::Dropped).
    pub event_backlog: usize,
    /// Most bytes of text (rule messages, host errors, reasons) in that backlog.
    pub event_backlog_bytes: usize,
    /// Reconnect after a disconnect (otherwise the connection task ends).
    pub reconnect: bool,
    /// Extra CA certificates (PEM) trusted for `wss://` besides the public web roots.
    pub ca_file: Option<PathBuf>,
}

impl Config {
    /// A configuration for one host URL, with the default intervals and reconnection on.
    pub fn new(
        url: impl Into<String>,
        identifier: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Config::with_urls([url], identifier, state_dir)
    }

    /// A configuration for several host URLs (tried in this order first), with the default
    /// intervals and reconnection on.
    pub fn with_urls<U: Into<String>>(
        urls: impl IntoIterator<Item = U>,
        identifier: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Config {
            urls: urls.into_iter().map(Into::into).collect(),
            identifier: identifier.into(),
            state_dir: state_dir.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            liveness_timeout: None,
            event_backlog: DEFAULT_EVENT_BACKLOG,
            event_backlog_bytes: DEFAULT_EVENT_BACKLOG_BYTES,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            reconnect: true,
            ca_file: None,
        }
    }

    /// The liveness timeout in force: [`liveness_timeout`](Self::liveness_timeout), or else
    /// `2 × max(heartbeat_interval, HOST_PING_INTERVAL)` (120 s with the defaults).
    pub fn effective_liveness_timeout(&self) -> Duration {
        self.liveness_timeout.unwrap_or_else(|| {
            self.heartbeat_interval
                .max(HOST_PING_INTERVAL)
                .saturating_mul(2)
        })
    }

    /// Check the values that would make the connection loop misbehave.
    pub fn validate(&self) -> Result<(), FollowerError> {
        yonexus_protocol::validate::identifier(&self.identifier)
            .map_err(|e| FollowerError::InvalidConfig(format!("identifier: {e}")))?;
        // The identifier names the state file: keep it inside the state directory.
        if self.identifier.starts_with('.') || self.identifier.contains(['/', '\\']) {
            return Err(FollowerError::InvalidConfig(format!(
                "identifier {:?} cannot name a state file (no '/', '\\' or leading '.')",
                self.identifier
            )));
        }
        if self.urls.is_empty() {
            return Err(FollowerError::InvalidConfig(
                "no host URL given (at least one ws:// or wss:// URL)".into(),
            ));
        }
        for url in &self.urls {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(FollowerError::InvalidConfig(format!(
                    "url {url:?} must start with ws:// or wss://"
                )));
            }
        }
        if self.heartbeat_interval.is_zero() {
            return Err(FollowerError::InvalidConfig(
                "heartbeat interval must be greater than zero".into(),
            ));
        }
        if self.liveness_timeout.is_some_and(|t| t.is_zero()) {
            return Err(FollowerError::InvalidConfig(
                "liveness timeout must be greater than zero".into(),
            ));
        }
        if self.event_backlog == 0 || self.event_backlog_bytes == 0 {
            return Err(FollowerError::InvalidConfig(
                "event backlog (events and bytes) must be greater than zero".into(),
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(FollowerError::InvalidConfig(
                "backoff must satisfy 0 < initial <= max".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = Config::new("ws://127.0.0.1:1/", "alpha", "/tmp/x");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(60));
        assert_eq!(c.backoff_initial, Duration::from_millis(500));
        assert_eq!(c.backoff_max, Duration::from_secs(30));
        assert!(c.reconnect);
        assert!(c.validate().is_ok());
        assert_eq!(c.liveness_timeout, None);
        assert_eq!(c.effective_liveness_timeout(), Duration::from_secs(120));
        assert!(Config::new("http://x/", "alpha", "/tmp")
            .validate()
            .is_err());
        assert!(Config::new("ws://x/", "a::b", "/tmp").validate().is_err());
        assert!(Config::new("ws://x/", "../x", "/tmp").validate().is_err());
        assert!(Config::new("ws://x/", "a/b", "/tmp").validate().is_err());
        assert!(Config::new("ws://x/", "a.b-c_d", "/tmp").validate().is_ok());
        let mut c = Config::new("ws://x/", "alpha", "/tmp");
        c.heartbeat_interval = Duration::ZERO;
        assert!(c.validate().is_err());
        // Derived from the heartbeat interval when that is longer than the host's pings.
        let mut c = Config::new("ws://x/", "alpha", "/tmp");
        c.heartbeat_interval = Duration::from_secs(90);
        assert_eq!(c.effective_liveness_timeout(), Duration::from_secs(180));
        c.heartbeat_interval = Duration::from_secs(5);
        assert_eq!(c.effective_liveness_timeout(), Duration::from_secs(60));
        c.liveness_timeout = Some(Duration::from_millis(700));
        assert_eq!(c.effective_liveness_timeout(), Duration::from_millis(700));
        assert!(c.validate().is_ok());
        c.liveness_timeout = Some(Duration::ZERO);
        assert!(c.validate().is_err());
        let mut c = Config::new("ws://x/", "alpha", "/tmp");
        assert_eq!(c.event_backlog, 4096);
        c.event_backlog = 0;
        assert!(c.validate().is_err());

        let c = Config::with_urls(["ws://a/", "wss://b/"], "alpha", "/tmp");
        assert_eq!(c.urls, vec!["ws://a/".to_string(), "wss://b/".to_string()]);
        assert!(c.validate().is_ok());
        assert!(Config::with_urls(["ws://a/", "http://b/"], "alpha", "/tmp")
            .validate()
            .is_err());
        let none: [&str; 0] = [];
        let err = Config::with_urls(none, "alpha", "/tmp")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("no host URL"), "{err}");
    }
}
