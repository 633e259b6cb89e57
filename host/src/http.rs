//! The admin HTTP port: `GET /metrics`, `/healthz`, `/readyz`.
//!
//! A deliberately tiny HTTP/1.1 server on tokio, so no HTTP stack is pulled in for three fixed
//! plain-text answers. One request per connection (`Connection: close`), no request bodies.
//! Hostile input is bounded: the request head is read up to [`MAX_HEAD_BYTES`] within
//! [`HEAD_TIMEOUT`], the response is written within [`WRITE_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] connections are served at once (more are closed straight away).
//!
//! Answers: `/metrics` 200 with [`Metrics::render`]; `/healthz` 200 `ok` while the process
//! runs; `/readyz` 200 while the `ready` flag is set, else 503; other paths 404; methods other
//! than GET (and HEAD, which is GET without the body) 405; a malformed or oversized head 400;
//! a head not complete in time 408.

use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The longest request head (request line and headers) read; longer is answered 400.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The whole request head must arrive within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole response must be written within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more are closed immediately.
pub const MAX_CONNECTIONS: usize = 64;

/// The Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// After responding, read (and discard) what the client still sends for at most this long and
/// this many bytes, so closing does not reset the connection before it read the response.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// After an accept error (e.g. out of file descriptors), wait this long before the next accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Limits {
    head_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
}

const LIMITS: Limits = Limits {
    head_timeout: HEAD_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    max_connections: MAX_CONNECTIONS,
};

/// Serve the admin endpoints on `listener` until `shutdown` is cancelled; returns once the
/// connections in flight have been dropped. Never panics on client input; accept errors are
/// logged and retried.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    serve_with(listener, metrics, ready, shutdown, LIMITS).await;
}

async fn serve_with(
    listener: TcpListener,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
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
        let (metrics, ready, shutdown) = (metrics.clone(), Arc::clone(&ready), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = handle(stream, &metrics, &ready, limits) => {}
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// One connection: read the head, answer, close.
async fn handle(mut stream: TcpStream, metrics: &Metrics, ready: &AtomicBool, limits: Limits) {
    let response = match tokio::time::timeout(limits.head_timeout, read_head(&mut stream)).await {
        Err(_elapsed) => Response::text(408, "Request Timeout", "request timeout\n"),
        Ok(Err(_)) | Ok(Ok(Head::Eof)) => return,
        Ok(Ok(Head::TooLarge)) => Response::text(400, "Bad Request", "request head too large\n"),
        Ok(Ok(Head::Complete(head))) => match parse_request(&head) {
            Ok(request) => route(&request, metrics, ready),
            Err(why) => {
                tracing::debug!(why, "admin http: bad request");
                Response::text(400, "Bad Request", "bad request\n")
            }
        },
    };
    let bytes = response.to_bytes();
    let written = tokio::time::timeout(limits.write_timeout, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

enum Head {
    /// The bytes up to and including the blank line ending the head.
    Complete(Vec<u8>),
    /// [`MAX_HEAD_BYTES`] read without the end of the head.
    TooLarge,
    /// The peer closed before the end of the head.
    Eof,
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = MAX_HEAD_BYTES - head.len();
        if room == 0 {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut chunk[..room.min(1024)]).await?;
        if n == 0 {
            return Ok(Head::Eof);
        }
        // Look for the blank line from just before the new bytes (it may straddle reads).
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head[from..]) {
            head.truncate(from + end);
            return Ok(Head::Complete(head));
        }
    }
}

/// The length of the head in `buf` up to and including its blank line (`\r\n\r\n`, or a bare
/// `\n\n` as RFC 9112 allows recipients to accept).
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else if rest.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The path without the query string.
    path: &'a str,
}

/// Parse the request line and check the header lines' shape.
fn parse_request(head: &[u8]) -> Result<Request<'_>, &'static str> {
    let head = std::str::from_utf8(head).map_err(|_| "head is not UTF-8")?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().ok_or("empty head")?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("request line is not `METHOD TARGET VERSION`");
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err("bad method");
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("bad request target");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("unsupported HTTP version");
    }
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, _value)) = line.split_once(':') else {
            return Err("header line without `:`");
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err("bad header name");
        }
        if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err("control character in header");
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request { method, path })
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn route(request: &Request<'_>, metrics: &Metrics, ready: &AtomicBool) -> Response {
    let head_only = match request.method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text(405, "Method Not Allowed", "method not allowed\n");
            r.allow = true;
            return r;
        }
    };
    let mut response = match request.path {
        "/metrics" => Response {
            content_type: METRICS_CONTENT_TYPE,
            ..Response::text(200, "OK", metrics.render())
        },
        "/healthz" => Response::text(200, "OK", "ok\n"),
        "/readyz" if ready.load(Ordering::Acquire) => Response::text(200, "OK", "ready\n"),
        "/readyz" => Response::text(503, "Service Unavailable", "not ready\n"),
        _ => Response::text(404, "Not Found", "not found\n"),
    };
    response.head_only = head_only;
    response
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// Send `Allow: GET, HEAD` (405).
    allow: bool,
    /// HEAD: headers only, `Content-Length` still that of the body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
            head_only: false,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{self, tests::parse_prometheus_text, tests::sample};
    use std::net::SocketAddr;
    use tokio::task::JoinHandle;

    struct Server {
        addr: SocketAddr,
        ready: Arc<AtomicBool>,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    }

    async fn start(limits: Limits) -> Server {
        let metrics = metrics::install().expect("install metrics");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ready = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with(
            listener,
            metrics,
            Arc::clone(&ready),
            shutdown.clone(),
            limits,
        ));
        Server {
            addr,
            ready,
            shutdown,
            task,
        }
    }

    /// Send `raw`, read until the server closes; `None` if the connection was reset.
    async fn exchange(addr: SocketAddr, raw: &[u8]) -> Option<String> {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(raw).await.ok()?;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("server closes the connection")
            .ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n");
        exchange(addr, req.as_bytes()).await.expect("response")
    }

    fn status(response: &str) -> &str {
        response.lines().next().unwrap_or("")
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
        let head = response.split_once("\r\n\r\n")?.0;
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[tokio::test]
    async fn answers_each_path() {
        let srv = start(LIMITS).await;
        let r = get(srv.addr, "/healthz").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert_eq!(body(&r), "ok\n");
        assert_eq!(header(&r, "connection"), Some("close"));
        assert_eq!(header(&r, "content-length"), Some("3"));

        let r = get(srv.addr, "/metrics").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        let ct = header(&r, "content-type").unwrap_or_default();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        parse_prometheus_text(body(&r)).expect("valid exposition text");

        let r = get(srv.addr, "/metrics?x=1").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");

        for path in ["/", "/metricsx", "/healthz/", "/nope"] {
            assert_eq!(status(&get(srv.addr, path).await), "HTTP/1.1 404 Not Found");
        }

        let r = exchange(
            srv.addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await
        .expect("response");
        assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(header(&r, "allow"), Some("GET, HEAD"));

        let r = exchange(srv.addr, b"HEAD /healthz HTTP/1.1\r\n\r\n")
            .await
            .expect("response");
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert_eq!(header(&r, "content-length"), Some("3"));
        assert_eq!(body(&r), "");

        // HTTP/1.0 and bare-LF line endings are accepted.
        let r = exchange(srv.addr, b"GET /healthz HTTP/1.0\n\n")
            .await
            .expect("response");
        assert_eq!(status(&r), "HTTP/1.1 200 OK");

        srv.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), srv.task)
            .await
            .expect("serve returns on shutdown")
            .expect("serve task");
    }

    #[tokio::test]
    async fn readyz_follows_the_flag() {
        let srv = start(LIMITS).await;
        let r = get(srv.addr, "/readyz").await;
        assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable");
        srv.ready.store(true, Ordering::Release);
        let r = get(srv.addr, "/readyz").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert_eq!(body(&r), "ready\n");
        srv.ready.store(false, Ordering::Release);
        let r = get(srv.addr, "/readyz").await;
        assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable");
        assert_eq!(status(&get(srv.addr, "/healthz").await), "HTTP/1.1 200 OK");
        srv.shutdown.cancel();
    }

    #[tokio::test]
    async fn metrics_endpoint_shows_recorded_values() {
        let srv = start(LIMITS).await;
        metrics::plugin_call("http_test_plugin", "deadline", 1.5);
        metrics::rule_frames_counter("http_test_rule").increment(1);
        metrics::auth_result("http_test_result");
        let r = get(srv.addr, "/metrics").await;
        let text = body(&r);
        let s = parse_prometheus_text(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let p = ("plugin", "http_test_plugin");
        assert_eq!(
            sample(
                &s,
                metrics::names::PLUGIN_CALLS,
                &[p, ("outcome", "deadline")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                &format!("{}_bucket", metrics::names::PLUGIN_CALL_DURATION),
                &[p, ("le", "1")]
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &s,
                &format!("{}_bucket", metrics::names::PLUGIN_CALL_DURATION),
                &[p, ("le", "2.5")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                metrics::names::FRAMES_RECEIVED,
                &[("kind", "rule"), ("rule", "http_test_rule")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                metrics::names::AUTH_RESULTS,
                &[("result", "http_test_result")]
            ),
            Some(1.0)
        );
        assert!(text.contains("# HELP yonexus_plugin_calls_total "));
        assert!(text.contains("# TYPE yonexus_plugin_calls_total counter"));
        srv.shutdown.cancel();
    }

    #[tokio::test]
    async fn bad_requests_get_400_and_the_server_keeps_answering() {
        let srv = start(LIMITS).await;
        let garbage: [&[u8]; 8] = [
            b"\x00\x01\x02\xff garbage\r\n\r\n",
            b"hello\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /healthz\r\n\r\n",
            b"GET healthz HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/2.0\r\n\r\n",
            b"GET /healthz HTTP/1.1 extra\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        ];
        for raw in garbage {
            let r = exchange(srv.addr, raw).await;
            assert_eq!(
                r.as_deref().map(status),
                Some("HTTP/1.1 400 Bad Request"),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }

        // Oversized head: 400 or a closed connection, never a hang.
        let mut big = b"GET /healthz HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2 * MAX_HEAD_BYTES));
        big.extend_from_slice(b"\r\n\r\n");
        if let Some(r) = exchange(srv.addr, &big).await {
            assert!(
                r.is_empty() || status(&r) == "HTTP/1.1 400 Bad Request",
                "{r}"
            );
        }

        // A client that closes mid-head gets nothing and does no harm.
        let mut s = TcpStream::connect(srv.addr).await.expect("connect");
        s.write_all(b"GET /heal").await.expect("write");
        s.shutdown().await.expect("half-close");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
            .await
            .expect("closed at once")
            .expect("read");
        assert!(out.is_empty(), "half a head, then EOF: no response");

        assert_eq!(status(&get(srv.addr, "/healthz").await), "HTTP/1.1 200 OK");
        srv.shutdown.cancel();
    }

    #[tokio::test]
    async fn slow_clients_time_out_and_extra_connections_are_closed() {
        let srv = start(Limits {
            head_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            max_connections: 2,
        })
        .await;
        // Two idle connections take both slots.
        let mut idle1 = TcpStream::connect(srv.addr).await.expect("connect");
        let mut idle2 = TcpStream::connect(srv.addr).await.expect("connect");
        idle1.write_all(b"GET /hea").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A third is closed at once, without a response.
        let third = exchange(srv.addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(third.is_none() || third.as_deref() == Some(""), "{third:?}");
        // The idle ones get 408 at the deadline, freeing the slots.
        for idle in [&mut idle1, &mut idle2] {
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut out))
                .await
                .expect("closed after the head timeout")
                .expect("read");
            assert_eq!(
                status(&String::from_utf8_lossy(&out)),
                "HTTP/1.1 408 Request Timeout"
            );
        }
        // Closing them ends the server's linger, which frees the slots.
        drop((idle1, idle2));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status(&get(srv.addr, "/healthz").await), "HTTP/1.1 200 OK");
        srv.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), srv.task)
            .await
            .expect("serve returns on shutdown")
            .expect("serve task");
    }

    #[test]
    fn head_end_and_parse() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(
            parse_request(b"GET /metrics?a=b HTTP/1.1\r\nHost: h\r\n\r\n"),
            Ok(Request {
                method: "GET",
                path: "/metrics"
            })
        );
        assert!(parse_request(b"GET /a\x01 HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n").is_err());
        assert!(parse_request(b"G(T / HTTP/1.1\r\n\r\n").is_err());
    }
}
