//! [`EventLog`]: the most recent lifecycle events plus a broadcast of new ones, for an
//! [`AdminView`](super::AdminView) implementation to keep.

use super::view::LifecycleEvent;
use crate::fanout::Fanout;

/// Events kept for `GET /api/events`.
pub const RECENT_EVENTS: usize = 200;
/// Events a slow subscriber may fall behind before it is told to resync.
const CHANNEL_CAPACITY: usize = 256;

/// A bounded history of lifecycle events and a channel announcing each new one.
pub type EventLog = Fanout<LifecycleEvent>;

impl Default for EventLog {
    fn default() -> Self {
        Fanout::new(RECENT_EVENTS, CHANNEL_CAPACITY)
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
            node: None,
        }
    }

    #[test]
    fn keeps_the_most_recent_and_announces_each() {
        let log = EventLog::default();
        let mut rx = log.subscribe();
        for i in 0..(RECENT_EVENTS as i64 + 5) {
            log.publish(ev(i));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), RECENT_EVENTS);
        assert_eq!(recent.first().map(|e| e.at), Some(5));
        assert_eq!(recent.last().map(|e| e.at), Some(RECENT_EVENTS as i64 + 4));
        assert_eq!(rx.try_recv().map(|e| e.at).ok(), Some(0));
    }
}
