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
    AdminNotification, AuthSuccess, HelloAck, Message, NextAction, PairRequest, PairSuccess,
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
