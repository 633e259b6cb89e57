//! The trust store's contract (host/src/store/mod.rs), one suite run against both backends:
//! the embedded `trust.json` in a temporary directory, and PostgreSQL — a private server
//! started by the e2e harness (`yonexus_e2e::services::Postgres`: initdb in a temporary
//! directory, ephemeral port), one database per test. Two `Store`s on one database are two
//! hosts. The fault tests stop, kill and restart their own server.
//!
//! The embedded store is single-host by contract: it shares no nonces or counts and lists no
//! claims; those cases check its documented answers there.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use yonexus_e2e::bin;
use yonexus_e2e::services::Postgres;
use yonexus_host::config::{PostgresUrl, StoreConfig};
use yonexus_host::store::{
    load_file, migrations, postgres, Liveness, PairingStatus, SessionClaim, Store, StoreError,
    STATE_FILE,
};

/// An operation against a stopped server must fail within this (it takes milliseconds; the
/// bound is generous for a loaded machine, and far below "hanging").
const FAILS_WITHIN: Duration = Duration::from_secs(20);
/// How long a restarted server may take before the store answers again.
const RECOVERS_WITHIN: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Where the records live

/// One PostgreSQL server for the tests that do not stop it, stopped when the process exits
/// (statics are never dropped, so an atexit hook drops it).
static SHARED_PG: OnceLock<Mutex<Option<Postgres>>> = OnceLock::new();

extern "C" fn stop_shared_pg() {
    if let Some(m) = SHARED_PG.get() {
        let mut guard = m.lock().unwrap_or_else(|p| p.into_inner());
        drop(guard.take());
    }
}

fn shared_pg() -> MutexGuard<'static, Option<Postgres>> {
    SHARED_PG
        .get_or_init(|| {
            let pg = Postgres::start().expect("starting the private PostgreSQL");
            // SAFETY: registers a plain function without arguments.
            unsafe { libc::atexit(stop_shared_pg) };
            Mutex::new(Some(pg))
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    File,
    Postgres,
}

/// The storage one test uses, and how to open stores on it.
struct Place {
    kind: Kind,
    dir: tempfile::TempDir,
    config: StoreConfig,
    /// The test's database (Postgres).
    database: String,
}

fn pg_config(url: String) -> StoreConfig {
    StoreConfig::Postgres(PostgresUrl {
        url: Some(url),
        url_env: None,
    })
}

fn fresh_database(pg: &Postgres) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let url = pg.create_database(&name).expect("creating a test database");
    (name, url)
}

impl Place {
    fn new(kind: Kind) -> Place {
        let dir = tempfile::tempdir().unwrap();
        let (config, database) = match kind {
            Kind::File => (StoreConfig::File, String::new()),
            Kind::Postgres => {
                let guard = shared_pg();
                let pg = guard.as_ref().expect("the shared PostgreSQL is running");
                let (name, url) = fresh_database(pg);
                (pg_config(url), name)
            }
        };
        Place {
            kind,
            dir,
            config,
            database,
        }
    }

    /// A store on this place: for PostgreSQL, another host.
    async fn open(&self) -> Store {
        Store::open(&self.config, self.dir.path())
            .await
            .unwrap_or_else(|e| panic!("opening the {:?} store: {e}", self.kind))
    }

    /// Run SQL on this test's database (PostgreSQL only).
    fn psql(&self, sql: &str) -> String {
        let guard = shared_pg();
        let pg = guard.as_ref().expect("the shared PostgreSQL is running");
        pg.psql(&self.database, sql).expect("psql")
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `file_<case>` and `postgres_<case>` tests running `case(&Place)`.
macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[test]
            fn file() {
                let place = super::Place::new(super::Kind::File);
                super::runtime().block_on(super::$case(&place));
            }
            #[test]
            fn postgres() {
                let place = super::Place::new(super::Kind::Postgres);
                super::runtime().block_on(super::$case(&place));
            }
        }
    };
}

fn claim(identifier: &str, node: &str, conn_id: u64, now: i64, lease: i64) -> SessionClaim {
    SessionClaim {
        identifier: identifier.into(),
        node: node.into(),
        conn_id,
        epoch: 0,
        connected_since: now,
        remote: "127.0.0.1:5000".into(),
        lease_until: now + lease,
    }
}

// ---------------------------------------------------------------------------------------------
// The contract, on both backends

both!(apply_get_round_trip_is_durable_before_return);
async fn apply_get_round_trip_is_durable_before_return(place: &Place) {
    let store = place.open().await;
    let out = store
        .apply("alpha", 100, |r| {
            r.secret = Some("s3cret-value".into());
            r.public_key = Some("key".into());
            r.pairing_status = PairingStatus::Paired;
            r.paired_at = Some(100);
            r.updated_at = 100;
            "done"
        })
        .await
        .unwrap();
    assert_eq!(out, "done");
    let got = store.get("alpha").await.unwrap().unwrap();
    assert!(got.is_paired());
    assert_eq!(got.created_at, 100);
    assert_eq!(got.public_key.as_deref(), Some("key"));
    // Durable when apply returned: a store opened afterwards (another host) reads it.
    let other = place.open().await;
    let again = other.get("alpha").await.unwrap().unwrap();
    assert_eq!(again, got);
    // Kept in the trust.json shape.
    match place.kind {
        Kind::File => {
            let on_disk = load_file(&place.dir.path().join(STATE_FILE)).unwrap();
            assert_eq!(on_disk["alpha"], got);
        }
        Kind::Postgres => {
            let row = place.psql(
                "SELECT record->>'pairingStatus', record->>'secret', record->>'pairedAt' \
                 FROM followers WHERE identifier = 'alpha'",
            );
            assert_eq!(row, "paired|s3cret-value|100");
        }
    }
    assert!(store.healthy());
    store.ping().await.unwrap();
    assert!(!store.describe().is_empty());
}

both!(apply_creates_and_apply_existing_does_not);
async fn apply_creates_and_apply_existing_does_not(place: &Place) {
    let store = place.open().await;
    assert_eq!(store.apply_existing("nobody", |_| 1).await.unwrap(), None);
    assert!(store.get("nobody").await.unwrap().is_none());
    assert!(store.touch("nobody", |_| ()).is_none());
    // A change that changes nothing still creates the default record.
    store.apply("beta", 7, |_| ()).await.unwrap();
    let beta = store.get("beta").await.unwrap().unwrap();
    assert_eq!((beta.created_at, beta.updated_at), (7, 7));
    assert_eq!(beta.pairing_status, PairingStatus::Unpaired);
    let n = store
        .apply_existing("beta", |r| {
            r.pairing_attempts += 1;
            r.pairing_attempts
        })
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    let other = place.open().await;
    assert_eq!(
        other.get("beta").await.unwrap().unwrap().pairing_attempts,
        1
    );
}

both!(a_failed_apply_undoes_only_its_change);
async fn a_failed_apply_undoes_only_its_change(place: &Place) {
    let store = place.open().await;
    store
        .apply("alpha", 1, |r| r.pairing_status = PairingStatus::Pending)
        .await
        .unwrap();
    store
        .apply("other", 1, |r| r.pairing_attempts = 2)
        .await
        .unwrap();
    store.get("alpha").await.unwrap();
    store.touch("alpha", |r| r.last_heartbeat_at = Some(7));
    let (failed, created) = match place.kind {
        Kind::File => {
            // A directory the store cannot write (as root, permissions do not stop it: then
            // the directory is gone).
            let state = place.dir.path();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o500)).unwrap();
            let blocked = std::fs::File::create(state.join("probe")).is_err();
            if !blocked {
                std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700)).unwrap();
                std::fs::remove_dir_all(state).unwrap();
            }
            let failed = store
                .apply("alpha", 2, |r| {
                    r.secret = Some("sekrit".into());
                    r.pairing_status = PairingStatus::Paired;
                })
                .await;
            let created = store
                .apply("gamma", 2, |r| r.pairing_status = PairingStatus::Pending)
                .await;
            if blocked {
                std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
            assert!(
                matches!(failed, Err(StoreError::Write { .. })),
                "{failed:?}"
            );
            (failed, created)
        }
        Kind::Postgres => {
            // The database refuses the write (a record filed under another identifier breaks
            // a constraint) after the change was made in the transaction.
            let failed = store
                .apply("alpha", 2, |r| {
                    r.secret = Some("sekrit".into());
                    r.pairing_status = PairingStatus::Paired;
                    r.identifier = "mallory".into();
                })
                .await;
            let created = store
                .apply("gamma", 2, |r| r.identifier = "mallory".into())
                .await;
            assert!(
                matches!(failed, Err(StoreError::Refused { .. })),
                "{failed:?}"
            );
            let text = failed.as_ref().unwrap_err().to_string();
            assert!(!text.contains("sekrit"), "{text}");
            // The database answered: the store is healthy.
            assert!(store.healthy());
            (failed, created)
        }
    };
    assert!(failed.is_err());
    assert!(created.is_err(), "{created:?}");
    let alpha = store.get("alpha").await.unwrap().unwrap();
    assert_eq!(alpha.pairing_status, PairingStatus::Pending, "undone");
    assert!(alpha.secret.is_none());
    assert_eq!(alpha.last_heartbeat_at, Some(7), "the touch survives");
    assert!(store.get("gamma").await.unwrap().is_none(), "not created");
    assert_eq!(
        store.get("other").await.unwrap().unwrap().pairing_attempts,
        2,
        "other records are untouched"
    );
    if place.kind == Kind::Postgres {
        assert!(place.open().await.get("mallory").await.unwrap().is_none());
    }
}

both!(touch_is_lazy_and_flush_writes_it);
async fn touch_is_lazy_and_flush_writes_it(place: &Place) {
    let a = place.open().await;
    a.apply("alpha", 1, |r| r.pairing_status = PairingStatus::Paired)
        .await
        .unwrap();
    a.apply("beta", 1, |_| ()).await.unwrap();
    if place.kind == Kind::Postgres {
        // Count the row writes the flush makes.
        place.psql(
            "CREATE TABLE writes (n integer NOT NULL); INSERT INTO writes VALUES (0);
             CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN UPDATE writes SET n = n + 1; RETURN NEW; END $$;
             CREATE TRIGGER count_writes AFTER UPDATE ON followers
               FOR EACH ROW EXECUTE FUNCTION count_write();",
        );
    }
    // Heartbeats: many touches, nothing written yet.
    for t in 2..=50 {
        a.touch("alpha", |r| {
            r.status = Liveness::Online;
            r.last_heartbeat_at = Some(t);
            r.last_authenticated_at = Some(2);
        })
        .unwrap();
    }
    let seen_here = a.get("alpha").await.unwrap().unwrap();
    assert_eq!(seen_here.last_heartbeat_at, Some(50), "merged on this host");
    assert_eq!(seen_here.status, Liveness::Online);
    let stored = || async {
        match place.kind {
            Kind::File => load_file(&place.dir.path().join(STATE_FILE)).unwrap()["alpha"].clone(),
            Kind::Postgres => place.open().await.get("alpha").await.unwrap().unwrap(),
        }
    };
    assert_eq!(stored().await.last_heartbeat_at, None, "not written yet");
    assert_eq!(stored().await.status, Liveness::Offline);
    a.flush().await.unwrap();
    let written = stored().await;
    assert_eq!(written.last_heartbeat_at, Some(50));
    assert_eq!(written.last_authenticated_at, Some(2));
    assert_eq!(written.status, Liveness::Online);
    assert_eq!(written.pairing_status, PairingStatus::Paired, "trust kept");
    if place.kind == Kind::Postgres {
        assert_eq!(
            place.psql("SELECT n FROM writes"),
            "1",
            "one write for 49 touches"
        );
        // Nothing touched since: a flush writes nothing.
        a.flush().await.unwrap();
        assert_eq!(place.psql("SELECT n FROM writes"), "1");
    }
    // A trust change meanwhile keeps the unwritten liveness and the change.
    a.touch("alpha", |r| r.last_heartbeat_at = Some(60));
    a.apply_existing("alpha", |r| r.pairing_attempts = 1)
        .await
        .unwrap();
    a.flush().await.unwrap();
    let both = stored().await;
    assert_eq!(
        (both.last_heartbeat_at, both.pairing_attempts),
        (Some(60), 1)
    );
}

both!(snapshot_lists_every_record_with_local_liveness);
async fn snapshot_lists_every_record_with_local_liveness(place: &Place) {
    let store = place.open().await;
    for (i, id) in ["charlie", "alpha", "bravo"].iter().enumerate() {
        store
            .apply(id, i as i64, |r| r.pairing_attempts = i as u32)
            .await
            .unwrap();
    }
    store
        .touch("bravo", |r| r.status = Liveness::Unstable)
        .unwrap();
    let all = store.snapshot().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.identifier.as_str()).collect();
    assert_eq!(ids, ["alpha", "bravo", "charlie"]);
    assert_eq!(all[1].status, Liveness::Unstable);
    assert_eq!(all[2].pairing_attempts, 0);
    // A snapshot on a fresh store makes every record touchable (the host marks them offline
    // at start).
    let fresh = place.open().await;
    if place.kind == Kind::Postgres {
        assert!(fresh.touch("alpha", |_| ()).is_none(), "not read yet");
    }
    assert_eq!(fresh.snapshot().await.unwrap().len(), 3);
    assert!(fresh.touch("alpha", |_| ()).is_some());
}

both!(nonces_are_accepted_once);
async fn nonces_are_accepted_once(place: &Place) {
    let a = place.open().await;
    let b = place.open().await;
    assert!(a.accept_nonce("alpha", "n1", 100).await.unwrap());
    match place.kind {
        // Single host: the guard remembers nonces; the store shares none.
        Kind::File => assert!(b.accept_nonce("alpha", "n1", 100).await.unwrap()),
        Kind::Postgres => {
            assert!(
                !b.accept_nonce("alpha", "n1", 101).await.unwrap(),
                "replay on B"
            );
            assert!(
                !a.accept_nonce("alpha", "n1", 101).await.unwrap(),
                "replay on A"
            );
            assert!(b.accept_nonce("alpha", "n2", 101).await.unwrap());
            assert!(b.accept_nonce("bravo", "n1", 101).await.unwrap());
            // Concurrent: exactly one host accepts a nonce.
            for i in 0..20 {
                let nonce = format!("race-{i}");
                let (x, y) = tokio::join!(
                    a.accept_nonce("alpha", &nonce, 102),
                    b.accept_nonce("alpha", &nonce, 102)
                );
                assert!(
                    x.unwrap() ^ y.unwrap(),
                    "exactly one of two hosts accepts {nonce}"
                );
            }
            // Forgotten a minute later (flush deletes them): the proof is stale by then.
            a.accept_nonce("alpha", "late", 100 + 3 * postgres::NONCE_KEEP_SECS)
                .await
                .unwrap();
            a.flush().await.unwrap();
            assert_eq!(
                place.psql("SELECT count(*) FROM auth_nonces WHERE nonce = 'n1'"),
                "0"
            );
            assert_eq!(
                place.psql("SELECT count(*) FROM auth_nonces WHERE nonce = 'late'"),
                "1"
            );
        }
    }
}

both!(event_counts_are_shared_per_window);
async fn event_counts_are_shared_per_window(place: &Place) {
    let a = place.open().await;
    let b = place.open().await;
    match place.kind {
        Kind::File => assert_eq!(a.count_event("addr:x", 100, 60).await.unwrap(), None),
        Kind::Postgres => {
            async fn count(s: &Store, key: &str, now: i64) -> u32 {
                s.count_event(key, now, 60).await.unwrap().unwrap()
            }
            assert_eq!(count(&a, "addr:x", 100).await, 1);
            assert_eq!(count(&b, "addr:x", 110).await, 2);
            assert_eq!(count(&a, "addr:x", 159).await, 3);
            assert_eq!(count(&b, "login:y", 159).await, 1, "per key");
            assert_eq!(count(&b, "addr:x", 160).await, 1, "a new window");
            assert_eq!(count(&a, "addr:x", 161).await, 2);
            // A host whose clock is a little behind counts into the current window.
            assert_eq!(count(&b, "addr:x", 150).await, 3);
            // Concurrent counts are all counted.
            let (x, y) = tokio::join!(
                async {
                    for _ in 0..10 {
                        count(&a, "addr:z", 200).await;
                    }
                },
                async {
                    for _ in 0..10 {
                        count(&b, "addr:z", 200).await;
                    }
                }
            );
            let _ = (x, y);
            assert_eq!(count(&a, "addr:z", 201).await, 21);
        }
    }
}

both!(concurrent_claims_get_distinct_epochs_and_one_winner);
async fn concurrent_claims_get_distinct_epochs_and_one_winner(place: &Place) {
    let a = place.open().await;
    let other = place.open().await;
    // The embedded store is one host: both claims go through it.
    let b = if place.kind == Kind::File { &a } else { &other };
    let now = 1_000;
    let mut last = 0;
    for round in 0..15u64 {
        let (ca, cb) = (
            claim("alpha", "node-a", round, now, 30),
            claim("alpha", "node-b", round, now, 30),
        );
        let (x, y) = tokio::join!(a.claim_session(&ca, None), b.claim_session(&cb, None));
        let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
        assert_ne!(x, y, "round {round}: distinct epochs");
        assert!(
            x.min(y) > last,
            "round {round}: epochs only grow ({x}, {y} after {last})"
        );
        last = x.max(y);
        match place.kind {
            Kind::File => assert!(a.claims(now).await.unwrap().is_empty()),
            Kind::Postgres => {
                let live = b.claims(now).await.unwrap();
                assert_eq!(live.len(), 1, "{live:?}");
                let winner = if x > y { "node-a" } else { "node-b" };
                assert_eq!(live[0].node, winner, "the highest epoch is the live claim");
                assert_eq!(live[0].epoch, last);
                assert_eq!(live[0].conn_id, round);
            }
        }
    }
}

both!(release_only_by_the_owner_and_leases_expire);
async fn release_only_by_the_owner_and_leases_expire(place: &Place) {
    let a = place.open().await;
    let other = place.open().await;
    let b = if place.kind == Kind::File { &a } else { &other };
    let now = 5_000;
    let first = a
        .claim_session(&claim("alpha", "node-a", u64::MAX, now, 10), None)
        .await
        .unwrap()
        .unwrap();
    let second = b
        .claim_session(&claim("alpha", "node-b", 2, now, 10), None)
        .await
        .unwrap()
        .unwrap();
    assert!(second > first);
    a.release_session("alpha", "node-a", u64::MAX)
        .await
        .unwrap();
    if place.kind == Kind::File {
        assert!(a.claims(now).await.unwrap().is_empty());
        a.sync_claims("node-a", now + 100, &[]).await.unwrap();
        return;
    }
    let live = a.claims(now).await.unwrap();
    assert_eq!(live.len(), 1, "not released by a host that lost it");
    assert_eq!((live[0].node.as_str(), live[0].epoch), ("node-b", second));
    b.release_session("alpha", "node-b", 3).await.unwrap();
    assert_eq!(a.claims(now).await.unwrap().len(), 1, "another connection");
    b.release_session("alpha", "node-b", 2).await.unwrap();
    assert!(
        a.claims(now).await.unwrap().is_empty(),
        "released by its owner"
    );
    // A claim after a release still has a higher epoch.
    let third = a
        .claim_session(&claim("alpha", "node-a", u64::MAX, now, 10), None)
        .await
        .unwrap()
        .unwrap();
    assert!(third > second);
    let c = a.claims(now).await.unwrap();
    assert_eq!(c[0].conn_id, u64::MAX, "conn ids round-trip");
    a.claim_session(&claim("bravo", "node-a", 4, now, 10), None)
        .await
        .unwrap()
        .unwrap();
    b.claim_session(&claim("charlie", "node-b", 5, now, 10), None)
        .await
        .unwrap()
        .unwrap();
    // Leases hold until lease_until, then the claims are gone unless renewed.
    assert_eq!(a.claims(now + 10).await.unwrap().len(), 3);
    assert!(a.claims(now + 11).await.unwrap().is_empty());
    a.sync_claims(
        "node-a",
        now + 40,
        &[("alpha".into(), u64::MAX), ("bravo".into(), 4)],
    )
    .await
    .unwrap();
    let live: Vec<String> = b
        .claims(now + 30)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.identifier)
        .collect();
    assert_eq!(
        live,
        ["alpha", "bravo"],
        "only node-a's claims were renewed"
    );
    // A sync drops the node's claims of connections that are gone, and only the node's.
    a.sync_claims("node-a", now + 40, &[("alpha".into(), u64::MAX)])
        .await
        .unwrap();
    let live: Vec<String> = b
        .claims(now)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.identifier)
        .collect();
    assert_eq!(
        live,
        ["alpha", "charlie"],
        "bravo's ended connection dropped"
    );
    a.sync_claims("node-a", now, &[]).await.unwrap();
    let live: Vec<String> = b
        .claims(now)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.node)
        .collect();
    assert_eq!(
        live,
        ["node-b"],
        "a host shutting down drops all of its claims"
    );
}

both!(a_reclaim_never_takes_a_live_claim_of_another_host);
async fn a_reclaim_never_takes_a_live_claim_of_another_host(place: &Place) {
    let a = place.open().await;
    let other = place.open().await;
    let b = if place.kind == Kind::File { &a } else { &other };
    let now = 8_000;
    let first = a
        .claim_session(&claim("alpha", "node-a", 1, now, 30), None)
        .await
        .unwrap()
        .unwrap();
    let newer = b
        .claim_session(&claim("alpha", "node-b", 2, now, 30), None)
        .await
        .unwrap()
        .unwrap();
    assert!(newer > first);
    let reclaimed = a
        .claim_session(&claim("alpha", "node-a", 1, now, 30), Some(now))
        .await
        .unwrap();
    if place.kind == Kind::File {
        assert!(reclaimed.is_some(), "one host: nobody else can hold it");
        return;
    }
    assert_eq!(reclaimed, None, "node-b holds a live claim");
    // Once that lease has run out, the session may be claimed again.
    let later = a
        .claim_session(&claim("alpha", "node-a", 1, now + 31, 30), Some(now + 31))
        .await
        .unwrap();
    assert!(later.is_some_and(|e| e > newer), "{later:?}");
    // Its own claim it may always renew that way.
    let again = a
        .claim_session(&claim("alpha", "node-a", 1, now + 31, 30), Some(now + 31))
        .await
        .unwrap();
    assert!(again > later);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: several hosts, schema, faults, CLI

#[test]
fn liveness_of_a_follower_is_written_by_the_host_holding_its_session() {
    let place = Place::new(Kind::Postgres);
    runtime().block_on(async {
        let a = place.open().await;
        let b = place.open().await;
        let now = 10_000;
        a.apply("alpha", now, |r| r.pairing_status = PairingStatus::Paired)
            .await
            .unwrap();
        a.get("alpha").await.unwrap();
        b.get("alpha").await.unwrap();
        a.claim_session(&claim("alpha", "node-a", 1, now, 30), None)
            .await
            .unwrap()
            .unwrap();
        a.touch("alpha", |r| r.status = Liveness::Online);
        a.flush().await.unwrap();
        // The follower moves to B; A's late "offline" must not overwrite B's "online".
        b.claim_session(&claim("alpha", "node-b", 1, now + 1, 30), None)
            .await
            .unwrap()
            .unwrap();
        b.touch("alpha", |r| {
            r.status = Liveness::Online;
            r.last_authenticated_at = Some(now + 1);
        });
        b.flush().await.unwrap();
        a.touch("alpha", |r| r.status = Liveness::Offline);
        a.flush().await.unwrap();
        let seen = place.open().await.get("alpha").await.unwrap().unwrap();
        assert_eq!(seen.status, Liveness::Online);
        assert_eq!(seen.last_authenticated_at, Some(now + 1));
        // Once B's lease has run out (B crashed), anyone's liveness is written.
        a.claims(now + 100).await.unwrap();
        a.touch("alpha", |r| r.status = Liveness::Unstable);
        a.touch("alpha", |r| r.status = Liveness::Offline);
        a.flush().await.unwrap();
        let seen = place.open().await.get("alpha").await.unwrap().unwrap();
        assert_eq!(seen.status, Liveness::Offline);
    });
}

#[test]
fn pairing_started_on_one_host_is_confirmed_on_another() {
    let place = Place::new(Kind::Postgres);
    runtime().block_on(async {
        let a = place.open().await;
        let b = place.open().await;
        a.apply("alpha", 10, |r| {
            r.pairing_status = PairingStatus::Pending;
            r.pairing_code = Some("CODE-1".into());
            r.pairing_expires_at = Some(310);
        })
        .await
        .unwrap();
        // Both hosts confirm at once: exactly one issues the secret.
        async fn confirm(s: &Store, secret: &str) -> Result<Option<bool>, StoreError> {
            s.apply_existing("alpha", move |r| {
                if r.live_pending(20) && r.pairing_code.as_deref() == Some("CODE-1") {
                    r.clear_pairing();
                    r.secret = Some(secret.into());
                    r.pairing_status = PairingStatus::Paired;
                    true
                } else {
                    false
                }
            })
            .await
        }
        let (x, y) = tokio::join!(confirm(&a, "from-a"), confirm(&b, "from-b"));
        let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
        assert!(x ^ y, "one confirmation wins ({x}, {y})");
        let winner = if x { "from-a" } else { "from-b" };
        for s in [&a, &b] {
            let r = s.get("alpha").await.unwrap().unwrap();
            assert_eq!(r.secret.as_deref(), Some(winner));
            assert!(r.pairing_code.is_none());
        }
        // Revoked on B: A reads it revoked.
        b.apply_existing("alpha", |r| r.revoke(30)).await.unwrap();
        let r = a.get("alpha").await.unwrap().unwrap();
        assert_eq!(r.pairing_status, PairingStatus::Revoked);
        assert!(r.secret.is_none());
    });
}

#[test]
fn schema_is_versioned_idempotent_and_a_newer_one_is_refused() {
    let place = Place::new(Kind::Postgres);
    let url = match &place.config {
        StoreConfig::Postgres(u) => u.clone(),
        StoreConfig::File => unreachable!(),
    };
    runtime().block_on(async {
        let probe = postgres::probe(&url).await.unwrap();
        assert_eq!(probe.version, 0, "nothing yet");
        // Two hosts starting at once: both get the schema, created once.
        let (a, b) = tokio::join!(
            Store::open(&place.config, place.dir.path()),
            Store::open(&place.config, place.dir.path())
        );
        a.unwrap();
        b.unwrap();
        let latest = migrations::LATEST.to_string();
        assert_eq!(
            place.psql("SELECT count(*), max(version) FROM yonexus_schema_version"),
            format!("{latest}|{latest}")
        );
        let (location, before, after) = postgres::migrate(&url).await.unwrap();
        assert_eq!((before, after), (migrations::LATEST, migrations::LATEST));
        assert!(location.starts_with("127.0.0.1:"), "{location}");
        assert!(
            location.ends_with(&format!("/{}", place.database)),
            "{location}"
        );
        assert_eq!(
            postgres::probe(&url).await.unwrap().version,
            migrations::LATEST
        );
        // A newer host migrated it further: this one refuses to use it.
        let newer = migrations::LATEST + 1;
        place.psql(&format!(
            "INSERT INTO yonexus_schema_version (version, description) VALUES ({newer}, 'future')"
        ));
        let err = match Store::open(&place.config, place.dir.path()).await {
            Ok(_) => panic!("opened a newer schema"),
            Err(e) => e,
        };
        assert!(
            matches!(err, StoreError::Schema { found, .. } if found == newer),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("version {newer}")) && text.contains("upgrade"),
            "{text}"
        );
        assert!(postgres::migrate(&url).await.is_err());
        assert!(postgres::probe(&url).await.is_err());
    });
}

#[test]
fn the_url_and_password_never_appear_in_errors() {
    let (url, port) = {
        let guard = shared_pg();
        let pg = guard.as_ref().unwrap();
        (pg.url(), pg.port())
    };
    let password = "Wr0ngPassw0rdXyz";
    let wrong = format!("postgres://yonexus:{password}@127.0.0.1:{port}/yonexus");
    assert_ne!(wrong, url);
    let closed_port = yonexus_e2e::services::free_port().unwrap();
    let nowhere = format!("postgres://yonexus:{password}@127.0.0.1:{closed_port}/yonexus");
    runtime().block_on(async {
        for (url, expect) in [
            (&wrong, "password authentication failed"),
            (&nowhere, "refused"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let err = match Store::open(&pg_config(url.clone()), dir.path()).await {
                Ok(_) => panic!("opened with a wrong URL"),
                Err(e) => e,
            };
            assert!(started.elapsed() < FAILS_WITHIN);
            let text = err.to_string();
            assert!(matches!(err, StoreError::Unavailable(_)), "{text}");
            assert!(!text.contains(password), "{text}");
            assert!(text.contains("127.0.0.1:"), "names the server: {text}");
            assert!(text.to_lowercase().contains(expect), "{text}");
            let probe = postgres::probe(&PostgresUrl {
                url: Some(url.clone()),
                url_env: None,
            })
            .await
            .unwrap_err()
            .to_string();
            assert!(!probe.contains(password), "{probe}");
        }
    });
}

/// The record `apply` wrote before the crash, read after it.
#[test]
fn postgres_down_is_unavailable_quickly_and_the_store_recovers() {
    let mut pg = Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = pg_config(pg.url());
    let rt = runtime();
    let (a, b) = rt.block_on(async {
        let a = Store::open(&config, dir.path()).await.unwrap();
        let b = Store::open(&config, dir.path()).await.unwrap();
        a.apply("alpha", 1, |r| r.pairing_status = PairingStatus::Paired)
            .await
            .unwrap();
        a.get("alpha").await.unwrap();
        (a, b)
    });
    // Acknowledged, then the server crashes: nothing acknowledged is lost.
    pg.kill();
    pg.restart().unwrap();
    rt.block_on(async {
        wait_until_answering(&b).await;
        let r = b.get("alpha").await.unwrap().unwrap();
        assert_eq!(r.pairing_status, PairingStatus::Paired);
    });
    pg.stop();
    rt.block_on(async {
        a.touch("alpha", |r| r.last_heartbeat_at = Some(99))
            .unwrap();
        let started = Instant::now();
        let err = a.get("alpha").await.unwrap_err();
        assert!(started.elapsed() < FAILS_WITHIN, "{:?}", started.elapsed());
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert!(!a.healthy());
        let started = Instant::now();
        let failed = a
            .apply("alpha", 2, |r| r.pairing_status = PairingStatus::Revoked)
            .await;
        assert!(
            matches!(failed, Err(StoreError::Unavailable(_))),
            "{failed:?}"
        );
        assert!(a.flush().await.is_err(), "liveness kept for later");
        assert!(a.ping().await.is_err());
        assert!(a.accept_nonce("alpha", "n", 2).await.is_err());
        assert!(a
            .claim_session(&claim("alpha", "node-a", 1, 2, 30), None)
            .await
            .is_err());
        assert!(
            started.elapsed() < FAILS_WITHIN * 2,
            "{:?}",
            started.elapsed()
        );
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(
            Store::open(&config, other.path()).await,
            Err(StoreError::Unavailable(_))
        ));
        // Existing sessions keep their liveness in memory meanwhile.
        assert!(a.touch("alpha", |r| r.status = Liveness::Online).is_some());
    });
    pg.restart().unwrap();
    rt.block_on(async {
        wait_until_answering(&a).await;
        assert!(a.healthy());
        a.flush().await.unwrap();
        let r = b.get("alpha").await.unwrap().unwrap();
        assert_eq!(
            r.last_heartbeat_at,
            Some(99),
            "the failed flush was retried"
        );
        assert_eq!(r.status, Liveness::Online);
        assert_eq!(
            r.pairing_status,
            PairingStatus::Paired,
            "the failed apply left nothing"
        );
        a.apply("alpha", 3, |r| r.pairing_attempts = 5)
            .await
            .unwrap();
        assert_eq!(b.get("alpha").await.unwrap().unwrap().pairing_attempts, 5);
    });
}

/// docs/store.md's import of an existing trust.json, and its least-privilege role for hosts
/// (the owner migrates; hosts only read and write rows), checked as written there.
#[test]
fn trust_json_imports_and_hosts_run_with_a_row_only_role() {
    let file_place = Place::new(Kind::File);
    let place = Place::new(Kind::Postgres);
    runtime().block_on(async {
        let file = file_place.open().await;
        file.apply("alpha", 5, |r| {
            r.secret = Some("imported-secret".into());
            r.pairing_status = PairingStatus::Paired;
            r.last_heartbeat_at = Some(9);
        })
        .await
        .unwrap();
        file.apply("bravo", 6, |r| r.pairing_status = PairingStatus::Revoked)
            .await
            .unwrap();
        // The schema first (`yonexus migrate`), then the rows, with the recipe as written.
        drop(place.open().await);
        let url = match &place.config {
            StoreConfig::Postgres(u) => u.url.clone().unwrap(),
            StoreConfig::File => unreachable!(),
        };
        let trust = file_place.dir.path().join(STATE_FILE);
        let recipe = format!(
            "\\set trust `cat {}`\n\
             INSERT INTO followers (identifier, record)\n\
             SELECT key, value FROM jsonb_each((:'trust')::jsonb -> 'followers')\n\
             ON CONFLICT (identifier) DO NOTHING;\n",
            trust.display()
        );
        let docs =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/store.md"))
                .unwrap();
        let documented =
            recipe.replace(&trust.display().to_string(), "/var/lib/yonexus/trust.json");
        assert!(
            docs.contains(&documented),
            "docs/store.md shows:\n{documented}"
        );
        let psql = std::process::Command::new(yonexus_e2e::services::psql_bin().unwrap())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url])
            .stdin(std::process::Stdio::piped())
            .output_with(recipe.as_bytes());
        assert!(
            psql.status.success(),
            "{}",
            String::from_utf8_lossy(&psql.stderr)
        );
        place.psql(
            "CREATE ROLE yx_host_role LOGIN PASSWORD 'host-role-pw';
             GRANT SELECT, INSERT, UPDATE, DELETE ON followers, auth_nonces, rate_counts, sessions
                 TO yx_host_role;
             GRANT SELECT ON yonexus_schema_version TO yx_host_role;
             GRANT USAGE ON SEQUENCE session_epochs TO yx_host_role;",
        );
        let port = shared_pg().as_ref().unwrap().port();
        let host_url = format!(
            "postgres://yx_host_role:host-role-pw@127.0.0.1:{port}/{}",
            place.database
        );
        let host = Store::open(&pg_config(host_url), place.dir.path())
            .await
            .unwrap();
        assert_eq!(
            host.snapshot().await.unwrap(),
            file.snapshot().await.unwrap()
        );
        host.apply("charlie", 7, |r| r.pairing_attempts = 1)
            .await
            .unwrap();
        host.touch("alpha", |r| r.status = Liveness::Online)
            .unwrap();
        host.flush().await.unwrap();
        assert!(host.accept_nonce("alpha", "n", 7).await.unwrap());
        assert_eq!(host.count_event("addr:x", 7, 60).await.unwrap(), Some(1));
        let epoch = host
            .claim_session(&claim("alpha", "node-a", 1, 7, 30), None)
            .await
            .unwrap()
            .unwrap();
        assert!(epoch > 0);
        host.sync_claims("node-a", 60, &[("alpha".into(), 1)])
            .await
            .unwrap();
        host.release_session("alpha", "node-a", 1).await.unwrap();
        place.psql("DROP OWNED BY yx_host_role; DROP ROLE yx_host_role");
    });
}

/// A Unix-socket URL (the socket directory percent-encoded as the host).
#[test]
fn a_unix_socket_url_connects() {
    let place = Place::new(Kind::Postgres);
    let (dir, port) = {
        let guard = shared_pg();
        let pg = guard.as_ref().unwrap();
        (pg.socket_dir(), pg.port())
    };
    let encoded = dir.to_string_lossy().replace('/', "%2F");
    let url = format!("postgres://yonexus@{encoded}:{port}/{}", place.database);
    runtime().block_on(async {
        let store = Store::open(&pg_config(url), place.dir.path())
            .await
            .unwrap();
        store.apply("alpha", 1, |_| ()).await.unwrap();
        let shown = store.describe();
        assert!(
            shown.contains(&dir.to_string_lossy().into_owned()),
            "{shown}"
        );
        assert!(
            shown.ends_with(&format!(":{port}/{}", place.database)),
            "{shown}"
        );
    });
}

/// Run a command with `input` on its stdin.
trait OutputWith {
    fn output_with(&mut self, input: &[u8]) -> std::process::Output;
}

impl OutputWith for std::process::Command {
    fn output_with(&mut self, input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

/// The server and every backend process it forked.
fn server_processes(pg: &mut Postgres) -> Vec<i32> {
    let Some(master) = pg.pid() else {
        return Vec::new();
    };
    let mut pids = vec![master as i32];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so read after the last ')'.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(master) {
            pids.push(pid);
        }
    }
    pids
}

fn signal_all(pids: &[i32], signal: i32) {
    for pid in pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(*pid, signal) };
    }
}

/// A server that stops answering (frozen, as behind a network partition) gives Unavailable
/// after the answer timeout, never a hang; when it answers again, so does the store.
#[test]
fn a_database_that_stops_answering_times_out_and_recovers() {
    let mut pg = Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = pg_config(pg.url());
    let rt = runtime();
    let store = rt.block_on(async {
        let store = Store::open(&config, dir.path()).await.unwrap();
        store.apply("alpha", 1, |_| ()).await.unwrap();
        store
    });
    let frozen = server_processes(&mut pg);
    assert!(frozen.len() > 1, "the server and its backends: {frozen:?}");
    signal_all(&frozen, libc::SIGSTOP);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let started = Instant::now();
            let err = store.get("alpha").await.unwrap_err();
            let took = started.elapsed();
            assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
            assert!(took >= Duration::from_secs(2), "it did wait: {took:?}");
            assert!(took < postgres::OP_TIMEOUT + FAILS_WITHIN, "{took:?}");
            assert!(!store.healthy());
            let started = Instant::now();
            assert!(store.ping().await.is_err());
            assert!(started.elapsed() < postgres::PING_TIMEOUT + FAILS_WITHIN);
        })
    }));
    signal_all(&frozen, libc::SIGCONT);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    rt.block_on(async {
        wait_until_answering(&store).await;
        assert!(store.get("alpha").await.unwrap().is_some());
        assert!(store.healthy());
    });
}

async fn wait_until_answering(store: &Store) {
    let deadline = Instant::now() + RECOVERS_WITHIN;
    loop {
        match store.ping().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("not back after a restart: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `yonexus migrate` and `yonexus check`

fn yonexus(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("yonexus"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn write_config(dir: &Path, store: &str) -> String {
    let path = dir.join("yonexus.toml");
    std::fs::write(
        &path,
        format!("[server]\nstate_dir = \"./state\"\n[followers]\nallow = [\"alpha\"]\n{store}"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn migrate_and_check_report_the_database_without_its_password() {
    let (url, password, port, database) = {
        let guard = shared_pg();
        let pg = guard.as_ref().unwrap();
        let (name, url) = fresh_database(pg);
        (url, pg.password().to_owned(), pg.port(), name)
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[store]\nbackend = \"postgres\"\nurl_env = \"YX_TEST_PG_URL\"\n",
    );
    let with_url = |args: &[&str], url: &str| {
        std::process::Command::new(bin("yonexus"))
            .args(args)
            .env("YX_TEST_PG_URL", url)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let location = format!("127.0.0.1:{port}/{database}");
    let out = with_url(&["check", "--config", &config], &url);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!(
            "PostgreSQL at {location}: reachable, schema version 0"
        )),
        "{shown}"
    );
    // With no host running, the read-only CLI never changes the schema: it says what to do.
    let out = with_url(&["clients", "--config", &config], &url);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("run `yonexus migrate`"), "{shown}");
    let out = with_url(&["check", "--config", &config], &url);
    assert!(
        text(&out).contains("reachable, schema version 0"),
        "{}",
        text(&out)
    );
    let out = with_url(&["migrate", "--config", &config], &url);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let latest = migrations::LATEST;
    assert!(
        shown.contains(&format!(
            "PostgreSQL at {location}: schema version 0 before, {latest} after"
        )),
        "{shown}"
    );
    let out = with_url(&["migrate", "--config", &config], &url);
    assert!(text(&out).contains("up to date"), "{}", text(&out));
    let out = with_url(&["clients", "--config", &config], &url);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("alpha"), "{shown}");
    assert!(
        shown.contains(&format!("read from PostgreSQL at {location}")),
        "{shown}"
    );
    let out = with_url(&["check", "--config", &config], &url);
    assert!(
        text(&out).contains(&format!("reachable, schema version {latest}")),
        "{}",
        text(&out)
    );
    // Why not, exactly, and never the password.
    let wrong = url.replace(&password, "NotThePassword42");
    let out = with_url(&["check", "--config", &config], &wrong);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("password authentication failed"), "{shown}");
    assert!(shown.contains(&location), "{shown}");
    assert!(
        !shown.contains("NotThePassword42") && !shown.contains(&password),
        "{shown}"
    );
    let out = yonexus(&["check", "--config", &config]);
    assert!(!out.status.success());
    assert!(text(&out).contains("YX_TEST_PG_URL"), "{}", text(&out));
    // The embedded store has nothing to migrate.
    let file_dir = tempfile::tempdir().unwrap();
    let file_config = write_config(file_dir.path(), "");
    let out = yonexus(&["migrate", "--config", &file_config]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to migrate"));
}
