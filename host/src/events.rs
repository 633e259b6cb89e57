//! Follower lifecycle events (authenticated, disconnected, liveness changed) and the bus that
//! carries them to everyone who watches: the dashboard, the cluster bridge, and — through the
//! router — plugins. A leaf module: events are *emitted* only by [`crate::lifecycle`].

use crate::fanout::Fanout;
use crate::trust::Liveness;
use std::sync::Arc;

/// A follower lifecycle event, as plugins and the admin see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerEvent {
    Authenticated {
        identifier: Arc<str>,
    },
    Disconnected {
        identifier: Arc<str>,
    },
    LivenessChanged {
        identifier: Arc<str>,
        status: Liveness,
    },
}

impl FollowerEvent {
    pub fn identifier(&self) -> &Arc<str> {
        match self {
            FollowerEvent::Authenticated { identifier }
            | FollowerEvent::Disconnected { identifier }
            | FollowerEvent::LivenessChanged { identifier, .. } => identifier,
        }
    }

    /// `authenticated`, `disconnected` or `liveness_changed`.
    pub fn kind(&self) -> &'static str {
        match self {
            FollowerEvent::Authenticated { .. } => "authenticated",
            FollowerEvent::Disconnected { .. } => "disconnected",
            FollowerEvent::LivenessChanged { .. } => "liveness_changed",
        }
    }
}

/// One event as recorded: when, on which host (`None`: this one), what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub at: i64,
    pub node: Option<Arc<str>>,
    pub event: FollowerEvent,
}

/// How many recent events are kept for the dashboard.
pub const RECENT_EVENTS: usize = 200;

/// Fan-out of lifecycle events to subscribers, plus a short history.
pub type EventBus = Fanout<Recorded>;

impl Default for EventBus {
    fn default() -> Self {
        Fanout::new(RECENT_EVENTS, 1024)
    }
}
