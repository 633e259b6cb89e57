//! The trust store: one [`TrustRecord`] per follower identifier, behind one API whatever keeps
//! it — the embedded file (`trust.json`, the default, see [`mod@file`]) or, for several hosts,
//! PostgreSQL ([`postgres`], with its schema in [`migrations`], its URL and redaction in
//! [`pg_target`], and this host's unwritten liveness in [`cache`]). docs/store.md describes
//! both.
//!
//! Two kinds of change:
//! - [`Store::apply`]: a trust change (pairing started or confirmed, key bound, revocation). It
//!   is durable when `apply` returns `Ok` — callers reply to a follower only after that — and
//!   when it fails, exactly that change is undone (concurrent changes to other fields of the
//!   same record, or to other records, are kept).
//! - [`Store::touch`]: liveness (status, last heartbeat, last authentication). Kept in memory and
//!   written lazily by [`Store::flush`] (at each liveness sweep and at shutdown), never once per
//!   heartbeat.

pub mod cache;
pub mod file;
pub mod migrations;
pub mod pg_target;
pub mod postgres;

pub use crate::trust::{Liveness, NotifyStatus, PairingStatus, TrustRecord};
pub use file::{ensure_state_dir, host_running, load_file, lock_state_dir, StateFile};

use crate::config::StoreConfig;
use std::path::{Path, PathBuf};

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
    /// The database could not be reached or did not answer in time.
    #[error("the trust store is unavailable: {0}")]
    Unavailable(String),
    /// `[store]` cannot be used as written (the message never holds the URL or password).
    #[error("store: {0}")]
    Config(String),
    /// The database answered and refused the operation (nothing was changed).
    #[error("PostgreSQL at {location} refused to {what}: {reason}")]
    Refused {
        location: String,
        what: String,
        reason: String,
    },
    /// A record in the database cannot be read as a trust record.
    #[error("PostgreSQL at {location}: the record of {identifier:?} in table followers cannot be read: {reason}. Fix or delete that row")]
    CorruptRecord {
        location: String,
        identifier: String,
        reason: String,
    },
    /// The database's schema is newer than this host.
    #[error("PostgreSQL at {location} has trust store schema version {found}, newer than this host knows (up to {known}): upgrade yonexus on this host; never run an older host against a newer schema")]
    Schema {
        location: String,
        found: i32,
        known: i32,
    },
    /// The database's schema is older than this program, which was asked not to upgrade it.
    #[error("PostgreSQL at {location} has trust store schema version {found}, older than this yonexus ({known}): run `yonexus migrate` (or start a host) first")]
    SchemaBehind {
        location: String,
        found: i32,
        known: i32,
    },
}

/// One host's claim on a follower's session (cluster presence), as stored and as published on
/// `yonexus.claims`. The highest `epoch` wins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionClaim {
    pub identifier: String,
    pub node: String,
    pub conn_id: u64,
    pub epoch: u64,
    pub connected_since: i64,
    pub remote: String,
    /// Unix seconds until which the claim holds unless its host renews it.
    pub lease_until: i64,
}

/// The trust store.
pub struct Store {
    backend: Backend,
}

enum Backend {
    File(file::FileStore),
    Postgres(Box<postgres::PgStore>),
}

impl Store {
    /// The store `config` names: the embedded file in `state_dir` (which must exist), or
    /// PostgreSQL (connected, its schema brought up to date; refused when the database cannot
    /// be reached or its schema is newer than this host).
    pub async fn open(config: &StoreConfig, state_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(config, state_dir, true).await
    }

    /// Like [`Store::open`], but never changes the database's schema (the operator's CLI
    /// where no host runs): a schema older than this program is refused, with the fix.
    pub async fn open_without_migrating(
        config: &StoreConfig,
        state_dir: &Path,
    ) -> Result<Store, StoreError> {
        Self::open_with(config, state_dir, false).await
    }

    async fn open_with(
        config: &StoreConfig,
        state_dir: &Path,
        migrate: bool,
    ) -> Result<Store, StoreError> {
        match config {
            StoreConfig::File => Store::open_file(state_dir),
            StoreConfig::Postgres(url) => Ok(Store {
                backend: Backend::Postgres(Box::new(postgres::PgStore::open(url, migrate).await?)),
            }),
        }
    }

    /// The embedded store in `state_dir` (which must exist): removes stale temp files from a
    /// crash, then loads `trust.json`.
    pub fn open_file(state_dir: &Path) -> Result<Store, StoreError> {
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
            Backend::Postgres(p) => p.describe(),
        }
    }

    /// A copy of one record.
    pub async fn get(&self, identifier: &str) -> Result<Option<TrustRecord>, StoreError> {
        match &self.backend {
            Backend::File(f) => Ok(f.get(identifier)),
            Backend::Postgres(p) => p.get(identifier).await,
        }
    }

    /// Copies of every record.
    pub async fn snapshot(&self) -> Result<Vec<TrustRecord>, StoreError> {
        match &self.backend {
            Backend::File(f) => Ok(f.snapshot()),
            Backend::Postgres(p) => p.snapshot().await,
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
            Backend::Postgres(p) => p
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
            Backend::Postgres(p) => p.apply(identifier, 0, false, f).await,
        }
    }

    /// Change liveness fields of an existing record in memory; written by the next
    /// [`Store::flush`]. Returns `None` when there is no record — for PostgreSQL, no record
    /// this host has read ([`Store::get`], [`Store::snapshot`], [`Store::apply`]): liveness only
    /// matters for followers connected here, and those were read when they said hello.
    pub fn touch<R>(&self, identifier: &str, f: impl FnOnce(&mut TrustRecord) -> R) -> Option<R> {
        match &self.backend {
            Backend::File(s) => s.touch(identifier, f),
            Backend::Postgres(p) => p.touch(identifier, f),
        }
    }

    /// Write what [`Store::touch`] changed since the last write (PostgreSQL: one statement for
    /// every touched record, skipping followers whose live session another host claims; on
    /// failure everything stays to be written next time).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::File(s) => s.flush().await,
            Backend::Postgres(p) => p.flush().await,
        }
    }

    /// Whether the last operation reached the store (false while a database is down).
    pub fn healthy(&self) -> bool {
        match &self.backend {
            Backend::File(_) => true,
            Backend::Postgres(p) => p.healthy(),
        }
    }

    /// Check that the store answers (readiness, `yonexus check`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::File(_) => Ok(()),
            Backend::Postgres(p) => p.ping().await,
        }
    }

    /// Accept the nonce of a valid proof for `identifier`, for every host: `false` when it was
    /// already accepted (a replay). The embedded store keeps no shared nonces (`true`): one
    /// host's [`Guard`](crate::guard::Guard) remembers them.
    pub async fn accept_nonce(
        &self,
        identifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::File(_) => Ok(true),
            Backend::Postgres(p) => p.accept_nonce(identifier, nonce, now).await,
        }
    }

    /// Count one failure under `key` (`addr:<address>`, `login:<identifier>`) in a window of
    /// `window_secs` shared by every host; returns the count in the current window, or `None`
    /// when the store keeps no shared counts (the embedded store: the guard counts locally).
    pub async fn count_event(
        &self,
        key: &str,
        now: i64,
        window_secs: i64,
    ) -> Result<Option<u32>, StoreError> {
        match &self.backend {
            Backend::File(_) => Ok(None),
            Backend::Postgres(p) => p.count_event(key, now, window_secs).await.map(Some),
        }
    }

    /// Claim `claim.identifier`'s session for `claim.node`/`claim.conn_id`, replacing any other
    /// claim (`if_free_at: None`: an authentication, the newest session wins) or only when no
    /// other host holds a live claim at that time (`Some(now)`: re-claiming a session whose
    /// claim was lost; `None` back when another host holds it). Returns the new claim's epoch
    /// (claims are totally ordered: concurrent claims for one identifier get different epochs,
    /// the higher one is the live session). The embedded store counts epochs in memory;
    /// PostgreSQL takes them from one sequence, so a claim made after a release still has a
    /// higher epoch than every earlier one.
    pub async fn claim_session(
        &self,
        claim: &SessionClaim,
        if_free_at: Option<i64>,
    ) -> Result<Option<u64>, StoreError> {
        match &self.backend {
            Backend::File(s) => Ok(Some(s.next_epoch(&claim.identifier))),
            Backend::Postgres(p) => p.claim_session(claim, if_free_at).await,
        }
    }

    /// Drop the claim of `node`/`conn_id` on `identifier`, if it is still the live one.
    pub async fn release_session(
        &self,
        identifier: &str,
        node: &str,
        conn_id: u64,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::File(_) => Ok(()),
            Backend::Postgres(p) => p.release_session(identifier, node, conn_id).await,
        }
    }

    /// Extend the claims of `node`'s live sessions (`live`: identifier and connection id) until
    /// `lease_until`, and drop every other claim of `node` (connections that ended without
    /// their release reaching the store; with `live` empty, all of them: a host shutting down).
    pub async fn sync_claims(
        &self,
        node: &str,
        lease_until: i64,
        live: &[(String, u64)],
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::File(_) => Ok(()),
            Backend::Postgres(p) => p.sync_claims(node, lease_until, live).await,
        }
    }

    /// The live claims (`lease_until >= now`), of every host.
    pub async fn claims(&self, now: i64) -> Result<Vec<SessionClaim>, StoreError> {
        match &self.backend {
            Backend::File(_) => Ok(Vec::new()),
            Backend::Postgres(p) => p.claims(now).await,
        }
    }
}
