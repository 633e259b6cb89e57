//! One follower's socket: the WebSocket upgrade, a reader that feeds the session, and a writer
//! that drains the bounded outbound queue in batches (feed … feed, one flush).

use crate::hub::Hub;
use crate::registry::{Outbound, SessionHandle};
use crate::session::{Flow, Session};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// Deadline for the HTTP upgrade after TCP accept.
pub const UPGRADE_DEADLINE: Duration = Duration::from_secs(5);
/// Frames queued for one follower before it counts as a slow consumer.
pub const OUTBOUND_QUEUE: usize = 1024;
/// Largest message accepted from a follower.
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// How long a closing connection may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// WebSocket limits for a small-message hub (tungstenite's defaults allow 64 MiB messages and
/// allocate a 128 KiB read buffer per connection).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE))
}

fn not_found() -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some("no WebSocket endpoint at this path\n".into()));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

/// Serve one accepted TCP connection until it closes or the host shuts down.
pub async fn run(
    hub: Arc<Hub>,
    stream: TcpStream,
    remote: SocketAddr,
    shutdown: CancellationToken,
) {
    let path = hub.settings().path.clone();
    // The error type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        if req.uri().path() == path {
            Ok(resp)
        } else {
            Err(not_found())
        }
    };
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config()));
    let ws = match tokio::time::timeout(UPGRADE_DEADLINE, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(remote = %remote, error = %e, "WebSocket upgrade refused");
            return;
        }
        Err(_) => {
            tracing::debug!(remote = %remote, "WebSocket upgrade deadline passed");
            return;
        }
    };
    let conn_id = hub.next_conn_id();
    tracing::debug!(remote = %remote, conn = conn_id, "connection opened");
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let cancel = CancellationToken::new();
    let handle = Arc::new(SessionHandle::new(
        conn_id,
        remote,
        hub.now(),
        tx,
        cancel.clone(),
    ));
    let (sink, mut frames) = ws.split();
    let writer = tokio::spawn(write_loop(sink, rx, cancel.clone()));
    let mut session = Session::new(Arc::clone(&handle));

    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = shutdown.cancelled() => {
                handle.close(1001, "host shutting down");
                break;
            }
            next = frames.next() => match next {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Text(text))) => {
                    if let Flow::Close { code, reason } = session.on_text(&hub, text.as_str()).await {
                        handle.close(code, &reason);
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = session.on_binary(&hub);
                }
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                Some(Err(e)) => {
                    let (code, reason) = match &e {
                        WsError::Capacity(_) => (1009, "message too big"),
                        WsError::Utf8(_) => (1007, "invalid UTF-8"),
                        WsError::Protocol(_) => (1002, "protocol error"),
                        _ => (1000, ""),
                    };
                    tracing::debug!(remote = %remote, conn = conn_id, error = %e, "read error");
                    if code != 1000 {
                        handle.close(code, reason);
                    }
                    break;
                }
            }
        }
    }
    session.on_close(&hub);
    drop(session);
    drop(handle);
    // The writer ends once it has sent a queued close frame, or when every sender is gone.
    let mut writer = writer;
    if tokio::time::timeout(CLOSE_GRACE, &mut writer)
        .await
        .is_err()
    {
        cancel.cancel();
        writer.abort();
    }
    tracing::debug!(remote = %remote, conn = conn_id, "connection closed");
}

type Sink = futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>;

async fn write_loop(mut sink: Sink, mut rx: mpsc::Receiver<Outbound>, cancel: CancellationToken) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_millis(500), sink.close()).await;
                return;
            }
            item = rx.recv() => item,
        };
        let Some(mut item) = first else {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
            return;
        };
        // Feed everything already queued, then flush once.
        loop {
            match item {
                Outbound::Text(text) => {
                    if sink.feed(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Outbound::Close { code, reason } => {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    };
                    let _ =
                        tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame))))
                            .await;
                    return;
                }
            }
            match rx.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
