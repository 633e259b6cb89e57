//! The admin port over real sockets: a fixed [`AdminView`] (the host's own view is tested
//! end to end in `tests/tests/e2e/dashboard.rs`) behind the real router and connection loop.
//! Compiled only under #[cfg(test)] (see `mod.rs`).

use super::event_log::EventLog;
use super::listener::{Limits, LIMITS, MAX_HEAD_BYTES};
use super::view::*;
use super::{spawn, AdminToken};
use crate::admin::ClientRow;
use crate::metrics::{self, tests::parse_prometheus_text, tests::sample};
use crate::reload::ReloadReport;
use futures_util::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "unit-test-token-0123456789";

/// A realistic pairing code (8 characters of the protocol's alphabet).
const CODE: &str = "K7WQ9M2P";

/// A host with one follower (`alpha`) and one pending pairing (`gamma`, code [`CODE`]); its
/// trust store can be "down" and counts how often it is read.
struct FixedView {
    ready: AtomicBool,
    log: EventLog,
    revoked: Mutex<Vec<String>>,
    store_down: AtomicBool,
    trust_reads: AtomicUsize,
}

impl FixedView {
    fn new() -> Self {
        FixedView {
            ready: AtomicBool::new(false),
            log: EventLog::default(),
            revoked: Mutex::new(Vec::new()),
            store_down: AtomicBool::new(false),
            trust_reads: AtomicUsize::new(0),
        }
    }

    fn event(&self, at: i64, kind: EventKind) {
        self.log.publish(LifecycleEvent {
            at,
            kind,
            identifier: Some("alpha".into()),
            detail: None,
            node: None,
        });
    }
}

impl AdminView for FixedView {
    fn now(&self) -> i64 {
        1_000
    }
    fn trust(&self) -> BoxFuture<'static, Result<TrustLists, StoreUnavailable>> {
        self.trust_reads.fetch_add(1, Ordering::SeqCst);
        if self.store_down.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreUnavailable(
                "the trust store is unavailable: connection refused".into(),
            ))));
        }
        Box::pin(std::future::ready(Ok(TrustLists {
            followers: vec![ClientRow {
                identifier: "alpha".into(),
                allowed: true,
                pairing_status: "paired".into(),
                liveness: "online".into(),
                last_heartbeat_at: Some(990),
                last_authenticated_at: Some(900),
                connected_since: Some(900),
                remote: Some("127.0.0.1:5000".into()),
                node: None,
            }],
            pairings: vec![PendingPairing {
                identifier: "gamma".into(),
                expires_at: 1_300,
                expires_in: 300,
                notify_status: Some("sent".into()),
                wrong_attempts: 0,
            }],
        })))
    }
    fn reveal_code(
        &self,
        identifier: String,
    ) -> BoxFuture<'static, Result<Option<RevealedCode>, ActionError>> {
        if self.store_down.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(ActionError::Unavailable(
                "the trust store is unavailable: connection refused".into(),
            ))));
        }
        Box::pin(std::future::ready(Ok((identifier == "gamma").then(|| {
            RevealedCode {
                identifier: "gamma".into(),
                code: CODE.into(),
                expires_at: 1_300,
            }
        }))))
    }
    fn plugins(&self) -> Vec<PluginRow> {
        Vec::new()
    }
    fn recent_events(&self) -> Vec<LifecycleEvent> {
        self.log.recent()
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LifecycleEvent> {
        self.log.subscribe()
    }
    fn counters(&self) -> MessageCounters {
        MessageCounters::default()
    }
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
    fn metrics_text(&self) -> String {
        metrics::install().map(|m| m.render()).unwrap_or_default()
    }
    fn revoke(&self, identifier: String) -> BoxFuture<'static, Result<bool, ActionError>> {
        let known = identifier == "alpha";
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(identifier);
        Box::pin(async move { Ok(known) })
    }
    fn reload(&self) -> BoxFuture<'static, Result<ReloadReport, ActionError>> {
        Box::pin(async { Err(ActionError::Refused("reload refused: test".into())) })
    }
}

struct Server {
    addr: SocketAddr,
    view: Arc<FixedView>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_with(limits: Limits, token: Option<&str>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let view = Arc::new(FixedView::new());
    let token = AdminToken::parse("TEST_TOKEN", token.map(Into::into)).expect("token");
    let shutdown = CancellationToken::new();
    let dyn_view: Arc<dyn AdminView> = view.clone();
    let task = spawn(
        listener,
        token,
        "TEST_TOKEN",
        dyn_view,
        shutdown.clone(),
        limits,
    );
    Server {
        addr,
        view,
        shutdown,
        task,
    }
}

async fn start() -> Server {
    start_with(LIMITS, Some(TOKEN)).await
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

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> String {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: 0\r\n\r\n"
    );
    exchange(addr, req.as_bytes()).await.expect("response")
}

async fn get(addr: SocketAddr, path: &str) -> String {
    request(addr, "GET", path, "").await
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
    let srv = start().await;
    let r = get(srv.addr, "/healthz").await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert_eq!(body(&r), "ok\n");
    assert_eq!(header(&r, "content-length"), Some("3"));
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
    assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));

    let r = get(srv.addr, "/metrics").await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    let ct = header(&r, "content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_prometheus_text(body(&r)).expect("valid exposition text");
    assert_eq!(
        status(&get(srv.addr, "/metrics?x=1").await),
        "HTTP/1.1 200 OK"
    );

    for path in ["/metricsx", "/healthz/", "/nope", "/api", "/api/nope"] {
        assert_eq!(
            status(&get(srv.addr, path).await),
            "HTTP/1.1 404 Not Found",
            "{path}"
        );
    }

    let r = request(srv.addr, "POST", "/metrics", "").await;
    assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
    assert!(
        header(&r, "allow").is_some_and(|a| a.contains("GET")),
        "{r}"
    );
    // Under /api/ the refusals are JSON like every other API answer.
    let r = get(srv.addr, "/api/nope").await;
    assert!(body(&r).starts_with("{\"error\":"), "{r}");
    let r = request(srv.addr, "DELETE", "/api/followers", "").await;
    assert_eq!(status(&r), "HTTP/1.1 405 Method Not Allowed");
    assert!(body(&r).starts_with("{\"error\":"), "{r}");
    assert!(
        header(&r, "allow").is_some_and(|a| a.contains("GET")),
        "{r}"
    );

    let r = exchange(
        srv.addr,
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("response");
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert_eq!(body(&r), "");

    let r = exchange(srv.addr, b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .expect("response");
    assert!(r.starts_with("HTTP/1.") && r.contains(" 200 OK"), "{r}");

    // The page and its assets, with a strict content security policy.
    let r = get(srv.addr, "/").await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert!(header(&r, "content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(body(&r).contains("/app.js"));
    let csp = header(&r, "content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let r = get(srv.addr, "/app.js").await;
    assert!(header(&r, "content-type").is_some_and(|c| c.starts_with("text/javascript")));
    assert!(body(&r).contains("EventSource"));
    let r = get(srv.addr, "/style.css").await;
    assert!(header(&r, "content-type").is_some_and(|c| c.starts_with("text/css")));

    srv.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), srv.task)
        .await
        .expect("serve returns on shutdown")
        .expect("serve task");
}

#[tokio::test]
async fn readyz_follows_the_view() {
    let srv = start().await;
    let r = get(srv.addr, "/readyz").await;
    assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable");
    srv.view.ready.store(true, Ordering::Release);
    let r = get(srv.addr, "/readyz").await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");
    assert_eq!(body(&r), "ready\n");
    srv.shutdown.cancel();
}

#[tokio::test]
async fn metrics_endpoint_shows_recorded_values() {
    let srv = start().await;
    metrics::install().expect("install metrics");
    metrics::plugin_call("dash_test_plugin", "deadline", 1.5);
    metrics::rule_frames_counter("dash_test_rule").increment(1);
    let r = get(srv.addr, "/metrics").await;
    let text = body(&r);
    let s = parse_prometheus_text(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        sample(
            &s,
            metrics::names::PLUGIN_CALLS,
            &[("plugin", "dash_test_plugin"), ("outcome", "deadline")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            metrics::names::FRAMES_RECEIVED,
            &[("kind", "rule"), ("rule", "dash_test_rule")]
        ),
        Some(1.0)
    );
    srv.shutdown.cancel();
}

#[tokio::test]
async fn the_api_answers_json_without_codes() {
    let srv = start().await;
    let json = |r: &str| -> serde_json::Value {
        assert_eq!(status(r), "HTTP/1.1 200 OK", "{r}");
        assert!(header(r, "content-type").is_some_and(|c| c.starts_with("application/json")));
        serde_json::from_str(body(r)).unwrap_or_else(|e| panic!("{e}: {r}"))
    };
    let followers = json(&get(srv.addr, "/api/followers").await);
    assert_eq!(followers[0]["identifier"], "alpha");
    assert_eq!(followers[0]["pairingStatus"], "paired");
    assert_eq!(followers[0]["lastHeartbeatAt"], 990);
    assert_eq!(followers[0]["connectedSince"], 900);
    // Exactly the CLI's `clients --json` row: `node` only in a cluster, no other key.
    let cli = serde_json::to_value(ClientRow {
        identifier: "alpha".into(),
        allowed: true,
        pairing_status: "paired".into(),
        liveness: "online".into(),
        last_heartbeat_at: Some(990),
        last_authenticated_at: Some(900),
        connected_since: Some(900),
        remote: Some("127.0.0.1:5000".into()),
        node: None,
    })
    .expect("json");
    assert_eq!(followers[0], cli);
    assert!(followers[0].get("host").is_none() && followers[0].get("node").is_none());
    let pairings = get(srv.addr, "/api/pairings").await;
    assert!(!pairings.contains(CODE) && !pairings.contains("\"code\""));
    assert_eq!(json(&pairings)[0]["expiresIn"], 300);
    let status = json(&get(srv.addr, "/api/status").await);
    assert_eq!(status["actions"], true);
    assert_eq!(status["tokenEnv"], "TEST_TOKEN");
    assert!(json(&get(srv.addr, "/api/plugins").await).is_array());
    assert!(json(&get(srv.addr, "/api/rates").await).is_array());
    srv.view.event(5, EventKind::Revoked);
    let events = json(&get(srv.addr, "/api/events").await);
    assert_eq!(events[0]["kind"], "revoked");
    assert_eq!(events[0]["at"], 5);
    srv.shutdown.cancel();
}

#[tokio::test]
async fn actions_need_the_token_json_and_the_same_origin() {
    let srv = start().await;
    let auth = format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n");
    let r = request(srv.addr, "POST", "/api/followers/alpha/revoke", &auth).await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK", "{r}");
    assert_eq!(body(&r), r#"{"identifier":"alpha","revoked":true}"#);
    let r = request(srv.addr, "POST", "/api/pairings/gamma/reveal", &auth).await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK", "{r}");
    assert!(body(&r).contains(&format!(r#""code":"{CODE}""#)), "{r}");
    let r = request(srv.addr, "POST", "/api/pairings/nobody/reveal", &auth).await;
    assert_eq!(status(&r), "HTTP/1.1 404 Not Found", "{r}");
    let r = request(srv.addr, "POST", "/api/reload", &auth).await;
    assert_eq!(status(&r), "HTTP/1.1 422 Unprocessable Entity", "{r}");
    assert!(body(&r).contains("reload refused"), "{r}");
    // Identifiers are checked by the protocol's rules (no whitespace, no `::`).
    for bad in ["a%20b", "a::b"] {
        let r = request(
            srv.addr,
            "POST",
            &format!("/api/followers/{bad}/revoke"),
            &auth,
        )
        .await;
        assert_eq!(status(&r), "HTTP/1.1 400 Bad Request", "{bad}: {r}");
    }
    let cross = format!("{auth}Origin: http://evil.example\r\n");
    let r = request(srv.addr, "POST", "/api/followers/alpha/revoke", &cross).await;
    assert_eq!(status(&r), "HTTP/1.1 403 Forbidden", "{r}");
    let r = request(
        srv.addr,
        "POST",
        "/api/followers/alpha/revoke",
        "Content-Type: application/json\r\nAuthorization: Bearer wrong-token-value-xyz\r\n",
    )
    .await;
    assert_eq!(status(&r), "HTTP/1.1 401 Unauthorized", "{r}");
    // Only the two authorised revokes reached the host.
    let revoked = srv
        .view
        .revoked
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert_eq!(revoked, vec!["alpha".to_owned()]);
    srv.shutdown.cancel();

    let read_only = start_with(LIMITS, None).await;
    let r = request(read_only.addr, "POST", "/api/followers/alpha/revoke", &auth).await;
    assert_eq!(status(&r), "HTTP/1.1 403 Forbidden", "{r}");
    assert!(body(&r).contains("TEST_TOKEN"), "{r}");
    read_only.shutdown.cancel();
}

/// Event streams have a cap of their own: streams nobody reads cannot take the connections
/// `/healthz` and the API need, and a stream that ends gives its place back.
#[tokio::test]
async fn event_streams_cannot_take_every_connection() {
    let srv = start().await;
    let mut held = Vec::new();
    for _ in 0..super::stream::MAX_STREAMS {
        let mut s = TcpStream::connect(srv.addr).await.expect("connect");
        s.write_all(format!("GET /api/stream HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr).as_bytes())
            .await
            .expect("write");
        let mut head = [0u8; 64];
        let n = s.read(&mut head).await.expect("read");
        assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let r = get(srv.addr, "/api/stream").await;
    assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
    assert!(body(&r).starts_with("{\"error\":"), "{r}");
    assert_eq!(status(&get(srv.addr, "/healthz").await), "HTTP/1.1 200 OK");
    drop(held.pop());
    let reopened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut s = TcpStream::connect(srv.addr).await.expect("connect");
            s.write_all(
                format!("GET /api/stream HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr).as_bytes(),
            )
            .await
            .expect("write");
            let mut head = [0u8; 64];
            let n = s.read(&mut head).await.unwrap_or(0);
            if String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reopened.is_ok(),
        "a closed stream's place was not given back"
    );
}

#[tokio::test]
async fn the_event_stream_sends_lists_and_lifecycle_events() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    s.write_all(format!("GET /api/stream HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr).as_bytes())
        .await
        .expect("write");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut pushed = false;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if !pushed && seen.contains("event: pairings") {
                srv.view.event(7, EventKind::Disconnected);
                pushed = true;
            }
            if seen.contains("event: lifecycle") && seen.contains("event: rate") {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "{seen}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert!(
        seen.contains("event: followers\ndata: [{\"identifier\":\"alpha\""),
        "{seen}"
    );
    assert!(seen.contains(r#""kind":"disconnected""#), "{seen}");
    assert!(!seen.contains(CODE));
    // Shutdown ends the stream.
    srv.shutdown.cancel();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("stream closed on shutdown")
        .ok();
}

#[tokio::test]
async fn bad_requests_are_refused_and_the_server_keeps_answering() {
    let srv = start().await;
    let garbage: [&[u8]; 7] = [
        b"\x00\x01\x02\xff garbage\r\n\r\n",
        b"hello\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET /healthz HTTP/2.0\r\n\r\n",
        b"GET /healthz HTTP/1.1 extra\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
    ];
    for raw in garbage {
        let r = exchange(srv.addr, raw).await.unwrap_or_default();
        assert_eq!(
            status(&r),
            "HTTP/1.1 400 Bad Request",
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }

    // Oversized head: refused (431) or closed, never a hang.
    let mut big = b"GET /healthz HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 * MAX_HEAD_BYTES));
    big.extend_from_slice(b"\r\n\r\n");
    if let Some(r) = exchange(srv.addr, &big).await {
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 431"), "{r}");
    }

    // A client that closes mid-head gets nothing and does no harm.
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    s.write_all(b"GET /heal").await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .expect("closed at once")
        .ok();
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));

    assert_eq!(status(&get(srv.addr, "/healthz").await), "HTTP/1.1 200 OK");
    srv.shutdown.cancel();
}

#[tokio::test]
async fn slow_clients_time_out_and_extra_connections_are_closed() {
    let srv = start_with(
        Limits {
            head_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            max_connections: 2,
        },
        Some(TOKEN),
    )
    .await;
    // Two idle connections take both slots.
    let mut idle1 = TcpStream::connect(srv.addr).await.expect("connect");
    let mut idle2 = TcpStream::connect(srv.addr).await.expect("connect");
    idle1.write_all(b"GET /hea").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third is closed at once, without a response.
    let third = exchange(srv.addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
    assert!(third.is_none() || third.as_deref() == Some(""), "{third:?}");
    // The idle ones are closed at the head deadline, freeing the slots.
    for idle in [&mut idle1, &mut idle2] {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut out))
            .await
            .expect("closed after the head timeout")
            .ok();
        assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status(&get(srv.addr, "/healthz").await), "HTTP/1.1 200 OK");
    srv.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), srv.task)
        .await
        .expect("serve returns on shutdown")
        .expect("serve task");
}

#[tokio::test]
async fn an_unreadable_trust_store_answers_503_not_an_empty_list() {
    let srv = start().await;
    srv.view.store_down.store(true, Ordering::SeqCst);
    for path in ["/api/followers", "/api/pairings"] {
        let r = get(srv.addr, path).await;
        assert_eq!(
            status(&r),
            "HTTP/1.1 503 Service Unavailable",
            "{path}: {r}"
        );
        assert!(header(&r, "content-type").is_some_and(|c| c.starts_with("application/json")));
        let v: serde_json::Value = serde_json::from_str(body(&r)).expect("json error");
        let message = v["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("trust store unavailable") && message.contains("connection refused"),
            "{path}: {message}"
        );
    }
    let auth = format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n");
    let r = request(srv.addr, "POST", "/api/pairings/gamma/reveal", &auth).await;
    assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
    // Back up: the lists again.
    srv.view.store_down.store(false, Ordering::SeqCst);
    let r = get(srv.addr, "/api/followers").await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK", "{r}");
    assert!(body(&r).contains("\"identifier\":\"alpha\""), "{r}");
    srv.shutdown.cancel();
}

fn view_reads(srv: &Server) -> usize {
    srv.view.trust_reads.load(Ordering::SeqCst)
}

/// Read the event stream on `s` into `seen` until `done(seen)`, within 10 s.
async fn read_stream_until(s: &mut TcpStream, seen: &mut String, done: impl Fn(&str) -> bool) {
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while !done(seen) {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(found.is_ok(), "{seen}");
}

#[tokio::test]
async fn during_a_store_outage_the_stream_keeps_the_lists_and_says_so() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    let req = format!("GET /api/stream HTTP/1.1\r\nHost: {}\r\n\r\n", srv.addr);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut seen = String::new();
    read_stream_until(&mut s, &mut seen, |t| {
        t.contains("event: followers\n") && t.contains("event: store\ndata: {\"available\":true}")
    })
    .await;
    srv.view.store_down.store(true, Ordering::SeqCst);
    srv.view.event(8, EventKind::Disconnected);
    let mut outage = String::new();
    read_stream_until(&mut s, &mut outage, |t| {
        t.contains("event: store\ndata: {\"available\":false")
    })
    .await;
    assert!(outage.contains("connection refused"), "{outage}");
    assert!(outage.contains("\"listsAt\":1000"), "{outage}");
    // Let a few more reads fail: the lists are never re-sent (let alone empty).
    let more = tokio::time::timeout(Duration::from_millis(2_500), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "stream ended: {outage}");
            outage.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(more.is_err(), "the stream ended");
    assert!(view_reads(&srv) >= 3, "the sampler kept trying");
    assert!(!outage.contains("event: followers"), "{outage}");
    assert!(!outage.contains("event: pairings"), "{outage}");
    srv.view.store_down.store(false, Ordering::SeqCst);
    let mut back = String::new();
    read_stream_until(&mut s, &mut back, |t| {
        t.contains("event: store\ndata: {\"available\":true}")
    })
    .await;
    srv.shutdown.cancel();
}

mod sampling {
    //! The sampler alone, in paused time (deterministic: the runtime advances the clock only
    //! when every task waits).
    use super::*;
    use crate::dashboard::sampler::{Sampler, LIST_GAP, SAMPLE_EVERY};

    fn reads(view: &FixedView) -> usize {
        view.trust_reads.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_events_costs_one_store_read() {
        let view = Arc::new(FixedView::new());
        let sampler = Arc::new(Sampler::new());
        let shutdown = CancellationToken::new();
        let mut rx = sampler.watch();
        let dyn_view: Arc<dyn AdminView> = view.clone();
        tokio::spawn(Arc::clone(&sampler).run(dyn_view, shutdown.clone()));
        // Settle into the steady state, half-way between two ticks.
        tokio::time::sleep(SAMPLE_EVERY * 2 + SAMPLE_EVERY / 2).await;
        assert!(rx.borrow_and_update().followers.version > 0);
        let before = reads(&view);
        // A burst (more than the event channel holds: the sampler also sees "lagged").
        for i in 0..1_000 {
            view.event(i, EventKind::Liveness);
        }
        tokio::time::sleep(LIST_GAP + LIST_GAP / 2).await;
        assert_eq!(reads(&view) - before, 1, "one read for the whole burst");
        // Then once per tick, and never more than one per LIST_GAP however events trickle in.
        let before = reads(&view);
        let started = tokio::time::Instant::now();
        while started.elapsed() < SAMPLE_EVERY * 2 {
            view.event(1, EventKind::Liveness);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = reads(&view) - before;
        let most = (SAMPLE_EVERY * 2).as_millis() / LIST_GAP.as_millis() + 1;
        assert!(n >= 2 && n as u128 <= most, "{n} reads in 2 s of events");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_reads_the_store_while_no_page_is_open() {
        let view = Arc::new(FixedView::new());
        let sampler = Arc::new(Sampler::new());
        let shutdown = CancellationToken::new();
        let dyn_view: Arc<dyn AdminView> = view.clone();
        tokio::spawn(Arc::clone(&sampler).run(dyn_view, shutdown.clone()));
        for i in 0..10 {
            view.event(i, EventKind::Authenticated);
            tokio::time::sleep(SAMPLE_EVERY / 2).await;
        }
        assert_eq!(reads(&view), 0);
        // The rate history still fills (for a page opened later).
        assert!(sampler.history().len() >= 4, "{:?}", sampler.history());
        let rx = sampler.watch();
        tokio::time::sleep(SAMPLE_EVERY / 2).await;
        assert!(reads(&view) >= 1);
        drop(rx);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_keeps_the_last_lists() {
        let view = Arc::new(FixedView::new());
        let sampler = Arc::new(Sampler::new());
        let shutdown = CancellationToken::new();
        let mut rx = sampler.watch();
        let dyn_view: Arc<dyn AdminView> = view.clone();
        tokio::spawn(Arc::clone(&sampler).run(dyn_view, shutdown.clone()));
        tokio::time::sleep(SAMPLE_EVERY * 2).await;
        let good = Arc::clone(&rx.borrow_and_update());
        assert!(good.followers.json.contains("alpha"));
        view.store_down.store(true, Ordering::SeqCst);
        tokio::time::sleep(SAMPLE_EVERY * 3).await;
        let down = Arc::clone(&rx.borrow_and_update());
        assert_eq!(down.followers, good.followers);
        assert_eq!(down.pairings, good.pairings);
        assert!(
            down.store.json.starts_with("{\"available\":false"),
            "{}",
            down.store.json
        );
        shutdown.cancel();
    }
}

/// `GET path` with `Host: host` (or none); returns the status line.
async fn get_as(addr: SocketAddr, path: &str, host: Option<&str>) -> String {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n");
    let r = exchange(addr, req.as_bytes()).await.expect("response");
    status(&r).to_owned()
}

#[tokio::test]
async fn a_loopback_port_answers_only_loopback_host_names() {
    let srv = start().await;
    let port = srv.addr.port();
    let ok = "HTTP/1.1 200 OK";
    let refused = "HTTP/1.1 421 Misdirected Request";
    for path in [
        "/",
        "/app.js",
        "/api/status",
        "/api/followers",
        "/api/events",
    ] {
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
            "localhost".to_owned(),
        ] {
            assert_eq!(
                get_as(srv.addr, path, Some(&host)).await,
                ok,
                "{path} {host}"
            );
        }
        for host in [
            format!("rebind.example:{port}"),
            "rebind.example".to_owned(),
            format!("192.168.1.10:{port}"),
            format!("localhost.rebind.example:{port}"),
        ] {
            assert_eq!(
                get_as(srv.addr, path, Some(&host)).await,
                refused,
                "{path} {host}"
            );
        }
    }
    // The refusal says why and what to do; the stream and actions are refused alike.
    let r = exchange(
        srv.addr,
        format!("GET /api/followers HTTP/1.1\r\nHost: rebind.example:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("response");
    assert!(!body(&r).contains("alpha"), "{r}");
    let v: serde_json::Value = serde_json::from_str(body(&r)).expect("json");
    let message = v["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("DNS rebinding") && message.contains("reverse proxy"),
        "{message}"
    );
    assert_eq!(
        get_as(srv.addr, "/api/stream", Some("rebind.example")).await,
        refused
    );
    let action = format!(
        "POST /api/reload HTTP/1.1\r\nHost: rebind.example:{port}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    );
    let r = exchange(srv.addr, action.as_bytes())
        .await
        .expect("response");
    assert_eq!(status(&r), refused, "{r}");
    // No Host at all (HTTP/1.0 tools; never a browser): served.
    let r = exchange(srv.addr, b"GET /api/status HTTP/1.0\r\n\r\n")
        .await
        .expect("response");
    assert!(r.contains(" 200 OK"), "{r}");
    // Probes answer under any name (they carry no follower data); unknown paths stay 404.
    for path in ["/healthz", "/metrics"] {
        assert_eq!(
            get_as(srv.addr, path, Some("prometheus.internal")).await,
            ok,
            "{path}"
        );
    }
    assert_eq!(
        get_as(srv.addr, "/nope", Some("rebind.example")).await,
        "HTTP/1.1 404 Not Found"
    );
    srv.shutdown.cancel();
}

#[tokio::test]
async fn a_non_loopback_port_answers_any_host_name() {
    // Bound to every interface (reached here over loopback): protected by its token instead.
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let view: Arc<dyn AdminView> = Arc::new(FixedView::new());
    let token = AdminToken::parse("TEST_TOKEN", Some(TOKEN.into())).expect("token");
    let shutdown = CancellationToken::new();
    spawn(
        listener,
        token,
        "TEST_TOKEN",
        view,
        shutdown.clone(),
        LIMITS,
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(
        get_as(addr, "/api/followers", Some("dashboard.example.org")).await,
        "HTTP/1.1 200 OK"
    );
    shutdown.cancel();
}
