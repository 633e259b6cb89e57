//! The connection loop (one tokio task), the handle used to talk to it, and the events it emits.
//!
//! One session: connect, `hello`, then pair and/or authenticate as the host's `hello_ack` says,
//! then heartbeats and rule messages until the socket goes away. Between sessions the task waits
//! an exponential, jittered backoff (reset after each successful authentication).

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::FollowerError;
use crate::line::validate_rule_id;
use crate::state::State;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yonexus_protocol::envelope::{AuthRequest, Heartbeat, Hello, Message, NextAction, PairConfirm};
use yonexus_protocol::{frame, signing, validate, Envelope, Frame};

/// Most rule messages held while not authenticated (or not yet written to the socket).
pub const OUTBOUND_BUFFER: usize = 1024;
/// Capacity of the event channel returned by [`spawn`].
pub const EVENT_CHANNEL: usize = 256;
/// How long a connection attempt (TCP + WebSocket handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the peer to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Future returned by a [`CodeProvider`].
pub type CodeFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// Supplies pairing codes (the admin receives the code out of band). `None` means "no code
/// available": this pairing attempt is abandoned (disconnect, retry later with backoff).
pub type CodeProvider = Arc<dyn Fn(PairingPrompt) -> CodeFuture + Send + Sync>;

/// What the host told us about the pairing a code is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingPrompt {
    pub identifier: String,
    /// Unix seconds; `None` when the host answered `waiting_pair_confirm` (no `pair_request`).
    pub expires_at: Option<i64>,
    pub ttl_seconds: Option<i64>,
    /// `sent` or `failed` (wire names).
    pub admin_notification: Option<String>,
    /// True when the previous code was refused (`pair_failed invalid_code`).
    pub retry: bool,
}

/// What the connection task reports. Reasons and codes are the protocol's wire names; a few
/// local conditions use reasons of their own:
/// - `PairFailed { reason: "no_pairing_code" }`: the code provider returned `None`;
/// - `PairFailed { reason: "state_save_failed" }`: the secret from `pair_success` could not be
///   persisted, so it was not used;
/// - `AuthFailed { reason: "no_local_secret" }`: the host wants authentication but no secret is
///   stored locally;
/// - `HostError { code: "REJECTED", .. }`: `hello_ack.nextAction` was `rejected`;
/// - `StatusUpdate { status: "offline", reason }` for a `disconnect_notice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected,
    PairingRequired {
        expires_at: Option<i64>,
        ttl_seconds: Option<i64>,
        admin_notification: Option<String>,
    },
    Paired,
    Authenticated,
    Rule {
        rule_id: String,
        content: String,
    },
    HostError {
        code: String,
        message: String,
    },
    PairFailed {
        reason: String,
    },
    AuthFailed {
        reason: String,
    },
    RePairRequired {
        reason: String,
    },
    StatusUpdate {
        status: String,
        reason: String,
    },
    Disconnected {
        reason: String,
    },
}

/// State shared between the handle(s) and the connection task.
struct Shared {
    queue: Mutex<VecDeque<String>>,
    queued: Notify,
    authenticated: AtomicBool,
    stopped: AtomicBool,
}

struct Control {
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Talks to the connection task. Cheap to clone; dropping every clone stops the task.
#[derive(Clone)]
pub struct FollowerHandle {
    shared: Arc<Shared>,
    control: Arc<Control>,
}

impl fmt::Debug for FollowerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowerHandle")
            .field("authenticated", &self.is_authenticated())
            .field("queued", &self.queued())
            .finish()
    }
}

impl FollowerHandle {
    /// Queue a rule message `<rule_id>::<content>`. It is written once the session is
    /// authenticated, in order; while not authenticated up to [`OUTBOUND_BUFFER`] messages wait.
    pub fn send(&self, rule_id: &str, content: &str) -> Result<(), FollowerError> {
        validate_rule_id(rule_id)
            .map_err(|why| FollowerError::InvalidRuleId(rule_id.to_string(), why))?;
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Err(FollowerError::Stopped);
        }
        let mut q = lock(&self.shared.queue);
        if q.len() >= OUTBOUND_BUFFER {
            return Err(FollowerError::QueueFull(q.len()));
        }
        q.push_back(frame::encode_rule(rule_id, content));
        drop(q);
        self.shared.queued.notify_one();
        Ok(())
    }

    /// Whether the current session is authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.shared.authenticated.load(Ordering::SeqCst)
    }

    /// Whether the connection task has ended.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Messages queued and not yet written to the socket.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Wait until every queued message has been written (true) or `timeout` passed (false).
    pub async fn wait_flushed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.queued() == 0 {
                return true;
            }
            if Instant::now() >= deadline || self.is_stopped() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Close the socket (close code 1000) and end the connection task.
    pub async fn shutdown(self) {
        self.control.shutdown.send_replace(true);
        let task = lock(&self.control.task).take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!("follower task ended abnormally: {e}");
            }
        }
    }
}

/// Load (or create) the follower's state, then start the connection task on the current tokio
/// runtime. Events arrive on the returned receiver; keep reading it (the task waits when the
/// channel is full).
pub fn spawn(
    config: Config,
    codes: CodeProvider,
) -> Result<(FollowerHandle, mpsc::Receiver<Event>), FollowerError> {
    config.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        FollowerError::InvalidConfig("spawn must be called inside a tokio runtime".into())
    })?;
    let state = State::load_or_create(&config.state_dir, &config.identifier)?;
    let tls = if config.url.starts_with("wss://") {
        Some(crate::tls::client_config(config.ca_file.as_deref())?)
    } else {
        None
    };
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        queued: Notify::new(),
        authenticated: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
    });
    let runner = Runner {
        backoff: Backoff::new(config.backoff_initial, config.backoff_max),
        config,
        tls,
        codes,
        state,
        events: events_tx,
        shutdown: shutdown_rx,
        shared: shared.clone(),
    };
    let task = runtime.spawn(runner.run());
    let handle = FollowerHandle {
        shared,
        control: Arc::new(Control {
            shutdown: shutdown_tx,
            task: Mutex::new(Some(task)),
        }),
    };
    Ok((handle, events_rx))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// What to do after handling one inbound item.
enum Flow {
    Continue,
    End(SessionEnd),
}

/// A control message from the host, reduced to what the follower acts on (strings for reasons
/// and codes, so unknown values from a newer host still get through).
#[derive(Debug)]
enum Inbound {
    HelloAck(NextAction),
    PairRequest {
        expires_at: i64,
        ttl_seconds: i64,
        admin_notification: String,
    },
    PairSuccess {
        secret: String,
    },
    PairFailed {
        reason: String,
    },
    AuthSuccess,
    AuthFailed {
        reason: String,
    },
    RePairRequired {
        reason: String,
    },
    HeartbeatAck,
    StatusUpdate {
        status: String,
        reason: String,
    },
    DisconnectNotice {
        reason: String,
    },
    Error {
        code: String,
        message: String,
    },
    /// A follower → host type: not ours to receive.
    Unexpected(&'static str),
}

/// The wire name of a serde unit enum variant.
fn wire<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl From<Message> for Inbound {
    fn from(m: Message) -> Self {
        match m {
            Message::HelloAck(p) => Inbound::HelloAck(p.next_action),
            Message::PairRequest(p) => Inbound::PairRequest {
                expires_at: p.expires_at,
                ttl_seconds: p.ttl_seconds,
                admin_notification: wire(&p.admin_notification),
            },
            Message::PairSuccess(p) => Inbound::PairSuccess { secret: p.secret },
            Message::PairFailed(p) => Inbound::PairFailed {
                reason: wire(&p.reason),
            },
            Message::AuthSuccess(_) => Inbound::AuthSuccess,
            Message::AuthFailed(p) => Inbound::AuthFailed {
                reason: p.reason.as_str().to_string(),
            },
            Message::RePairRequired(p) => Inbound::RePairRequired {
                reason: p.reason.as_str().to_string(),
            },
            Message::HeartbeatAck(_) => Inbound::HeartbeatAck,
            Message::StatusUpdate(p) => Inbound::StatusUpdate {
                status: p.status,
                reason: p.reason,
            },
            Message::DisconnectNotice(p) => Inbound::DisconnectNotice { reason: p.reason },
            Message::Error(p) => Inbound::Error {
                code: wire(&p.code),
                message: p.message,
            },
            other @ (Message::Hello(_)
            | Message::PairConfirm(_)
            | Message::AuthRequest(_)
            | Message::Heartbeat(_)) => Inbound::Unexpected(other.type_name()),
        }
    }
}

/// Decode a control envelope from the host. Strict decoding first; when that fails, a lenient
/// pass accepts the messages whose reason/code enumerations a newer host might extend. Anything
/// else is logged (without the frame text, which may carry a secret) and ignored.
fn decode_inbound(json: &str) -> Option<Inbound> {
    match Envelope::decode(json) {
        Ok(env) => Some(env.message.into()),
        Err(e) => {
            let lenient = decode_lenient(json);
            if lenient.is_none() {
                // A malformed pair_success may carry the secret somewhere in the decode error:
                // name the problem, not the details.
                if json.contains("pair_success") {
                    tracing::warn!("ignoring malformed control frame from host (pair_success)");
                } else {
                    tracing::warn!("ignoring malformed control frame from host: {e}");
                }
            }
            lenient
        }
    }
}

fn decode_lenient(json: &str) -> Option<Inbound> {
    let v: Value = serde_json::from_str(json).ok()?;
    let payload = v.get("payload")?;
    let s = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
    match v.get("type")?.as_str()? {
        "error" => Some(Inbound::Error {
            code: s("code").unwrap_or_else(|| "UNKNOWN".into()),
            message: s("message").unwrap_or_default(),
        }),
        "pair_failed" => Some(Inbound::PairFailed {
            reason: s("reason")?,
        }),
        "auth_failed" => Some(Inbound::AuthFailed {
            reason: s("reason")?,
        }),
        "re_pair_required" => Some(Inbound::RePairRequired {
            reason: s("reason")?,
        }),
        _ => None,
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Resolves when shutdown was requested or every handle was dropped.
async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn poll_code(code: &mut Option<CodeFuture>) -> Option<String> {
    match code {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Send our close frame and wait (bounded) for the peer to finish the closing handshake.
async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    if let Err(e) = ws.close(Some(frame)).await {
        tracing::debug!("close: {e}");
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Per-connection state.
struct Session {
    pending_code: Option<CodeFuture>,
    heartbeat: Option<Interval>,
    close_reason: Option<String>,
    notice: Option<String>,
    last_prompt: Option<PairingPrompt>,
}

struct Runner {
    config: Config,
    /// Client TLS configuration for `wss://` URLs.
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    codes: CodeProvider,
    state: State,
    events: mpsc::Sender<Event>,
    shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
    backoff: Backoff,
}

impl Runner {
    async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() || self.shutdown.has_changed().is_err() {
                break;
            }
            let end = self.session().await;
            self.shared.authenticated.store(false, Ordering::SeqCst);
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Lost(reason) => {
                    tracing::info!(reason = %reason, "disconnected");
                    self.emit(Event::Disconnected { reason }).await;
                }
            }
            if !self.config.reconnect {
                break;
            }
            let delay = self.backoff.next_delay();
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting after backoff"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown_signal(&mut self.shutdown) => break,
            }
        }
        self.shared.stopped.store(true, Ordering::SeqCst);
        tracing::debug!("follower task ended");
    }

    /// Deliver an event; gives up if shutdown is requested while the channel is full.
    async fn emit(&mut self, event: Event) {
        tokio::select! {
            biased;
            _ = self.events.send(event) => {}
            _ = shutdown_signal(&mut self.shutdown) => {}
        }
    }

    fn control_frame(&self, message: Message) -> String {
        Envelope::new(message, now_unix()).to_frame()
    }

    fn hello_frame(&self) -> String {
        self.control_frame(Message::Hello(Hello {
            identifier: self.config.identifier.clone(),
            protocol_version: Value::from(yonexus_protocol::PROTOCOL_VERSION),
            public_key: Some(self.state.public_key_base64()),
            has_secret: Some(self.state.has_secret()),
            has_key_pair: Some(true),
        }))
    }

    fn auth_frame(&self, secret: &str) -> String {
        let nonce = validate::generate_nonce();
        let ts = now_unix();
        let signature = signing::sign(self.state.signing_key(), secret, &nonce, ts);
        self.control_frame(Message::AuthRequest(AuthRequest {
            identifier: self.config.identifier.clone(),
            nonce,
            proof_timestamp: ts,
            signature,
            public_key: Some(self.state.public_key_base64()),
        }))
    }

    async fn session(&mut self) -> SessionEnd {
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let connect = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_tls_with_config(
                self.config.url.as_str(),
                None,
                true,
                connector,
            ),
        );
        let mut ws = tokio::select! {
            _ = shutdown_signal(&mut self.shutdown) => return SessionEnd::Shutdown,
            r = connect => match r {
                Err(_) => return SessionEnd::Lost("connect timed out".into()),
                Ok(Err(e)) => return SessionEnd::Lost(format!("connect failed: {e}")),
                Ok(Ok((ws, _response))) => ws,
            },
        };
        tracing::info!(url = %self.config.url, "connected");
        self.emit(Event::Connected).await;
        let mut s = Session {
            pending_code: None,
            heartbeat: None,
            close_reason: None,
            notice: None,
            last_prompt: None,
        };
        let hello = self.hello_frame();
        if let Flow::End(end) = send(&mut ws, hello).await {
            return end;
        }
        loop {
            let authed = self.shared.authenticated.load(Ordering::SeqCst);
            let flow = tokio::select! {
                biased;
                _ = shutdown_signal(&mut self.shutdown) => {
                    close(&mut ws, CloseCode::Normal, "follower shutting down").await;
                    return SessionEnd::Shutdown;
                }
                msg = ws.next() => match msg {
                    None => return SessionEnd::Lost(s.lost_reason("connection closed".into())),
                    Some(Err(e)) => {
                        return SessionEnd::Lost(s.lost_reason(format!("connection error: {e}")))
                    }
                    Some(Ok(m)) => self.on_ws_message(&mut ws, &mut s, m).await,
                },
                code = poll_code(&mut s.pending_code), if s.pending_code.is_some() => {
                    s.pending_code = None;
                    self.on_code(&mut ws, code).await
                }
                _ = tick(&mut s.heartbeat), if s.heartbeat.is_some() => {
                    let hb = self.control_frame(Message::Heartbeat(Heartbeat {
                        identifier: self.config.identifier.clone(),
                        status: Some("online".into()),
                    }));
                    tracing::trace!("sending heartbeat");
                    send(&mut ws, hb).await
                }
                _ = self.shared.queued.notified(), if authed => self.drain(&mut ws).await,
            };
            if let Flow::End(end) = flow {
                return end;
            }
        }
    }

    /// Write queued rule messages in order; a message leaves the queue only once written.
    async fn drain(&mut self, ws: &mut Ws) -> Flow {
        loop {
            if !self.shared.authenticated.load(Ordering::SeqCst) {
                return Flow::Continue;
            }
            let Some(next) = lock(&self.shared.queue).front().cloned() else {
                return Flow::Continue;
            };
            if let Flow::End(end) = send(ws, next).await {
                return Flow::End(end);
            }
            lock(&self.shared.queue).pop_front();
        }
    }

    async fn on_ws_message(&mut self, ws: &mut Ws, s: &mut Session, m: WsMessage) -> Flow {
        match m {
            WsMessage::Text(text) => self.on_text(ws, s, text.as_str()).await,
            WsMessage::Binary(b) => {
                tracing::warn!(len = b.len(), "ignoring binary frame from host");
                Flow::Continue
            }
            WsMessage::Close(frame) => {
                let reason = match frame {
                    Some(f) if f.reason.is_empty() => {
                        format!("closed by host: {}", u16::from(f.code))
                    }
                    Some(f) => format!("closed by host: {} {}", u16::from(f.code), f.reason),
                    None => "closed by host".to_string(),
                };
                s.close_reason = Some(reason);
                // Let tungstenite answer the close, then stop even if the host keeps the TCP
                // connection open.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                Flow::End(SessionEnd::Lost(s.lost_reason("closed by host".into())))
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Flow::Continue,
        }
    }

    async fn on_text(&mut self, ws: &mut Ws, s: &mut Session, text: &str) -> Flow {
        match frame::parse(text) {
            Err(e) => {
                tracing::warn!("ignoring malformed frame from host: {e}");
                Flow::Continue
            }
            Ok(Frame::Rule { rule_id, content }) => {
                self.emit(Event::Rule {
                    rule_id: rule_id.to_string(),
                    content: content.to_string(),
                })
                .await;
                Flow::Continue
            }
            Ok(Frame::Builtin(json)) => match decode_inbound(json) {
                Some(inbound) => self.on_control(ws, s, inbound).await,
                None => Flow::Continue,
            },
        }
    }

    fn ask_code(&self, s: &mut Session, prompt: PairingPrompt) {
        s.last_prompt = Some(prompt.clone());
        s.pending_code = Some((self.codes)(prompt));
    }

    async fn give_up(&mut self, ws: &mut Ws, reason: String) -> Flow {
        close(ws, CloseCode::Normal, "retrying later").await;
        Flow::End(SessionEnd::Lost(reason))
    }

    async fn on_code(&mut self, ws: &mut Ws, code: Option<String>) -> Flow {
        let code = code.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
        let Some(code) = code else {
            tracing::warn!("no pairing code available; abandoning this pairing attempt");
            self.emit(Event::PairFailed {
                reason: "no_pairing_code".into(),
            })
            .await;
            return self
                .give_up(ws, "pairing abandoned: no pairing code available".into())
                .await;
        };
        let confirm = self.control_frame(Message::PairConfirm(PairConfirm {
            identifier: self.config.identifier.clone(),
            pairing_code: code,
        }));
        send(ws, confirm).await
    }

    async fn on_control(&mut self, ws: &mut Ws, s: &mut Session, inbound: Inbound) -> Flow {
        tracing::debug!(kind = ?std::mem::discriminant(&inbound), "control message");
        match inbound {
            Inbound::HelloAck(NextAction::AuthRequired) => {
                let Some(secret) = self.state.secret().map(str::to_string) else {
                    tracing::error!(
                        "host requires authentication but no secret is stored locally; \
                         the host must revoke this follower so it can pair again"
                    );
                    self.emit(Event::AuthFailed {
                        reason: "no_local_secret".into(),
                    })
                    .await;
                    return self
                        .give_up(ws, "cannot authenticate: no secret stored locally".into())
                        .await;
                };
                let auth = self.auth_frame(&secret);
                send(ws, auth).await
            }
            Inbound::HelloAck(NextAction::PairRequired) => {
                tracing::info!("pairing required; waiting for pair_request");
                Flow::Continue
            }
            Inbound::HelloAck(NextAction::WaitingPairConfirm) => {
                self.emit(Event::PairingRequired {
                    expires_at: None,
                    ttl_seconds: None,
                    admin_notification: None,
                })
                .await;
                if s.pending_code.is_none() {
                    let prompt = self.prompt(None, None, None, false);
                    self.ask_code(s, prompt);
                }
                Flow::Continue
            }
            Inbound::HelloAck(NextAction::Rejected | NextAction::Unknown(_)) => {
                self.emit(Event::HostError {
                    code: "REJECTED".into(),
                    message: "host rejected hello (nextAction=rejected)".into(),
                })
                .await;
                self.give_up(ws, "rejected by host".into()).await
            }
            Inbound::PairRequest {
                expires_at,
                ttl_seconds,
                admin_notification,
            } => {
                self.emit(Event::PairingRequired {
                    expires_at: Some(expires_at),
                    ttl_seconds: Some(ttl_seconds),
                    admin_notification: Some(admin_notification.clone()),
                })
                .await;
                if s.pending_code.is_none() {
                    let prompt = self.prompt(
                        Some(expires_at),
                        Some(ttl_seconds),
                        Some(admin_notification),
                        false,
                    );
                    self.ask_code(s, prompt);
                }
                Flow::Continue
            }
            Inbound::PairSuccess { secret } => {
                // Durable before use: a secret we could lose must never be relied on.
                if let Err(e) = self.state.set_secret(Some(secret.clone())) {
                    tracing::error!("could not save the pairing secret: {e}");
                    self.emit(Event::PairFailed {
                        reason: "state_save_failed".into(),
                    })
                    .await;
                    return self
                        .give_up(ws, format!("could not save the pairing secret: {e}"))
                        .await;
                }
                tracing::info!("paired");
                self.emit(Event::Paired).await;
                let auth = self.auth_frame(&secret);
                send(ws, auth).await
            }
            Inbound::PairFailed { reason } => {
                self.emit(Event::PairFailed {
                    reason: reason.clone(),
                })
                .await;
                if reason == "invalid_code" {
                    if s.pending_code.is_none() {
                        tracing::warn!("pairing code refused; asking again");
                        let mut prompt = s
                            .last_prompt
                            .clone()
                            .unwrap_or_else(|| self.prompt(None, None, None, true));
                        prompt.retry = true;
                        self.ask_code(s, prompt);
                    }
                    return Flow::Continue;
                }
                self.give_up(ws, format!("pairing failed: {reason}")).await
            }
            Inbound::AuthSuccess => {
                tracing::info!("authenticated");
                self.shared.authenticated.store(true, Ordering::SeqCst);
                self.backoff.reset();
                let period = self.config.heartbeat_interval;
                let mut interval = tokio::time::interval_at(Instant::now() + period, period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                s.heartbeat = Some(interval);
                self.emit(Event::Authenticated).await;
                self.drain(ws).await
            }
            Inbound::AuthFailed { reason } => {
                self.emit(Event::AuthFailed {
                    reason: reason.clone(),
                })
                .await;
                self.give_up(ws, format!("authentication failed: {reason}"))
                    .await
            }
            Inbound::RePairRequired { reason } => {
                tracing::warn!(reason = %reason, "host revoked trust; pairing again");
                self.shared.authenticated.store(false, Ordering::SeqCst);
                s.heartbeat = None;
                s.pending_code = None;
                if let Err(e) = self.state.set_secret(None) {
                    tracing::error!("could not forget the secret on disk: {e}");
                }
                self.emit(Event::RePairRequired { reason }).await;
                let hello = self.hello_frame();
                send(ws, hello).await
            }
            Inbound::HeartbeatAck => {
                tracing::trace!("heartbeat acknowledged");
                Flow::Continue
            }
            Inbound::StatusUpdate { status, reason } => {
                self.emit(Event::StatusUpdate { status, reason }).await;
                Flow::Continue
            }
            Inbound::DisconnectNotice { reason } => {
                s.notice = Some(reason.clone());
                self.emit(Event::StatusUpdate {
                    status: "offline".into(),
                    reason,
                })
                .await;
                Flow::Continue
            }
            Inbound::Error { code, message } => {
                tracing::warn!(code = %code, message = %message, "error from host");
                self.emit(Event::HostError { code, message }).await;
                Flow::Continue
            }
            Inbound::Unexpected(kind) => {
                tracing::warn!(kind, "ignoring unexpected control message from host");
                Flow::Continue
            }
        }
    }

    fn prompt(
        &self,
        expires_at: Option<i64>,
        ttl_seconds: Option<i64>,
        admin_notification: Option<String>,
        retry: bool,
    ) -> PairingPrompt {
        PairingPrompt {
            identifier: self.config.identifier.clone(),
            expires_at,
            ttl_seconds,
            admin_notification,
            retry,
        }
    }
}

impl Session {
    fn lost_reason(&self, fallback: String) -> String {
        let base = self.close_reason.clone().unwrap_or(fallback);
        match &self.notice {
            Some(n) => format!("{base} (disconnect notice: {n})"),
            None => base,
        }
    }
}

async fn send(ws: &mut Ws, text: String) -> Flow {
    match ws.send(WsMessage::text(text)).await {
        Ok(()) => Flow::Continue,
        Err(e) => Flow::End(SessionEnd::Lost(format!("send failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_decoding_accepts_unknown_reasons_and_codes() {
        let i =
            decode_inbound(r#"{"type":"error","payload":{"code":"SOMETHING_NEW","message":"m"}}"#);
        assert!(
            matches!(i, Some(Inbound::Error { ref code, .. }) if code == "SOMETHING_NEW"),
            "{i:?}"
        );
        let i = decode_inbound(
            r#"{"type":"pair_failed","payload":{"identifier":"a","reason":"new_reason"}}"#,
        );
        assert!(matches!(i, Some(Inbound::PairFailed { ref reason }) if reason == "new_reason"));
        let i = decode_inbound(
            r#"{"type":"error","payload":{"code":"RULE_NOT_FOUND","message":"no"}}"#,
        );
        assert!(matches!(i, Some(Inbound::Error { ref code, .. }) if code == "RULE_NOT_FOUND"));
        assert!(decode_inbound("not json").is_none());
        assert!(decode_inbound(r#"{"type":"hello_ack","payload":{}}"#).is_none());
        assert!(matches!(
            decode_inbound(r#"{"type":"heartbeat","payload":{"identifier":"a"}}"#),
            Some(Inbound::Unexpected("heartbeat"))
        ));
    }

    #[test]
    fn signatures_verify_with_the_protocol_crate() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::load_or_create(dir.path(), "alpha").unwrap();
        let nonce = validate::generate_nonce();
        let sig = signing::sign(state.signing_key(), "sek", &nonce, 1_700_000_000);
        let raw = signing::decode_public_key(&state.public_key_base64()).unwrap();
        let sig = signing::decode_signature(&sig).unwrap();
        assert!(signing::verify(&raw, "sek", &nonce, 1_700_000_000, &sig));
        assert!(!signing::verify(&raw, "other", &nonce, 1_700_000_000, &sig));
    }
}
