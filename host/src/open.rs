//! Every open connection's outbound side, so that shutdown reaches them all through the queue
//! each connection task already watches. It uses only [`crate::outbound`].
//!
//! A connection task used to poll the host's shutdown token on every wake. That token is one
//! node shared by every connection, and polling it takes its mutex (and the mutex of its
//! waiter list, twice): with many cores serving messages, one lock every connection contends
//! for on every message. Here a connection takes one lock when it opens and one when it ends.

use crate::outbound::Peer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

#[derive(Default)]
struct Inner {
    peers: HashMap<u64, Weak<Peer>>,
    /// Set by [`OpenConnections::close_all`]: a connection that opens later is closed at once.
    closed: Option<(u16, String)>,
}

/// The set of open connections (authenticated or not), by connection id.
#[derive(Default)]
pub struct OpenConnections {
    inner: Mutex<Inner>,
}

/// Membership of one connection; dropping it removes the connection from the set.
pub struct Membership<'a> {
    open: &'a OpenConnections,
    conn_id: u64,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.open.lock().peers.remove(&self.conn_id);
    }
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section is one map operation: nothing is left half-done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a connection for as long as the returned membership lives. After
    /// [`close_all`](Self::close_all) it is closed right away with the same code and reason.
    pub fn join(&self, peer: &Arc<Peer>) -> Membership<'_> {
        let mut inner = self.lock();
        if let Some((code, reason)) = &inner.closed {
            peer.close(*code, reason);
        }
        inner.peers.insert(peer.conn_id, Arc::downgrade(peer));
        Membership {
            open: self,
            conn_id: peer.conn_id,
        }
    }

    /// Close every open connection (what is queued is sent first), and every one that opens
    /// from now on.
    pub fn close_all(&self, code: u16, reason: &str) {
        let peers: Vec<Arc<Peer>> = {
            let mut inner = self.lock();
            inner.closed = Some((code, reason.to_owned()));
            inner.peers.values().filter_map(Weak::upgrade).collect()
        };
        for peer in peers {
            peer.close(code, reason);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::QueueLimits;
    use std::task::Context;

    fn peer(id: u64) -> Arc<Peer> {
        Arc::new(Peer::new(
            id,
            "127.0.0.1:1".parse().unwrap(),
            0,
            QueueLimits::UNLIMITED,
        ))
    }

    #[test]
    fn close_all_closes_the_open_and_the_late_and_forgets_the_ended() {
        let open = OpenConnections::default();
        let (a, b) = (peer(1), peer(2));
        let ma = open.join(&a);
        let mb = open.join(&b);
        assert_eq!(open.len(), 2);
        drop(mb);
        assert_eq!(open.len(), 1, "an ended connection leaves the set");
        assert!(!a.is_closing());

        open.close_all(1001, "host shutting down");
        let waker = futures_util::task::noop_waker();
        let cx = Context::from_waker(&waker);
        let close = a.take(&cx, true).close.expect("closed");
        assert_eq!((close.code, close.abort), (1001, false));
        assert_eq!(close.reason, "host shutting down");
        assert!(!b.is_closing(), "b had ended before the shutdown");

        // A connection that opens during shutdown is closed as it joins.
        let late = peer(3);
        let _ml = open.join(&late);
        assert_eq!(late.take(&cx, true).close.map(|c| c.code), Some(1001));
        drop(ma);
    }
}
