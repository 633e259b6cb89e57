//! The durable trust store: one record per follower identifier, in `<state_dir>/trust.json`.
//!
//! The file is versioned JSON, written atomically (temp file in the same directory, fsync,
//! rename, fsync of the directory) with mode 0600 in a 0700 directory. A file that cannot be read
//! or parsed stops the host with a message naming it; it is never overwritten or reset.
//! Mutations happen in memory under one lock; [`Store::persist`] makes the current state durable
//! (callers await it before telling a follower about a pairing or a secret), and liveness-only
//! changes are flushed lazily with [`Store::flush_if_dirty`].

use crate::liveness::Liveness;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Format version of `trust.json`.
pub const STATE_VERSION: u32 = 1;
/// File name of the trust store inside `state_dir`.
pub const STATE_FILE: &str = "trust.json";
/// File name of the host's exclusive lock inside `state_dir`.
pub const LOCK_FILE: &str = "yonexus.lock";

/// `pairingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PairingStatus {
    #[default]
    Unpaired,
    Pending,
    Paired,
    Revoked,
}

impl PairingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PairingStatus::Unpaired => "unpaired",
            PairingStatus::Pending => "pending",
            PairingStatus::Paired => "paired",
            PairingStatus::Revoked => "revoked",
        }
    }
}

/// `pairingNotifyStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyStatus {
    Pending,
    Sent,
    Failed,
}

/// One follower's durable trust record (PROTOCOL.md §7).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustRecord {
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default)]
    pub pairing_status: PairingStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_notified_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_notify_status: Option<NotifyStatus>,
    /// Wrong codes entered against the current pending pairing.
    #[serde(default)]
    pub pairing_attempts: u32,
    /// Public key announced in `hello` while a pairing is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired_at: Option<i64>,
    #[serde(default)]
    pub status: Liveness,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_authenticated_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl fmt::Debug for TrustRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets and codes never reach logs, not even through Debug.
        f.debug_struct("TrustRecord")
            .field("identifier", &self.identifier)
            .field("pairing_status", &self.pairing_status)
            .field("has_secret", &self.secret.is_some())
            .field("has_pairing_code", &self.pairing_code.is_some())
            .field("pairing_expires_at", &self.pairing_expires_at)
            .field("status", &self.status)
            .field("last_heartbeat_at", &self.last_heartbeat_at)
            .finish_non_exhaustive()
    }
}

impl TrustRecord {
    pub fn new(identifier: &str, now: i64) -> Self {
        TrustRecord {
            identifier: identifier.to_owned(),
            public_key: None,
            secret: None,
            pairing_status: PairingStatus::Unpaired,
            pairing_code: None,
            pairing_expires_at: None,
            pairing_notified_at: None,
            pairing_notify_status: None,
            pairing_attempts: 0,
            pending_public_key: None,
            paired_at: None,
            status: Liveness::Offline,
            last_heartbeat_at: None,
            last_authenticated_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Paired: has a secret (the public key may be bound at first authentication).
    pub fn is_paired(&self) -> bool {
        self.pairing_status == PairingStatus::Paired && self.secret.is_some()
    }

    /// A pending pairing that has not expired at `now`.
    pub fn live_pending(&self, now: i64) -> bool {
        self.pairing_status == PairingStatus::Pending
            && self.pairing_code.is_some()
            && self.pairing_expires_at.is_some_and(|e| now < e)
    }

    /// Forget trust: drop secret, key and any pairing; mark revoked.
    pub fn revoke(&mut self, now: i64) {
        self.secret = None;
        self.public_key = None;
        self.clear_pairing();
        self.pairing_status = PairingStatus::Revoked;
        self.status = Liveness::Offline;
        self.updated_at = now;
    }

    /// Drop the pending pairing fields (code, expiry, notification, attempts).
    pub fn clear_pairing(&mut self) {
        self.pairing_code = None;
        self.pairing_expires_at = None;
        self.pairing_notified_at = None;
        self.pairing_notify_status = None;
        self.pairing_attempts = 0;
        self.pending_public_key = None;
    }
}

/// The on-disk document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    #[serde(default)]
    pub followers: BTreeMap<String, TrustRecord>,
}

/// Why the trust store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} cannot be read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt and was left untouched: {reason}. Restore it from a backup or move it away to start with no trusted followers")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "state file {path} has format version {found}; this host reads version {STATE_VERSION}"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("state file {path} could not be written: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another yonexus host is already using state directory {path}")]
    Locked { path: PathBuf },
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
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // NamedTempFile creates the file with mode 0600 and removes it if anything below fails.
    let mut tmp = tempfile::Builder::new()
        .prefix(".trust-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

fn encode(records: &BTreeMap<String, TrustRecord>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: u32,
        followers: &'a BTreeMap<String, TrustRecord>,
    }
    // Plain structs with string keys always serialise.
    serde_json::to_vec_pretty(&Doc {
        version: STATE_VERSION,
        followers: records,
    })
    .unwrap_or_default()
}

struct Inner {
    records: BTreeMap<String, TrustRecord>,
    /// Bumped on every change; `written` is the generation last made durable.
    generation: u64,
    written: u64,
}

/// The in-memory trust store backed by the state file.
pub struct Store {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Serialises writers so the newest snapshot is always the last one written.
    write_lock: tokio::sync::Mutex<()>,
}

impl Store {
    /// Open the store in `state_dir` (which must exist): remove stale temp files from a crash,
    /// then load the state file.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        if let Ok(entries) = fs::read_dir(state_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".trust-") && name.ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let path = state_dir.join(STATE_FILE);
        let records = load_file(&path)?;
        Ok(Store {
            path,
            inner: Mutex::new(Inner {
                records,
                generation: 0,
                written: 0,
            }),
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map is only changed by short closures that cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read a copy of one record.
    pub fn get(&self, identifier: &str) -> Option<TrustRecord> {
        self.lock().records.get(identifier).cloned()
    }

    /// Copies of every record, by identifier.
    pub fn snapshot(&self) -> Vec<TrustRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// Change the record of `identifier` (created if absent) in memory. The change is durable
    /// only after [`Store::persist`] (or a later flush); a call that changes nothing (e.g. a
    /// `hello` from a paired follower) leaves the store clean, so it causes no rewrite.
    pub fn update<R>(
        &self,
        identifier: &str,
        now: i64,
        f: impl FnOnce(&mut TrustRecord) -> R,
    ) -> R {
        let mut inner = self.lock();
        let before = inner.records.get(identifier).cloned();
        let record = inner
            .records
            .entry(identifier.to_owned())
            .or_insert_with(|| TrustRecord::new(identifier, now));
        let out = f(record);
        let changed = before.as_ref() != Some(&*record);
        if changed {
            inner.generation += 1;
        }
        out
    }

    /// Change a record only if it exists.
    pub fn update_existing<R>(
        &self,
        identifier: &str,
        f: impl FnOnce(&mut TrustRecord) -> R,
    ) -> Option<R> {
        let mut inner = self.lock();
        let record = inner.records.get_mut(identifier)?;
        let before = record.clone();
        let out = f(record);
        let changed = before != *record;
        if changed {
            inner.generation += 1;
        }
        Some(out)
    }

    /// Put back a record exactly as it was (used to roll back a change whose persist failed).
    pub fn restore(&self, record: Option<TrustRecord>, identifier: &str) {
        let mut inner = self.lock();
        match record {
            Some(r) => {
                inner.records.insert(identifier.to_owned(), r);
            }
            None => {
                inner.records.remove(identifier);
            }
        }
        inner.generation += 1;
    }

    /// Make the current in-memory state durable. Runs the file I/O off the async reactor.
    pub async fn persist(&self) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        let (bytes, generation) = {
            let inner = self.lock();
            if inner.written == inner.generation && self.path.exists() {
                return Ok(());
            }
            (encode(&inner.records), inner.generation)
        };
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || atomic_write(&path, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        result.map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })?;
        let mut inner = self.lock();
        inner.written = inner.written.max(generation);
        Ok(())
    }

    /// Persist only if something changed since the last write (lazy liveness flush).
    pub async fn flush_if_dirty(&self) -> Result<(), StoreError> {
        let dirty = {
            let inner = self.lock();
            inner.written != inner.generation
        };
        if dirty {
            self.persist().await
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        ensure_state_dir(&state).unwrap();
        let store = Store::open(&state).unwrap();
        store.update("alpha", 10, |r| {
            r.secret = Some("s".into());
            r.pairing_status = PairingStatus::Paired;
        });
        store.persist().await.unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let reopened = Store::open(&state).unwrap();
        assert!(reopened.get("alpha").unwrap().is_paired());
        assert!(!format!("{:?}", reopened.get("alpha").unwrap()).contains("\"s\""));
    }

    #[tokio::test]
    async fn unchanged_updates_do_not_dirty_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.update("alpha", 1, |_| ());
        store.persist().await.unwrap();
        let written = fs::metadata(store.path()).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.update("alpha", 2, |_| ());
        store.update_existing("alpha", |r| r.status = Liveness::Offline);
        store.flush_if_dirty().await.unwrap();
        assert_eq!(
            fs::metadata(store.path()).unwrap().modified().unwrap(),
            written
        );
        store.update_existing("alpha", |r| r.last_heartbeat_at = Some(5));
        store.flush_if_dirty().await.unwrap();
        assert_eq!(store.snapshot()[0].last_heartbeat_at, Some(5));
        assert_eq!(
            load_file(store.path()).unwrap()["alpha"].last_heartbeat_at,
            Some(5)
        );
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
            let err = match Store::open(dir.path()) {
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
        let _store = Store::open(dir.path()).unwrap();
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
