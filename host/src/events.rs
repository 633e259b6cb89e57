//! Follower lifecycle events (authenticated, disconnected, liveness changed) and the bus that
//! carries them to everyone who watches: the dashboard, the cluster bridge, and — through the
//! router — plugins. A leaf module: events are *emitted* only by [`crate::lifecycle`].

use crate::trust::Liveness;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

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
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Recorded>,
    recent: Mutex<VecDeque<Recorded>>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(1024);
        EventBus {
            tx,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
        }
    }
}

impl EventBus {
    /// Record and publish (no-op for subscribers when nobody listens).
    pub(crate) fn publish(&self, recorded: Recorded) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(recorded.clone());
        }
        let _ = self.tx.send(recorded);
    }

    /// Subscribe to every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Recorded> {
        self.tx.subscribe()
    }

    /// The most recent events, oldest first.
    pub fn recent(&self) -> Vec<Recorded> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
