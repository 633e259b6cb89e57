//! The admin port's connection loop: hyper's HTTP/1.1 server under the axum router, with
//! hostile input bounded. The request head must fit in [`MAX_HEAD_BYTES`] (hyper answers 431
//! beyond it) and arrive within [`HEAD_TIMEOUT`] (which also closes idle keep-alive
//! connections); a write that makes no progress for [`WRITE_TIMEOUT`] (a client that stopped
//! reading, even an event stream's) closes the connection; at most [`MAX_CONNECTIONS`]
//! connections are served at once, more are closed straight away.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The longest request head (request line and headers); hyper's smallest buffer.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The whole request head must arrive within this (also the keep-alive idle limit).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A pending write must make progress within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more are closed immediately.
pub const MAX_CONNECTIONS: usize = 64;
/// Request headers accepted (hyper's default is 100).
const MAX_HEADERS: usize = 64;
/// After an accept error (e.g. out of file descriptors), wait this long before the next accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits of the connection loop (tests shrink them).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub head_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

pub const LIMITS: Limits = Limits {
    head_timeout: HEAD_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    max_connections: MAX_CONNECTIONS,
};

/// Serve `router` on `listener` until `shutdown` is cancelled; returns once the connections in
/// flight have been dropped. Accept errors are logged and retried.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin http: accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "admin http: too many connections, closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(io, service);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "admin http: connection ended with an error");
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}
