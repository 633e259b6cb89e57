//! [`Fanout`]: a bounded history of recent items plus a broadcast of each new one — what the
//! lifecycle event bus and the dashboard's event log both are.

use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// The last `keep` items published, and a channel announcing each new one to subscribers (a
/// subscriber more than the channel's capacity behind is told it lagged, never blocks anyone).
#[derive(Debug)]
pub struct Fanout<T> {
    recent: Mutex<VecDeque<T>>,
    keep: usize,
    tx: broadcast::Sender<T>,
}

impl<T: Clone> Fanout<T> {
    /// Keep the last `keep` items; subscribers may fall `capacity` items behind.
    pub fn new(keep: usize, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Fanout {
            recent: Mutex::new(VecDeque::with_capacity(keep)),
            keep,
            tx,
        }
    }

    /// Record `item` (dropping the oldest beyond `keep`) and announce it (a no-op for
    /// subscribers when nobody listens).
    pub fn publish(&self, item: T) {
        {
            // A poisoned lock only means a panic elsewhere mid-push; the deque stays valid.
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() >= self.keep {
                recent.pop_front();
            }
            if self.keep > 0 {
                recent.push_back(item.clone());
            }
        }
        let _ = self.tx.send(item);
    }

    /// Every item published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<T> {
        self.tx.subscribe()
    }

    /// The kept items, oldest first.
    pub fn recent(&self) -> Vec<T> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_and_announces_each() {
        let fanout = Fanout::new(3, 16);
        let mut rx = fanout.subscribe();
        for i in 0..5 {
            fanout.publish(i);
        }
        assert_eq!(fanout.recent(), vec![2, 3, 4]);
        assert_eq!(rx.try_recv().ok(), Some(0));
        let none: Fanout<i32> = Fanout::new(0, 1);
        none.publish(1);
        assert!(none.recent().is_empty());
    }
}
