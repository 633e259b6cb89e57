//! Hostile and slow peers, limits, metrics, TLS and graceful shutdown, against the real host
//! binary. Each limit is tripped, and a well-behaved follower keeps being served.

use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use yonexus_e2e::*;

fn host_with(dir: &std::path::Path, allow: &[&str], limits: &str) -> HostProc {
    let text = format!("{}\n[limits]\n{limits}\n", config_text(dir, 0, allow, ""));
    HostProc::start(dir, &text).unwrap()
}

async fn echo_ok(raw: &mut Raw, text: &str) {
    raw.send_text(&format!("echo::{text}")).await.unwrap();
    assert_eq!(
        raw.recv().await.unwrap(),
        Incoming::Rule(format!("echo::{text}"))
    );
}

#[tokio::test]
async fn deadlines_caps_and_sizes_trip_while_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host_with(
        tmp.path(),
        &["alpha", "beta"],
        "upgrade_timeout_ms = 500\nauth_timeout_secs = 1\nmax_unauthenticated_per_ip = 3\nmax_unauthenticated_message = 1024\nmax_message_size = 65536\n",
    );
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();

    // Slowloris before the upgrade: closed at the upgrade deadline.
    let started = Instant::now();
    let mut tcp = std::net::TcpStream::connect(host.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = tcp.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "connection should be closed, not answered");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );

    // Upgraded but silent: closed 1008 at the authentication deadline.
    let mut silent = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(
        silent.closed().await.unwrap(),
        (1008, "authentication timeout".into())
    );

    // Unauthenticated cap per IP (3): the 4th upgrade is refused with 503.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Raw::connect(&host.url()).await.unwrap());
    }
    let err = Raw::connect(&host.url())
        .await
        .err()
        .expect("4th unauthenticated connection refused");
    assert!(err.to_string().contains("503"), "{err}");
    echo_ok(&mut alpha, "still served").await;
    for raw in held {
        raw.close().await;
    }
    // The host notices the closes asynchronously; then the slots are free again.
    let admin = host.admin.expect("admin endpoint");
    let freed = wait_for(Duration::from_secs(5), || {
        let (_, m) = http_get(admin, "/metrics").ok()?;
        (metric(&m, "yonexus_connections{state=\"unauthenticated\"}") == 0.0).then_some(())
    });
    assert!(freed.is_some(), "unauthenticated slots were not released");

    // Oversized message before authentication: 1009.
    let mut big = Raw::connect(&host.url()).await.unwrap();
    big.send_text(&format!("builtin::{}", "x".repeat(2048)))
        .await
        .unwrap();
    assert_eq!(big.closed().await.unwrap().0, 1009);
    // After authentication larger messages are fine up to max_message_size, then 1009.
    let payload = "y".repeat(30_000);
    echo_ok(&mut alpha, &payload).await;
    let (mut beta, beta_id) = paired_session(&host, "beta").await.unwrap();
    beta.send_text(&format!("echo::{}", "z".repeat(70_000)))
        .await
        .unwrap();
    assert_eq!(beta.closed().await.unwrap().0, 1009);
    echo_ok(&mut alpha, "unaffected").await;

    // Hostile frames: invalid UTF-8 in a text frame → 1007; a JSON nesting bomb → error.
    let mut bad = Raw::connect(&host.url()).await.unwrap();
    beta_id.login(&mut bad).await.unwrap();
    bad.send_text(&format!("builtin::{}", "[".repeat(50_000)))
        .await
        .unwrap_or(());
    let _ = bad.recv().await;
    let mut ws = Raw::connect(&host.url()).await.unwrap().into_inner();
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    let code = loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 1007);
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    raw.send_text(&format!("builtin::{}", "[".repeat(1000)))
        .await
        .unwrap();
    let (code, msg) = raw.error().await.unwrap();
    assert_eq!(code, "MALFORMED_MESSAGE");
    assert!(msg.contains("recursion"), "{msg}");
    raw.send(
        "hello",
        serde_json::json!({"identifier": "x".repeat(100_000), "protocolVersion": "1"}),
    )
    .await
    .unwrap_or(());
    echo_ok(&mut alpha, "after hostile frames").await;

    // The admin endpoint saw it all.
    let (status, text) = http_get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metric(
            &text,
            "yonexus_connections_rejected_total{reason=\"per_ip_limit\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "yonexus_connections_rejected_total{reason=\"auth_timeout\"}"
        ) >= 1.0
    );
    assert!(metric(&text, "yonexus_messages_too_large_total") >= 2.0);
}

#[tokio::test]
async fn rate_limit_answers_then_closes_persistent_abuse() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host_with(
        tmp.path(),
        &["alpha", "beta"],
        "rate_per_sec = 5\nrate_burst = 5\nrate_abuse_close_after = 20\n",
    );
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    let (beta, _) = paired_session(&host, "beta").await.unwrap();
    let (mut sink, mut stream) = beta.into_inner().split();
    for i in 0..40 {
        if sink
            .send(Message::text(format!("echo::{i}")))
            .await
            .is_err()
        {
            break;
        }
    }
    let (mut echoes, mut limited, mut close) = (0, 0, None);
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        match msg {
            Ok(Message::Text(t)) if t.starts_with("echo::") => echoes += 1,
            Ok(Message::Text(t)) if t.contains("RATE_LIMITED") => limited += 1,
            Ok(Message::Close(f)) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    // The burst is 5 (the handshake's frames count against their own budget).
    assert!((1..=10).contains(&echoes), "{echoes} echoes");
    assert!(limited >= 10, "{limited} RATE_LIMITED errors");
    assert_eq!(close, Some(1008));
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_ok(&mut alpha, "unaffected").await;
    let (_, text) = http_get(host.admin.unwrap(), "/metrics").unwrap();
    assert!(metric(&text, "yonexus_rate_limited_total") >= 20.0);
}

/// Send `n` pings, then count the pongs until the host closes the connection.
async fn flood_pings(
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    n: usize,
) -> (usize, Option<u16>) {
    let (mut sink, mut stream) = ws.split();
    for i in 0..n {
        if sink
            .send(Message::Ping(vec![i as u8; 8].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (mut pongs, mut close) = (0, None);
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        match msg {
            Ok(Message::Pong(_)) => pongs += 1,
            Ok(Message::Close(f)) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (pongs, close)
}

#[tokio::test]
async fn ping_floods_are_cut_short_before_and_after_authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host_with(
        tmp.path(),
        &["alpha", "beta"],
        "rate_per_sec = 5\nrate_burst = 5\nrate_abuse_close_after = 20\n",
    );
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();

    // A stranger who never says hello: a small budget of frames, then closed unanswered.
    let (ws, _) = tokio_tungstenite::connect_async(host.url()).await.unwrap();
    let (pongs, close) = flood_pings(ws, 500).await;
    assert!(
        (1..=40).contains(&pongs),
        "{pongs} pongs before authentication"
    );
    assert_eq!(close, Some(1008));

    // An authenticated follower: pings over its rate limit go unanswered, and persistent
    // abuse is closed like any other.
    let (beta, _) = paired_session(&host, "beta").await.unwrap();
    let (pongs, close) = flood_pings(beta.into_inner(), 500).await;
    assert!(
        (1..=10).contains(&pongs),
        "{pongs} pongs after authentication"
    );
    assert_eq!(close, Some(1008));

    echo_ok(&mut alpha, "unaffected").await;
    let (_, text) = http_get(host.admin.unwrap(), "/metrics").unwrap();
    assert!(metric(&text, "yonexus_abusers_closed_total{reason=\"frames\"}") >= 1.0);
}

/// A follower that sends its rule messages right behind its auth_request, without waiting for
/// auth_success, has them handled as an authenticated follower's: the frames read with the
/// auth_request do not count against the budget before authentication.
#[tokio::test]
async fn messages_pipelined_behind_the_auth_request_are_all_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host_with(tmp.path(), &["gamma"], "");
    let (first, ident) = paired_session(&host, "gamma").await.unwrap();
    first.close().await;
    let (ws, _) = tokio_tungstenite::connect_async(host.url()).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    let builtin = |kind: &str, payload: serde_json::Value| {
        let envelope = serde_json::json!({"type": kind, "timestamp": now(), "payload": payload});
        Message::text(format!("builtin::{envelope}"))
    };
    let hello = serde_json::json!({"identifier": "gamma", "protocolVersion": "1",
        "publicKey": ident.public_key(), "hasSecret": true, "hasKeyPair": true});
    sink.feed(builtin("hello", hello)).await.unwrap();
    let nonce = yonexus_protocol::validate::generate_nonce();
    sink.feed(builtin("auth_request", ident.auth_payload(&nonce, now())))
        .await
        .unwrap();
    for i in 0..100 {
        sink.feed(Message::text(format!("echo::p{i}")))
            .await
            .unwrap();
    }
    sink.flush().await.unwrap();
    let mut echoes = 0;
    while echoes < 100 {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with("echo::") => {
                assert_eq!(t.as_str(), format!("echo::p{echoes}"));
                echoes += 1;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                assert!(!t.contains("\"error\""), "{t}");
            }
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed after {echoes} echoes: {f:?}"),
            other => panic!("after {echoes} echoes: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_slow_consumers_are_closed_and_memory_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..51).map(|i| format!("f{i}")).collect();
    let allow: Vec<&str> = ids.iter().map(String::as_str).collect();
    let extra = bundled_plugins(&["broadcast"]);
    let text = format!(
        "{extra}{}\n[limits]\nmax_message_size = 16384\nmax_unauthenticated_message = 1024\noutbound_queue = 256\noutbound_queue_bytes = 262144\nrate_per_sec = 1000000\nrate_burst = 1000000\nmax_unauthenticated_per_ip = 100\n",
        config_text(tmp.path(), 0, &allow, "")
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let mut slow = Vec::new();
    for id in &ids[1..] {
        // Authenticated, then never read again.
        let (raw, _) = paired_session(&host, id).await.unwrap();
        slow.push(raw);
    }
    let (sender, _) = paired_session(&host, &ids[0]).await.unwrap();
    // The broadcaster reads everything it is sent (HANDLER_BUSY when it outpaces the plugin),
    // so it is never a slow consumer itself.
    let (mut sink, mut stream) = sender.into_inner().split();
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Text(t) = msg {
                let _ = got_tx.send(t.to_string());
            }
        }
    });
    let baseline = rss_kib(host.pid());
    let admin = host.admin.unwrap();
    let payload = "b".repeat(1000);
    let started = Instant::now();
    let mut sent = 0;
    let mut peak = baseline;
    while started.elapsed() < Duration::from_secs(60) {
        for _ in 0..200 {
            sink.send(Message::text(format!("broadcast::{payload}")))
                .await
                .unwrap();
            sent += 1;
        }
        let pid = host.pid();
        let (rss, m) =
            tokio::task::spawn_blocking(move || (rss_kib(pid), http_get(admin, "/metrics")))
                .await
                .unwrap();
        peak = peak.max(rss);
        if metric(&m.unwrap().1, "yonexus_slow_consumer_closes_total") >= 50.0 {
            break;
        }
        // Paced, so the broadcaster reads its own answers in time.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, m) = http_get(admin, "/metrics").unwrap();
    let closed = metric(&m, "yonexus_slow_consumer_closes_total");
    println!("slow consumers: {sent} broadcasts of 1 KB to 50 non-readers; {closed} closed; host RSS {baseline} KiB → peak {peak} KiB");
    assert_eq!(
        closed, 50.0,
        "every non-reading follower is closed as a slow consumer"
    );
    assert!(
        peak < baseline + 200 * 1024,
        "host memory grew from {baseline} KiB to {peak} KiB"
    );
    // The broadcaster itself was never blocked or closed (it may still be told HANDLER_BUSY
    // for broadcasts it sent faster than the plugin could fan them out).
    sink.send(Message::text("echo::still here")).await.unwrap();
    loop {
        let text = tokio::time::timeout(Duration::from_secs(10), got.recv())
            .await
            .unwrap()
            .unwrap();
        if text == "echo::still here" {
            break;
        }
        assert!(text.contains("HANDLER_BUSY"), "{text}");
    }
    drop(slow);
}

#[tokio::test]
async fn dead_peer_is_detected_by_ping_keepalive() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host_with(tmp.path(), &["alpha"], "ping_interval_secs = 1\n");
    let (raw, _) = paired_session(&host, "alpha").await.unwrap();
    // Stop reading: pings go unanswered (tungstenite answers pings only while reading).
    let ws = raw.into_inner();
    let gone = wait_for(Duration::from_secs(10), || {
        let (_, out, _) = cli(&host.config, &["clients", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&out).ok()?;
        rows[0]["connectedSince"].is_null().then_some(())
    });
    assert!(
        gone.is_some(),
        "a silent peer is dropped after two ping intervals"
    );
    drop(ws);
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host_with(tmp.path(), &["alpha"], "");
    let admin = host.admin.unwrap();
    assert_eq!(http_get(admin, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(admin, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(admin, "/nope").unwrap().0, 404);
    let (_, before) = http_get(admin, "/metrics").unwrap();
    let (mut raw, _) = paired_session(&host, "alpha").await.unwrap();
    for _ in 0..3 {
        echo_ok(&mut raw, "m").await;
    }
    raw.send_text("unknown::x").await.unwrap();
    let _ = raw.error().await.unwrap();
    let (status, after) = http_get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    // Prometheus text: every sample line is `name{labels} value` and has a # TYPE.
    let mut typed = std::collections::HashSet::new();
    for line in after.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let name = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(
                typed.contains(name) || typed.contains(base),
                "no # TYPE for {name}"
            );
        }
    }
    let moved = |series: &str, by: f64| {
        let (b, a) = (metric(&before, series), metric(&after, series));
        assert!(a - b >= by, "{series}: {b} → {a}");
    };
    moved("yonexus_auth_results_total{result=\"success\"}", 1.0);
    moved("yonexus_pairing_results_total{result=\"paired\"}", 1.0);
    moved(
        "yonexus_frames_received_total{kind=\"rule\",rule=\"echo\"}",
        3.0,
    );
    moved(
        "yonexus_frames_received_total{kind=\"rule\",rule=\"_unknown\"}",
        1.0,
    );
    moved(
        "yonexus_plugin_calls_total{plugin=\"echo\",outcome=\"ok\"}",
        3.0,
    );
    moved("yonexus_connections_opened_total", 1.0);
    assert!(after.contains("yonexus_plugin_call_duration_seconds_bucket{plugin=\"echo\""));
}

#[tokio::test]
async fn tls_round_trip_with_a_certificate_made_at_test_time() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(tmp.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(tmp.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let text = config_text(tmp.path(), 0, &["alpha"], "").replace(
        "state_dir = \"state\"\n",
        "state_dir = \"state\"\n[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let url = format!("wss://localhost:{}/", host.addr.port());
    // A plain ws:// client cannot talk to it.
    assert!(Raw::connect(&host.url()).await.is_err());
    // The follower says what the usual mistakes mean: no CA for a self-signed host, ws:// for
    // a TLS port.
    for (url, ca, hint) in [
        (url.clone(), false, "--ca-file"),
        (host.url(), true, "use wss://"),
    ] {
        let mut config =
            yonexus_follower::Config::new(url, "alpha", tmp.path().join("follower-mistake"));
        if ca {
            config.ca_file = Some(tmp.path().join("cert.pem"));
        }
        let (handle, mut events) =
            yonexus_follower::spawn(config, code_provider(tmp.path())).unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(ev) = events.recv().await {
                if let yonexus_follower::Event::Disconnected { reason } = ev {
                    return Some(reason);
                }
            }
            None
        })
        .await
        .unwrap()
        .unwrap_or_default();
        assert!(reason.contains(hint), "{reason}");
        handle.shutdown().await;
    }
    let codes = code_provider(tmp.path());
    let mut config = yonexus_follower::Config::new(url, "alpha", tmp.path().join("follower"));
    config.ca_file = Some(tmp.path().join("cert.pem"));
    let (handle, mut events) = yonexus_follower::spawn(config, codes).unwrap();
    handle.send("echo", "over tls").unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.recv().await {
            if let yonexus_follower::Event::Rule { rule_id, content } = ev {
                return Some((rule_id, content));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(reply, Some(("echo".into(), "over tls".into())));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_a_pairing_storm_keeps_every_acknowledged_pairing() {
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..150).map(|i| format!("p{i}")).collect();
    let allow: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut host = host_with(
        tmp.path(),
        &allow,
        "max_unauthenticated_per_ip = 200\nshutdown_grace_ms = 3000\n",
    );
    let url = host.url();
    let dir = tmp.path().to_owned();
    let paired = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let (url, dir, paired) = (url.clone(), dir.clone(), Arc::clone(&paired));
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(&url).await.ok()?;
            let mut ident = Identity::new(&id);
            ident.pair(&mut raw, &dir).await.ok()?;
            paired.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Keep the connection busy until the host goes away.
            while raw.send_text("echo::x").await.is_ok() {
                if raw
                    .recv()
                    .await
                    .ok()
                    .is_none_or(|f| matches!(f, Incoming::Closed(_)))
                {
                    break;
                }
            }
            Some(id)
        }));
    }
    // Stop mid-storm: once some pairings are acknowledged and others are still in flight.
    let storm = wait_for(Duration::from_secs(20), || {
        (paired.load(std::sync::atomic::Ordering::SeqCst) >= 10).then_some(())
    });
    assert!(storm.is_some(), "the pairing storm did not start");
    let started = Instant::now();
    let code = host.stop();
    let took = started.elapsed();
    assert_eq!(code, Some(0), "clean exit");
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Ok(Some(id)) = t.await {
            acknowledged.push(id);
        }
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("state/trust.json")).unwrap(),
    )
    .unwrap();
    for id in &acknowledged {
        assert_eq!(
            state["followers"][id]["pairingStatus"], "paired",
            "{id} was told it paired"
        );
    }
    assert!(
        !acknowledged.is_empty(),
        "no pairing completed before the shutdown"
    );
    println!(
        "shutdown in {took:?}; {} pairings acknowledged before it, all on disk",
        acknowledged.len()
    );
}
