//! The embedded trust store: every record in memory, made durable as one versioned JSON file,
//! `<state_dir>/trust.json`, written atomically (temp file in the same directory, fsync, rename,
//! fsync of the directory) with mode 0600 in a 0700 directory. A file that cannot be read or
//! parsed stops the host with a message naming it; it is never overwritten or reset.
//!
//! Concurrent changes share writes: a change bumps a generation counter, and a write covers
//! every change up to the generation it encoded, so a pairing storm does not pay one fsync per
//! pairing. A failed write undoes, field by field, only the change whose caller saw the error.

use super::{StoreError, TrustRecord, LOCK_FILE, STATE_FILE, STATE_VERSION};
use crate::atomic_file::{self, Existing};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The on-disk document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    #[serde(default)]
    pub followers: BTreeMap<String, TrustRecord>,
}

/// Create `dir` (mode 0700) if needed.
pub fn ensure_state_dir(dir: &Path) -> Result<(), StoreError> {
    let map = |source| StoreError::Dir {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(map)?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(map)
}

/// Take the exclusive host lock on `dir`; held for as long as the returned file lives.
pub fn lock_state_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| StoreError::Dir {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: dir.to_owned(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(StoreError::Dir { path, source }),
    }
}

/// Whether a host currently holds the lock on `dir`.
pub fn host_running(dir: &Path) -> bool {
    match fs::OpenOptions::new().write(true).open(dir.join(LOCK_FILE)) {
        Ok(f) => matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Load a state file. A missing file is an empty store; anything unreadable is an error.
pub fn load_file(path: &Path) -> Result<BTreeMap<String, TrustRecord>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let doc: StateFile = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if doc.version != STATE_VERSION {
        return Err(StoreError::Version {
            path: path.to_owned(),
            found: doc.version,
        });
    }
    for (key, record) in &doc.followers {
        if key != &record.identifier {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason: format!(
                    "record under key {key:?} has identifier {:?}",
                    record.identifier
                ),
            });
        }
    }
    Ok(doc.followers)
}

/// Write `bytes` to `path` atomically and durably with mode 0600: temp file in the same
/// directory, write, fsync, rename over the target, fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_file::write(path, bytes, 0o600, Existing::Replace)
}

/// The document's bytes. An encoding failure is an error: an empty or partial document is
/// never written in place of the real one.
pub fn encode(records: &BTreeMap<String, TrustRecord>) -> Result<Vec<u8>, StoreError> {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u32,
        followers: &'a BTreeMap<String, TrustRecord>,
    }
    serde_json::to_vec_pretty(&Doc {
        version: STATE_VERSION,
        followers: records,
    })
    .map_err(|e| StoreError::Encode(e.to_string()))
}

/// Undo, in `current`, the fields a change turned from `before` into `after` — only where
/// `current` still holds the changed value, so later changes by others survive.
fn undo_fields(current: &mut TrustRecord, before: &TrustRecord, after: &TrustRecord) {
    let (Ok(Value::Object(b)), Ok(Value::Object(a)), Ok(Value::Object(mut c))) = (
        serde_json::to_value(before),
        serde_json::to_value(after),
        serde_json::to_value(&*current),
    ) else {
        return;
    };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let (was, now) = (b.get(key), a.get(key));
        if was != now && c.get(key) == now {
            match was {
                Some(v) => c.insert(key.clone(), v.clone()),
                None => c.remove(key),
            };
        }
    }
    if let Ok(undone) = serde_json::from_value(Value::Object(c)) {
        *current = undone;
    }
}

struct Inner {
    records: BTreeMap<String, TrustRecord>,
    /// Bumped on every change; `written` is the generation last made durable.
    generation: u64,
    written: u64,
}

/// The records in memory, backed by the state file (or by nothing: [`FileStore::memory`]).
pub struct FileStore {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// Serialises writers so the newest snapshot is always the last one written.
    write_lock: tokio::sync::Mutex<()>,
    /// Session claim epochs (one host: in memory).
    epochs: std::sync::atomic::AtomicU64,
}

impl FileStore {
    /// Open the store in `state_dir` (which must exist): remove stale temp files from a crash,
    /// then load the state file.
    pub fn open(state_dir: &Path) -> Result<FileStore, StoreError> {
        if let Ok(entries) = fs::read_dir(state_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                // `.trust.json-*.tmp` (and `.trust-*.tmp` from earlier versions).
                if name.starts_with(".trust") && name.ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let path = state_dir.join(STATE_FILE);
        let records = load_file(&path)?;
        Ok(Self::with(Some(path), records))
    }

    /// A store with no file (tests, fuzzing): writes always succeed.
    pub fn memory() -> FileStore {
        Self::with(None, BTreeMap::new())
    }

    fn with(path: Option<PathBuf>, records: BTreeMap<String, TrustRecord>) -> FileStore {
        FileStore {
            path,
            inner: Mutex::new(Inner {
                records,
                generation: 0,
                written: 0,
            }),
            write_lock: tokio::sync::Mutex::new(()),
            epochs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next session epoch (one counter for the whole host is enough).
    pub(super) fn next_epoch(&self, _identifier: &str) -> u64 {
        self.epochs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "(in memory)".into(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map is only changed by short closures that cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, identifier: &str) -> Option<TrustRecord> {
        self.lock().records.get(identifier).cloned()
    }

    pub fn snapshot(&self) -> Vec<TrustRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// Change a record in memory and make it durable. `create`: make the record if absent;
    /// otherwise a missing record runs nothing and gives `Ok(None)`.
    pub(super) async fn apply<R>(
        &self,
        identifier: &str,
        now: i64,
        create: bool,
        f: impl FnOnce(&mut TrustRecord) -> R,
    ) -> Result<Option<R>, StoreError>
    where
        R: Send,
    {
        let (out, change) = {
            let mut inner = self.lock();
            let before = inner.records.get(identifier).cloned();
            if before.is_none() && !create {
                return Ok(None);
            }
            let record = inner
                .records
                .entry(identifier.to_owned())
                .or_insert_with(|| TrustRecord::new(identifier, now));
            let out = f(record);
            let after = record.clone();
            if before.as_ref() == Some(&after) {
                (out, None)
            } else {
                inner.generation += 1;
                (out, Some((before, after, inner.generation)))
            }
        };
        let Some((before, after, generation)) = change else {
            return Ok(Some(out));
        };
        match self.write_through(generation).await {
            Ok(()) => Ok(Some(out)),
            Err(e) => {
                let mut inner = self.lock();
                match before {
                    Some(before) => {
                        if let Some(current) = inner.records.get_mut(identifier) {
                            undo_fields(current, &before, &after);
                        }
                    }
                    None => {
                        if inner.records.get(identifier) == Some(&after) {
                            inner.records.remove(identifier);
                        }
                    }
                }
                inner.generation += 1;
                Err(e)
            }
        }
    }

    pub(super) fn touch<R>(
        &self,
        identifier: &str,
        f: impl FnOnce(&mut TrustRecord) -> R,
    ) -> Option<R> {
        let mut inner = self.lock();
        let record = inner.records.get_mut(identifier)?;
        let before = (
            record.status,
            record.last_heartbeat_at,
            record.last_authenticated_at,
        );
        let out = f(record);
        if before
            != (
                record.status,
                record.last_heartbeat_at,
                record.last_authenticated_at,
            )
        {
            inner.generation += 1;
        }
        Some(out)
    }

    /// Write the current state if anything changed since the last write.
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        let generation = self.lock().generation;
        self.write_through(generation).await
    }

    /// Make every change up to `generation` durable (one write may cover many changes).
    async fn write_through(&self, generation: u64) -> Result<(), StoreError> {
        let Some(path) = self.path.clone() else {
            let mut inner = self.lock();
            inner.written = inner.written.max(generation);
            return Ok(());
        };
        let _writer = self.write_lock.lock().await;
        let (bytes, encoded) = {
            let inner = self.lock();
            if inner.written >= generation && path.exists() {
                return Ok(());
            }
            (encode(&inner.records)?, inner.generation)
        };
        let target = path.clone();
        let result = tokio::task::spawn_blocking(move || atomic_write(&target, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        result.map_err(|source| StoreError::Write { path, source })?;
        let mut inner = self.lock();
        inner.written = inner.written.max(encoded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Liveness, PairingStatus, Store};
    use super::*;

    #[tokio::test]
    async fn round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        ensure_state_dir(&state).unwrap();
        let store = Store::open_file(&state).unwrap();
        store
            .apply("alpha", 10, |r| {
                r.secret = Some("s".into());
                r.pairing_status = PairingStatus::Paired;
            })
            .await
            .unwrap();
        let file = state.join(STATE_FILE);
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let reopened = Store::open_file(&state).unwrap();
        let alpha = reopened.get("alpha").await.unwrap().unwrap();
        assert!(alpha.is_paired());
        assert!(!format!("{alpha:?}").contains("\"s\""));
    }

    #[tokio::test]
    async fn touches_are_written_lazily_and_unchanged_ones_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_file(dir.path()).unwrap();
        store.apply("alpha", 1, |_| ()).await.unwrap();
        let file = dir.path().join(STATE_FILE);
        let written = fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.apply("alpha", 2, |_| ()).await.unwrap();
        store.touch("alpha", |r| r.status = Liveness::Offline);
        store.flush().await.unwrap();
        assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), written);
        store.touch("alpha", |r| r.last_heartbeat_at = Some(5));
        assert_eq!(load_file(&file).unwrap()["alpha"].last_heartbeat_at, None);
        store.flush().await.unwrap();
        assert_eq!(
            load_file(&file).unwrap()["alpha"].last_heartbeat_at,
            Some(5)
        );
        assert!(store.touch("nobody", |_| ()).is_none());
        assert_eq!(store.apply_existing("nobody", |_| 1).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_failed_write_undoes_only_that_change() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        ensure_state_dir(&state).unwrap();
        let store = Store::open_file(&state).unwrap();
        store
            .apply("alpha", 1, |r| r.pairing_status = PairingStatus::Pending)
            .await
            .unwrap();
        store.touch("alpha", |r| r.last_heartbeat_at = Some(7));
        // Make the directory unwritable (as root this has no effect: then use a missing dir).
        fs::set_permissions(&state, fs::Permissions::from_mode(0o500)).unwrap();
        let blocked = fs::File::create(state.join("probe")).is_err();
        if !blocked {
            fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
            fs::remove_file(state.join("probe")).ok();
            fs::remove_dir_all(&state).unwrap();
        }
        let err = store
            .apply("alpha", 2, |r| {
                r.secret = Some("sekrit".into());
                r.pairing_status = PairingStatus::Paired;
            })
            .await;
        assert!(matches!(err, Err(StoreError::Write { .. })), "{err:?}");
        let a = store.get("alpha").await.unwrap().unwrap();
        assert_eq!(
            a.pairing_status,
            PairingStatus::Pending,
            "the change is undone"
        );
        assert!(a.secret.is_none());
        assert_eq!(a.last_heartbeat_at, Some(7), "other changes survive");
        assert!(store
            .apply("beta", 3, |r| r.pairing_status = PairingStatus::Pending)
            .await
            .is_err());
        assert!(
            store.get("beta").await.unwrap().is_none(),
            "a new record is removed"
        );
        if blocked {
            fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        }
    }

    #[test]
    fn corrupt_file_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for bad in [
            &b"{not json"[..],
            b"",
            b"{\"version\":2,\"followers\":{}}",
            b"\xff\xfe",
        ] {
            fs::write(&path, bad).unwrap();
            let err = match Store::open_file(dir.path()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("opened a corrupt file"),
            };
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert_eq!(fs::read(&path).unwrap(), bad);
        }
    }

    #[test]
    fn stale_temp_files_are_removed_and_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".trust-abc.tmp"), b"junk").unwrap();
        let _store = Store::open_file(dir.path()).unwrap();
        assert!(!dir.path().join(".trust-abc.tmp").exists());
        let lock = lock_state_dir(dir.path()).unwrap();
        assert!(host_running(dir.path()));
        assert!(matches!(
            lock_state_dir(dir.path()),
            Err(StoreError::Locked { .. })
        ));
        drop(lock);
        assert!(!host_running(dir.path()));
    }
}
