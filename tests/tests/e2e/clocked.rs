//! Time-driven protocol rules (liveness, pairing TTL), tested on the real server library over
//! real sockets with an injected clock, so no test sleeps for minutes.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use yonexus_e2e::*;
use yonexus_host::clock::ManualClock;
use yonexus_host::config::Config;
use yonexus_host::server::Host;
use yonexus_protocol::envelope::Message as Msg;
use yonexus_protocol::validate;

const T0: i64 = 1_800_000_000;

async fn start(dir: &std::path::Path, clock: &ManualClock) -> Host {
    start_with(dir, clock, "").await
}

/// [`start`] with more config sections.
async fn start_with(dir: &std::path::Path, clock: &ManualClock, more: &str) -> Host {
    let extra = format!("ttl_secs = 60\n[liveness]\nsweep_interval_secs = 3600\n{more}");
    let text = config_text(dir, 0, &["alpha", "beta"], &extra);
    let config = Config::parse(&dir.join("yonexus.toml"), &text).unwrap();
    Host::start(&config, Arc::new(clock.clone())).await.unwrap()
}

fn url(host: &Host) -> String {
    format!("ws://{}/", host.local_addr)
}

/// Pair and authenticate `id` with timestamps from the manual clock.
async fn login(
    host: &Host,
    dir: &std::path::Path,
    clock: &ManualClock,
    id: &str,
) -> (Raw, Identity) {
    let raw = Raw::connect(&url(host)).await.unwrap();
    login_on(raw, dir, clock, id).await
}

/// Pair and authenticate `id` on `raw`.
async fn login_on(
    mut raw: Raw,
    dir: &std::path::Path,
    clock: &ManualClock,
    id: &str,
) -> (Raw, Identity) {
    let mut ident = Identity::new(id);
    ident.pair(&mut raw, dir).await.unwrap();
    raw.send(
        "auth_request",
        ident.auth_payload(
            &validate::generate_nonce(),
            yonexus_host::clock::Clock::now(clock),
        ),
    )
    .await
    .unwrap();
    assert!(matches!(raw.control().await.unwrap(), Msg::AuthSuccess(_)));
    (raw, ident)
}

#[tokio::test]
async fn liveness_online_unstable_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let host = start(tmp.path(), &clock).await;
    let (mut raw, _) = login(&host, tmp.path(), &clock, "alpha").await;
    let mut events = host.hub.events.subscribe();

    clock.advance(419);
    yonexus_host::tasks::sweep(&host.hub).await;
    raw.send("heartbeat", json!({"identifier": "alpha"}))
        .await
        .unwrap();
    assert!(
        matches!(raw.control().await.unwrap(), Msg::HeartbeatAck(_)),
        "no status change before 7 minutes"
    );

    clock.advance(420);
    yonexus_host::tasks::sweep(&host.hub).await;
    match raw.control().await.unwrap() {
        Msg::StatusUpdate(u) => {
            assert_eq!(u.status, "unstable");
            assert_eq!(u.reason, "heartbeat_timeout_7m");
        }
        other => panic!("{other:?}"),
    }
    // A second sweep while unstable sends nothing new.
    yonexus_host::tasks::sweep(&host.hub).await;
    assert_eq!(
        host.hub
            .store
            .get("alpha")
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "unstable"
    );

    clock.advance(240);
    yonexus_host::tasks::sweep(&host.hub).await;
    match raw.control().await.unwrap() {
        Msg::DisconnectNotice(n) => assert_eq!(n.reason, "heartbeat_timeout_11m"),
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.closed().await.unwrap().0, 1001);
    assert!(!host.hub.registry.is_connected("alpha"));
    assert_eq!(
        host.hub
            .store
            .get("alpha")
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "offline"
    );
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push(format!("{ev:?}"));
    }
    assert!(
        seen.iter().any(|e| e.contains("Unstable")) && seen.iter().any(|e| e.contains("Offline")),
        "{seen:?}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn heartbeat_brings_an_unstable_follower_back_online() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let host = start(tmp.path(), &clock).await;
    let (mut raw, _) = login(&host, tmp.path(), &clock, "alpha").await;
    clock.advance(500);
    yonexus_host::tasks::sweep(&host.hub).await;
    assert!(matches!(raw.control().await.unwrap(), Msg::StatusUpdate(_)));
    raw.send("heartbeat", json!({"identifier": "alpha"}))
        .await
        .unwrap();
    assert!(matches!(raw.control().await.unwrap(), Msg::HeartbeatAck(_)));
    assert_eq!(
        host.hub
            .store
            .get("alpha")
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "online"
    );
    clock.advance(500);
    yonexus_host::tasks::sweep(&host.hub).await;
    assert!(
        matches!(raw.control().await.unwrap(), Msg::StatusUpdate(_)),
        "silence counts from the last heartbeat"
    );
    assert!(host.hub.registry.is_connected("alpha"));
    host.shutdown().await;
}

#[tokio::test]
async fn expired_code_is_refused_and_a_new_hello_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let host = start(tmp.path(), &clock).await;
    let mut raw = Raw::connect(&url(&host)).await.unwrap();
    let ident = Identity::new("beta");
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "pair_required");
    match raw.control().await.unwrap() {
        Msg::PairRequest(r) => {
            assert_eq!(r.expires_at, T0 + 60);
            assert_eq!(r.ttl_seconds, 60);
        }
        other => panic!("{other:?}"),
    }
    let code = codes_for(tmp.path(), "beta").pop().unwrap();
    clock.advance(59);
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "waiting_pair_confirm");
    clock.advance(1);
    raw.send(
        "pair_confirm",
        json!({"identifier": "beta", "pairingCode": code}),
    )
    .await
    .unwrap();
    match raw.control().await.unwrap() {
        Msg::PairFailed(f) => assert_eq!(serde_json::to_value(f.reason).unwrap(), "expired"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "pair_required");
    assert!(matches!(raw.control().await.unwrap(), Msg::PairRequest(_)));
    let codes = codes_for(tmp.path(), "beta");
    assert_eq!(codes.len(), 2);
    assert_ne!(codes[0], codes[1], "a fresh code");
    host.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_followers_with_1001() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let host = start(tmp.path(), &clock).await;
    let (mut raw, _) = login(&host, tmp.path(), &clock, "alpha").await;
    // A connection that has not said hello yet is closed the same way.
    let mut stranger = Raw::connect(&url(&host)).await.unwrap();
    host.shutdown().await;
    assert_eq!(
        raw.closed().await.unwrap(),
        (1001, "host shutting down".into())
    );
    assert_eq!(stranger.closed().await.unwrap().0, 1001);
}

#[tokio::test]
async fn shutdown_does_not_wait_long_for_a_follower_that_stopped_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    // An outbound queue far larger than the socket buffers (4 MiB each at most here).
    let host = start_with(
        tmp.path(),
        &clock,
        "[limits]\noutbound_queue_bytes = 67108864\n",
    )
    .await;
    let raw = Raw::connect_with_receive_buffer(&url(&host), 4096)
        .await
        .unwrap();
    let (mut raw, _) = login_on(raw, tmp.path(), &clock, "alpha").await;
    // Echoes it never reads: 16 MiB, more than the sockets take, less than its outbound
    // queue, so the host's writes stall and the close frame waits behind them.
    let big = format!("echo::{}", "x".repeat(32 * 1024));
    for _ in 0..512 {
        raw.send_text(&big).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    host.shutdown().await;
    // The connection ends at its close grace (2 s), not at its next ping (30 s) after the
    // host's shutdown grace (5 s) ran out.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(4500), "shutdown took {took:?}");
    drop(raw);
}
