//! The outbound side of one connection: a bounded queue of encoded frames that anything may
//! fill (session replies, plugins, broadcasts, liveness notices) and only the connection's own
//! task drains. It uses only [`crate::metrics`] and the frame codec.
//!
//! Frames are pre-encoded WebSocket frames (`Bytes`), so a broadcast encodes once and every
//! recipient's queue holds a reference to the same bytes. Senders never wait: a full queue means
//! the peer is not reading, and the connection is closed as a slow consumer instead of letting
//! memory grow or the sender block. A send wakes the connection task only when the queue was
//! empty, so any number of frames queued meanwhile go out in one wake and one flush.

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Context;

/// Why a frame could not be queued for a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("follower is not connected")]
    Offline,
    #[error("follower's outbound queue is full (slow consumer); its connection is being closed")]
    QueueFull,
}

/// Bounds of one outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

impl QueueLimits {
    pub const UNLIMITED: QueueLimits = QueueLimits {
        frames: usize::MAX,
        bytes: usize::MAX,
    };

    /// Before a connection authenticates: enough for every reply of the handshake (a few
    /// short control frames), far too little for a stranger who does not read to make the host
    /// hold much for it (SECURITY.md).
    pub const UNAUTHENTICATED: QueueLimits = QueueLimits {
        frames: 32,
        bytes: 64 * 1024,
    };

    /// The smaller of two limits.
    pub fn min(self, other: QueueLimits) -> QueueLimits {
        QueueLimits {
            frames: self.frames.min(other.frames),
            bytes: self.bytes.min(other.bytes),
        }
    }
}

/// How the connection should end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
    /// Drop what is still queued (abort) instead of sending it first.
    pub abort: bool,
}

#[derive(Debug)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    close: Option<Close>,
    /// The connection has taken the close: nothing more is accepted.
    closed: bool,
}

/// What the connection task takes from its queue in one go.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: VecDeque<Bytes>,
    /// Set once: send `frames`, then the close frame, then end.
    pub close: Option<Close>,
    /// A close was asked for: taken now or before, or waiting for the last batch to go out.
    pub closing: bool,
}

/// The outbound side of one connection.
#[derive(Debug)]
pub struct Peer {
    pub conn_id: u64,
    pub remote: SocketAddr,
    /// Unix seconds when the socket was accepted.
    pub connected_since: i64,
    limits: QueueLimits,
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    /// Set once the connection authenticated (by [`crate::lifecycle`]); until then the queue
    /// has the [`QueueLimits::UNAUTHENTICATED`] bounds.
    identity: OnceLock<Arc<str>>,
    /// The epoch of this connection's session claim (a newer claim elsewhere replaces it).
    epoch: std::sync::atomic::AtomicU64,
}

impl Peer {
    pub fn new(
        conn_id: u64,
        remote: SocketAddr,
        connected_since: i64,
        limits: QueueLimits,
    ) -> Self {
        Peer {
            conn_id,
            remote,
            connected_since,
            limits,
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                close: None,
                closed: false,
            }),
            waker: AtomicWaker::new(),
            identity: OnceLock::new(),
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The epoch of this connection's session claim (0 before it authenticated).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Release);
    }

    /// The identifier this connection authenticated as, if it did.
    pub fn identity(&self) -> Option<&Arc<str>> {
        self.identity.get()
    }

    pub(crate) fn set_identity(&self, identifier: &Arc<str>) {
        let _ = self.identity.set(Arc::clone(identifier));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every critical section is a few field updates that cannot leave the queue half-done.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a frame without waiting. A full queue (frames or bytes) closes the connection
    /// (1008 "slow consumer").
    pub fn send(&self, frame: Bytes) -> Result<(), SendError> {
        let mut q = self.lock();
        if q.close.is_some() || q.closed {
            return Err(SendError::Offline);
        }
        // A connection that has not authenticated gets the small stranger limits.
        let limits = match self.identity.get() {
            Some(_) => self.limits,
            None => self.limits.min(QueueLimits::UNAUTHENTICATED),
        };
        if q.frames.len() >= limits.frames || q.bytes.saturating_add(frame.len()) > limits.bytes {
            drop(q);
            if let Some(identifier) = self.identity.get() {
                tracing::warn!(conn = self.conn_id, remote = %self.remote, identifier = %identifier, "slow consumer: outbound queue full, closing connection");
            } else {
                // A stranger can cause this at will: not worth an operator's attention.
                tracing::debug!(conn = self.conn_id, remote = %self.remote, "slow consumer before authentication: closing connection");
            }
            crate::metrics::slow_consumer_closed();
            self.abort(1008, "slow consumer");
            return Err(SendError::QueueFull);
        }
        let was_empty = q.frames.is_empty();
        q.bytes += frame.len();
        q.frames.push_back(frame);
        drop(q);
        if was_empty {
            self.waker.wake();
        }
        Ok(())
    }

    fn set_close(&self, close: Close) {
        let mut q = self.lock();
        if q.closed {
            return;
        }
        match &q.close {
            // An abort overrides a graceful close; the first reason of each kind wins.
            Some(c) if c.abort || !close.abort => return,
            _ => {}
        }
        if close.abort {
            q.frames.clear();
            q.bytes = 0;
        }
        q.close = Some(close);
        drop(q);
        self.waker.wake();
    }

    /// Send what is queued, then a close frame, then end; nothing more is read from the peer.
    pub fn close(&self, code: u16, reason: &str) {
        self.set_close(Close {
            code,
            reason: reason.to_owned(),
            abort: false,
        });
    }

    /// Drop what is queued and close now (still telling the peer why, if it can be written).
    pub fn abort(&self, code: u16, reason: &str) {
        self.set_close(Close {
            code,
            reason: reason.to_owned(),
            abort: true,
        });
    }

    /// True once a close or abort was requested.
    pub fn is_closing(&self) -> bool {
        let q = self.lock();
        q.close.is_some() || q.closed
    }

    /// For the connection task, before it handles messages whose replies it takes in the same
    /// poll: sends until its next [`Peer::take`] need not wake it. (A send meanwhile from
    /// elsewhere is not lost: `take` registers again before it takes.)
    pub fn quiet_wakes(&self) {
        drop(self.waker.take());
    }

    /// For the connection task: register for wake-ups, then take everything queued (only the
    /// close instruction when `frames` is false: the socket is still busy with the last batch)
    /// and the close instruction, once. Register-then-take means no send can be missed.
    pub fn take(&self, cx: &Context<'_>, frames: bool) -> Batch {
        self.waker.register(cx.waker());
        let mut q = self.lock();
        let abort = q.close.as_ref().is_some_and(|c| c.abort);
        let taking = frames || abort;
        let frames = if taking {
            q.bytes = 0;
            std::mem::take(&mut q.frames)
        } else {
            VecDeque::new()
        };
        // A graceful close is taken together with the frames queued before it.
        let close = if q.closed || !taking {
            None
        } else {
            q.close.take()
        };
        if close.is_some() {
            q.closed = true;
        }
        let closing = q.closed || q.close.is_some();
        Batch {
            frames,
            close,
            closing,
        }
    }

    /// The texts of the frames queued right now, removing them (tests and tools).
    #[doc(hidden)]
    pub fn drain_texts(&self) -> Vec<String> {
        let mut q = self.lock();
        q.bytes = 0;
        std::mem::take(&mut q.frames)
            .iter()
            .filter_map(|f| crate::ws::codec::server_text(f).map(str::to_owned))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::codec;

    fn peer(limits: QueueLimits) -> Peer {
        Peer::new(1, "127.0.0.1:1".parse().unwrap(), 0, limits)
    }

    #[test]
    fn queues_closes_and_refuses_slow_consumers() {
        let p = peer(QueueLimits {
            frames: 2,
            bytes: 1000,
        });
        p.send(codec::text("a")).unwrap();
        p.send(codec::text("b")).unwrap();
        assert_eq!(p.send(codec::text("c")), Err(SendError::QueueFull));
        assert!(p.is_closing());
        assert_eq!(p.send(codec::text("d")), Err(SendError::Offline));
        let waker = futures_util::task::noop_waker();
        let batch = p.take(&Context::from_waker(&waker), true);
        assert!(batch.frames.is_empty(), "an abort drops the queue");
        assert_eq!(batch.close.map(|c| (c.code, c.abort)), Some((1008, true)));

        let p = peer(QueueLimits {
            frames: 10,
            bytes: 10,
        });
        assert_eq!(
            p.send(codec::text(&"x".repeat(20))),
            Err(SendError::QueueFull)
        );
        let p = peer(QueueLimits::UNLIMITED);
        p.send(codec::text("first")).unwrap();
        p.close(1000, "bye");
        p.close(1001, "later close ignored");
        let batch = p.take(&Context::from_waker(&waker), true);
        assert_eq!(
            batch.frames.len(),
            1,
            "a graceful close keeps what was queued"
        );
        assert_eq!(batch.close.map(|c| c.code), Some(1000));
        assert!(
            p.take(&Context::from_waker(&waker), true).close.is_none(),
            "taken once"
        );
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl futures_util::task::ArcWake for Count {
        fn wake_by_ref(c: &Arc<Self>) {
            c.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn quiet_wakes_spare_the_wake_until_the_next_take_and_lose_no_frame() {
        let p = peer(QueueLimits::UNLIMITED);
        let count = Arc::new(Count(Default::default()));
        let waker = futures_util::task::waker(Arc::clone(&count));
        let cx = Context::from_waker(&waker);
        let wakes = || count.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(p.take(&cx, true).frames.is_empty());
        p.send(codec::text("a")).unwrap();
        assert_eq!(wakes(), 1, "a send to an empty queue wakes the task");
        assert_eq!(p.take(&cx, true).frames.len(), 1);

        // The task handles its own messages: their replies need no wake.
        p.quiet_wakes();
        p.send(codec::text("b")).unwrap();
        assert_eq!(wakes(), 1, "no wake between quiet_wakes and take");
        assert_eq!(p.take(&cx, true).frames.len(), 1, "the reply is taken");

        // `take` registered again: the next send from elsewhere wakes as before.
        p.send(codec::text("c")).unwrap();
        assert_eq!(wakes(), 2);
        // A close is never missed either.
        assert_eq!(p.take(&cx, true).frames.len(), 1);
        p.quiet_wakes();
        p.close(1000, "bye");
        assert_eq!(wakes(), 2);
        assert_eq!(p.take(&cx, true).close.map(|c| c.code), Some(1000));
    }

    #[test]
    fn a_connection_that_has_not_authenticated_gets_small_limits() {
        let big = QueueLimits {
            frames: 1000,
            bytes: 1 << 20,
        };
        let stranger = peer(big);
        for _ in 0..QueueLimits::UNAUTHENTICATED.frames {
            stranger.send(codec::text("x")).unwrap();
        }
        assert_eq!(stranger.send(codec::text("x")), Err(SendError::QueueFull));
        let follower = peer(big);
        follower.set_identity(&Arc::from("alpha"));
        for _ in 0..QueueLimits::UNAUTHENTICATED.frames * 2 {
            follower.send(codec::text("x")).unwrap();
        }
    }
}
