//! The real follower client against a small scripted host that plays the host side of the
//! handshake over a real WebSocket.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yonexus_follower::{
    spawn, CodeProvider, Config, Event, FollowerError, PairingPrompt, StopReason,
};
use yonexus_protocol::envelope::{
    AdminNotification, AuthSuccess, ErrorCode, ErrorPayload, HelloAck, Message, NextAction,
    PairFailReason, PairFailed, PairRequest, PairSuccess, RePairReason, RePairRequired,
};
use yonexus_protocol::{signing, validate};

async fn next_matching(
    rx: &mut mpsc::Receiver<Event>,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; events so far: {seen:?}"))
            .expect("event channel closed");
        if pred(&ev) {
            return ev;
        }
        seen.push(ev);
    }
}

/// A code provider answering from a script; records the prompts it got.
fn scripted_codes(
    codes: Vec<Option<&'static str>>,
) -> (CodeProvider, Arc<Mutex<Vec<PairingPrompt>>>) {
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let codes = Arc::new(Mutex::new(codes.into_iter()));
    let p = prompts.clone();
    let provider: CodeProvider = Arc::new(move |prompt| {
        p.lock().unwrap().push(prompt);
        let code = codes.lock().unwrap().next().flatten().map(str::to_string);
        Box::pin(async move { code })
    });
    (provider, prompts)
}

fn config(url: &str, dir: &std::path::Path) -> Config {
    let mut c = Config::new(url, "alpha", dir);
    c.heartbeat_interval = Duration::from_millis(200);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c
}

/// Host side of a successful authentication: read auth_request, check it, answer auth_success.
async fn expect_valid_auth(ws: &mut Ws, public_key: &str, secret: &str) {
    let Message::AuthRequest(a) = recv_control(ws).await else {
        panic!("expected auth_request")
    };
    assert_eq!(a.identifier, "alpha");
    assert!(validate::nonce(&a.nonce), "nonce {}", a.nonce);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((a.proof_timestamp - now).abs() < 10);
    assert_eq!(a.public_key.as_deref(), Some(public_key));
    let raw = signing::decode_public_key(public_key).unwrap();
    let sig = signing::decode_signature(&a.signature).unwrap();
    assert!(signing::verify(
        &raw,
        secret,
        &a.nonce,
        a.proof_timestamp,
        &sig
    ));
    send_control(
        ws,
        Message::AuthSuccess(AuthSuccess {
            identifier: "alpha".into(),
            authenticated_at: 1_700_000_000,
            status: "online".into(),
        }),
    )
    .await;
}

#[tokio::test]
async fn pairs_authenticates_heartbeats_and_exchanges_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let (codes, prompts) = scripted_codes(vec![Some("WRONG234"), Some(" abcd2345 ")]);
    let (handle, mut events) = spawn(config(&url, dir.path()), codes).unwrap();
    // Queued before authentication: delivered after auth_success, in order.
    handle.send("echo", "first").unwrap();
    handle.send("relay", "beta::second").unwrap();
    assert!(matches!(
        handle.send("builtin", "x"),
        Err(FollowerError::InvalidRuleId(..))
    ));
    assert!(handle.send("", "x").is_err());
    assert!(handle.send("a::b", "x").is_err());

    let mut ws = accept(&l).await;
    let Message::Hello(h) = recv_control(&mut ws).await else {
        panic!("expected hello")
    };
    assert_eq!(h.identifier, "alpha");
    assert!(h.version_supported());
    assert_eq!(h.has_secret, Some(false));
    assert_eq!(h.has_key_pair, Some(true));
    let public_key = h.public_key.clone().unwrap();
    signing::decode_public_key(&public_key).unwrap();

    // Garbage from the host is ignored, never fatal.
    ws.send(WsMessage::text("no separator")).await.unwrap();
    ws.send(WsMessage::text("builtin::{not json"))
        .await
        .unwrap();
    ws.send(WsMessage::text(r#"builtin::{"type":"bogus","payload":{}}"#))
        .await
        .unwrap();
    ws.send(WsMessage::binary(vec![1u8, 2, 3])).await.unwrap();
    // A control message that does not fit the phase (nobody asked to authenticate) is ignored.
    send_control(
        &mut ws,
        Message::AuthSuccess(AuthSuccess {
            identifier: "alpha".into(),
            authenticated_at: 1_700_000_000,
            status: "online".into(),
        }),
    )
    .await;

    send_control(
        &mut ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::PairRequired,
        }),
    )
    .await;
    send_control(
        &mut ws,
        Message::PairRequest(PairRequest {
            identifier: "alpha".into(),
            expires_at: 1_700_000_300,
            ttl_seconds: 300,
            admin_notification: AdminNotification::Sent,
            code_delivery: "out_of_band".into(),
        }),
    )
    .await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::PairingRequired { .. })).await;
    assert!(
        !handle.is_authenticated(),
        "an unasked auth_success is ignored"
    );
    assert_eq!(
        ev,
        Event::PairingRequired {
            expires_at: Some(1_700_000_300),
            ttl_seconds: Some(300),
            admin_notification: Some(AdminNotification::Sent)
        }
    );

    // First code is wrong: the provider is asked again with retry = true.
    let Message::PairConfirm(c) = recv_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    assert_eq!(c.pairing_code, "WRONG234");
    send_control(
        &mut ws,
        Message::PairFailed(PairFailed {
            identifier: "alpha".into(),
            reason: PairFailReason::InvalidCode,
            attempts_left: None,
        }),
    )
    .await;
    let Message::PairConfirm(c) = recv_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    assert_eq!(c.pairing_code, "abcd2345");
    {
        let prompts = prompts.lock().unwrap();
        assert_eq!(prompts.len(), 2);
        assert!(!prompts[0].retry && prompts[1].retry);
        assert_eq!(prompts[1].ttl_seconds, Some(300));
        assert_eq!(prompts[0].identifier, "alpha");
    }
    let secret = validate::generate_secret();
    send_control(
        &mut ws,
        Message::PairSuccess(PairSuccess {
            identifier: "alpha".into(),
            secret: secret.clone(),
            paired_at: 1_700_000_000,
        }),
    )
    .await;
    expect_valid_auth(&mut ws, &public_key, &secret).await;
    // The secret was persisted before it was used.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("alpha.json")).unwrap())
            .unwrap();
    assert_eq!(saved["secret"], secret.as_str());
    assert_eq!(saved["publicKey"], public_key.as_str());

    next_matching(&mut events, |e| *e == Event::Paired).await;
    next_matching(&mut events, |e| *e == Event::Authenticated).await;
    assert!(handle.is_authenticated());

    assert_eq!(recv_text(&mut ws).await, "echo::first");
    assert_eq!(recv_text(&mut ws).await, "relay::beta::second");
    assert!(handle.wait_flushed(WAIT).await);

    let Message::Heartbeat(hb) = recv_control(&mut ws).await else {
        panic!("expected heartbeat")
    };
    assert_eq!(hb.identifier, "alpha");
    assert_eq!(hb.status.as_deref(), Some("online"));

    ws.send(WsMessage::text("echo::alpha::hi::there"))
        .await
        .unwrap();
    let ev = next_matching(&mut events, |e| matches!(e, Event::Rule { .. })).await;
    assert_eq!(
        ev,
        Event::Rule {
            rule_id: "echo".into(),
            content: "alpha::hi::there".into()
        }
    );
    send_control(
        &mut ws,
        Message::Error(ErrorPayload {
            code: ErrorCode::RuleNotFound,
            message: "no handler for 'nope'".into(),
        }),
    )
    .await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::HostError { .. })).await;
    assert_eq!(
        ev,
        Event::HostError {
            code: ErrorCode::RuleNotFound,
            message: "no handler for 'nope'".into()
        }
    );

    handle.send("echo", "after").unwrap();
    loop {
        let t = recv_text(&mut ws).await;
        if t.starts_with("builtin::") {
            continue; // heartbeats
        }
        assert_eq!(t, "echo::after");
        break;
    }

    // Shutdown closes with 1000.
    let host = tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(f))) => return f.map(|f| f.code),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    });
    tokio::time::timeout(WAIT, handle.clone().shutdown())
        .await
        .unwrap();
    let code = tokio::time::timeout(WAIT, host).await.unwrap().unwrap();
    assert_eq!(code, Some(CloseCode::Normal));
    assert!(handle.is_stopped());
    assert!(matches!(
        handle.send("echo", "x"),
        Err(FollowerError::Stopped)
    ));
}

#[tokio::test]
async fn re_pairs_reconnects_and_gives_up_without_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    // Pretend an earlier pairing: store a secret.
    {
        let mut s = yonexus_follower::State::load_or_create(dir.path(), "alpha").unwrap();
        s.set_secret(Some("old-secret".into())).unwrap();
    }
    let (codes, prompts) = scripted_codes(vec![None]);
    let (handle, mut events) = spawn(config(&url, dir.path()), codes).unwrap();

    let mut ws = accept(&l).await;
    let Message::Hello(h) = recv_control(&mut ws).await else {
        panic!("expected hello")
    };
    assert_eq!(h.has_secret, Some(true));
    let public_key = h.public_key.unwrap();
    send_control(
        &mut ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::AuthRequired,
        }),
    )
    .await;
    expect_valid_auth(&mut ws, &public_key, "old-secret").await;
    next_matching(&mut events, |e| *e == Event::Authenticated).await;

    // Trust revoked: secret forgotten on disk, a fresh hello on the same socket.
    send_control(
        &mut ws,
        Message::RePairRequired(RePairRequired {
            identifier: "alpha".into(),
            reason: RePairReason::NonceCollision,
        }),
    )
    .await;
    let Message::Hello(h) = recv_control(&mut ws).await else {
        panic!("expected a second hello")
    };
    assert_eq!(h.has_secret, Some(false));
    let ev = next_matching(&mut events, |e| matches!(e, Event::RePairRequired { .. })).await;
    assert_eq!(
        ev,
        Event::RePairRequired {
            reason: RePairReason::NonceCollision
        }
    );
    assert!(!handle.is_authenticated());
    let saved = std::fs::read_to_string(dir.path().join("alpha.json")).unwrap();
    assert!(!saved.contains("old-secret"));

    // The host closes with a policy violation: Disconnected carries the code, then reconnect.
    ws.close(Some(CloseFrame {
        code: CloseCode::Policy,
        reason: "Not authenticated".into(),
    }))
    .await
    .unwrap();
    let ev = next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let Event::Disconnected { reason } = ev else {
        unreachable!()
    };
    assert!(
        reason.contains("1008") && reason.contains("Not authenticated"),
        "{reason}"
    );

    // Second connection: waiting_pair_confirm asks the provider directly; it has no code, so
    // the follower gives up this attempt and disconnects.
    let mut ws = accept(&l).await;
    let Message::Hello(_) = recv_control(&mut ws).await else {
        panic!("expected hello after reconnect")
    };
    send_control(
        &mut ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::WaitingPairConfirm,
        }),
    )
    .await;
    next_matching(&mut events, |e| *e == Event::NoPairingCode).await;
    next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert_eq!(prompts.lock().unwrap()[0].expires_at, None);

    // And it comes back again (backoff), until shut down.
    let mut ws = accept(&l).await;
    let Message::Hello(_) = recv_control(&mut ws).await else {
        panic!("expected hello")
    };
    tokio::time::timeout(WAIT, handle.shutdown()).await.unwrap();
}

#[tokio::test]
async fn outbound_buffer_is_bounded_and_bad_state_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Never reachable (and its port stays taken): the follower keeps retrying.
    let (_dead, url) = dead_host().await;
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(config(&url, dir.path()), codes).unwrap();
    for i in 0..yonexus_follower::OUTBOUND_BUFFER {
        handle.send("echo", &i.to_string()).unwrap();
    }
    assert!(matches!(
        handle.send("echo", "one too many"),
        Err(FollowerError::QueueFull(_))
    ));
    assert_eq!(handle.queued(), yonexus_follower::OUTBOUND_BUFFER);
    let ev = next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(ev, Event::Disconnected { reason } if reason.contains("connect")));
    assert!(!handle.wait_flushed(Duration::from_millis(50)).await);
    tokio::time::timeout(WAIT, handle.shutdown()).await.unwrap();

    let bad = tempfile::tempdir().unwrap();
    let path = bad.path().join("alpha.json");
    std::fs::write(&path, "{").unwrap();
    let (codes, _) = scripted_codes(vec![]);
    let err = spawn(config(&url, bad.path()), codes).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{");
}

#[tokio::test]
async fn no_reconnect_ends_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let mut c = config(&url, dir.path());
    c.reconnect = false;
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(c, codes).unwrap();
    let mut ws = accept(&l).await;
    let _ = recv_control(&mut ws).await;
    send_control(
        &mut ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::Rejected,
        }),
    )
    .await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::HelloRejected { .. })).await;
    assert_eq!(
        ev,
        Event::HelloRejected {
            next_action: NextAction::Rejected
        }
    );
    next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    // The channel closes when the task ends.
    assert!(tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .is_none());
    assert!(handle.is_stopped());
    assert_eq!(handle.stop_reason(), Some(StopReason::ReconnectDisabled));
}

/// Read frames until the follower's close frame, then drop the socket; returns the close code.
async fn follower_closes(mut ws: Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Close(f))) => {
                // Reading on lets tungstenite answer the close, so the follower need not wait.
                while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
                return f.map(|f| f.code);
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn attempts_left_expiry_countdown_and_expired_code() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let (codes, prompts) = scripted_codes(vec![
        Some("WRONG111"),
        Some("WRONG222"),
        Some("WRONG333"),
        Some("RIGHT444"),
    ]);
    let (handle, mut events) = spawn(config(&url, dir.path()), codes).unwrap();
    let mut ws = accept(&l).await;
    let _ = recv_control(&mut ws).await;
    send_control(
        &mut ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::PairRequired,
        }),
    )
    .await;
    send_control(
        &mut ws,
        Message::PairRequest(PairRequest {
            identifier: "alpha".into(),
            expires_at: 1_700_000_300,
            ttl_seconds: 300,
            admin_notification: AdminNotification::Failed,
            code_delivery: "out_of_band".into(),
        }),
    )
    .await;
    let Message::PairConfirm(c) = recv_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    assert_eq!(c.pairing_code, "WRONG111");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pair_failed(&mut ws, PairFailReason::InvalidCode, Some(2)).await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::PairFailed { .. })).await;
    assert_eq!(
        ev,
        Event::PairFailed {
            reason: PairFailReason::InvalidCode,
            attempts_left: Some(2)
        }
    );
    let Message::PairConfirm(c) = recv_control(&mut ws).await else {
        panic!("expected a second pair_confirm")
    };
    assert_eq!(c.pairing_code, "WRONG222");
    {
        let prompts = prompts.lock().unwrap();
        let first = prompts[0].expires_in.unwrap();
        assert!(first <= Duration::from_secs(300) && first > Duration::from_secs(298));
        assert!(prompts[1].retry);
        assert_eq!(prompts[1].attempts_left, Some(2));
        // Counted down, not the stale ttl.
        let left = prompts[1].expires_in.unwrap();
        assert!(left < Duration::from_secs(299), "{left:?}");
        assert!(left > Duration::from_secs(280), "{left:?}");
        assert_eq!(prompts[1].ttl_seconds, Some(300));
        assert_eq!(
            prompts[1].admin_notification,
            Some(AdminNotification::Failed)
        );
    }

    // No attempts left on this connection: no new prompt; the follower closes and comes back.
    pair_failed(&mut ws, PairFailReason::InvalidCode, Some(0)).await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::PairFailed { .. })).await;
    assert_eq!(
        ev,
        Event::PairFailed {
            reason: PairFailReason::InvalidCode,
            attempts_left: Some(0)
        }
    );
    assert_eq!(follower_closes(ws).await, Some(CloseCode::Normal));
    let ev = next_matching(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
    let Event::Reconnecting { url: next, delay } = ev else {
        unreachable!()
    };
    assert_eq!(next, url);
    assert!(delay <= Duration::from_millis(100), "{delay:?}");
    assert_eq!(prompts.lock().unwrap().len(), 2);

    // Same host, same pending pairing: the prompt still knows the expiry.
    let mut ws = accept(&l).await;
    let _ = recv_control(&mut ws).await;
    send_control(
        &mut ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::WaitingPairConfirm,
        }),
    )
    .await;
    let Message::PairConfirm(c) = recv_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    assert_eq!(c.pairing_code, "WRONG333");
    {
        let prompts = prompts.lock().unwrap();
        assert!(!prompts[2].retry);
        assert_eq!(prompts[2].expires_at, Some(1_700_000_300));
        assert!(prompts[2].expires_in.unwrap() < Duration::from_secs(299));
    }
    // Expired (or cancelled): the pairing is gone; disconnect and start over.
    pair_failed(&mut ws, PairFailReason::Expired, None).await;
    next_matching(&mut events, |e| {
        *e == Event::PairFailed {
            reason: PairFailReason::Expired,
            attempts_left: None,
        }
    })
    .await;
    assert_eq!(follower_closes(ws).await, Some(CloseCode::Normal));
    let mut ws = accept(&l).await;
    let _ = recv_control(&mut ws).await;
    send_control(
        &mut ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::WaitingPairConfirm,
        }),
    )
    .await;
    let Message::PairConfirm(_) = recv_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    {
        let prompts = prompts.lock().unwrap();
        assert_eq!(prompts[3].expires_at, None, "forgotten after expired");
        assert_eq!(prompts[3].expires_in, None);
    }
    tokio::spawn(follower_closes(ws));
    handle.shutdown().await;
}

#[tokio::test]
async fn identifier_not_allowed_stops_when_every_host_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(config(&url, dir.path()), codes).unwrap();
    let mut ws = accept(&l).await;
    let _ = recv_control(&mut ws).await;
    send_control(
        &mut ws,
        Message::Error(ErrorPayload {
            code: ErrorCode::IdentifierNotAllowed,
            message: "identifier is not on this host's allowlist".into(),
        }),
    )
    .await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Policy,
        reason: "Identifier not allowed".into(),
    }))
    .await
    .unwrap();
    let ev = next_matching(&mut events, |e| matches!(e, Event::HostError { .. })).await;
    assert!(matches!(
        ev,
        Event::HostError {
            code: ErrorCode::IdentifierNotAllowed,
            ..
        }
    ));
    next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    // Permanent: no Reconnecting, the task ends.
    let rest = tokio::time::timeout(WAIT, async {
        let mut rest = Vec::new();
        while let Some(ev) = events.recv().await {
            rest.push(ev);
        }
        rest
    })
    .await
    .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(handle.is_stopped());
    assert_eq!(handle.stop_reason(), Some(StopReason::IdentifierNotAllowed));
    // Nobody connects again.
    assert!(tokio::time::timeout(Duration::from_millis(500), l.accept())
        .await
        .is_err());
}

#[tokio::test]
async fn fails_over_to_the_next_url_and_round_robin() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    // A host that is never reachable; its port stays taken for the whole test, so no other test
    // running in parallel can be handed it.
    let (_dead, dead_url) = dead_host().await;
    let mut c = Config::with_urls([dead_url.clone(), url.clone()], "alpha", dir.path());
    c.heartbeat_interval = Duration::from_millis(200);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    {
        let mut s = yonexus_follower::State::load_or_create(dir.path(), "alpha").unwrap();
        s.set_secret(Some("sek".into())).unwrap();
    }
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(c, codes).unwrap();
    let ev = next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let Event::Disconnected { reason } = ev else {
        unreachable!()
    };
    assert!(reason.contains(&dead_url), "{reason}");
    // Moved on at once, in the same round.
    let mut ws = accept(&l).await;
    let ev = next_matching(&mut events, |e| {
        matches!(e, Event::Connected { .. } | Event::Reconnecting { .. })
    })
    .await;
    assert_eq!(ev, Event::Connected { url: url.clone() });
    let Message::Hello(h) = recv_control(&mut ws).await else {
        panic!("expected hello")
    };
    send_control(
        &mut ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::AuthRequired,
        }),
    )
    .await;
    expect_valid_auth(&mut ws, &h.public_key.unwrap(), "sek").await;
    next_matching(&mut events, |e| *e == Event::Authenticated).await;

    // The host drops the connection: the next round starts at the URL after it (the dead one),
    // then comes back here.
    drop(ws);
    next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
    assert!(
        matches!(ev, Event::Reconnecting { url: ref u, .. } if *u == dead_url),
        "{ev:?}"
    );
    let ev = next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(matches!(ev, Event::Disconnected { ref reason } if reason.contains(&dead_url)));
    let mut ws = accept(&l).await;
    next_matching(&mut events, |e| *e == Event::Connected { url: url.clone() }).await;
    let Message::Hello(_) = recv_control(&mut ws).await else {
        panic!("expected hello")
    };
    handle.shutdown().await;
}

#[tokio::test]
async fn a_refusing_host_is_passed_over_for_one_that_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (refusing, refusing_url) = listener().await;
    let (l, url) = listener().await;
    let mut c = Config::with_urls([refusing_url, url.clone()], "alpha", dir.path());
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(c, codes).unwrap();
    let mut ws = accept(&refusing).await;
    let _ = recv_control(&mut ws).await;
    send_control(
        &mut ws,
        Message::Error(ErrorPayload {
            code: ErrorCode::IdentifierNotAllowed,
            message: "no".into(),
        }),
    )
    .await;
    ws.close(None).await.unwrap();
    drop(ws);
    // Not every host refused: go on to the other one.
    let mut ws = accept(&l).await;
    next_matching(&mut events, |e| *e == Event::Connected { url: url.clone() }).await;
    let Message::Hello(_) = recv_control(&mut ws).await else {
        panic!("expected hello")
    };
    assert!(!handle.is_stopped());
    handle.shutdown().await;
}

/// A follower with a stored secret, configured for `urls`, with short timers.
fn paired_config(urls: &[&str], dir: &std::path::Path) -> Config {
    {
        let mut s = yonexus_follower::State::load_or_create(dir, "alpha").unwrap();
        s.set_secret(Some("sek".into())).unwrap();
    }
    let mut c = Config::with_urls(urls.iter().copied(), "alpha", dir);
    c.heartbeat_interval = Duration::from_millis(200);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c
}

/// Host side of hello → auth_required → a valid auth_request → auth_success.
async fn authenticate(ws: &mut Ws) {
    let Message::Hello(h) = recv_control(ws).await else {
        panic!("expected hello")
    };
    send_control(
        ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action: NextAction::AuthRequired,
        }),
    )
    .await;
    expect_valid_auth(ws, &h.public_key.unwrap(), "sek").await;
}

#[tokio::test]
async fn a_silent_host_is_given_up_and_the_next_url_tried() {
    let dir = tempfile::tempdir().unwrap();
    let (silent, silent_url) = listener().await;
    let (l, url) = listener().await;
    let mut c = paired_config(&[&silent_url, &url], dir.path());
    c.liveness_timeout = Some(Duration::from_millis(800));
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(c, codes).unwrap();

    // The first host authenticates the follower, then says nothing more and never closes the
    // socket (it stopped, or the network between them went away): not even pings are
    // answered, as nothing reads them.
    let mut dead = accept(&silent).await;
    authenticate(&mut dead).await;
    next_matching(&mut events, |e| *e == Event::Authenticated).await;
    let silent_since = std::time::Instant::now();
    let ev = next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let waited = silent_since.elapsed();
    let Event::Disconnected { reason } = ev else {
        unreachable!()
    };
    assert!(reason.contains("liveness timeout"), "{reason}");
    assert!(reason.contains("0.8 s"), "{reason}");
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Given up like any lost connection: backoff, then the next host.
    let ev = next_matching(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
    assert!(
        matches!(ev, Event::Reconnecting { url: ref u, .. } if *u == url),
        "{ev:?}"
    );
    let mut ws = accept(&l).await;
    authenticate(&mut ws).await;
    next_matching(&mut events, |e| *e == Event::Authenticated).await;
    // The silent host heard heartbeats and a ping before it was given up.
    let mut heard = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(200), dead.next()).await
    {
        heard.push(m);
    }
    assert!(
        heard.iter().any(|m| matches!(m, WsMessage::Ping(_))),
        "{heard:?}"
    );
    assert!(
        heard
            .iter()
            .any(|m| matches!(m, WsMessage::Text(t) if is_heartbeat(t.as_str()))),
        "{heard:?}"
    );
    drop(dead);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_host_that_only_answers_pings_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let mut c = paired_config(&[&url], dir.path());
    // No heartbeat (so no heartbeat_ack) within the test: only the liveness pings keep the
    // host talking.
    c.heartbeat_interval = Duration::from_secs(60);
    c.liveness_timeout = Some(Duration::from_millis(600));
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(c, codes).unwrap();
    let mut ws = accept(&l).await;
    authenticate(&mut ws).await;
    next_matching(&mut events, |e| *e == Event::Authenticated).await;
    // The host reads (which answers pings with pongs) and sends nothing of its own.
    let host = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, WsMessage::Ping(_)) {
                pings += 1;
            }
        }
        pings
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(handle.is_authenticated());
    let early: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(early.is_empty(), "{early:?}");
    handle.shutdown().await;
    let pings = tokio::time::timeout(WAIT, host).await.unwrap().unwrap();
    // One ping per 0.3 s of silence.
    assert!(pings >= 4, "{pings}");
}

#[tokio::test]
async fn an_application_that_does_not_read_never_stalls_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let mut c = paired_config(&[&url], dir.path());
    c.event_backlog = 100;
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(c, codes).unwrap();
    let mut ws = accept(&l).await;
    authenticate(&mut ws).await;
    next_matching(&mut events, |e| *e == Event::Authenticated).await;

    // The application stops reading events while the host sends far more than the channel
    // and the backlog hold.
    const BURST: usize = 10_000;
    send_burst(&mut ws, "echo", BURST).await;
    // The connection goes on meanwhile: heartbeats keep coming and a ping is answered.
    let (heartbeats, pong) = ping_and_count_heartbeats(&mut ws, Duration::from_millis(1000)).await;
    assert!(pong, "ping not answered");
    assert!(heartbeats >= 3, "{heartbeats} heartbeats in 1 s at 0.2 s");
    assert!(handle.is_authenticated());

    // Now it reads: the oldest messages that did not fit were dropped, and each gap is
    // reported, in place, with its size.
    let mut expected = 0usize;
    let mut delivered = 0usize;
    let mut reported = 0u64;
    while expected < BURST {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("stuck after {expected}"))
            .unwrap();
        match ev {
            Event::Rule { rule_id, content } => {
                assert_eq!(rule_id, "echo");
                assert_eq!(content, expected.to_string(), "in order, gaps reported");
                expected += 1;
                delivered += 1;
            }
            Event::Dropped { rules, other } => {
                assert_eq!(other, 0);
                assert!(rules > 0);
                reported += rules;
                expected += usize::try_from(rules).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(expected, BURST, "the last message was delivered");
    assert_eq!(delivered as u64 + reported, BURST as u64);
    // The channel (256) and the backlog (100) held the rest, give or take the one in transit.
    assert!(delivered <= 256 + 100 + 1, "{delivered}");
    assert!(delivered >= 100, "{delivered}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_stops_sending_does_not_starve_heartbeats_or_sends() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let c = paired_config(&[&url], dir.path());
    let (codes, _) = scripted_codes(vec![]);
    let (handle, mut events) = spawn(c, codes).unwrap();
    let mut ws = accept(&l).await;
    authenticate(&mut ws).await;
    next_matching(&mut events, |e| *e == Event::Authenticated).await;
    tokio::spawn(async move { while events.recv().await.is_some() {} });

    // The host floods the follower for 1.5 s, as fast as the socket takes it.
    const FLOOD: Duration = Duration::from_millis(1500);
    let (mut tx, mut rx) = ws.split();
    let flood = tokio::spawn(async move {
        let end = tokio::time::Instant::now() + FLOOD;
        let mut n = 0u64;
        while tokio::time::Instant::now() < end {
            for _ in 0..100 {
                tx.feed(WsMessage::text(format!("echo::{n}")))
                    .await
                    .unwrap();
                n += 1;
            }
            tx.flush().await.unwrap();
        }
        tx
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.send("echo", "mid-flood").unwrap();
    let (mut heartbeats, mut sent) = (0, false);
    let end = tokio::time::Instant::now() + FLOOD;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, rx.next()).await {
        match m {
            WsMessage::Text(t) if is_heartbeat(t.as_str()) => heartbeats += 1,
            WsMessage::Text(t) if t.as_str() == "echo::mid-flood" => sent = true,
            _ => {}
        }
    }
    let _tx = flood.await.unwrap();
    // A heartbeat every 0.2 s, throughout.
    assert!(heartbeats >= 4, "{heartbeats} heartbeats during the flood");
    assert!(
        sent,
        "the application's message waited for the flood to end"
    );
    handle.shutdown().await;
}
