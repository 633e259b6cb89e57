//! Several hosts as one hub: three real `yonexus` processes sharing a private PostgreSQL (the
//! trust store) and a private `nats-server`, with real followers. Pair on one host,
//! authenticate on another, relay and broadcast across hosts, take a session over from another
//! host, revoke from a third, and survive NATS, PostgreSQL and host failures.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use yonexus_e2e::services::{Nats, Postgres};
use yonexus_e2e::*;
use yonexus_protocol::envelope::Message as Msg;
use yonexus_protocol::validate;

const ALLOW: &[&str] = &["alpha", "beta", "gamma", "delta", "epsilon"];

/// One host of the cluster, in its own directory (its own state dir and codes file).
struct Node {
    host: HostProc,
    dir: PathBuf,
}

fn node_config(dir: &Path, name: &str, pg_url: &str, nats_url: &str, port: u16) -> String {
    format!(
        "{}{}\n[store]\nbackend = \"postgres\"\nurl = \"{pg_url}\"\n\n[cluster]\nnode = \"{name}\"\nnats = \"{nats_url}\"\n",
        bundled_plugins(&["relay", "broadcast", "presence"]),
        config_text(dir, port, ALLOW, "")
    )
}

fn start_node(root: &Path, name: &str, pg: &Postgres, nats: &Nats) -> Node {
    start_node_with(root, name, pg, nats, "")
}

/// [`start_node`] with `extra` appended to its config (whole TOML tables).
fn start_node_with(root: &Path, name: &str, pg: &Postgres, nats: &Nats, extra: &str) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let text = node_config(&dir, name, &pg.url(), &nats.url(), 0) + extra;
    let host = HostProc::start(&dir, &text).unwrap_or_else(|e| panic!("node {name}: {e:#}"));
    Node { host, dir }
}

/// Pair `id` through `node` (its notifier delivers the code to that node's directory).
async fn pair_on(node: &Node, id: &str) -> (Raw, Identity) {
    let mut raw = Raw::connect(&node.host.url()).await.unwrap();
    let mut ident = Identity::new(id);
    ident.pair(&mut raw, &node.dir).await.unwrap();
    match ident.auth(&mut raw).await.unwrap() {
        Msg::AuthSuccess(_) => (raw, ident),
        other => panic!("{other:?}"),
    }
}

async fn login_on(node: &Node, ident: &Identity) -> Raw {
    let mut raw = Raw::connect(&node.host.url()).await.unwrap();
    ident
        .login(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("{} on {}: {e:#}", ident.id, node.host.url()));
    raw
}

/// The next rule message (skipping control frames), within `within`.
async fn next_rule(raw: &mut Raw, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match raw.recv_within(left).await {
            Ok(Incoming::Rule(r)) => return Some(r),
            Ok(Incoming::Control(_)) => continue,
            _ => return None,
        }
    }
}

/// Send `frame` until `want` arrives on `to` (presence of a follower on another host travels
/// with a claim over NATS: it may take a moment to be known everywhere).
async fn until_delivered(from: &mut Raw, to: &mut Raw, frame: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        from.send_text(frame).await.unwrap();
        if let Some(r) = next_rule(to, Duration::from_millis(500)).await {
            assert_eq!(r, want);
            return;
        }
    }
    panic!("{frame:?} never reached its target as {want:?}");
}

/// The next `Authenticated` event within a minute.
async fn authenticated(events: &mut tokio::sync::mpsc::Receiver<yonexus_follower::Event>) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if matches!(ev, yonexus_follower::Event::Authenticated) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_act_as_one_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Postgres::start().unwrap();
    let nats = Nats::start().unwrap();
    // No liveness sweep during the test: another host's `clients` must show when a follower
    // was last heard from before that follower's host has written its liveness.
    let quiet = "\n[liveness]\nsweep_interval_secs = 3600\n";
    let a = start_node_with(tmp.path(), "a", &pg, &nats, quiet);
    let b = start_node_with(tmp.path(), "b", &pg, &nats, quiet);
    let c = start_node_with(tmp.path(), "c", &pg, &nats, quiet);

    // A second host under a name that is taken is refused at start, and says why.
    let dup = tmp.path().join("a-again");
    std::fs::create_dir_all(&dup).unwrap();
    match HostProc::start(&dup, &node_config(&dup, "a", &pg.url(), &nats.url(), 0)) {
        Ok(_) => panic!("a second host started as node \"a\""),
        Err(e) => assert!(
            e.to_string().contains("already uses node name \"a\""),
            "{e:#}"
        ),
    }

    // Paired through A, authenticated on B with the same secret.
    let (first, alpha) = pair_on(&a, "alpha").await;
    first.close().await;
    let mut alpha_b = login_on(&b, &alpha).await;

    // A pairing started on A is confirmed on B (same code, same expiry, no second notice).
    let mut d_a = Raw::connect(&a.host.url()).await.unwrap();
    let mut delta = Identity::new("delta");
    assert_eq!(delta.hello(&mut d_a).await.unwrap(), "pair_required");
    assert!(matches!(d_a.control().await.unwrap(), Msg::PairRequest(_)));
    let code = codes_for(&a.dir, "delta").pop().unwrap();
    d_a.close().await;
    let mut d_b = Raw::connect(&b.host.url()).await.unwrap();
    assert_eq!(delta.hello(&mut d_b).await.unwrap(), "waiting_pair_confirm");
    d_b.send(
        "pair_confirm",
        json!({"identifier": "delta", "pairingCode": code}),
    )
    .await
    .unwrap();
    match d_b.control().await.unwrap() {
        Msg::PairSuccess(s) => delta.secret = Some(s.secret),
        other => panic!("{other:?}"),
    }
    assert!(
        codes_for(&b.dir, "delta").is_empty(),
        "B did not notify again"
    );
    d_b.close().await;
    let _delta_c = login_on(&c, &delta).await;

    // Relay from a follower on B to one on C, in order.
    let (mut beta_c, _beta) = pair_on(&c, "beta").await;
    until_delivered(
        &mut alpha_b,
        &mut beta_c,
        "relay::beta::hello",
        "relay::alpha::hello",
    )
    .await;
    for i in 0..20 {
        alpha_b
            .send_text(&format!("relay::beta::m{i}"))
            .await
            .unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            next_rule(&mut beta_c, Duration::from_secs(10)).await,
            Some(format!("relay::alpha::m{i}")),
            "in order per sender"
        );
    }

    // Broadcast from C reaches the followers on A and B exactly once each.
    let (mut gamma_a, _gamma) = pair_on(&a, "gamma").await;
    until_delivered(
        &mut beta_c,
        &mut gamma_a,
        "relay::gamma::ready",
        "relay::beta::ready",
    )
    .await;
    beta_c.send_text("broadcast::to all").await.unwrap();
    assert_eq!(
        next_rule(&mut gamma_a, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("broadcast::beta::to all")
    );
    assert_eq!(
        next_rule(&mut alpha_b, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("broadcast::beta::to all")
    );
    assert_eq!(
        next_rule(&mut gamma_a, Duration::from_millis(700)).await,
        None,
        "once"
    );
    assert_eq!(
        next_rule(&mut alpha_b, Duration::from_millis(300)).await,
        None,
        "once"
    );

    // Presence on A sees followers of every host.
    gamma_a.send_text("presence::subscribe").await.unwrap();
    let mut seen = Vec::new();
    while let Some(r) = next_rule(&mut gamma_a, Duration::from_secs(2)).await {
        seen.push(r);
    }
    for id in ["alpha", "beta", "delta"] {
        assert!(
            seen.iter().any(|r| r == &format!("presence::{id}::online")),
            "{id} missing from {seen:?}"
        );
    }

    // Every host's `clients` shows the whole cluster with the host each follower is on.
    let (_, out, err) = cli(&c.host.config, &["clients", "--json"]);
    let rows: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    let node_of = |id: &str| {
        rows.as_array()
            .and_then(|r| r.iter().find(|r| r["identifier"] == id))
            .map(|r| r["node"].clone())
    };
    assert_eq!(node_of("alpha"), Some(json!("b")));
    assert_eq!(node_of("gamma"), Some(json!("a")));
    assert_eq!(node_of("beta"), Some(json!("c")));
    // ...and when each was last heard from, although the host it is on writes liveness lazily.
    for id in ["alpha", "gamma", "beta"] {
        let row = rows
            .as_array()
            .and_then(|r| r.iter().find(|r| r["identifier"] == id))
            .unwrap();
        let heard = row["lastHeartbeatAt"].as_i64();
        assert!(
            heard.is_some_and(|t| (now() - 120..=now()).contains(&t)),
            "{id}: {row}"
        );
        assert!(row["lastAuthenticatedAt"].is_i64(), "{id}: {row}");
    }

    // A proof accepted on one host is refused on another (no replay across hosts).
    let nonce = validate::generate_nonce();
    let proof = alpha.auth_payload(&nonce, now());
    let mut on_a = Raw::connect(&a.host.url()).await.unwrap();
    assert_eq!(alpha.hello(&mut on_a).await.unwrap(), "auth_required");
    on_a.send("auth_request", proof.clone()).await.unwrap();
    assert!(matches!(on_a.control().await.unwrap(), Msg::AuthSuccess(_)));
    // ...which also took the session over from B: B's connection is closed.
    assert_eq!(
        alpha_b.closed().await.unwrap(),
        (1000, "session replaced".into())
    );
    let mut on_c = Raw::connect(&c.host.url()).await.unwrap();
    assert_eq!(alpha.hello(&mut on_c).await.unwrap(), "auth_required");
    on_c.send("auth_request", proof).await.unwrap();
    match on_c.control().await.unwrap() {
        Msg::AuthFailed(f) => assert_eq!(f.reason.as_str(), "invalid_signature"),
        other => panic!("replay on another host answered {other:?}"),
    }

    // Revoked from C: disconnected on A, and every host asks it to pair again.
    let (status, out, err) = cli(&c.host.config, &["revoke", "alpha"]);
    assert_eq!(status, 0, "{out}{err}");
    let (code, _) = on_a.closed().await.unwrap();
    assert_eq!(code, 1008);
    assert!(
        wait_for(Duration::from_secs(5), || a
            .host
            .logs()
            .iter()
            .any(|l| l.contains("trust revoked on another host") && l.contains("alpha"))
            .then_some(()))
        .is_some(),
        "A says why it closed alpha"
    );
    let mut again = Raw::connect(&b.host.url()).await.unwrap();
    assert_eq!(alpha.hello(&mut again).await.unwrap(), "pair_required");
    // NATS answered from the start: no host warned that it did not (the check runs 4 s after
    // the link starts; this test has been running longer than that).
    for node in [&a, &b, &c] {
        assert!(
            !node
                .host
                .logs()
                .iter()
                .any(|l| l.contains("NATS not reachable")),
            "a spurious NATS warning"
        );
    }
}

/// A host killed with SIGKILL sends no disconnect events: once its leases have run out, the
/// other hosts' plugins hear that its followers left (presence reports them offline), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_followers_go_offline_in_the_other_hosts_plugins() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Postgres::start().unwrap();
    let nats = Nats::start().unwrap();
    let mut a = start_node(tmp.path(), "a", &pg, &nats);
    let b = start_node(tmp.path(), "b", &pg, &nats);
    let (mut watcher, _) = pair_on(&b, "alpha").await;
    watcher.send_text("presence::subscribe").await.unwrap();
    let (_gamma_a, _gamma) = pair_on(&a, "gamma").await;
    let online = async {
        while let Some(r) = next_rule(&mut watcher, Duration::from_secs(20)).await {
            if r == "presence::gamma::online" {
                return true;
            }
        }
        false
    };
    assert!(online.await, "B's presence saw gamma come online on A");
    a.host.kill();
    let started = Instant::now();
    let lease = Duration::from_secs(30);
    let mut offline = 0;
    // The lease, then a reconciliation (every 10 s), and some slack for a loaded machine.
    while let Some(r) = next_rule(&mut watcher, lease + Duration::from_secs(30)).await {
        if r == "presence::gamma::offline" {
            offline += 1;
            println!("offline after {:?}", started.elapsed());
            break;
        }
    }
    assert_eq!(offline, 1, "B's plugins never heard that gamma left");
    assert!(
        started.elapsed() >= lease - Duration::from_secs(2),
        "gone before its lease ran out"
    );
    // Once only.
    assert_eq!(next_rule(&mut watcher, Duration::from_secs(12)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_on_two_hosts_leave_one_session() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Postgres::start().unwrap();
    let nats = Nats::start().unwrap();
    let a = start_node(tmp.path(), "a", &pg, &nats);
    let b = start_node(tmp.path(), "b", &pg, &nats);
    let (first, eps) = pair_on(&a, "epsilon").await;
    first.close().await;
    for _ in 0..3 {
        let (mut on_a, mut on_b) = (
            Raw::connect(&a.host.url()).await.unwrap(),
            Raw::connect(&b.host.url()).await.unwrap(),
        );
        eps.hello(&mut on_a).await.unwrap();
        eps.hello(&mut on_b).await.unwrap();
        let (pa, pb) = (
            eps.auth_payload(&validate::generate_nonce(), now()),
            eps.auth_payload(&validate::generate_nonce(), now()),
        );
        let (ra, rb) = tokio::join!(on_a.send("auth_request", pa), on_b.send("auth_request", pb));
        ra.unwrap();
        rb.unwrap();
        // Each answers `auth_success` — or is replaced before it could: the claim of the later
        // epoch can reach the other host while it is still finishing the authentication.
        let replaced = |i: &Incoming| matches!(i, Incoming::Closed(Some((1000, reason))) if reason == "session replaced");
        let authenticated = |i: &Incoming| matches!(i, Incoming::Control(env) if matches!(env.message, Msg::AuthSuccess(_)));
        let (fa, fb) = tokio::join!(on_a.recv(), on_b.recv());
        let (fa, fb) = (fa.unwrap(), fb.unwrap());
        assert!(
            (authenticated(&fa) || replaced(&fa)) && (authenticated(&fb) || replaced(&fb)),
            "answers to the two logins: {fa:?} / {fb:?}"
        );
        assert!(
            !(replaced(&fa) && replaced(&fb)),
            "both sessions were replaced: {fa:?} / {fb:?}"
        );
        // Exactly one of the two is closed as replaced; the other keeps working.
        let closed_a = if replaced(&fa) || replaced(&fb) {
            replaced(&fa)
        } else {
            let (closed_a, first) = tokio::select! {
                r = on_a.recv_within(Duration::from_secs(15)) => (true, r),
                r = on_b.recv_within(Duration::from_secs(15)) => (false, r),
            };
            assert!(
                matches!(first, Ok(Incoming::Closed(Some((1000, _))))),
                "one session is replaced: {first:?}"
            );
            closed_a
        };
        let survivor = if closed_a { &mut on_b } else { &mut on_a };
        let more = survivor.recv_within(Duration::from_secs(1)).await;
        assert!(more.is_err(), "the other session survives: {more:?}");
        survivor
            .send("heartbeat", json!({"identifier": "epsilon"}))
            .await
            .unwrap();
        assert!(matches!(
            survivor.control().await.unwrap(),
            Msg::HeartbeatAck(_)
        ));
    }

    // A follower that leaves is gone from every host's view, and stays gone across a
    // reconciliation (its host released its claim): a send to it answers TARGET_OFFLINE.
    let (mut gamma_a, _gamma) = pair_on(&a, "gamma").await;
    let (mut delta_b, _delta) = pair_on(&b, "delta").await;
    until_delivered(
        &mut gamma_a,
        &mut delta_b,
        "relay::delta::hi",
        "relay::gamma::hi",
    )
    .await;
    delta_b.close().await;
    let node_on_a = |id: &str| {
        let (_, out, err) = cli(&a.host.config, &["clients", "--json"]);
        let rows: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
        rows.as_array()
            .and_then(|r| r.iter().find(|r| r["identifier"] == id))
            .map(|r| (r["node"].clone(), r["liveness"].clone()))
    };
    assert_eq!(
        wait_for(Duration::from_secs(10), || {
            (node_on_a("delta") == Some((json!(null), json!("offline")))).then_some(())
        }),
        Some(()),
        "A sees delta leave B"
    );
    // Longer than one reconciliation (10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        node_on_a("delta"),
        Some((json!(null), json!("offline"))),
        "still gone after a reconciliation"
    );
    gamma_a.send_text("relay::delta::anyone").await.unwrap();
    let (code, _) = gamma_a.error().await.unwrap();
    assert_eq!(code, "TARGET_OFFLINE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_postgres_outages_and_a_killed_host() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start().unwrap();
    let mut nats = Nats::start().unwrap();
    let mut a = start_node(tmp.path(), "a", &pg, &nats);
    let b = start_node(tmp.path(), "b", &pg, &nats);
    let (mut alpha_a, _alpha) = pair_on(&a, "alpha").await;
    let (mut beta_b, beta) = pair_on(&b, "beta").await;
    until_delivered(
        &mut alpha_a,
        &mut beta_b,
        "relay::beta::x",
        "relay::alpha::x",
    )
    .await;

    // `check` reports the database and the NATS server; with NATS down it fails, saying so.
    let (status, out, err) = cli(&a.host.config, &["check"]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("cluster node \"a\""), "{out}");
    assert!(out.contains(": reachable, schema version"), "{out}");
    assert!(
        out.contains(&format!("NATS {}: reachable", nats.url())),
        "{out}"
    );

    let admin_a = a.host.admin.unwrap();
    let link_up = |want: &str| {
        wait_for(Duration::from_secs(20), || {
            let (_, body) = http_get(admin_a, "/metrics").ok()?;
            body.lines()
                .any(|l| l == format!("yonexus_cluster_link_up {want}"))
                .then_some(())
        })
        .is_some()
    };
    assert!(link_up("1"), "the link gauge says connected");

    // NATS down: a send to another host answers TARGET_OFFLINE at once; local delivery works.
    nats.stop();
    assert!(link_up("0"), "the link gauge says disconnected");
    let (status, out, err) = cli(&a.host.config, &["check"]);
    assert_ne!(status, 0, "{out}{err}");
    assert!(out.contains("NOT REACHABLE"), "{out}");
    assert!(err.contains("no NATS server answers"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let offline = loop {
        alpha_a.send_text("relay::beta::while-down").await.unwrap();
        match alpha_a.recv_within(Duration::from_secs(5)).await.unwrap() {
            Incoming::Control(env) => {
                if let Msg::Error(e) = env.message {
                    if e.code.as_str() == "TARGET_OFFLINE" {
                        break true;
                    }
                }
            }
            other => panic!("{other:?}"),
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        offline,
        "remote sends answer TARGET_OFFLINE while NATS is down"
    );
    let (mut gamma_a, _) = pair_on(&a, "gamma").await;
    alpha_a.send_text("relay::gamma::local").await.unwrap();
    assert_eq!(
        next_rule(&mut gamma_a, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("relay::alpha::local")
    );
    // NATS back (same port): the hosts reconnect by themselves.
    nats.restart().unwrap();
    assert!(link_up("1"), "the link gauge says connected again");
    until_delivered(
        &mut alpha_a,
        &mut beta_b,
        "relay::beta::back",
        "relay::alpha::back",
    )
    .await;

    // PostgreSQL down: sessions keep working, new authentications are refused clearly, A is
    // not ready; back: authentications work again and A is ready.
    pg.stop();
    alpha_a.send_text("relay::gamma::still").await.unwrap();
    assert_eq!(
        next_rule(&mut gamma_a, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("relay::alpha::still")
    );
    let mut refused = Raw::connect(&a.host.url()).await.unwrap();
    beta.hello(&mut refused).await.err();
    let admin = a.host.admin.unwrap();
    let not_ready = wait_for(Duration::from_secs(30), || {
        (http_get(admin, "/readyz").ok()?.0 == 503).then_some(())
    });
    assert!(
        not_ready.is_some(),
        "/readyz says not ready while PostgreSQL is down"
    );
    pg.restart().unwrap();
    let ready = wait_for(Duration::from_secs(60), || {
        (http_get(admin, "/readyz").ok()?.0 == 200).then_some(())
    });
    assert!(ready.is_some(), "ready again once PostgreSQL is back");
    let mut back = Raw::connect(&a.host.url()).await.unwrap();
    beta.login(&mut back).await.unwrap();
    back.close().await;

    // A killed: its followers reconnect to B (the follower library fails over) and authenticate
    // without pairing.
    let codes = code_provider(&a.dir);
    let config = yonexus_follower::Config::with_urls(
        [a.host.url(), b.host.url()],
        "delta",
        tmp.path().join("delta-state"),
    );
    let (handle, mut events) = yonexus_follower::spawn(config, codes).unwrap();
    assert!(
        authenticated(&mut events).await,
        "delta paired and authenticated on A"
    );
    let paired_codes = codes_for(&a.dir, "delta").len();
    a.host.kill();
    let started = Instant::now();
    assert!(authenticated(&mut events).await, "delta moved to B");
    println!("failover after SIGKILL took {:?}", started.elapsed());
    assert!(codes_for(&b.dir, "delta").is_empty(), "no pairing on B");
    assert_eq!(codes_for(&a.dir, "delta").len(), paired_codes);

    // With A down, its operator CLI reads the shared store: the whole cluster, delta on B.
    let delta_on = || {
        let (_, out, err) = cli(&a.host.config, &["clients", "--json"]);
        let rows: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
        rows.as_array()
            .and_then(|r| r.iter().find(|r| r["identifier"] == "delta"))
            .map(|r| r["node"].clone())
    };
    assert_eq!(
        wait_for(Duration::from_secs(20), || (delta_on() == Some(json!("b")))
            .then_some(())),
        Some(()),
        "A's offline `clients` shows delta on B"
    );
    // ...and revoking there reaches B over NATS: B drops delta, which must pair again (its new
    // code goes to B's admin).
    let (status, out, err) = cli(&a.host.config, &["revoke", "delta"]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("no host running here"), "{out}");
    assert!(out.contains("told the cluster"), "{out}{err}");
    assert!(
        wait_for(Duration::from_secs(30), || (!codes_for(&b.dir, "delta")
            .is_empty())
        .then_some(()))
        .is_some(),
        "B disconnected the revoked follower and asked it to pair again"
    );
    handle.shutdown().await;
}
