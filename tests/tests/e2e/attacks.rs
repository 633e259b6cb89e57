//! A stranger on the network who knows every identifier, against the real host binary
//! (SECURITY.md). Each test runs one attack and asserts that the genuine follower is unaffected,
//! no trust changed, notifications stayed bounded and the host's memory stayed within a bound.
//! Loops are bounded by time, not by counts, so a loaded machine changes how much is tried, not
//! what is checked.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use yonexus_e2e::*;
use yonexus_protocol::envelope::Message as Msg;
use yonexus_protocol::validate;

fn host(dir: &std::path::Path, allow: &[&str], limits: &str) -> HostProc {
    let text = format!("{}\n[limits]\n{limits}\n", config_text(dir, 0, allow, ""));
    HostProc::start(dir, &text).expect("host starts")
}

/// The durable trust of `id` (secret and key), as on disk.
fn trust(dir: &std::path::Path, id: &str) -> (Value, Value, Value) {
    let text = std::fs::read_to_string(dir.join("state/trust.json")).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let r = &v["followers"][id];
    (
        r["pairingStatus"].clone(),
        r["secret"].clone(),
        r["publicKey"].clone(),
    )
}

async fn echo(raw: &mut Raw, text: &str) {
    raw.send_text(&format!("echo::{text}")).await.unwrap();
    loop {
        match raw.recv().await.unwrap() {
            Incoming::Rule(r) if r == format!("echo::{text}") => return,
            Incoming::Rule(_) | Incoming::Control(_) => continue,
            Incoming::Closed(c) => panic!("genuine follower closed: {c:?}"),
        }
    }
}

fn metric_of(host: &HostProc, series: &str) -> f64 {
    host.admin
        .and_then(|a| http_get(a, "/metrics").ok())
        .map(|(_, m)| metric(&m, series))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_replayed_proofs_never_change_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path(), &["alpha"], "");
    let (first, alpha) = paired_session(&host, "alpha").await.unwrap();
    first.close().await;
    let before = trust(tmp.path(), "alpha");

    // The genuine follower logs in; its proof is captured (as on plain ws://) and replayed
    // on another connection.
    let nonce = validate::generate_nonce();
    let proof = alpha.auth_payload(&nonce, now());
    let mut genuine = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(alpha.hello(&mut genuine).await.unwrap(), "auth_required");
    genuine.send("auth_request", proof.clone()).await.unwrap();
    assert!(matches!(
        genuine.control().await.unwrap(),
        Msg::AuthSuccess(_)
    ));
    let mut replay = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(alpha.hello(&mut replay).await.unwrap(), "auth_required");
    replay.send("auth_request", proof).await.unwrap();
    match replay.control().await.unwrap() {
        Msg::AuthFailed(f) => assert_eq!(f.reason.as_str(), "invalid_signature"),
        other => panic!("replay answered {other:?}"),
    }

    // Junk proofs from many connections for a few seconds.
    let url = host.url();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let Ok(mut raw) = Raw::connect(&url).await else {
            continue;
        };
        let stranger = Identity::new("alpha");
        if stranger.hello(&mut raw).await.is_err() {
            continue;
        }
        for i in 0..5 {
            // Half with the stranger's own key, half claiming alpha's public key.
            let key = if i % 2 == 0 {
                stranger.public_key()
            } else {
                alpha.public_key()
            };
            let bad = json!({"identifier": "alpha", "nonce": validate::generate_nonce(),
                "proofTimestamp": now(), "signature": "AAAA", "publicKey": key});
            if raw.send("auth_request", bad).await.is_err() {
                break;
            }
            sent += 1;
            match raw.recv_within(Duration::from_secs(8)).await {
                Ok(Incoming::Control(_)) => {}
                _ => break,
            }
        }
    }
    println!("junk proofs sent: {sent}");
    assert!(sent >= 3);
    // The genuine session never noticed, trust is unchanged, and alpha still logs in.
    echo(&mut genuine, "unaffected").await;
    assert_eq!(trust(tmp.path(), "alpha"), before);
    genuine.close().await;
    let mut fresh = Raw::connect(&host.url()).await.unwrap();
    alpha.login(&mut fresh).await.unwrap();
    assert!(
        metric_of(
            &host,
            "yonexus_auth_refused_total{reason=\"bad_signature\"}"
        ) >= 1.0
    );
    assert!(metric_of(&host, "yonexus_auth_refused_total{reason=\"wrong_key\"}") >= 1.0);
    assert!(metric_of(&host, "yonexus_auth_refused_total{reason=\"replayed\"}") >= 1.0);
    assert!(metric_of(&host, "yonexus_abusers_closed_total{reason=\"auth\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifier_flood_leaves_no_state_and_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path(), &["alpha"], "");
    let (mut genuine, _) = paired_session(&host, "alpha").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_kib(host.pid());
    let url = host.url();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut workers = Vec::new();
    for w in 0..5 {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let Ok(raw) = Raw::connect(&url).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let (mut sink, mut stream) = raw.into_inner().split();
                // Answers are read (and dropped) so the host never sees a slow consumer.
                let reader =
                    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
                loop {
                    n += 1;
                    let id = format!("{w}-{n}-{}", "x".repeat(6000));
                    let frame = format!(
                        "builtin::{}",
                        json!({"type": "auth_request", "payload": {"identifier": id, "nonce": "n",
                            "proofTimestamp": 0, "signature": "s"}})
                    );
                    if Instant::now() >= deadline
                        || sink
                            .send(tokio_tungstenite::tungstenite::Message::text(frame))
                            .await
                            .is_err()
                    {
                        break;
                    }
                    sent += 1;
                }
                reader.abort();
            }
            sent
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(host.pid());
    println!("identifier flood: {total} frames of 6 KB; host RSS {baseline} KiB → {after} KiB");
    assert!(total > 10, "the flood did not run");
    assert!(
        after < baseline + 6 * 1024,
        "host memory grew from {baseline} KiB to {after} KiB"
    );
    echo(&mut genuine, "after the flood").await;
    let state = std::fs::read_to_string(tmp.path().join("state/trust.json")).unwrap();
    assert!(
        !state.contains("xxxxxxxxxx"),
        "a stranger's identifier was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_before_authentication_is_refused_at_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(
        tmp.path(),
        &["alpha"],
        "max_unauthenticated_message = 4096\n",
    );
    let (mut genuine, _) = paired_session(&host, "alpha").await.unwrap();
    // Upgrade by hand, then send only the header of a 1 MiB text frame.
    let mut tcp = std::net::TcpStream::connect(host.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).unwrap(), 1, "upgrade answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&frame).unwrap();
    // The close frame (1009) arrives without a byte of payload sent.
    let mut answer = [0u8; 4];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([answer[2], answer[3]]), 1009);
    echo(&mut genuine, "unaffected").await;
    assert!(metric_of(&host, "yonexus_messages_too_large_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_cancel_a_pairing_steal_its_key_or_spam_the_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path(), &["alpha"], "max_unauthenticated_per_ip = 200\n");
    // alpha starts pairing.
    let mut pairing = Raw::connect(&host.url()).await.unwrap();
    let mut alpha = Identity::new("alpha");
    assert_eq!(alpha.hello(&mut pairing).await.unwrap(), "pair_required");
    assert!(matches!(
        pairing.control().await.unwrap(),
        Msg::PairRequest(_)
    ));
    let code = codes_for(tmp.path(), "alpha").pop().unwrap();

    // A bad key in hello is a clear error and changes nothing.
    let mut bad = Raw::connect(&host.url()).await.unwrap();
    bad.send(
        "hello",
        json!({"identifier": "alpha", "protocolVersion": "1", "publicKey": "not a key"}),
    )
    .await
    .unwrap();
    let (code_name, message) = bad.error().await.unwrap();
    assert_eq!(code_name, "MALFORMED_MESSAGE");
    assert!(message.contains("publicKey"), "{message}");

    let url = host.url();
    let started = Instant::now();
    let mut tries = 0;
    while started.elapsed() < Duration::from_secs(4) {
        // Confirm without hello, wrong codes after a hello of its own (with its own key), and
        // hellos that could re-create and re-notify the pairing.
        let Ok(mut raw) = Raw::connect(&url).await else {
            continue;
        };
        let _ = raw
            .send(
                "pair_confirm",
                json!({"identifier": "alpha", "pairingCode": "AAAAAAAA"}),
            )
            .await;
        let _ = raw.recv_within(Duration::from_secs(8)).await;
        let stranger = Identity::new("alpha");
        if stranger.hello(&mut raw).await.is_err() {
            continue;
        }
        for _ in 0..2 {
            if raw
                .send(
                    "pair_confirm",
                    json!({"identifier": "alpha", "pairingCode": "BBBBBBBB"}),
                )
                .await
                .is_err()
            {
                break;
            }
            tries += 1;
            if !matches!(
                raw.recv_within(Duration::from_secs(40)).await,
                Ok(Incoming::Control(_))
            ) {
                break;
            }
        }
    }
    println!("stranger pairing attempts: {tries}");
    assert!(tries >= 1);
    // The genuine follower's code still works on its own connection, binding its own key.
    pairing
        .send(
            "pair_confirm",
            json!({"identifier": "alpha", "pairingCode": code}),
        )
        .await
        .unwrap();
    let secret = loop {
        match pairing.control().await.unwrap() {
            Msg::PairSuccess(s) => break s.secret,
            Msg::PairRequest(_) => continue,
            other => panic!("genuine confirm answered {other:?}"),
        }
    };
    alpha.secret = Some(secret);
    assert_eq!(
        trust(tmp.path(), "alpha").2,
        json!(alpha.public_key()),
        "alpha's own key is bound"
    );
    match alpha.auth(&mut pairing).await.unwrap() {
        Msg::AuthSuccess(_) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        codes_for(tmp.path(), "alpha").len(),
        1,
        "the admin was notified once"
    );
    assert!(metric_of(&host, "yonexus_pairing_results_total{result=\"no_hello\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_over_the_caps_is_refused_before_any_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path(), &["alpha"], "max_unauthenticated_per_ip = 4\n");
    let (mut genuine, _) = paired_session(&host, "alpha").await.unwrap();
    let baseline = rss_kib(host.pid());
    // Silent TCP connections: the first four hold their slots, the rest are answered 503
    // at once, before they send a single byte.
    let opened: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(host.addr).unwrap())
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for mut tcp in opened {
        tcp.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 64];
        match tcp.read(&mut buf) {
            Ok(n) if n > 0 => {
                assert!(
                    buf[..n].starts_with(b"HTTP/1.1 503"),
                    "{:?}",
                    String::from_utf8_lossy(&buf[..n])
                );
                refused += 1;
            }
            _ => held.push(tcp),
        }
    }
    println!(
        "handshake flood: {} held, {refused} refused before a handshake",
        held.len()
    );
    assert!(held.len() <= 4, "{} admitted over a cap of 4", held.len());
    assert!(refused >= 50);
    echo(&mut genuine, "served during the flood").await;
    drop(held);
    let after = rss_kib(host.pid());
    assert!(after < baseline + 4 * 1024, "{baseline} KiB → {after} KiB");
    // Once the flood stops, strangers' slots are free again.
    let ok = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(host.addr)
            .ok()
            .and_then(|mut t| {
                t.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
                let mut b = [0u8; 8];
                t.read(&mut b).is_err().then_some(())
            })
    });
    assert!(ok.is_some(), "slots were not released");
    assert!(
        metric_of(
            &host,
            "yonexus_connections_rejected_total{reason=\"per_ip_limit\"}"
        ) >= 50.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_churn_from_one_address_is_paced_by_its_rate() {
    let tmp = tempfile::tempdir().unwrap();
    // Loopback is exempt by default (a local reverse proxy); this test is the stranger.
    let host = host(
        tmp.path(),
        &["alpha"],
        "new_connections_per_ip_per_sec = 5\nnew_connections_burst_per_ip = 20\nnew_connections_limit_loopback = true\n",
    );
    let (mut genuine, _) = paired_session(&host, "alpha").await.unwrap();
    // Connect, upgrade, close, as fast as possible: the burst and then 5 a second get a
    // WebSocket; everything else is answered 503 before any handshake.
    let started = Instant::now();
    let (mut upgraded, mut refused) = (0u32, 0u32);
    for _ in 0..150 {
        match Raw::connect(&host.url()).await {
            Ok(raw) => {
                upgraded += 1;
                raw.close().await;
            }
            Err(e) => {
                assert!(format!("{e:#}").contains("503"), "{e:#}");
                refused += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("churn of 150 in {secs:.2} s: {upgraded} upgraded, {refused} refused");
    // The pairing above took a token of the burst; then at most 5 a second.
    let most = 20 + (5.0 * secs).ceil() as u32;
    assert!(
        upgraded <= most,
        "{upgraded} upgraded in {secs:.2} s, at most {most}"
    );
    assert!(upgraded >= 19, "{upgraded} upgraded: less than the burst");
    assert_eq!(upgraded + refused, 150);
    // The follower already connected is not affected.
    echo(&mut genuine, "served during the churn").await;
    assert!(
        metric_of(
            &host,
            "yonexus_connections_rejected_total{reason=\"connection_rate\"}"
        ) >= f64::from(refused)
    );
    // A second later there is a token again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    Raw::connect(&host.url()).await.unwrap().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_not_paced_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path(), &["alpha"], "");
    // More than the default burst (200) in a row, from loopback: every one upgrades.
    for _ in 0..250 {
        Raw::connect(&host.url()).await.unwrap().close().await;
    }
    assert_eq!(
        metric_of(
            &host,
            "yonexus_connections_rejected_total{reason=\"connection_rate\"}"
        ),
        0.0
    );
}
