//! The `yonexus-follower` binary against a scripted host: pairing code typed on stdin, rule
//! lines from stdin to the host, rule messages from the host on stdout, EOF → close 1000.

use futures_util::{SinkExt, StreamExt};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use yonexus_protocol::envelope::{
    AdminNotification, AuthSuccess, ErrorCode, ErrorPayload, HelloAck, Message, NextAction,
    PairFailReason, PairFailed, PairRequest, PairSuccess,
};
use yonexus_protocol::{frame, signing, Envelope, Frame};

const BIN: &str = env!("CARGO_BIN_EXE_yonexus-follower");
const WAIT: Duration = Duration::from_secs(10);
type Ws = WebSocketStream<TcpStream>;

async fn recv_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("socket ended")
            .expect("socket error")
        {
            WsMessage::Text(t) => return t.as_str().to_string(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Next non-heartbeat frame.
async fn recv_significant(ws: &mut Ws) -> String {
    loop {
        let t = recv_text(ws).await;
        if !t.contains(r#""type":"heartbeat""#) {
            return t;
        }
    }
}

async fn recv_control(ws: &mut Ws) -> Message {
    let text = recv_significant(ws).await;
    let Ok(Frame::Builtin(json)) = frame::parse(&text) else {
        panic!("expected a control frame, got {text}")
    };
    Envelope::decode(json).unwrap().message
}

async fn send_control(ws: &mut Ws, m: Message) {
    ws.send(WsMessage::text(Envelope::new(m, 1_700_000_000).to_frame()))
        .await
        .unwrap();
}

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
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
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

    let (tcp, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .unwrap()
        .unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let Message::Hello(h) = recv_control(&mut ws).await else {
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
    let Message::PairConfirm(c) = recv_control(&mut ws).await else {
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
    let Message::AuthRequest(a) = recv_control(&mut ws).await else {
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
    assert!(!out.status.success());
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

fn follower(url: &str, dir: &std::path::Path) -> tokio::process::Child {
    Command::new(BIN)
        .args(["--url", url, "--id", "alpha", "--heartbeat-secs", "1"])
        .arg("--state")
        .arg(dir)
        .env_remove("RUST_LOG")
        .env_remove("YONEXUS_PAIRING_CODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn greet(ws: &mut Ws, next_action: NextAction) {
    let Message::Hello(_) = recv_control(ws).await else {
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

async fn pair_failed(ws: &mut Ws, reason: PairFailReason, attempts_left: Option<u32>) {
    send_control(
        ws,
        Message::PairFailed(PairFailed {
            identifier: "alpha".into(),
            reason,
            attempts_left,
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
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let mut child = follower(&url, dir.path());
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = lines(child.stderr.take().unwrap());

    let (tcp, _) = l.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
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
    let Message::PairConfirm(_) = recv_control(&mut ws).await else {
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
    let Message::PairConfirm(_) = recv_control(&mut ws).await else {
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
    let (tcp, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .unwrap()
        .unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    greet(&mut ws, NextAction::WaitingPairConfirm).await;
    wait_line(&mut stderr, "Enter the pairing code").await;
    stdin.write_all(b"RIGHT234\n").await.unwrap();
    let Message::PairConfirm(_) = recv_control(&mut ws).await else {
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
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = yonexus_follower::State::load_or_create(dir.path(), "alpha").unwrap();
        s.set_secret(Some("sek".into())).unwrap();
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let mut child = follower(&url, dir.path());
    let mut stderr = lines(child.stderr.take().unwrap());
    let (tcp, _) = l.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    greet(&mut ws, NextAction::AuthRequired).await;
    let Message::AuthRequest(_) = recv_control(&mut ws).await else {
        panic!("expected auth_request")
    };
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
