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

/// What a reconciliation learned: (identifier, host) pairs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Connected elsewhere until their lease ran out, and no longer listed anywhere.
    pub vanished: Vec<(Arc<str>, Arc<str>)>,
    /// Listed by the store, not known here before.
    pub appeared: Vec<(Arc<str>, Arc<str>)>,
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

    /// This host's own session of `identifier` (epoch `epoch`) supersedes what is known about
    /// it elsewhere: forget entries with a lower epoch (a higher one is a newer session).
    pub fn superseded(&self, identifier: &str, epoch: u64) {
        let mut map = self.write();
        if map.get(identifier).is_some_and(|r| r.epoch < epoch) {
            map.remove(identifier);
        }
    }

    /// The epoch of `identifier`'s claim on another host, if one is known (leased or not).
    pub fn epoch_of(&self, identifier: &str) -> Option<u64> {
        self.read().get(identifier).map(|r| r.epoch)
    }

    /// While the shared store cannot be read, keep what is known alive until `lease_until`
    /// (the hosts cannot renew their claims meanwhile; disconnect events still arrive).
    pub fn hold(&self, lease_until: i64) {
        for r in self.write().values_mut() {
            r.lease_until = r.lease_until.max(lease_until);
        }
    }

    /// Where `identifier` is, if on another host with a live lease.
    pub fn get(&self, identifier: &str, now: i64) -> Option<RemoteFollower> {
        self.read()
            .get(identifier)
            .filter(|r| r.lease_until >= now)
            .cloned()
    }

    /// The host `identifier` is connected to, if another one with a live lease (the hot path
    /// of a send: nothing else is copied).
    pub fn node_of(&self, identifier: &str, now: i64) -> Option<Arc<str>> {
        self.read()
            .get(identifier)
            .filter(|r| r.lease_until >= now)
            .map(|r| Arc::clone(&r.node))
    }

    /// Every remote follower with a live lease.
    pub fn all(&self, now: i64) -> Vec<(Arc<str>, RemoteFollower)> {
        self.read()
            .iter()
            .filter(|(_, r)| r.lease_until >= now)
            .map(|(id, r)| (Arc::clone(id), r.clone()))
            .collect()
    }

    /// Replace what is known about other hosts with `claims` (the store's live claims at
    /// `now`). An entry the store no longer lists stays while its own lease runs (its host may
    /// not have renewed yet — after a store outage every claim lapsed at once — or its
    /// disconnect event is on its way); once that lease has run out it is dropped and reported
    /// in [`Reconciled::vanished`] (its host crashed, or the disconnect was missed), so the
    /// plugins hear of it once. Followers the store lists that were not known are reported in
    /// [`Reconciled::appeared`] (their connect was missed, e.g. while NATS was down).
    pub fn reset(&self, claims: Vec<(Arc<str>, RemoteFollower)>, now: i64) -> Reconciled {
        let mut map = self.write();
        let mut fresh: HashMap<Arc<str>, RemoteFollower> = claims.into_iter().collect();
        let appeared = fresh
            .iter()
            .filter(|(id, _)| !map.contains_key(*id))
            .map(|(id, r)| (Arc::clone(id), Arc::clone(&r.node)))
            .collect();
        let mut vanished = Vec::new();
        for (id, r) in map.drain() {
            if fresh.contains_key(&id) {
                continue;
            }
            if r.lease_until >= now {
                fresh.insert(id, r);
            } else {
                vanished.push((id, r.node));
            }
        }
        *map = fresh;
        Reconciled { vanished, appeared }
    }

    /// How many followers are connected to other hosts (live leases at `now`).
    pub fn count(&self, now: i64) -> usize {
        self.read()
            .values()
            .filter(|r| r.lease_until >= now)
            .count()
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

    #[test]
    fn a_local_session_supersedes_only_older_claims() {
        let p = Presence::default();
        p.claimed("a".into(), at("b", 5, 100));
        p.superseded("a", 4);
        assert_eq!(p.epoch_of("a"), Some(5), "a newer claim elsewhere stays");
        p.superseded("a", 6);
        assert_eq!(p.epoch_of("a"), None);
    }

    #[test]
    fn reset_reports_who_vanished_and_appeared_and_hold_keeps_leases() {
        let p = Presence::default();
        p.claimed("a".into(), at("b", 1, 100));
        p.claimed("c".into(), at("b", 2, 100));
        p.claimed("old".into(), at("b", 3, 10));
        let r = p.reset(
            vec![
                ("c".into(), at("d", 4, 100)),
                ("new".into(), at("d", 5, 100)),
            ],
            50,
        );
        // "old": its lease ran out and the store lists it no more (its host crashed).
        assert_eq!(r.vanished, vec![("old".into(), "b".into())]);
        assert_eq!(r.appeared, vec![("new".into(), "d".into())]);
        assert_eq!(p.get("c", 50).map(|r| r.node), Some("d".into()));
        // "a" is not listed but its lease still runs: kept until it has run out.
        assert!(p.get("a", 50).is_some());
        assert_eq!(p.count(50), 3);
        let r = p.reset(vec![("c".into(), at("d", 4, 200))], 150);
        assert_eq!(r.vanished.len(), 2, "{r:?}");
        assert!(r.vanished.contains(&("a".into(), "b".into())));
        assert!(r.vanished.contains(&("new".into(), "d".into())));
        assert!(r.appeared.is_empty());
        p.hold(300);
        assert!(p.get("c", 250).is_some(), "held while the store is down");
    }
}
