//! Who is connected right now: one authenticated connection per identifier, by its outbound
//! side ([`Peer`]). Sending to a follower by name goes through here — to this host's
//! connection, or, in a cluster, to the host it is connected to ([`Elsewhere`]); changing who
//! is in it is [`crate::lifecycle`]'s job.

use crate::outbound::{Peer, SendError};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// Followers connected to other hosts of a cluster (implemented by the cluster link).
pub trait Elsewhere: Send + Sync {
    /// Queue `frame` for `target` on the host it is connected to.
    fn send_to(&self, target: &str, frame: Bytes) -> Result<(), SendError>;
    /// Queue `frame` for every follower on other hosts except `except`; how many it reaches.
    fn broadcast(&self, frame: &Bytes, except: Option<&str>) -> usize;
    /// Identifiers connected to other hosts.
    fn connected(&self) -> Vec<Arc<str>>;
}

/// The authenticated connections, by identifier.
#[derive(Default)]
pub struct Registry {
    sessions: RwLock<HashMap<Arc<str>, Arc<Peer>>>,
    elsewhere: OnceLock<Arc<dyn Elsewhere>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("local", &self.len())
            .field("clustered", &self.elsewhere.get().is_some())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Peer>>> {
        // Only single inserts and removes happen under the write lock: never half-updated.
        self.sessions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Peer>>> {
        self.sessions.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `peer` the connection of `identifier`; returns the one it replaced. (A host changes
    /// the registry through [`crate::lifecycle`], which also updates the store and events.)
    pub fn insert(&self, identifier: Arc<str>, peer: Arc<Peer>) -> Option<Arc<Peer>> {
        self.write().insert(identifier, peer)
    }

    /// Remove `identifier` if it is still connection `conn_id`. Returns whether it was.
    pub fn remove(&self, identifier: &str, conn_id: u64) -> bool {
        let mut map = self.write();
        match map.get(identifier) {
            Some(p) if p.conn_id == conn_id => map.remove(identifier).is_some(),
            _ => false,
        }
    }

    pub fn get(&self, identifier: &str) -> Option<Arc<Peer>> {
        self.read().get(identifier).cloned()
    }

    pub fn is_connected(&self, identifier: &str) -> bool {
        self.read().contains_key(identifier)
    }

    /// Reach followers on other hosts through `elsewhere` (set once, when clustered).
    pub fn set_elsewhere(&self, elsewhere: Arc<dyn Elsewhere>) {
        let _ = self.elsewhere.set(elsewhere);
    }

    /// Queue an encoded frame for one follower, here or on another host of the cluster.
    pub fn send_to(&self, identifier: &str, frame: Bytes) -> Result<(), SendError> {
        match self.get(identifier) {
            Some(peer) => peer.send(frame),
            None => match self.elsewhere.get() {
                Some(e) => e.send_to(identifier, frame),
                None => Err(SendError::Offline),
            },
        }
    }

    /// Queue an encoded frame for a follower connected to this host only.
    pub fn send_local(&self, identifier: &str, frame: Bytes) -> Result<(), SendError> {
        let peer = self.get(identifier).ok_or(SendError::Offline)?;
        peer.send(frame)
    }

    /// Queue one encoded frame for every authenticated follower except `except` — on every
    /// host of a cluster (the bytes are shared, not copied). Never blocks; a full queue closes
    /// that follower as a slow consumer. Returns how many got it.
    pub fn broadcast(&self, frame: &Bytes, except: Option<&str>) -> usize {
        let local = self.broadcast_local(frame, except);
        local
            + self
                .elsewhere
                .get()
                .map_or(0, |e| e.broadcast(frame, except))
    }

    /// [`Registry::broadcast`] to this host's followers only.
    pub fn broadcast_local(&self, frame: &Bytes, except: Option<&str>) -> usize {
        let map = self.read();
        map.iter()
            .filter(|(id, _)| Some(&***id) != except)
            .filter(|(_, p)| p.send(frame.clone()).is_ok())
            .count()
    }

    /// Identifiers of the authenticated followers (every host of a cluster), sorted.
    pub fn connected(&self) -> Vec<Arc<str>> {
        let mut ids: Vec<Arc<str>> = self.read().keys().cloned().collect();
        if let Some(e) = self.elsewhere.get() {
            ids.extend(e.connected());
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// Every connection (identifier, peer).
    pub fn sessions(&self) -> Vec<(Arc<str>, Arc<Peer>)> {
        self.read()
            .iter()
            .map(|(id, p)| (Arc::clone(id), Arc::clone(p)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
