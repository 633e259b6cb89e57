//! The trust store: one [`TrustRecord`] per follower identifier, behind one API whatever keeps
//! it — the embedded file (`trust.json`, the default, see [`file`]) or, for several hosts,
//! PostgreSQL.
//!
//! Two kinds of change:
//! - [`Store::apply`]: a trust change (pairing started or confirmed, key bound, revocation). It
//!   is durable when `apply` returns `Ok` — callers reply to a follower only after that — and
//!   when it fails, exactly that change is undone (concurrent changes to other fields of the
//!   same record, or to other records, are kept).
//! - [`Store::touch`]: liveness (status, last heartbeat, last authentication). Kept in memory and
//!   written lazily by [`Store::flush`] (at each liveness sweep and at shutdown), never once per
//!   heartbeat.

pub mod file;

pub use crate::trust::{Liveness, NotifyStatus, PairingStatus, TrustRecord};
pub use file::{ensure_state_dir, host_running, load_file, lock_state_dir, StateFile};

use std::path::PathBuf;

/// Format version of `trust.json`.
pub const STATE_VERSION: u32 = 1;
/// File name of the trust store inside `state_dir`.
pub const STATE_FILE: &str = "trust.json";
/// File name of the host's exclusive lock inside `state_dir`.
pub const LOCK_FILE: &str = "yonexus.lock";

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
    #[error("the trust store could not be encoded (nothing was written): {0}")]
    Encode(String),
    #[error("another yonexus host is already using state directory {path}")]
    Locked { path: PathBuf },
    #[error("the trust store is unavailable: {0}")]
    Unavailable(String),
}

/// The trust store.
pub struct Store {
    backend: Backend,
}

enum Backend {
    File(file::FileStore),
}

impl Store {
    /// The embedded store in `state_dir` (which must exist): removes stale temp files from a
    /// crash, then loads `trust.json`.
    pub fn open_file(state_dir: &std::path::Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::File(file::FileStore::open(state_dir)?),
        })
    }

    /// A store that lives in memory only (tests, fuzzing).
    pub fn memory() -> Store {
        Store {
            backend: Backend::File(file::FileStore::memory()),
        }
    }

    /// Where the records live, for messages (`trust.json`'s path).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::File(f) => f.describe(),
        }
    }

    /// A copy of one record.
    pub async fn get(&self, identifier: &str) -> Result<Option<TrustRecord>, StoreError> {
        match &self.backend {
            Backend::File(f) => Ok(f.get(identifier)),
        }
    }

    /// Copies of every record.
    pub async fn snapshot(&self) -> Result<Vec<TrustRecord>, StoreError> {
        match &self.backend {
            Backend::File(f) => Ok(f.snapshot()),
        }
    }

    /// Apply a trust change to `identifier`'s record (created if absent) and make it durable.
    /// On error the change is undone and nothing was promised to anyone.
    pub async fn apply<R: Send>(
        &self,
        identifier: &str,
        now: i64,
        f: impl FnOnce(&mut TrustRecord) -> R + Send,
    ) -> Result<R, StoreError> {
        match &self.backend {
            Backend::File(s) => s
                .apply(identifier, now, true, f)
                .await?
                .ok_or_else(|| StoreError::Unavailable("the record vanished".into())),
        }
    }

    /// Like [`Store::apply`] for a record that must exist; `Ok(None)` when it does not.
    pub async fn apply_existing<R: Send>(
        &self,
        identifier: &str,
        f: impl FnOnce(&mut TrustRecord) -> R + Send,
    ) -> Result<Option<R>, StoreError> {
        match &self.backend {
            Backend::File(s) => s.apply(identifier, 0, false, f).await,
        }
    }

    /// Change liveness fields of an existing record in memory; written by the next
    /// [`Store::flush`]. Returns `None` when there is no record.
    pub fn touch<R>(&self, identifier: &str, f: impl FnOnce(&mut TrustRecord) -> R) -> Option<R> {
        match &self.backend {
            Backend::File(s) => s.touch(identifier, f),
        }
    }

    /// Write what [`Store::touch`] changed since the last write.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::File(s) => s.flush().await,
        }
    }
}
