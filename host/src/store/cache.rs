//! This host's view of the followers it serves, for a shared (database) store: a copy of each
//! record it has read, and the liveness changes ([`Store::touch`](super::Store::touch)) not
//! yet written. Pure data, no I/O: [`postgres`](super::postgres) reads and writes the
//! database and keeps this in step.
//!
//! Liveness (status, last heartbeat, last authentication) only matters for followers connected
//! to this host, so it is changed here synchronously and written in batches by `flush`. A
//! touched record is *dirty* until a flush that covered its latest touch succeeds; a failed
//! flush leaves it dirty for the next one.

use super::{Liveness, TrustRecord};
use std::collections::HashMap;

/// The liveness fields of a record, as one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessFields {
    pub status: Liveness,
    pub last_heartbeat_at: Option<i64>,
    pub last_authenticated_at: Option<i64>,
}

impl LivenessFields {
    pub fn of(r: &TrustRecord) -> LivenessFields {
        LivenessFields {
            status: r.status,
            last_heartbeat_at: r.last_heartbeat_at,
            last_authenticated_at: r.last_authenticated_at,
        }
    }

    pub fn put(self, r: &mut TrustRecord) {
        r.status = self.status;
        r.last_heartbeat_at = self.last_heartbeat_at;
        r.last_authenticated_at = self.last_authenticated_at;
    }
}

/// One liveness write a flush should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLiveness {
    pub identifier: String,
    pub fields: LivenessFields,
    /// The epoch of this host's session claim on the follower, if it made one (a flush does
    /// not overwrite the liveness written by the host holding a newer live claim).
    pub epoch: Option<u64>,
    /// The touch generation this write covers.
    generation: u64,
}

struct Entry {
    record: TrustRecord,
    /// Generation of the newest unwritten touch; 0 when nothing is waiting.
    dirty: u64,
}

/// The cache. Callers hold it behind a mutex and never across an await.
#[derive(Default)]
pub struct LivenessCache {
    entries: HashMap<String, Entry>,
    generation: u64,
    /// identifier → (node, conn_id, epoch) of the newest claim made through this store.
    claims: HashMap<String, (String, u64, u64)>,
}

impl LivenessCache {
    /// A record read from the database: returned with this host's unwritten liveness laid
    /// over it, and remembered (its liveness stays this host's while it is dirty).
    pub fn merge(&mut self, mut record: TrustRecord) -> TrustRecord {
        match self.entries.get_mut(&record.identifier) {
            Some(entry) => {
                if entry.dirty != 0 {
                    LivenessFields::of(&entry.record).put(&mut record);
                }
                entry.record = record.clone();
            }
            None => {
                self.entries.insert(
                    record.identifier.clone(),
                    Entry {
                        record: record.clone(),
                        dirty: 0,
                    },
                );
            }
        }
        record
    }

    /// This host's unwritten liveness of `identifier`, if any.
    pub fn dirty_liveness(&self, identifier: &str) -> Option<LivenessFields> {
        self.entries
            .get(identifier)
            .filter(|e| e.dirty != 0)
            .map(|e| LivenessFields::of(&e.record))
    }

    /// A trust change to `after` was committed. When it changed liveness (`liveness_changed`)
    /// that is now this host's liveness too; otherwise the cached liveness (which may hold
    /// touches made meanwhile) is kept.
    pub fn applied(&mut self, after: &TrustRecord, liveness_changed: bool) {
        match self.entries.get_mut(&after.identifier) {
            Some(entry) => {
                let kept = LivenessFields::of(&entry.record);
                entry.record = after.clone();
                if !liveness_changed {
                    kept.put(&mut entry.record);
                } else if entry.dirty != 0 {
                    // Still written by the next flush, now with the committed values.
                    self.generation += 1;
                    entry.dirty = self.generation;
                }
            }
            None => {
                self.entries.insert(
                    after.identifier.clone(),
                    Entry {
                        record: after.clone(),
                        dirty: 0,
                    },
                );
            }
        }
    }

    /// Change a cached record's liveness; `None` when this host has not read the record.
    pub fn touch<R>(
        &mut self,
        identifier: &str,
        f: impl FnOnce(&mut TrustRecord) -> R,
    ) -> Option<R> {
        let entry = self.entries.get_mut(identifier)?;
        let before = LivenessFields::of(&entry.record);
        let out = f(&mut entry.record);
        if LivenessFields::of(&entry.record) != before {
            self.generation += 1;
            entry.dirty = self.generation;
        }
        Some(out)
    }

    /// The liveness writes waiting, oldest touch first.
    pub fn pending(&self) -> Vec<PendingLiveness> {
        let mut out: Vec<PendingLiveness> = self
            .entries
            .iter()
            .filter(|(_, e)| e.dirty != 0)
            .map(|(id, e)| PendingLiveness {
                identifier: id.clone(),
                fields: LivenessFields::of(&e.record),
                epoch: self.claims.get(id).map(|c| c.2),
                generation: e.dirty,
            })
            .collect();
        out.sort_by_key(|p| p.generation);
        out
    }

    /// `written` reached the database (or was superseded by another host's live claim):
    /// clean, unless touched again since.
    pub fn written(&mut self, written: &[PendingLiveness]) {
        for w in written {
            if let Some(entry) = self.entries.get_mut(&w.identifier) {
                if entry.dirty == w.generation {
                    entry.dirty = 0;
                }
            }
        }
    }

    /// Remember this host's newest claim on `identifier`.
    pub fn claimed(&mut self, identifier: &str, node: &str, conn_id: u64, epoch: u64) {
        let newer = self
            .claims
            .get(identifier)
            .is_none_or(|(_, _, known)| *known < epoch);
        if newer {
            self.claims
                .insert(identifier.to_owned(), (node.to_owned(), conn_id, epoch));
        }
    }

    /// This host released its claim `node`/`conn_id` on `identifier`.
    pub fn released(&mut self, identifier: &str, node: &str, conn_id: u64) {
        if self
            .claims
            .get(identifier)
            .is_some_and(|(n, c, _)| n == node && *c == conn_id)
        {
            self.claims.remove(identifier);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> TrustRecord {
        TrustRecord::new(id, 1)
    }

    #[test]
    fn touch_needs_a_read_record_and_marks_it_dirty() {
        let mut c = LivenessCache::default();
        assert!(c.touch("a", |r| r.status = Liveness::Online).is_none());
        c.merge(rec("a"));
        assert!(c.pending().is_empty());
        c.touch("a", |_| ());
        assert!(c.pending().is_empty(), "an unchanged touch is not a write");
        c.touch("a", |r| r.last_heartbeat_at = Some(5));
        let p = c.pending();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].fields.last_heartbeat_at, Some(5));
    }

    #[test]
    fn merge_keeps_unwritten_liveness_over_the_database() {
        let mut c = LivenessCache::default();
        c.merge(rec("a"));
        c.touch("a", |r| r.status = Liveness::Online);
        let mut from_db = rec("a");
        from_db.secret = Some("s".into());
        from_db.status = Liveness::Offline;
        let merged = c.merge(from_db);
        assert_eq!(merged.status, Liveness::Online);
        assert_eq!(merged.secret.as_deref(), Some("s"));
        let p = c.pending();
        c.written(&p);
        let merged = c.merge(rec("a"));
        assert_eq!(merged.status, Liveness::Offline, "clean: the database wins");
    }

    #[test]
    fn a_touch_during_a_flush_stays_dirty() {
        let mut c = LivenessCache::default();
        c.merge(rec("a"));
        c.touch("a", |r| r.last_heartbeat_at = Some(1));
        let p = c.pending();
        c.touch("a", |r| r.last_heartbeat_at = Some(2));
        c.written(&p);
        let left = c.pending();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].fields.last_heartbeat_at, Some(2));
    }

    #[test]
    fn applied_keeps_touches_unless_the_change_was_liveness() {
        let mut c = LivenessCache::default();
        c.merge(rec("a"));
        c.touch("a", |r| r.status = Liveness::Online);
        let mut after = rec("a");
        after.pairing_attempts = 3;
        c.applied(&after, false);
        assert_eq!(
            c.dirty_liveness("a").map(|l| l.status),
            Some(Liveness::Online)
        );
        let mut revoked = rec("a");
        revoked.status = Liveness::Offline;
        c.applied(&revoked, true);
        assert_eq!(
            c.dirty_liveness("a").map(|l| l.status),
            Some(Liveness::Offline)
        );
        assert_eq!(c.touch("a", |r| r.pairing_attempts), Some(0));
    }

    #[test]
    fn claims_are_remembered_until_released_by_their_owner() {
        let mut c = LivenessCache::default();
        c.merge(rec("a"));
        c.touch("a", |r| r.status = Liveness::Online);
        c.claimed("a", "n1", 7, 3);
        c.claimed("a", "n1", 6, 2);
        assert_eq!(c.pending()[0].epoch, Some(3));
        c.released("a", "n1", 6);
        assert_eq!(c.pending()[0].epoch, Some(3));
        c.released("a", "n1", 7);
        assert_eq!(c.pending()[0].epoch, None);
    }
}
