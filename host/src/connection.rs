//! One follower's socket: the WebSocket upgrade (path check, admission, deadline, size limits),
//! a reader that feeds the session (authentication deadline, inbound rate limit, ping
//! keepalive), and a writer that drains the bounded outbound queue in batches (feed … feed, one
//! flush).

use crate::admission::Ticket;
use crate::hub::Hub;
use crate::metrics::{self, ConnectionState};
use crate::registry::{AbortReason, Outbound, SessionHandle};
use crate::reply;
use crate::session::{Flow, Session};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use yonexus_protocol::envelope::ErrorCode;

/// How long a closing connection may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// WebSocket limits for a small-message hub (tungstenite's defaults allow 64 MiB messages and
/// allocate a 128 KiB read buffer per connection).
pub fn ws_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(max_message_size + 64 * 1024)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

fn http_error(status: StatusCode, body: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(body.to_owned()));
    *resp.status_mut() = status;
    resp
}

/// Serve one accepted connection (plain TCP or TLS) until it closes or the host shuts down.
/// `ticket` is `Err(reason)` when the unauthenticated caps are full: the upgrade then gets 503.
pub async fn run<S>(
    hub: Arc<Hub>,
    stream: S,
    remote: SocketAddr,
    ticket: Result<Ticket, &'static str>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = hub.settings();
    let limits = settings.limits;
    let path = settings.path.clone();
    let refusal = ticket.as_ref().err().copied();
    // The error type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        if req.uri().path() != path {
            Err(http_error(
                StatusCode::NOT_FOUND,
                "no WebSocket endpoint at this path\n",
            ))
        } else if refusal.is_some() {
            Err(http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many unauthenticated connections; retry later\n",
            ))
        } else {
            Ok(resp)
        }
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(ws_config(limits.max_message_size)),
    );
    let ws = match tokio::time::timeout(Duration::from_millis(limits.upgrade_timeout_ms), upgrade)
        .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            match refusal {
                Some(reason) => {
                    metrics::connection_rejected(reason);
                    tracing::warn!(remote = %remote, reason, "upgrade refused: unauthenticated connection cap reached")
                }
                None => tracing::debug!(remote = %remote, error = %e, "WebSocket upgrade refused"),
            }
            return;
        }
        Err(_) => {
            metrics::connection_rejected("upgrade_timeout");
            tracing::debug!(remote = %remote, "WebSocket upgrade deadline passed");
            return;
        }
    };
    metrics::connection_opened();
    metrics::connection_state(None, Some(ConnectionState::Unauthenticated));
    let mut state = ConnectionState::Unauthenticated;
    let mut ticket = ticket.ok();
    let conn_id = hub.next_conn_id();
    tracing::info!(remote = %remote, conn = conn_id, "connection opened");
    let (tx, rx) = mpsc::channel(limits.outbound_queue);
    let cancel = CancellationToken::new();
    let handle = Arc::new(
        SessionHandle::new(conn_id, remote, hub.now(), tx, cancel.clone())
            .with_byte_limit(limits.outbound_queue_bytes),
    );
    let (sink, mut frames) = ws.split();
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        handle.queued_bytes(),
        handle.abort_reason(),
        cancel.clone(),
    ));
    let mut session = Session::new(Arc::clone(&handle));

    let burst = NonZeroU32::new(limits.rate_burst).unwrap_or(NonZeroU32::MIN);
    let rate = NonZeroU32::new(limits.rate_per_sec).unwrap_or(NonZeroU32::MIN);
    let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
    let mut limited_in_a_row = 0u32;
    let opened = Instant::now();
    let ping_every = Duration::from_secs(limits.ping_interval_secs);
    let mut ping = tokio::time::interval_at(opened + ping_every, ping_every);
    let mut last_heard = Instant::now();

    loop {
        // Until authenticated, a deadline: longer while a pairing (a human) is in progress.
        let deadline = match session.authenticated_as() {
            Some(_) => None,
            None => {
                let mut secs = limits.auth_timeout_secs;
                if session.in_pairing() {
                    secs += hub.settings().pairing.ttl_secs.max(0) as u64;
                }
                Some(opened + Duration::from_secs(secs))
            }
        };
        let now_state = match deadline {
            Some(_) => ConnectionState::Unauthenticated,
            None => ConnectionState::Authenticated,
        };
        if now_state != state {
            metrics::connection_state(Some(state), Some(now_state));
            state = now_state;
        }
        if ticket.is_some() && deadline.is_none() {
            ticket = None; // authenticated: no longer counts against the unauthenticated caps
        }
        let auth_deadline = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            // Closed from elsewhere (revoked, replaced, offline, removed from the allowlist):
            // nothing more is read from this peer.
            _ = handle.closed() => break,
            _ = shutdown.cancelled() => {
                // Released before the peer can see the close, so a reconnect is admitted.
                ticket = None;
                handle.close(1001, "host shutting down");
                break;
            }
            _ = auth_deadline => {
                metrics::connection_rejected("auth_timeout");
                tracing::info!(remote = %remote, conn = conn_id, "authentication deadline passed: closing");
                // Released before the peer can see the close, so a reconnect is admitted.
                ticket = None;
                handle.close(1008, "authentication timeout");
                break;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= ping_every * 2 {
                    tracing::info!(remote = %remote, conn = conn_id, identifier = session.authenticated_as().unwrap_or("-"), "peer silent for two ping intervals: dropping the connection");
                    handle.abort(1001, "ping timeout");
                    break;
                }
                let _ = handle.send(Outbound::Ping);
            }
            next = frames.next() => {
                last_heard = Instant::now();
                let flow = match next {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => {
                        if limiter.check().is_err() {
                            metrics::rate_limited();
                            limited_in_a_row += 1;
                            if limited_in_a_row >= limits.rate_abuse_close_after {
                                tracing::warn!(remote = %remote, conn = conn_id, "persistent rate-limit abuse: closing");
                                Flow::Close { code: 1008, reason: "rate limit exceeded".into() }
                            } else {
                                let _ = handle.send(Outbound::Text(reply::error(ErrorCode::RateLimited, format!("more than {} messages per second; message dropped", limits.rate_per_sec), hub.now(), None)));
                                Flow::Continue
                            }
                        } else if session.authenticated_as().is_none() && text.len() > limits.max_unauthenticated_message {
                            metrics::message_too_large();
                            tracing::info!(remote = %remote, conn = conn_id, size = text.len(), "oversized message before authentication: closing");
                            Flow::Close { code: 1009, reason: "message too big".into() }
                        } else {
                            limited_in_a_row = 0;
                            session.on_text(&hub, text.as_str()).await
                        }
                    }
                    Some(Ok(Message::Binary(b))) => {
                        metrics::frame_in("binary", None, b.len());
                        session.on_binary(&hub)
                    }
                    Some(Ok(_)) => Flow::Continue, // ping/pong: tungstenite answers pings itself
                    Some(Err(e)) => {
                        let (code, reason) = match &e {
                            WsError::Capacity(_) => {
                                metrics::message_too_large();
                                (1009, "message too big")
                            }
                            WsError::Utf8(_) => (1007, "invalid UTF-8"),
                            WsError::Protocol(_) => (1002, "protocol error"),
                            _ => (0, ""),
                        };
                        tracing::debug!(remote = %remote, conn = conn_id, error = %e, "read error");
                        if code == 0 {
                            break;
                        }
                        Flow::Close { code, reason: reason.into() }
                    }
                };
                if let Flow::Close { code, reason } = flow {
                    // Released before the peer can see the close, so a reconnect is admitted.
                    ticket = None;
                    handle.close(code, &reason);
                    break;
                }
            }
        }
    }
    session.on_close(&hub);
    metrics::connection_state(Some(state), None);
    metrics::connection_closed();
    drop(session);
    drop(ticket);
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
    tracing::info!(remote = %remote, conn = conn_id, "connection closed");
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    queued: Arc<AtomicUsize>,
    abort_reason: AbortReason,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let close = |code: u16, reason: String| {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
    };
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => {
                let reason = abort_reason.lock().map(|r| r.clone()).unwrap_or(None);
                if let Some((code, reason)) = reason {
                    let _ = tokio::time::timeout(Duration::from_millis(500), sink.send(close(code, reason))).await;
                }
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
            let fed = match item {
                Outbound::Text(text) => {
                    let len = text.len();
                    metrics::frame_out("text", len);
                    let fed = sink.feed(Message::text(text)).await;
                    queued.fetch_sub(len, Ordering::AcqRel);
                    fed
                }
                Outbound::Ping => sink.feed(Message::Ping(Vec::new().into())).await,
                Outbound::Close { code, reason } => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close(code, reason))).await;
                    return;
                }
            };
            if fed.is_err() {
                return;
            }
            match rx.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        let flushed = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sink.flush() => r,
        };
        if flushed.is_err() {
            return;
        }
    }
}
