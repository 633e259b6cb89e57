//! Who is connected right now: one authenticated session per identifier, each with a bounded
//! outbound queue. Everything that sends to a follower (replies, plugins, broadcasts, liveness)
//! goes through here, and so do follower lifecycle events.

use crate::liveness::Liveness;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// One item in a connection's outbound queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A text frame.
    Text(String),
    /// Send a close frame with this code and reason, then end the connection.
    Close { code: u16, reason: String },
    /// A WebSocket ping (transport keepalive).
    Ping,
}

/// Why a message could not be queued for a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("follower is not connected")]
    Offline,
    #[error("follower's outbound queue is full (slow consumer); its connection is being closed")]
    QueueFull,
}

/// The sending side of one connection.
#[derive(Debug)]
pub struct SessionHandle {
    pub conn_id: u64,
    pub remote: SocketAddr,
    /// Unix seconds when the socket was accepted.
    pub connected_since: i64,
    tx: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
    /// Cancelled once a close has been queued: the reader stops taking frames from the peer,
    /// while the writer still sends what is queued up to the close frame.
    closing: CancellationToken,
    /// Bytes of text frames queued and not yet handed to the socket.
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    /// Why the connection was cancelled, for the close frame the writer tries to send.
    close_reason: AbortReason,
}

/// Why a connection was aborted, shared with its writer (which must not hold the handle: the
/// writer ends when every handle is gone).
pub type AbortReason = Arc<Mutex<Option<(u16, String)>>>;

impl SessionHandle {
    pub fn new(
        conn_id: u64,
        remote: SocketAddr,
        connected_since: i64,
        tx: mpsc::Sender<Outbound>,
        cancel: CancellationToken,
    ) -> Self {
        SessionHandle {
            conn_id,
            remote,
            connected_since,
            tx,
            cancel,
            closing: CancellationToken::new(),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_queued_bytes: usize::MAX,
            close_reason: Arc::new(Mutex::new(None)),
        }
    }

    /// Cap the bytes queued for this connection (beyond it: slow consumer).
    pub fn with_byte_limit(mut self, max_queued_bytes: usize) -> Self {
        self.max_queued_bytes = max_queued_bytes;
        self
    }

    /// The counter the writer decrements as it hands frames to the socket.
    pub fn queued_bytes(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.queued_bytes)
    }

    /// Close the connection now (no waiting for the queue), telling the peer why if possible.
    pub fn abort(&self, code: u16, reason: &str) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
        }
        drop(slot);
        self.cancel.cancel();
    }

    /// The slot holding the reason given to [`SessionHandle::abort`], for the writer.
    pub fn abort_reason(&self) -> AbortReason {
        Arc::clone(&self.close_reason)
    }

    fn slow_consumer(&self) -> SendError {
        tracing::warn!(conn = self.conn_id, remote = %self.remote, "slow consumer: outbound queue full, closing connection");
        crate::metrics::slow_consumer_closed();
        self.abort(1008, "slow consumer");
        SendError::QueueFull
    }

    /// Queue a frame without waiting. A full queue (frames or bytes) means the peer is not
    /// reading: the connection is closed (1008 "slow consumer") rather than letting memory grow
    /// or the sender block.
    pub fn send(&self, item: Outbound) -> Result<(), SendError> {
        if self.cancel.is_cancelled() {
            return Err(SendError::Offline);
        }
        let len = match &item {
            Outbound::Text(t) => t.len(),
            _ => 0,
        };
        if len > 0 {
            let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
            if before + len > self.max_queued_bytes {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                return Err(self.slow_consumer());
            }
        }
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => Err(self.slow_consumer()),
                    mpsc::error::TrySendError::Closed(_) => Err(SendError::Offline),
                }
            }
        }
    }

    /// Queue a close frame and stop reading from the peer; the connection ends after the
    /// writer has sent everything queued before the close.
    pub fn close(&self, code: u16, reason: &str) {
        if self
            .tx
            .try_send(Outbound::Close {
                code,
                reason: reason.into(),
            })
            .is_err()
        {
            self.abort(code, reason);
        }
        self.closing.cancel();
    }

    /// Resolves once [`SessionHandle::close`] was called.
    pub async fn closed(&self) {
        self.closing.cancelled().await
    }

    /// True once the connection has been told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// A follower lifecycle event, as plugins and the admin see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerEvent {
    Authenticated {
        identifier: String,
    },
    Disconnected {
        identifier: String,
    },
    LivenessChanged {
        identifier: String,
        status: Liveness,
    },
}

/// The authenticated sessions, by identifier.
#[derive(Debug)]
pub struct Registry {
    sessions: RwLock<HashMap<String, Arc<SessionHandle>>>,
    events: broadcast::Sender<FollowerEvent>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Registry {
            sessions: RwLock::new(HashMap::new()),
            events,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<SessionHandle>>> {
        // A poisoned lock only means another thread panicked while holding it; the map itself
        // is always left consistent (single insert/remove operations), so keep serving.
        self.sessions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<SessionHandle>>> {
        self.sessions.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `handle` the active session of `identifier`; returns the session it replaced.
    pub fn promote(
        &self,
        identifier: &str,
        handle: Arc<SessionHandle>,
    ) -> Option<Arc<SessionHandle>> {
        let old = self.write().insert(identifier.to_owned(), handle);
        self.emit(FollowerEvent::Authenticated {
            identifier: identifier.to_owned(),
        });
        old
    }

    /// Remove `identifier`'s session if it is still connection `conn_id`. Returns whether it was.
    pub fn remove(&self, identifier: &str, conn_id: u64) -> bool {
        let removed = {
            let mut map = self.write();
            match map.get(identifier) {
                Some(h) if h.conn_id == conn_id => map.remove(identifier).is_some(),
                _ => false,
            }
        };
        if removed {
            self.emit(FollowerEvent::Disconnected {
                identifier: identifier.to_owned(),
            });
        }
        removed
    }

    pub fn get(&self, identifier: &str) -> Option<Arc<SessionHandle>> {
        self.read().get(identifier).cloned()
    }

    pub fn is_connected(&self, identifier: &str) -> bool {
        self.read().contains_key(identifier)
    }

    /// Queue a text frame for one follower.
    pub fn send_to(&self, identifier: &str, text: String) -> Result<(), SendError> {
        let handle = self.get(identifier).ok_or(SendError::Offline)?;
        handle.send(Outbound::Text(text))
    }

    /// Queue a text frame for every authenticated follower except `except`. Never blocks; a
    /// follower whose queue is full is closed as a slow consumer. Returns how many got it.
    pub fn broadcast(&self, text: &str, except: Option<&str>) -> usize {
        let targets: Vec<(String, Arc<SessionHandle>)> = self
            .read()
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .map(|(id, h)| (id.clone(), Arc::clone(h)))
            .collect();
        targets
            .iter()
            .filter(|(_, h)| h.send(Outbound::Text(text.to_owned())).is_ok())
            .count()
    }

    /// Identifiers of the authenticated followers, sorted.
    pub fn connected(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Snapshot of every session (identifier, handle).
    pub fn sessions(&self) -> Vec<(String, Arc<SessionHandle>)> {
        self.read()
            .iter()
            .map(|(id, h)| (id.clone(), Arc::clone(h)))
            .collect()
    }

    /// Subscribe to follower lifecycle events.
    pub fn subscribe(&self) -> broadcast::Receiver<FollowerEvent> {
        self.events.subscribe()
    }

    /// Publish a lifecycle event (no-op when nobody listens).
    pub fn emit(&self, event: FollowerEvent) {
        let _ = self.events.send(event);
    }
}
