//! Where followers connected to other hosts are. Filled from session claims (over NATS as
//! they happen, and from the store's claim table at every reconciliation), emptied by their
//! disconnect events and by expired leases (a crashed host's followers do not stay "online").

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A follower connected to another host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFollower {
    pub node: Arc<str>,
    pub conn_id: u64,
    pub epoch: u64,
    pub connected_since: i64,
    pub remote: String,
    /// Unix seconds until which its host's claim holds.
    pub lease_until: i64,
}

/// identifier → where it is connected (other hosts only).
#[derive(Debug, Default)]
pub struct Presence {
    map: RwLock<HashMap<Arc<str>, RemoteFollower>>,
}

impl Presence {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, RemoteFollower>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, RemoteFollower>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A newer claim (higher epoch) replaces an older one; an older one is ignored.
    pub fn claimed(&self, identifier: Arc<str>, at: RemoteFollower) {
        let mut map = self.write();
        match map.get(&identifier) {
            Some(old) if old.epoch > at.epoch => {}
            _ => {
                map.insert(identifier, at);
            }
        }
    }

    /// The follower is no longer connected on `node` (or anywhere, when `node` is `None`).
    pub fn gone(&self, identifier: &str, node: Option<&str>) {
        let mut map = self.write();
        if map
            .get(identifier)
            .is_some_and(|r| node.is_none_or(|n| &*r.node == n))
        {
            map.remove(identifier);
        }
    }

    /// Where `identifier` is, if on another host with a live lease.
    pub fn get(&self, identifier: &str, now: i64) -> Option<RemoteFollower> {
        self.read()
            .get(identifier)
            .filter(|r| r.lease_until >= now)
            .cloned()
    }

    /// Every remote follower with a live lease.
    pub fn all(&self, now: i64) -> Vec<(Arc<str>, RemoteFollower)> {
        self.read()
            .iter()
            .filter(|(_, r)| r.lease_until >= now)
            .map(|(id, r)| (Arc::clone(id), r.clone()))
            .collect()
    }

    /// Replace everything known about other hosts with `claims` (the store's view).
    pub fn reset(&self, claims: Vec<(Arc<str>, RemoteFollower)>) {
        let mut map = self.write();
        map.clear();
        for (id, r) in claims {
            map.insert(id, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(node: &str, epoch: u64, lease: i64) -> RemoteFollower {
        RemoteFollower {
            node: node.into(),
            conn_id: 1,
            epoch,
            connected_since: 0,
            remote: "1.2.3.4:5".into(),
            lease_until: lease,
        }
    }

    #[test]
    fn newest_claim_wins_and_leases_expire() {
        let p = Presence::default();
        p.claimed("a".into(), at("b", 2, 100));
        p.claimed("a".into(), at("c", 1, 100));
        assert_eq!(p.get("a", 50).map(|r| r.node), Some("b".into()));
        p.gone("a", Some("c"));
        assert!(
            p.get("a", 50).is_some(),
            "only its own host's disconnect removes it"
        );
        assert!(p.get("a", 101).is_none(), "lease expired");
        p.gone("a", Some("b"));
        assert!(p.get("a", 50).is_none());
    }
}
