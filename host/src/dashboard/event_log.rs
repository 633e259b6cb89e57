//! [`EventLog`]: the most recent lifecycle events plus a broadcast of new ones, for an
//! [`AdminView`](super::AdminView) implementation to keep.

use super::view::LifecycleEvent;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Events kept for `GET /api/events`.
pub const RECENT_EVENTS: usize = 200;
/// Events a slow subscriber may fall behind before it is told to resync.
const CHANNEL_CAPACITY: usize = 256;

/// A bounded history of lifecycle events and a channel announcing each new one.
#[derive(Debug)]
pub struct EventLog {
    recent: Mutex<VecDeque<LifecycleEvent>>,
    tx: broadcast::Sender<LifecycleEvent>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        EventLog {
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
            tx,
        }
    }

    /// Record `event` (dropping the oldest beyond [`RECENT_EVENTS`]) and announce it.
    pub fn push(&self, event: LifecycleEvent) {
        {
            // A poisoned lock only means a panic elsewhere mid-push; the deque stays valid.
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.tx.send(event);
    }

    /// The kept events, oldest first.
    pub fn recent(&self) -> Vec<LifecycleEvent> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::view::EventKind;

    fn ev(i: i64) -> LifecycleEvent {
        LifecycleEvent {
            at: i,
            kind: EventKind::Authenticated,
            identifier: Some(format!("f{i}")),
            detail: None,
        }
    }

    #[test]
    fn keeps_the_most_recent_and_announces_each() {
        let log = EventLog::new();
        let mut rx = log.subscribe();
        for i in 0..(RECENT_EVENTS as i64 + 5) {
            log.push(ev(i));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), RECENT_EVENTS);
        assert_eq!(recent.first().map(|e| e.at), Some(5));
        assert_eq!(recent.last().map(|e| e.at), Some(RECENT_EVENTS as i64 + 4));
        assert_eq!(rx.try_recv().map(|e| e.at).ok(), Some(0));
    }
}
