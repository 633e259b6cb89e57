//! The `yonexus-follower` binary against a scripted host: pairing code typed on stdin, rule
//! lines from stdin to the host, rule messages from the host on stdout, EOF → close 1000.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yonexus_protocol::envelope::{
    AdminNotification, AuthSuccess, ErrorCode, ErrorPayload, HelloAck, Message, NextAction,
    PairFailReason, PairRequest, PairSuccess,
};
use yonexus_protocol::signing;

const BIN: &str = env!("CARGO_BIN_EXE_yonexus-follower");

fn lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).await.is_err() {
                break;
            }
        }
    });
    rx
}

async fn wait_line(rx: &mut mpsc::Receiver<String>, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        let l = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no line containing {needle:?}; saw {seen:?}"))
            .unwrap_or_else(|| panic!("stream ended before {needle:?}; saw {seen:?}"));
        if l.contains(needle) {
            return l;
        }
        seen.push(l);
    }
}

#[tokio::test]
async fn cli_pairs_with_a_prompted_code_and_relays_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let mut child = Command::new(BIN)
        .args(["--url", &url, "--id", "alpha", "--heartbeat-secs", "1"])
        .arg("--state")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = lines(child.stdout.take().unwrap());
    let mut stderr = lines(child.stderr.take().unwrap());

    let mut ws = accept(&l).await;
    let Message::Hello(h) = recv_significant_control(&mut ws).await else {
        panic!("expected hello")
    };
    let public_key = h.public_key.unwrap();
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
    wait_line(
        &mut stderr,
        "Enter the pairing code the admin received for 'alpha':",
    )
    .await;
    stdin.write_all(b"abcd-2345\n").await.unwrap();
    let Message::PairConfirm(c) = recv_significant_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    assert_eq!(c.pairing_code, "ABCD2345");
    send_control(
        &mut ws,
        Message::PairSuccess(PairSuccess {
            identifier: "alpha".into(),
            secret: "the-secret".into(),
            paired_at: 1_700_000_000,
        }),
    )
    .await;
    let Message::AuthRequest(a) = recv_significant_control(&mut ws).await else {
        panic!("expected auth_request")
    };
    let raw = signing::decode_public_key(&public_key).unwrap();
    let sig = signing::decode_signature(&a.signature).unwrap();
    assert!(signing::verify(
        &raw,
        "the-secret",
        &a.nonce,
        a.proof_timestamp,
        &sig
    ));
    send_control(
        &mut ws,
        Message::AuthSuccess(AuthSuccess {
            identifier: "alpha".into(),
            authenticated_at: 1_700_000_000,
            status: "online".into(),
        }),
    )
    .await;
    wait_line(&mut stderr, "authenticated").await;

    stdin
        .write_all(b"no separator here\nbuiltin::{}\necho::hi::there\n")
        .await
        .unwrap();
    assert_eq!(recv_significant(&mut ws).await, "echo::hi::there");
    wait_line(&mut stderr, "skipped line").await;
    ws.send(WsMessage::text("echo::alpha::hi::there"))
        .await
        .unwrap();
    assert_eq!(
        wait_line(&mut stdout, "echo::").await,
        "echo::alpha::hi::there"
    );

    // EOF: queued lines are flushed, then the socket is closed with 1000 and the process exits 0.
    stdin.write_all(b"echo::last\n").await.unwrap();
    drop(stdin);
    assert_eq!(recv_significant(&mut ws).await, "echo::last");
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Close(f))) => break f.map(|f| f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, Some(CloseCode::Normal));
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("alpha.json");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("the-secret"));
    }
}

#[tokio::test]
async fn cli_fails_with_one_line_on_a_corrupt_state_file_or_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alpha.json");
    std::fs::write(&path, "{ nope").unwrap();
    let out = Command::new(BIN)
        .args(["--url", "ws://127.0.0.1:9/", "--id", "alpha", "--state"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    // 2: a person has to look (a service manager should not restart it in a loop).
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ nope");

    let out = Command::new(BIN)
        .args(["--url", "ws://127.0.0.1:9/"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--id"), "{err}");
}

/// The CLI for `alpha` on `url` with a 1 s heartbeat, stdio piped, RUST_LOG unset (add to it
/// before spawning).
fn follower_command(url: &str, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--url", url, "--id", "alpha", "--heartbeat-secs", "1"])
        .arg("--state")
        .arg(dir)
        .env_remove("RUST_LOG")
        .env_remove("YONEXUS_PAIRING_CODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn follower(url: &str, dir: &std::path::Path) -> tokio::process::Child {
    follower_command(url, dir).spawn().unwrap()
}

/// A follower `alpha` with a stored secret (so it authenticates without pairing).
fn paired_state() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = yonexus_follower::State::load_or_create(dir.path(), "alpha").unwrap();
    s.set_secret(Some("sek".into())).unwrap();
    dir
}

/// Host side of hello → auth_required → auth_request → auth_success.
async fn authenticate(ws: &mut Ws) {
    greet(ws, NextAction::AuthRequired).await;
    let Message::AuthRequest(_) = recv_significant_control(ws).await else {
        panic!("expected auth_request")
    };
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

/// Every line up to and including the first containing `needle`.
async fn lines_until(rx: &mut mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let l = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no line containing {needle:?}; saw {seen:?}"))
            .unwrap_or_else(|| panic!("stream ended before {needle:?}; saw {seen:?}"));
        let done = l.contains(needle);
        seen.push(l);
        if done {
            return seen;
        }
    }
}

async fn greet(ws: &mut Ws, next_action: NextAction) {
    let Message::Hello(_) = recv_significant_control(ws).await else {
        panic!("expected hello")
    };
    send_control(
        ws,
        Message::HelloAck(HelloAck {
            identifier: "alpha".into(),
            next_action,
        }),
    )
    .await;
}

/// Every stderr line that arrives within `window`.
async fn lines_for(rx: &mut mpsc::Receiver<String>, window: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(l)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(l);
    }
    out
}

#[tokio::test]
async fn cli_says_what_is_left_of_pairing_and_what_happens_next() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = listener().await;
    let mut child = follower(&url, dir.path());
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = lines(child.stderr.take().unwrap());

    let mut ws = accept(&l).await;
    greet(&mut ws, NextAction::PairRequired).await;
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
    let expiry = wait_line(&mut stderr, "pairing required").await;
    assert!(
        expiry.contains("expires in 4 min 59 s") || expiry.contains("expires in 5 min"),
        "{expiry}"
    );
    wait_line(&mut stderr, "Enter the pairing code").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    stdin.write_all(b"WRONG234\n").await.unwrap();
    let Message::PairConfirm(_) = recv_significant_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    pair_failed(&mut ws, PairFailReason::InvalidCode, Some(2)).await;
    let refused = wait_line(&mut stderr, "not accepted").await;
    assert!(refused.contains("2 attempts left"), "{refused}");
    // The second prompt counts down instead of repeating the ttl.
    assert!(refused.contains("expires in 4 min 5"), "{refused}");
    assert!(!refused.contains("300"), "{refused}");
    wait_line(&mut stderr, "Enter the pairing code").await;
    stdin.write_all(b"WRONG345\n").await.unwrap();
    let Message::PairConfirm(_) = recv_significant_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    pair_failed(&mut ws, PairFailReason::InvalidCode, Some(0)).await;
    let last = wait_line(&mut stderr, "no attempts are left").await;
    assert!(
        last.contains("stays valid until it expires (in 4 min"),
        "{last}"
    );
    assert!(last.contains("reconnects"), "{last}");
    let again = wait_line(&mut stderr, "reconnecting to").await;
    assert!(again.contains(&url) && again.ends_with(" s"), "{again}");

    // Reconnected; this time the pending pairing is gone.
    let mut ws = accept(&l).await;
    greet(&mut ws, NextAction::WaitingPairConfirm).await;
    wait_line(&mut stderr, "Enter the pairing code").await;
    stdin.write_all(b"RIGHT234\n").await.unwrap();
    let Message::PairConfirm(_) = recv_significant_control(&mut ws).await else {
        panic!("expected pair_confirm")
    };
    pair_failed(&mut ws, PairFailReason::Expired, None).await;
    let expired = wait_line(&mut stderr, "pairing failed").await;
    assert!(
        expired.contains("Ask the admin for a new code"),
        "{expired}"
    );
    drop(stdin);
    let _ = child.kill().await;
}

#[tokio::test]
async fn cli_prints_each_host_error_once() {
    let dir = paired_state();
    let (l, url) = listener().await;
    let mut child = follower(&url, dir.path());
    let mut stderr = lines(child.stderr.take().unwrap());
    let mut ws = accept(&l).await;
    authenticate(&mut ws).await;
    wait_line(&mut stderr, "authenticated").await;
    send_control(
        &mut ws,
        Message::Error(ErrorPayload {
            code: ErrorCode::RuleNotFound,
            message: "no handler for 'nope'".into(),
        }),
    )
    .await;
    let seen = lines_for(&mut stderr, Duration::from_secs(1)).await;
    let mentions: Vec<_> = seen
        .iter()
        .filter(|l| l.contains("RULE_NOT_FOUND"))
        .collect();
    assert_eq!(mentions.len(), 1, "{seen:?}");
    assert_eq!(
        mentions[0],
        "host error RULE_NOT_FOUND: no handler for 'nope'"
    );
    let _ = child.kill().await;
}

#[tokio::test]
async fn cli_generates_completions_and_a_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["--completions", shell])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("yonexus-follower"), "{shell}: {text}");
        assert!(text.contains("pairing-code-file"), "{shell}: {text}");
    }
    let out = Command::new(BIN).arg("--man").output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(man.contains(".TH yonexus-follower 1"), "{man}");
    assert!(man.contains("\\-\\-exec"), "{man}");
    assert!(man.contains("YONEXUS_PAIRING_CODE"), "{man}");
    // An unknown shell is one clear line and exit 2.
    let out = Command::new(BIN)
        .args(["--completions", "cmd"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn cli_with_rust_log_info_shows_each_event_once() {
    // The library logs what it reports as events at debug at most: with RUST_LOG=info (as a
    // systemd unit may set) the journal gets each event once, as the CLI's plain line.
    let dir = paired_state();
    let (l, url) = listener().await;
    let mut child = follower_command(&url, dir.path())
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let mut stderr = lines(child.stderr.take().unwrap());
    let mut ws = accept(&l).await;
    authenticate(&mut ws).await;
    let mut seen = lines_until(&mut stderr, "authenticated").await;
    // The host goes away; the follower says so, backs off and comes back.
    ws.close(None).await.unwrap();
    drop(ws);
    let mut ws = accept(&l).await;
    authenticate(&mut ws).await;
    seen.extend(lines_until(&mut stderr, "authenticated").await);
    seen.extend(lines_for(&mut stderr, Duration::from_millis(500)).await);
    let count = |needle: &str| seen.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("connected to"), 2, "{seen:?}");
    assert_eq!(count("authenticated"), 2, "{seen:?}");
    assert_eq!(count("disconnected"), 1, "{seen:?}");
    assert_eq!(count("reconnecting"), 1, "{seen:?}");
    assert!(!seen.iter().any(|l| l.contains("INFO")), "{seen:?}");
    let _ = child.kill().await;
}

#[tokio::test]
async fn cli_exec_falling_behind_drops_the_oldest_waiting_and_the_connection_goes_on() {
    let dir = paired_state();
    let out = dir.path().join("received");
    let started = dir.path().join("started");
    // The first message keeps the program busy for 3 s; the rest are quick.
    let script = format!(
        "cat >> '{}'; touch '{}'; if [ \"$YONEXUS_RULE_ID\" = slow ]; then sleep 3; fi",
        out.display(),
        started.display()
    );
    let (l, url) = listener().await;
    let mut child = follower_command(&url, dir.path())
        .args(["--no-stdin", "--exec-queue", "4", "--exec", "/bin/sh", "-c"])
        .arg(&script)
        .spawn()
        .unwrap();
    let mut stderr = lines(child.stderr.take().unwrap());
    let mut ws = accept(&l).await;
    authenticate(&mut ws).await;
    wait_line(&mut stderr, "authenticated").await;
    ws.send(WsMessage::text("slow::first")).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !started.exists() {
        assert!(tokio::time::Instant::now() < deadline, "--exec never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A burst (more than the library's event channel holds) while the program is busy.
    const BURST: usize = 600;
    send_burst(&mut ws, "burst", BURST).await;
    // The connection is not held up by the program: heartbeats (1 s) go on, pings are answered.
    let (heartbeats, pong) = ping_and_count_heartbeats(&mut ws, Duration::from_millis(2300)).await;
    assert!(pong, "ping not answered");
    assert!(heartbeats >= 2, "{heartbeats} heartbeats in 2.3 s at 1 s");

    // The documented policy: the queue (4) keeps the newest waiting messages, the older ones
    // are dropped with a warning at once and their count when the program is next handed one;
    // one slot: in order.
    let warning = wait_line(&mut stderr, "falling behind").await;
    assert!(warning.contains("4 messages waiting"), "{warning}");
    let count = wait_line(&mut stderr, "dropped because").await;
    assert!(
        count.contains(&format!("{} message(s) dropped", BURST - 4)),
        "{count}"
    );
    let last = format!("burst::{}\n", BURST - 1);
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        if got.ends_with(&last) || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let expected: String = std::iter::once("slow::first\n".to_string())
        .chain((BURST - 4..BURST).map(|n| format!("burst::{n}\n")))
        .collect();
    assert_eq!(got, expected);
    let _ = child.kill().await;
}
