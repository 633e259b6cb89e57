//! The PostgreSQL trust store, shared by every host of a cluster (docs/store.md).
//!
//! - Records: `followers(identifier, record jsonb)`, the record in the same JSON shape as one
//!   entry of `trust.json`. A trust change ([`PgStore::apply`]) is one transaction: insert the
//!   default record if creating, `SELECT … FOR UPDATE`, run the change, write, `COMMIT`; any
//!   failure rolls back and nothing was promised.
//! - Liveness: changed in this host's [`LivenessCache`] ([`PgStore::touch`]) and written by
//!   [`PgStore::flush`] in one statement for every follower touched since the last flush.
//! - Shared guard state: `auth_nonces` (a nonce is accepted once by the whole cluster),
//!   `rate_counts` (fixed windows counted by every host), `sessions` (who holds each
//!   follower's session, with an epoch and a lease).
//!
//! Faults: every operation has a connect timeout and an answer timeout; a database that cannot
//! be reached gives [`StoreError::Unavailable`] and marks the store unhealthy until an
//! operation succeeds again. The pool drops broken connections and makes new ones, so the
//! store recovers by itself. The URL (which may hold a password) never appears in a message
//! ([`pg_target`](super::pg_target)).

use super::cache::{LivenessCache, LivenessFields, PendingLiveness};
use super::migrations::{self, Found};
use super::pg_target::{unreachable, Target};
pub use super::pg_target::{CONNECT_TIMEOUT, OP_TIMEOUT};
use super::{SessionClaim, StoreError, TrustRecord};
use crate::config::PostgresUrl;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_postgres::types::Json;
use tokio_postgres::NoTls;

/// Longest wait for [`PgStore::ping`].
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a migration may take (it waits for another host migrating at the same time).
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(90);
/// Connections per host.
const POOL_SIZE: usize = 16;
/// Accepted nonces are kept this long (at least `guard::NONCE_MEMORY_SECS`, checked there).
pub const NONCE_KEEP_SECS: i64 = 60;
/// Expired session claims are deleted this long after their lease ended.
const CLAIM_KEEP_SECS: i64 = 3_600;
/// Old nonces, counts and claims are deleted by a flush at most this often.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// Why an operation inside a connection failed.
enum Fail {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

type Outcome<T> = Result<Result<T, Fail>, tokio::time::error::Elapsed>;

/// The store.
pub struct PgStore {
    target: Target,
    pool: Pool,
    healthy: AtomicBool,
    cache: Mutex<LivenessCache>,
    /// The newest `now` callers passed (their clock), for a flush's lease checks and deletes.
    latest_now: AtomicI64,
    last_housekeeping: Mutex<Option<Instant>>,
}

const SQL_GET: &str = "SELECT record FROM followers WHERE identifier = $1";
const SQL_SNAPSHOT: &str = "SELECT record FROM followers ORDER BY identifier";
const SQL_INSERT_DEFAULT: &str =
    "INSERT INTO followers (identifier, record) VALUES ($1, $2) ON CONFLICT (identifier) DO NOTHING";
const SQL_LOCK: &str = "SELECT record FROM followers WHERE identifier = $1 FOR UPDATE";
const SQL_WRITE: &str =
    "UPDATE followers SET record = $2, written_at = now() WHERE identifier = $1";
const SQL_FLUSH: &str = "\
UPDATE followers AS f
SET record = (f.record - 'lastHeartbeatAt' - 'lastAuthenticatedAt')
        || jsonb_strip_nulls(jsonb_build_object(
            'status', u.status,
            'lastHeartbeatAt', u.heartbeat,
            'lastAuthenticatedAt', u.authenticated)),
    written_at = now()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
    AS u(identifier, status, heartbeat, authenticated, epoch)
WHERE f.identifier = u.identifier
  AND NOT EXISTS (
      SELECT 1 FROM sessions s
      WHERE s.identifier = u.identifier
        AND s.lease_until >= $6
        AND s.epoch IS DISTINCT FROM u.epoch)";
const SQL_NONCE: &str = "INSERT INTO auth_nonces (identifier, nonce, seen_at) VALUES ($1, $2, $3) \
     ON CONFLICT (identifier, nonce) DO NOTHING";
const SQL_COUNT: &str = "\
INSERT INTO rate_counts AS r (key, window_start, window_secs, count) VALUES ($1, $2, $3, 1)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN $2 - r.window_start >= $3 THEN 1 ELSE LEAST(r.count, 2147483646) + 1 END,
    window_start = CASE WHEN $2 - r.window_start >= $3 THEN $2 ELSE r.window_start END,
    window_secs = $3
RETURNING count";
/// Claim `identifier`'s session for this host (a new epoch from the sequence). The start of
/// [`SQL_CLAIM`] and [`SQL_RECLAIM`], which differ only in the condition.
macro_rules! claim_session_sql {
    () => {
        "\
INSERT INTO sessions AS s (identifier, node, conn_id, epoch, connected_since, remote, lease_until)
VALUES ($1, $2, $3, nextval('session_epochs'), $4, $5, $6)
ON CONFLICT (identifier) DO UPDATE SET
    node = excluded.node,
    conn_id = excluded.conn_id,
    epoch = nextval('session_epochs'),
    connected_since = excluded.connected_since,
    remote = excluded.remote,
    lease_until = excluded.lease_until
"
    };
}
const SQL_CLAIM: &str = concat!(claim_session_sql!(), "RETURNING epoch");
/// The same claim, made only if nobody else holds a live one (re-claiming a session of this
/// host whose claim was lost): no row when another host holds it.
const SQL_RECLAIM: &str = concat!(
    claim_session_sql!(),
    "WHERE (s.node = excluded.node AND s.conn_id = excluded.conn_id) OR s.lease_until < $7
RETURNING epoch"
);
const SQL_RELEASE: &str =
    "DELETE FROM sessions WHERE identifier = $1 AND node = $2 AND conn_id = $3";
/// Renew the claims of `node`'s live sessions ($3, $4: identifiers and connection ids) and drop
/// its other claims (connections that ended without their release reaching the database).
const SQL_SYNC: &str = "\
WITH live AS (SELECT * FROM unnest($3::text[], $4::bigint[]) AS l(identifier, conn_id)),
gone AS (
    DELETE FROM sessions s WHERE s.node = $1
      AND NOT EXISTS (SELECT 1 FROM live
                      WHERE live.identifier = s.identifier AND live.conn_id = s.conn_id))
UPDATE sessions s SET lease_until = GREATEST(s.lease_until, $2)
FROM live WHERE s.node = $1 AND s.identifier = live.identifier AND s.conn_id = live.conn_id";
const SQL_CLAIMS: &str = "SELECT identifier, node, conn_id, epoch, connected_since, remote, \
     lease_until FROM sessions WHERE lease_until >= $1 ORDER BY identifier";
const SQL_FORGET_NONCES: &str = "DELETE FROM auth_nonces WHERE seen_at < $1";
const SQL_FORGET_COUNTS: &str = "DELETE FROM rate_counts WHERE window_start + window_secs < $1";
const SQL_FORGET_CLAIMS: &str = "DELETE FROM sessions WHERE lease_until < $1";

/// `conn_id`s are stored bit for bit in a `bigint`.
fn conn_to_sql(conn_id: u64) -> i64 {
    conn_id as i64
}

fn conn_from_sql(v: i64) -> u64 {
    v as u64
}

impl PgStore {
    /// Connect to the database `url` names and (`migrate`) bring its schema up to date, or
    /// (not `migrate`) refuse a schema older than this program's. Refuses a database whose
    /// schema is newer than this host's.
    pub async fn open(url: &PostgresUrl, migrate: bool) -> Result<PgStore, StoreError> {
        let target = Target::from_config(url)?;
        let manager = Manager::from_config(
            target.config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Config(target.scrub(&e.to_string())))?;
        let store = PgStore {
            target,
            pool,
            healthy: AtomicBool::new(true),
            cache: Mutex::new(LivenessCache::default()),
            latest_now: AtomicI64::new(0),
            last_housekeeping: Mutex::new(None),
        };
        let mut client = store.client("connect").await?;
        if !migrate {
            let read = tokio::time::timeout(OP_TIMEOUT, migrations::version(&**client)).await;
            return match read {
                Err(_) => Err(store.target.unavailable(
                    "read the schema version",
                    &format!("no answer within {} s", OP_TIMEOUT.as_secs()),
                )),
                Ok(Err(e)) => Err(store.failed("read the schema version", client, Fail::Pg(e))),
                Ok(Ok(Found::Newer(v))) => Err(store.target.schema_too_new(v)),
                Ok(Ok(Found::Version(v))) if v < migrations::LATEST => {
                    Err(StoreError::SchemaBehind {
                        location: store.target.location.clone(),
                        found: v,
                        known: migrations::LATEST,
                    })
                }
                Ok(Ok(Found::Version(_))) => {
                    drop(client);
                    Ok(store)
                }
            };
        }
        let migrated =
            tokio::time::timeout(MIGRATE_TIMEOUT, migrations::migrate(&mut client)).await;
        let (before, after) = match migrated {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(store.failed("update the schema", client, Fail::Pg(e))),
            Err(_) => {
                let _ = Object::take(client);
                return Err(store.target.unavailable(
                    "update the schema",
                    &format!("no answer within {} s", MIGRATE_TIMEOUT.as_secs()),
                ));
            }
        };
        match before {
            Found::Newer(v) => return Err(store.target.schema_too_new(v)),
            Found::Version(v) if v < after => {
                tracing::info!(database = %store.target.location, from = v, to = after, "trust store schema updated");
            }
            Found::Version(_) => {}
        }
        Ok(store)
    }

    /// `PostgreSQL at host:port/dbname`.
    pub fn describe(&self) -> String {
        format!("PostgreSQL at {}", self.target.location)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LivenessCache> {
        // Only short, non-panicking updates happen under the lock.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn saw(&self, now: i64) {
        self.latest_now.fetch_max(now, Ordering::Relaxed);
    }

    /// The callers' clock as far as known, else the system clock.
    fn now(&self) -> i64 {
        match self.latest_now.load(Ordering::Relaxed) {
            0 => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            n => n,
        }
    }

    /// A pooled connection (made if needed).
    async fn client(&self, what: &str) -> Result<Object, StoreError> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => {
                // Every connection is busy: the database answers, this host is overloaded.
                Err(self.target.unavailable(
                    what,
                    &format!(
                        "all {POOL_SIZE} connections stayed busy for {} s",
                        OP_TIMEOUT.as_secs()
                    ),
                ))
            }
            Err(PoolError::Timeout(_)) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(self.target.unavailable(
                    what,
                    &format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                ))
            }
            Err(PoolError::Backend(e)) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(self.target.unavailable(what, &self.target.describe(&e)))
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(self.target.unavailable(what, &e.to_string()))
            }
        }
    }

    /// Turn a failure on `client` into the store's error; a connection that may be broken is
    /// dropped rather than returned to the pool.
    fn failed(&self, what: &str, client: Object, fail: Fail) -> StoreError {
        match fail {
            Fail::Store(e) => {
                self.healthy.store(true, Ordering::Relaxed);
                e
            }
            Fail::Pg(e) if unreachable(&e) => {
                self.healthy.store(false, Ordering::Relaxed);
                let _ = Object::take(client);
                self.target.unavailable(what, &self.target.describe(&e))
            }
            Fail::Pg(e) => {
                self.healthy.store(true, Ordering::Relaxed);
                StoreError::Refused {
                    location: self.target.location.clone(),
                    what: what.to_owned(),
                    reason: self.target.describe(&e),
                }
            }
        }
    }

    /// The end of an operation run under [`OP_TIMEOUT`].
    fn settle<T>(&self, what: &str, client: Object, outcome: Outcome<T>) -> Result<T, StoreError> {
        match outcome {
            Ok(Ok(v)) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(fail)) => Err(self.failed(what, client, fail)),
            Err(_) => {
                self.healthy.store(false, Ordering::Relaxed);
                let _ = Object::take(client);
                Err(self.target.unavailable(
                    what,
                    &format!("no answer within {} s", OP_TIMEOUT.as_secs()),
                ))
            }
        }
    }

    fn parse(&self, identifier: &str, value: serde_json::Value) -> Result<TrustRecord, Fail> {
        serde_json::from_value::<TrustRecord>(value).map_err(|e| {
            Fail::Store(StoreError::CorruptRecord {
                location: self.target.location.clone(),
                identifier: identifier.to_owned(),
                reason: e.to_string(),
            })
        })
    }

    pub async fn get(&self, identifier: &str) -> Result<Option<TrustRecord>, StoreError> {
        let what = "read a trust record";
        let mut client = self.client(what).await?;
        let c = &mut client;
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            let stmt = c.prepare_cached(SQL_GET).await?;
            match c.query_opt(&stmt, &[&identifier]).await? {
                None => Ok(None),
                Some(row) => self.parse(identifier, row.try_get(0)?).map(Some),
            }
        })
        .await;
        let record = self.settle(what, client, outcome)?;
        Ok(record.map(|r| self.cache().merge(r)))
    }

    pub async fn snapshot(&self) -> Result<Vec<TrustRecord>, StoreError> {
        let what = "read the trust records";
        let mut client = self.client(what).await?;
        let c = &mut client;
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            let stmt = c.prepare_cached(SQL_SNAPSHOT).await?;
            let mut out = Vec::new();
            for row in c.query(&stmt, &[]).await? {
                let value: serde_json::Value = row.try_get(0)?;
                let id = value
                    .get("identifier")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_owned();
                out.push(self.parse(&id, value)?);
            }
            Ok(out)
        })
        .await;
        let records = self.settle(what, client, outcome)?;
        let mut cache = self.cache();
        Ok(records.into_iter().map(|r| cache.merge(r)).collect())
    }

    /// One transaction: create the default record if `create` and absent, lock the row, run
    /// `f` on it (with this host's unwritten liveness laid over it), write, commit. Liveness
    /// fields `f` did not change are written as the database had them (they stay this host's
    /// to flush). `Ok(None)` when the record is absent and not created.
    pub async fn apply<R: Send>(
        &self,
        identifier: &str,
        now: i64,
        create: bool,
        f: impl FnOnce(&mut TrustRecord) -> R + Send,
    ) -> Result<Option<R>, StoreError> {
        let what = "apply a trust change";
        self.saw(now);
        let mut client = self.client(what).await?;
        let c = &mut client;
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            let tx = c.transaction().await?;
            if create {
                let fresh = TrustRecord::new(identifier, now);
                let stmt = tx.prepare_cached(SQL_INSERT_DEFAULT).await?;
                tx.execute(&stmt, &[&identifier, &Json(&fresh)]).await?;
            }
            let stmt = tx.prepare_cached(SQL_LOCK).await?;
            let Some(row) = tx.query_opt(&stmt, &[&identifier]).await? else {
                tx.rollback().await?;
                return Ok(None);
            };
            let stored = self.parse(identifier, row.try_get(0)?)?;
            let mut record = stored.clone();
            let local = self.cache().dirty_liveness(identifier);
            if let Some(local) = local {
                local.put(&mut record);
            }
            let seen = LivenessFields::of(&record);
            let out = f(&mut record);
            let liveness_changed = LivenessFields::of(&record) != seen;
            let mut write = record.clone();
            if !liveness_changed {
                LivenessFields::of(&stored).put(&mut write);
            }
            if write != stored {
                let stmt = tx.prepare_cached(SQL_WRITE).await?;
                tx.execute(&stmt, &[&identifier, &Json(&write)]).await?;
            }
            tx.commit().await?;
            Ok(Some((out, record, liveness_changed)))
        })
        .await;
        match self.settle(what, client, outcome)? {
            None => Ok(None),
            Some((out, after, liveness_changed)) => {
                self.cache().applied(&after, liveness_changed);
                Ok(Some(out))
            }
        }
    }

    pub fn touch<R>(&self, identifier: &str, f: impl FnOnce(&mut TrustRecord) -> R) -> Option<R> {
        self.cache().touch(identifier, f)
    }

    /// Write every touched record's liveness in one statement (skipping followers whose live
    /// session another host holds: that host writes their liveness), and now and then delete
    /// old nonces, counts and claims. On failure everything stays to write next time.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let pending: Vec<PendingLiveness> = self.cache().pending();
        let housekeeping = {
            let last = self
                .last_housekeeping
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            last.is_none_or(|at| at.elapsed() >= HOUSEKEEPING_EVERY)
        };
        if pending.is_empty() && !housekeeping {
            return Ok(());
        }
        let what = "write liveness";
        let now = self.now();
        let mut client = self.client(what).await?;
        let c = &mut client;
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            if !pending.is_empty() {
                let ids: Vec<&str> = pending.iter().map(|p| p.identifier.as_str()).collect();
                let statuses: Vec<&str> =
                    pending.iter().map(|p| p.fields.status.as_str()).collect();
                let heartbeats: Vec<Option<i64>> =
                    pending.iter().map(|p| p.fields.last_heartbeat_at).collect();
                let authenticated: Vec<Option<i64>> = pending
                    .iter()
                    .map(|p| p.fields.last_authenticated_at)
                    .collect();
                let epochs: Vec<Option<i64>> =
                    pending.iter().map(|p| p.epoch.map(|e| e as i64)).collect();
                let stmt = c.prepare_cached(SQL_FLUSH).await?;
                c.execute(
                    &stmt,
                    &[&ids, &statuses, &heartbeats, &authenticated, &epochs, &now],
                )
                .await?;
            }
            if housekeeping {
                for (sql, before) in [
                    (SQL_FORGET_NONCES, now - NONCE_KEEP_SECS),
                    (SQL_FORGET_COUNTS, now - NONCE_KEEP_SECS),
                    (SQL_FORGET_CLAIMS, now - CLAIM_KEEP_SECS),
                ] {
                    let stmt = c.prepare_cached(sql).await?;
                    c.execute(&stmt, &[&before]).await?;
                }
            }
            Ok(())
        })
        .await;
        self.settle(what, client, outcome)?;
        self.cache().written(&pending);
        if housekeeping {
            *self
                .last_housekeeping
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let what = "answer a ping";
        let pinged = tokio::time::timeout(PING_TIMEOUT, async {
            let mut client = self.client(what).await?;
            let c = &mut client;
            let outcome = tokio::time::timeout(PING_TIMEOUT, async {
                c.simple_query("SELECT 1").await?;
                Ok(())
            })
            .await;
            self.settle(what, client, outcome)
        })
        .await;
        pinged.unwrap_or_else(|_| {
            self.healthy.store(false, Ordering::Relaxed);
            Err(self.target.unavailable(
                what,
                &format!("no answer within {} s", PING_TIMEOUT.as_secs()),
            ))
        })
    }

    /// Run one statement returning nothing but a row count.
    async fn execute(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let mut client = self.client(what).await?;
        let c = &mut client;
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            let stmt = c.prepare_cached(sql).await?;
            Ok(c.execute(&stmt, params).await?)
        })
        .await;
        self.settle(what, client, outcome)
    }

    /// Run one statement returning one row.
    async fn query_one(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, StoreError> {
        let mut client = self.client(what).await?;
        let c = &mut client;
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            let stmt = c.prepare_cached(sql).await?;
            Ok(c.query_one(&stmt, params).await?)
        })
        .await;
        self.settle(what, client, outcome)
    }

    pub async fn accept_nonce(
        &self,
        identifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.saw(now);
        let inserted = self
            .execute(
                "remember an authentication nonce",
                SQL_NONCE,
                &[&identifier, &nonce, &now],
            )
            .await?;
        Ok(inserted == 1)
    }

    pub async fn count_event(
        &self,
        key: &str,
        now: i64,
        window_secs: i64,
    ) -> Result<u32, StoreError> {
        self.saw(now);
        let window = window_secs.max(1);
        let what = "count a failure";
        let row = self
            .query_one(what, SQL_COUNT, &[&key, &now, &window])
            .await?;
        let count: i32 = row.try_get(0).map_err(|e| StoreError::Refused {
            location: self.target.location.clone(),
            what: what.to_owned(),
            reason: self.target.describe(&e),
        })?;
        Ok(u32::try_from(count).unwrap_or(0))
    }

    /// Upsert the claim (`if_free_at`: only if no other host holds a live claim at that time);
    /// the epoch comes from one sequence, so a later claim on an identifier always has a
    /// higher epoch than every earlier one, even after a release. `None`: another host holds
    /// it.
    pub async fn claim_session(
        &self,
        claim: &SessionClaim,
        if_free_at: Option<i64>,
    ) -> Result<Option<u64>, StoreError> {
        self.saw(claim.connected_since);
        let what = "claim a session";
        let conn = conn_to_sql(claim.conn_id);
        let mut client = self.client(what).await?;
        let c = &mut client;
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
                &claim.identifier,
                &claim.node,
                &conn,
                &claim.connected_since,
                &claim.remote,
                &claim.lease_until,
            ];
            let sql = match &if_free_at {
                None => SQL_CLAIM,
                Some(now) => {
                    params.push(now);
                    SQL_RECLAIM
                }
            };
            let stmt = c.prepare_cached(sql).await?;
            let row = c.query_opt(&stmt, &params).await?;
            match row {
                None => Ok(None),
                Some(row) => Ok(Some(row.try_get::<_, i64>(0)?)),
            }
        })
        .await;
        let Some(epoch) = self.settle(what, client, outcome)? else {
            return Ok(None);
        };
        let epoch = epoch.max(0) as u64;
        self.cache()
            .claimed(&claim.identifier, &claim.node, claim.conn_id, epoch);
        Ok(Some(epoch))
    }

    pub async fn release_session(
        &self,
        identifier: &str,
        node: &str,
        conn_id: u64,
    ) -> Result<(), StoreError> {
        self.execute(
            "release a session",
            SQL_RELEASE,
            &[&identifier, &node, &conn_to_sql(conn_id)],
        )
        .await?;
        self.cache().released(identifier, node, conn_id);
        Ok(())
    }

    pub async fn sync_claims(
        &self,
        node: &str,
        lease_until: i64,
        live: &[(String, u64)],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
        let conns: Vec<i64> = live.iter().map(|&(_, c)| conn_to_sql(c)).collect();
        self.execute(
            "renew session leases",
            SQL_SYNC,
            &[&node, &lease_until, &ids, &conns],
        )
        .await?;
        Ok(())
    }

    pub async fn claims(&self, now: i64) -> Result<Vec<SessionClaim>, StoreError> {
        self.saw(now);
        let what = "read session claims";
        let mut client = self.client(what).await?;
        let c = &mut client;
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            let stmt = c.prepare_cached(SQL_CLAIMS).await?;
            let mut out = Vec::new();
            for row in c.query(&stmt, &[&now]).await? {
                let epoch: i64 = row.try_get(3)?;
                out.push(SessionClaim {
                    identifier: row.try_get(0)?,
                    node: row.try_get(1)?,
                    conn_id: conn_from_sql(row.try_get(2)?),
                    epoch: epoch.max(0) as u64,
                    connected_since: row.try_get(4)?,
                    remote: row.try_get(5)?,
                    lease_until: row.try_get(6)?,
                });
            }
            Ok(out)
        })
        .await;
        self.settle(what, client, outcome)
    }
}

/// What `yonexus check` reports about the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `host:port/dbname`.
    pub location: String,
    /// The schema version (0: none yet).
    pub version: i32,
}

/// Connect once and read the schema version, changing nothing. An error says exactly why the
/// database cannot be used (never with the password).
pub async fn probe(url: &PostgresUrl) -> Result<Probe, StoreError> {
    let target = Target::from_config(url)?;
    let client = target.connect().await?;
    let read = tokio::time::timeout(OP_TIMEOUT, migrations::version(&client)).await;
    match read {
        Err(_) => Err(target.unavailable(
            "read the schema version",
            &format!("no answer within {} s", OP_TIMEOUT.as_secs()),
        )),
        Ok(Err(e)) => Err(target.unavailable("read the schema version", &target.describe(&e))),
        Ok(Ok(Found::Newer(v))) => Err(target.schema_too_new(v)),
        Ok(Ok(Found::Version(version))) => Ok(Probe {
            location: target.location,
            version,
        }),
    }
}

/// Bring the schema to the newest version (`yonexus migrate`). Returns the location and the
/// versions before and after.
pub async fn migrate(url: &PostgresUrl) -> Result<(String, i32, i32), StoreError> {
    let target = Target::from_config(url)?;
    let mut client = target.connect().await?;
    let migrated = tokio::time::timeout(MIGRATE_TIMEOUT, migrations::migrate(&mut client)).await;
    match migrated {
        Err(_) => Err(target.unavailable(
            "update the schema",
            &format!("no answer within {} s", MIGRATE_TIMEOUT.as_secs()),
        )),
        Ok(Err(e)) => Err(StoreError::Refused {
            location: target.location.clone(),
            what: "update the schema".into(),
            reason: target.describe(&e),
        }),
        Ok(Ok((Found::Newer(v), _))) => Err(target.schema_too_new(v)),
        Ok(Ok((Found::Version(before), after))) => Ok((target.location, before, after)),
    }
}
