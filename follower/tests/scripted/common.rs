//! The host side of the scripted-host tests (`client.rs`, `cli.rs`): a real WebSocket
//! listener on an ephemeral loopback port and helpers to read and write frames.

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use yonexus_protocol::envelope::{Message, PairFailReason, PairFailed};
use yonexus_protocol::{frame, Envelope, Frame};

pub type Ws = WebSocketStream<TcpStream>;

/// How long any single step may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A listener on an ephemeral loopback port, and its `ws://` URL.
pub async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    (l, url)
}

/// The URL of a host that is never reachable: a listener that accepts each connection and
/// drops it at once (so no WebSocket handshake completes). It stays bound, so no other test can
/// take its port, until the returned task is aborted or the test's runtime ends.
pub async fn dead_host() -> (tokio::task::JoinHandle<()>, String) {
    let (l, url) = listener().await;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            drop(tcp);
        }
    });
    (task, url)
}

/// Accept the follower's next connection and complete the WebSocket handshake.
pub async fn accept(l: &TcpListener) -> Ws {
    let (tcp, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .expect("follower did not connect")
        .unwrap();
    tokio_tungstenite::accept_async(tcp).await.unwrap()
}

/// The next text frame (pings and pongs skipped; reading answers pings).
pub async fn recv_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            WsMessage::Text(t) => return t.as_str().to_string(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Whether `text` is a `heartbeat` control frame.
pub fn is_heartbeat(text: &str) -> bool {
    matches!(frame::parse(text), Ok(Frame::Builtin(json))
        if matches!(Envelope::decode(json), Ok(e) if matches!(e.message, Message::Heartbeat(_))))
}

/// The next text frame that is not a heartbeat.
pub async fn recv_significant(ws: &mut Ws) -> String {
    loop {
        let t = recv_text(ws).await;
        if !is_heartbeat(&t) {
            return t;
        }
    }
}

fn control(text: &str) -> Message {
    let Ok(Frame::Builtin(json)) = frame::parse(text) else {
        panic!("expected a control frame, got {text}")
    };
    Envelope::decode(json).unwrap().message
}

/// The next frame, which must be a control message.
pub async fn recv_control(ws: &mut Ws) -> Message {
    control(&recv_text(ws).await)
}

/// The next frame that is not a heartbeat, which must be a control message.
pub async fn recv_significant_control(ws: &mut Ws) -> Message {
    control(&recv_significant(ws).await)
}

pub async fn send_control(ws: &mut Ws, m: Message) {
    ws.send(WsMessage::text(Envelope::new(m, 1_700_000_000).to_frame()))
        .await
        .unwrap();
}

/// Send `pair_failed` for `alpha`.
pub async fn pair_failed(ws: &mut Ws, reason: PairFailReason, attempts_left: Option<u32>) {
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

/// Send `n` rule frames `rule::0`, `rule::1`, … as fast as the follower reads them (fails if it
/// stops reading for [`WAIT`]).
pub async fn send_burst(ws: &mut Ws, rule: &str, n: usize) {
    tokio::time::timeout(WAIT, async {
        for i in 0..n {
            ws.feed(WsMessage::text(format!("{rule}::{i}")))
                .await
                .unwrap();
        }
        ws.flush().await.unwrap();
    })
    .await
    .expect("the follower stopped reading");
}

/// Ping the follower, then read for `window`: returns the heartbeats received and whether the
/// ping was answered (the connection goes on while the application is busy).
pub async fn ping_and_count_heartbeats(ws: &mut Ws, window: Duration) -> (usize, bool) {
    ws.send(WsMessage::Ping(b"there?".to_vec().into()))
        .await
        .unwrap();
    let (mut heartbeats, mut pong) = (0, false);
    let until = tokio::time::Instant::now() + window;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
        match m {
            WsMessage::Text(t) if is_heartbeat(t.as_str()) => heartbeats += 1,
            WsMessage::Pong(p) => pong = p.as_ref() == b"there?",
            _ => {}
        }
    }
    (heartbeats, pong)
}
