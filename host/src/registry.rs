//! Who is connected right now: one authenticated connection per identifier, by its outbound
//! side ([`Peer`]). Sending to a follower by name goes through here; changing who is in it is
//! [`crate::lifecycle`]'s job.

use crate::outbound::{Peer, SendError};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The authenticated connections, by identifier.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: RwLock<HashMap<Arc<str>, Arc<Peer>>>,
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

    /// Queue an encoded frame for one follower.
    pub fn send_to(&self, identifier: &str, frame: Bytes) -> Result<(), SendError> {
        let peer = self.get(identifier).ok_or(SendError::Offline)?;
        peer.send(frame)
    }

    /// Queue one encoded frame for every authenticated follower except `except` (the bytes are
    /// shared, not copied). Never blocks; a full queue closes that follower as a slow consumer.
    /// Returns how many got it.
    pub fn broadcast(&self, frame: &Bytes, except: Option<&str>) -> usize {
        let map = self.read();
        map.iter()
            .filter(|(id, _)| Some(&***id) != except)
            .filter(|(_, p)| p.send(frame.clone()).is_ok())
            .count()
    }

    /// Identifiers of the authenticated followers, sorted.
    pub fn connected(&self) -> Vec<Arc<str>> {
        let mut ids: Vec<Arc<str>> = self.read().keys().cloned().collect();
        ids.sort();
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
