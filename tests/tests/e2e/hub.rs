//! End-to-end protocol tests against the real `yonexus` binary on an ephemeral loopback port.

use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use yonexus_e2e::*;
use yonexus_protocol::envelope::Message as Msg;
use yonexus_protocol::validate;

fn start(dir: &std::path::Path, allow: &[&str]) -> HostProc {
    HostProc::start(dir, &config_text(dir, 0, allow, "")).expect("host starts")
}

#[tokio::test]
async fn pair_auth_heartbeat_echo_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut host = start(tmp.path(), &["alpha"]);
    let (mut raw, ident) = paired_session(&host, "alpha").await.unwrap();

    raw.send(
        "heartbeat",
        json!({"identifier": "alpha", "status": "online"}),
    )
    .await
    .unwrap();
    match raw.control().await.unwrap() {
        Msg::HeartbeatAck(ack) => assert_eq!(ack.status.as_deref(), Some("online")),
        other => panic!("{other:?}"),
    }
    raw.send_text("echo::hello::with::colons ✓").await.unwrap();
    assert_eq!(
        raw.recv().await.unwrap(),
        Incoming::Rule("echo::hello::with::colons ✓".into())
    );

    // Durable, private, and no secret or code in the logs.
    let state = tmp.path().join("state/trust.json");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(tmp.path().join("state"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"pairingStatus\": \"paired\""), "{text}");
    let code = codes_for(tmp.path(), "alpha").pop().unwrap();
    let logs = host.all_logs().join("\n");
    assert!(!logs.contains(&code), "pairing code leaked into logs");
    assert!(
        !logs.contains(ident.secret.as_deref().unwrap()),
        "secret leaked into logs"
    );
}

#[tokio::test]
async fn host_restart_reauthenticates_without_pairing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut host = start(tmp.path(), &["alpha"]);
    let (raw, ident) = paired_session(&host, "alpha").await.unwrap();
    raw.close().await;
    assert_eq!(host.stop(), Some(0), "clean exit on SIGTERM");
    drop(host);

    // Any port: what carries over is the state directory.
    let host = HostProc::start(tmp.path(), &config_text(tmp.path(), 0, &["alpha"], "")).unwrap();
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    ident.login(&mut raw).await.unwrap();
    raw.send_text("echo::after restart").await.unwrap();
    assert_eq!(
        raw.recv().await.unwrap(),
        Incoming::Rule("echo::after restart".into())
    );
    assert_eq!(codes_for(tmp.path(), "alpha").len(), 1, "no second pairing");
}

#[tokio::test]
async fn wrong_code_then_right_code_and_attempt_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let host = HostProc::start(
        tmp.path(),
        &config_text(tmp.path(), 0, &["alpha", "beta"], "max_attempts = 3\n"),
    )
    .unwrap();
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    let ident = Identity::new("alpha");
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "pair_required");
    assert!(matches!(raw.control().await.unwrap(), Msg::PairRequest(_)));
    let code = codes_for(tmp.path(), "alpha").pop().unwrap();
    raw.send(
        "pair_confirm",
        json!({"identifier": "alpha", "pairingCode": "WRONG234"}),
    )
    .await
    .unwrap();
    match raw.control().await.unwrap() {
        Msg::PairFailed(f) => assert_eq!(serde_json::to_value(f.reason).unwrap(), "invalid_code"),
        other => panic!("{other:?}"),
    }
    // The pending pairing stays: the right code still works.
    raw.send(
        "pair_confirm",
        json!({"identifier": "alpha", "pairingCode": code}),
    )
    .await
    .unwrap();
    assert!(matches!(raw.control().await.unwrap(), Msg::PairSuccess(_)));
    // A second confirm after success is refused and trust is kept.
    raw.send(
        "pair_confirm",
        json!({"identifier": "alpha", "pairingCode": code}),
    )
    .await
    .unwrap();
    match raw.control().await.unwrap() {
        Msg::PairFailed(f) => assert_eq!(serde_json::to_value(f.reason).unwrap(), "invalid_code"),
        other => panic!("{other:?}"),
    }

    // beta: wrong codes never cancel the pairing (SECURITY.md); the connection that sent
    // `max_attempts` of them is closed, and the right code still works on a new one.
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    let beta = Identity::new("beta");
    assert_eq!(beta.hello(&mut raw).await.unwrap(), "pair_required");
    assert!(matches!(raw.control().await.unwrap(), Msg::PairRequest(_)));
    let code = codes_for(tmp.path(), "beta").pop().unwrap();
    let mut left = Vec::new();
    for _ in 0..3 {
        raw.send(
            "pair_confirm",
            json!({"identifier": "beta", "pairingCode": "ZZZZZZZZ"}),
        )
        .await
        .unwrap();
        match raw.control().await.unwrap() {
            Msg::PairFailed(f) => {
                assert_eq!(f.reason.as_str(), "invalid_code");
                left.push(f.attempts_left);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(left, vec![Some(2), Some(1), Some(0)]);
    assert_eq!(
        raw.closed().await.unwrap(),
        (1008, "too many wrong pairing codes".into())
    );
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(beta.hello(&mut raw).await.unwrap(), "waiting_pair_confirm");
    raw.send(
        "pair_confirm",
        json!({"identifier": "beta", "pairingCode": code}),
    )
    .await
    .unwrap();
    assert!(matches!(raw.control().await.unwrap(), Msg::PairSuccess(_)));
    assert_eq!(
        codes_for(tmp.path(), "beta").len(),
        1,
        "no second notification"
    );
}

#[tokio::test]
async fn identifier_not_allowed_and_unsupported_version_close() {
    let tmp = tempfile::tempdir().unwrap();
    let host = start(tmp.path(), &["alpha"]);
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    raw.send(
        "hello",
        json!({"identifier": "mallory", "protocolVersion": "1"}),
    )
    .await
    .unwrap();
    assert_eq!(raw.error().await.unwrap().0, "IDENTIFIER_NOT_ALLOWED");
    assert_eq!(raw.closed().await.unwrap().0, 1008);

    let mut raw = Raw::connect(&host.url()).await.unwrap();
    raw.send(
        "hello",
        json!({"identifier": "  alpha  ", "protocolVersion": "2"}),
    )
    .await
    .unwrap();
    assert_eq!(raw.error().await.unwrap().0, "UNSUPPORTED_PROTOCOL_VERSION");
    assert_eq!(raw.closed().await.unwrap().0, 1002);

    // The number 1 is accepted as the version, and the identifier is trimmed.
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    raw.send(
        "hello",
        json!({"identifier": " alpha", "protocolVersion": 1}),
    )
    .await
    .unwrap();
    assert!(matches!(raw.control().await.unwrap(), Msg::HelloAck(_)));
}

#[tokio::test]
async fn failed_and_replayed_proofs_are_refused_and_never_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let host = start(tmp.path(), &["alpha", "beta"]);
    let (raw, ident) = paired_session(&host, "alpha").await.unwrap();
    raw.close().await;

    let reason = |m: Msg| match m {
        Msg::AuthFailed(f) => f.reason.as_str().to_owned(),
        other => panic!("{other:?}"),
    };
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "auth_required");
    // Stale and future timestamps, a wrong key: refused; the third failure closes the
    // connection (per-connection limit), nothing is revoked.
    raw.send(
        "auth_request",
        ident.auth_payload(&validate::generate_nonce(), now() - 60),
    )
    .await
    .unwrap();
    assert_eq!(reason(raw.control().await.unwrap()), "stale_timestamp");
    raw.send(
        "auth_request",
        ident.auth_payload(&validate::generate_nonce(), now() + 60),
    )
    .await
    .unwrap();
    assert_eq!(reason(raw.control().await.unwrap()), "future_timestamp");
    let mut imposter = Identity::new("alpha");
    imposter.secret = ident.secret.clone();
    raw.send(
        "auth_request",
        imposter.auth_payload(&validate::generate_nonce(), now()),
    )
    .await
    .unwrap();
    assert_eq!(reason(raw.control().await.unwrap()), "invalid_signature");
    assert_eq!(
        raw.closed().await.unwrap(),
        (1008, "too many failed authentication attempts".into())
    );

    let mut raw = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "auth_required");
    // Bad signature (right key, wrong secret).
    let wrong_secret = Identity {
        id: "alpha".into(),
        key: ident.key.clone(),
        secret: Some("not-the-secret".into()),
    };
    raw.send(
        "auth_request",
        wrong_secret.auth_payload(&validate::generate_nonce(), now()),
    )
    .await
    .unwrap();
    assert_eq!(reason(raw.control().await.unwrap()), "invalid_signature");
    // Malformed (mistyped proofTimestamp) is MALFORMED_MESSAGE, not an auth attempt.
    raw.send(
        "auth_request",
        json!({"identifier": "alpha", "nonce": "x", "proofTimestamp": "soon", "signature": "s"}),
    )
    .await
    .unwrap();
    assert_eq!(raw.error().await.unwrap().0, "MALFORMED_MESSAGE");
    // A good auth, then its exact frame replayed elsewhere: refused, and nothing else changes.
    let nonce = validate::generate_nonce();
    let ts = now();
    raw.send("auth_request", ident.auth_payload(&nonce, ts))
        .await
        .unwrap();
    assert!(matches!(raw.control().await.unwrap(), Msg::AuthSuccess(_)));
    let mut raw2 = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(ident.hello(&mut raw2).await.unwrap(), "auth_required");
    raw2.send("auth_request", ident.auth_payload(&nonce, ts))
        .await
        .unwrap();
    assert_eq!(reason(raw2.control().await.unwrap()), "invalid_signature");
    // The genuine session is untouched and trust is kept.
    raw.send_text("echo::still trusted").await.unwrap();
    assert_eq!(
        raw.recv().await.unwrap(),
        Incoming::Rule("echo::still trusted".into())
    );
    assert_eq!(ident.hello(&mut raw2).await.unwrap(), "auth_required");

    // beta: a stream of junk proofs over many connections never revokes it.
    let (raw, beta) = paired_session(&host, "beta").await.unwrap();
    raw.close().await;
    for _ in 0..4 {
        let mut raw = Raw::connect(&host.url()).await.unwrap();
        assert_eq!(beta.hello(&mut raw).await.unwrap(), "auth_required");
        for _ in 0..3 {
            raw.send("auth_request", beta.auth_payload("bad-nonce", now()))
                .await
                .unwrap();
            let _ = raw.recv().await.unwrap();
        }
    }
    let text = std::fs::read_to_string(tmp.path().join("state/trust.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["followers"]["beta"]["pairingStatus"], "paired");
    assert!(v["followers"]["beta"].get("secret").is_some());
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    beta.login(&mut raw).await.unwrap();
}

#[tokio::test]
async fn rule_before_auth_closes_1008_and_malformed_frames_keep_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let host = start(tmp.path(), &["alpha"]);
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    raw.send_text("builtin::{not json").await.unwrap();
    assert_eq!(raw.error().await.unwrap().0, "MALFORMED_MESSAGE");
    raw.send_text(r#"builtin::{"type":"hello"}"#).await.unwrap();
    let (code, msg) = raw.error().await.unwrap();
    assert_eq!(code, "MALFORMED_MESSAGE");
    assert!(msg.contains("payload"), "{msg}");
    raw.send_text(r#"builtin::{"type":"teleport","payload":{}}"#)
        .await
        .unwrap();
    assert_eq!(
        raw.error().await.unwrap(),
        (
            "MALFORMED_MESSAGE".into(),
            "Unsupported builtin type: teleport".into()
        )
    );
    // A repeated key is refused, not read as its last value (which here would be a valid hello).
    raw.send_text(
        r#"builtin::{"type":"teleport","type":"hello","payload":{"identifier":"alpha","protocolVersion":"1"}}"#,
    )
    .await
    .unwrap();
    let (code, msg) = raw.error().await.unwrap();
    assert_eq!(code, "MALFORMED_MESSAGE");
    assert!(msg.contains("duplicate key 'type'"), "{msg}");
    // A request id is not echoed at any length.
    raw.send_text(&format!(
        r#"builtin::{{"type":"hello","requestId":"{}","payload":{{"identifier":"alpha","protocolVersion":"1"}}}}"#,
        "r".repeat(129)
    ))
    .await
    .unwrap();
    let (code, msg) = raw.error().await.unwrap();
    assert_eq!(code, "MALFORMED_MESSAGE");
    assert!(
        msg.contains("'requestId' is longer than 128 bytes"),
        "{msg}"
    );
    raw.send_text("no separator here").await.unwrap();
    assert_eq!(raw.error().await.unwrap().0, "MALFORMED_MESSAGE");
    raw.send_text("::empty rule").await.unwrap();
    assert_eq!(raw.error().await.unwrap().0, "MALFORMED_MESSAGE");
    raw.send_binary(vec![0, 1, 2]).await.unwrap();
    assert_eq!(raw.error().await.unwrap().0, "MALFORMED_MESSAGE");
    raw.send("heartbeat", json!({"identifier": "alpha"}))
        .await
        .unwrap();
    assert_eq!(raw.error().await.unwrap().0, "AUTH_FAILED");
    // Still usable.
    assert_eq!(
        Identity::new("alpha").hello(&mut raw).await.unwrap(),
        "pair_required"
    );
    assert!(matches!(raw.control().await.unwrap(), Msg::PairRequest(_)));
    raw.send_text("echo::sneaky").await.unwrap();
    assert_eq!(
        raw.closed().await.unwrap(),
        (1008, "Not authenticated".into())
    );
}

#[tokio::test]
async fn second_session_replaces_the_first_and_unknown_rule_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let host = start(tmp.path(), &["alpha"]);
    let (mut first, ident) = paired_session(&host, "alpha").await.unwrap();
    let mut second = Raw::connect(&host.url()).await.unwrap();
    ident.login(&mut second).await.unwrap();
    assert_eq!(
        first.closed().await.unwrap(),
        (1000, "session replaced".into())
    );
    second.send_text("nosuchrule::x").await.unwrap();
    assert_eq!(second.error().await.unwrap().0, "RULE_NOT_FOUND");
    second.send_text("echo::still here").await.unwrap();
    assert_eq!(
        second.recv().await.unwrap(),
        Incoming::Rule("echo::still here".into())
    );
}

#[tokio::test]
async fn pending_pairing_survives_restart_without_renotifying() {
    let tmp = tempfile::tempdir().unwrap();
    let mut host = start(tmp.path(), &["alpha"]);
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    let mut ident = Identity::new("alpha");
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "pair_required");
    let first = match raw.control().await.unwrap() {
        Msg::PairRequest(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        serde_json::to_value(first.admin_notification).unwrap(),
        "sent"
    );
    host.stop();
    drop(host);
    let host = HostProc::start(tmp.path(), &config_text(tmp.path(), 0, &["alpha"], "")).unwrap();
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "waiting_pair_confirm");
    let codes = codes_for(tmp.path(), "alpha");
    assert_eq!(codes.len(), 1, "not notified again");
    // The admin CLI shows the same code and expiry.
    let (status, out, err) = cli(&host.config, &["pairing", "--json"]);
    assert_eq!(status, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["code"], codes[0].as_str());
    assert_eq!(rows[0]["expiresAt"], first.expires_at);
    raw.send(
        "pair_confirm",
        json!({"identifier": "alpha", "pairingCode": codes[0]}),
    )
    .await
    .unwrap();
    match raw.control().await.unwrap() {
        Msg::PairSuccess(s) => ident.secret = Some(s.secret),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ident.auth(&mut raw).await.unwrap(),
        Msg::AuthSuccess(_)
    ));
}

#[tokio::test]
async fn failed_notification_leaves_code_for_the_admin_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = config_text(tmp.path(), 0, &["alpha"], "");
    text = text.replace(
        "command = [\"/bin/sh\"",
        "command = [\"/bin/false\", \"ignored\"] # ",
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(
        Identity::new("alpha").hello(&mut raw).await.unwrap(),
        "pair_required"
    );
    match raw.control().await.unwrap() {
        Msg::PairRequest(r) => {
            assert_eq!(
                serde_json::to_value(r.admin_notification).unwrap(),
                "failed"
            );
            assert_eq!(r.code_delivery, "out_of_band");
        }
        other => panic!("{other:?}"),
    }
    let (status, out, err) = cli(&host.config, &["pairing", "--json"]);
    assert_eq!(status, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["identifier"], "alpha");
    assert_eq!(rows[0]["code"].as_str().unwrap().len(), 8);
    assert_eq!(rows[0]["notifyStatus"], "failed");
}

#[tokio::test]
async fn admin_cli_clients_and_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let mut host = start(tmp.path(), &["alpha", "beta"]);
    let (mut raw, ident) = paired_session(&host, "alpha").await.unwrap();
    let (status, out, err) = cli(&host.config, &["clients", "--json"]);
    assert_eq!(status, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["identifier"], "alpha");
    assert_eq!(rows[0]["pairingStatus"], "paired");
    assert_eq!(rows[0]["liveness"], "online");
    assert!(rows[0]["connectedSince"].is_i64());
    assert_eq!(rows[1]["identifier"], "beta");
    assert_eq!(rows[1]["pairingStatus"], "unpaired");
    let (status, out, _) = cli(&host.config, &["clients"]);
    assert_eq!(status, 0);
    assert!(out.contains("IDENTIFIER") && out.contains("alpha"), "{out}");

    let (status, out, err) = cli(&host.config, &["revoke", "alpha", "--json"]);
    assert_eq!(status, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["revoked"], true, "{out}");
    assert_eq!(answer["wasPaired"], true, "{out}");
    assert_eq!(answer["disconnected"], true, "{out}");
    assert_eq!(raw.closed().await.unwrap().0, 1008);
    // Revoked already, not connected, no record, not an identifier: each said as it is, and
    // only a revocation that changed something is logged.
    let (status, out, _) = cli(&host.config, &["revoke", "alpha"]);
    assert_eq!(status, 0);
    assert!(out.contains("'alpha' was not paired"), "{out}");
    for never_paired in ["beta", "zeta"] {
        let (status, out, _) = cli(&host.config, &["revoke", never_paired]);
        assert_eq!(status, 0);
        assert!(
            out.contains(&format!("'{never_paired}' has no trust record")),
            "{out}"
        );
    }
    let (status, _, err) = cli(&host.config, &["revoke", "a::b"]);
    assert_ne!(status, 0);
    assert!(err.contains("not a follower identifier"), "{err}");
    let revocations: Vec<String> = host
        .logs()
        .into_iter()
        .filter(|l| l.contains("admin") && l.contains("revoked by the operator"))
        .collect();
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    assert!(revocations[0].contains("alpha"), "{revocations:?}");
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "pair_required");
    raw.close().await;
    // Now pending again: a revocation takes that away, with nothing to disconnect.
    let (status, out, _) = cli(&host.config, &["revoke", "alpha"]);
    assert_eq!(status, 0);
    assert!(
        out.contains("revoked 'alpha' (it was not connected to this host)"),
        "{out}"
    );
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "pair_required");
    raw.close().await;

    // With the host stopped, clients still answers from the state file.
    host.stop();
    let (status, out, err) = cli(&host.config, &["clients", "--json"]);
    assert_eq!(status, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["pairingStatus"], "pending");
    assert!(rows[0]["connectedSince"].is_null());
}

#[tokio::test]
async fn corrupt_state_file_stops_the_host_and_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let bad = b"{\"version\":1,\"followers\":{\"alpha\":{\"identifier\":";
    std::fs::write(state.join("trust.json"), bad).unwrap();
    let err = match HostProc::start(tmp.path(), &config_text(tmp.path(), 0, &["alpha"], "")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("host started on a corrupt state file"),
    };
    assert!(
        err.contains("trust.json") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(std::fs::read(state.join("trust.json")).unwrap(), bad);
}

#[tokio::test]
async fn wrong_path_is_404_and_config_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let host = start(tmp.path(), &["alpha"]);
    let err = Raw::connect(&format!("ws://{}/elsewhere", host.addr))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("404"), "{err}");

    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[pairing]\nnotify = \"pigeon\"\n").unwrap();
    let out = std::process::Command::new(bin("yonexus"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("pairing.notify"),
        "{stderr}"
    );
}

/// The authentication deadline (here 1 s) never cuts off a pairing: not while the admin's
/// notifier is slow (2 s), not while the human relays the code, and after `pair_success` the
/// follower has a whole deadline for its `auth_request`.
#[tokio::test]
async fn a_slow_notifier_and_a_slow_human_do_not_cut_off_a_pairing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = config_text(dir, 0, &["alpha"], "\n[limits]\nauth_timeout_secs = 1\n");
    // The notifier takes 2 s (config_text wrote notify.sh; make it slow).
    let script = dir.join("notify.sh");
    let body = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        body.replacen("#!/bin/sh\n", "#!/bin/sh\nsleep 2\n", 1),
    )
    .unwrap();
    let host = HostProc::start(dir, &config).expect("host starts");
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    let mut ident = Identity::new("alpha");
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "pair_required");
    match raw
        .recv_within(std::time::Duration::from_secs(15))
        .await
        .unwrap()
    {
        Incoming::Control(env) => assert!(
            matches!(env.message, Msg::PairRequest(_)),
            "{:?}",
            env.message
        ),
        other => panic!("expected pair_request after the slow notifier, got {other:?}"),
    }
    // The human takes a while to relay the code.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let code = codes_for(dir, "alpha").pop().expect("code delivered");
    raw.send(
        "pair_confirm",
        json!({"identifier": "alpha", "pairingCode": code}),
    )
    .await
    .unwrap();
    match raw.control().await.unwrap() {
        Msg::PairSuccess(s) => ident.secret = Some(s.secret),
        other => panic!("expected pair_success, got {other:?}"),
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    match ident.auth(&mut raw).await.unwrap() {
        Msg::AuthSuccess(_) => {}
        other => panic!("expected auth_success on the pairing connection, got {other:?}"),
    }
}

/// A revocation that lands while an authentication is in flight (here: slowed because the
/// follower logs in too often) voids it: the proof was checked against trust that is gone.
#[tokio::test]
async fn a_revocation_during_an_authentication_voids_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config_text(
        tmp.path(),
        0,
        &["alpha"],
        "\n[limits]\nfree_logins_per_identifier = 0\nmax_failure_delay_ms = 4000\n",
    );
    let host = HostProc::start(tmp.path(), &config).expect("host starts");
    let (first, ident) = paired_session(&host, "alpha").await.unwrap();
    first.close().await;
    // Each further login waits longer (0.5 s, 1 s, 2 s …).
    let mut waited = std::time::Duration::ZERO;
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    while waited < std::time::Duration::from_millis(900) {
        raw.close().await;
        raw = Raw::connect(&host.url()).await.unwrap();
        let started = std::time::Instant::now();
        ident.login(&mut raw).await.unwrap();
        waited = started.elapsed();
    }
    raw.close().await;
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "auth_required");
    raw.send(
        "auth_request",
        ident.auth_payload(&validate::generate_nonce(), now()),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, out, err) = cli(&host.config, &["revoke", "alpha"]);
    assert_eq!(status, 0, "{out}{err}");
    match raw.control().await.unwrap() {
        Msg::AuthFailed(f) => assert_eq!(f.reason.as_str(), "not_paired"),
        other => panic!("an authentication checked before the revocation went on: {other:?}"),
    }
    assert_eq!(raw.closed().await.unwrap().0, 1008);
    let (_, out, _) = cli(&host.config, &["clients", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["liveness"], "offline", "{out}");
}
