//! One connection to a host, from `hello` until the socket goes away: reading frames, moving
//! through the [`Phase`]s, heartbeats, writing queued rule messages, and watching the host's
//! liveness.
//!
//! Liveness: the time anything last arrived from the host (any frame: a message,
//! `heartbeat_ack`, ping, pong) is remembered. After half the liveness timeout
//! ([`Config::effective_liveness_timeout`]) of silence the follower sends a WebSocket ping; after
//! the whole timeout the connection is taken as lost (the host died or dropped off the network
//! without closing the socket) and the connection task moves on to the next URL. A write that
//! cannot complete within the timeout (the host stopped acknowledging TCP data) ends the
//! connection the same way.
//!
//! Nothing here waits for the application: events go to the event spool (`spool.rs`), which
//! never blocks, so a slow consumer cannot stop heartbeats, reads or answers to pings.
//!
//! Control frames are decoded strictly with the protocol crate's types; a reason or code a newer
//! host adds arrives as the enum's `Unknown` variant and is reported like any other. A control
//! message that does not fit the current phase (an `auth_success` nobody asked for) is ignored
//! with a warning.

use crate::config::Config;
use crate::event::{CodeProvider, Event, PairingPrompt};
use crate::handle::Shared;
use crate::phase::{self, Due, PairingStep, Phase};
use crate::spool::SpoolSender;
use crate::state::State;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yonexus_protocol::envelope::{
    AdminNotification, AuthRequest, ErrorCode, Heartbeat, Hello, Message, NextAction, PairConfirm,
    PairFailReason, PairRequest,
};
use yonexus_protocol::{frame, signing, validate, Envelope, Frame};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for the peer to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the last `pair_request` said about the pending code, kept across connections so that a
/// prompt after `waiting_pair_confirm` (a reconnect to the same host) still knows the expiry.
#[derive(Debug, Clone)]
pub(crate) struct PairingExpiry {
    /// The host that sent it (another host may hold another pairing).
    url: String,
    expires_at: i64,
    ttl_seconds: i64,
    admin_notification: AdminNotification,
    /// When the code expires, on this machine's monotonic clock.
    deadline: Instant,
}

/// What outlives one connection.
pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) codes: CodeProvider,
    pub(crate) state: State,
    /// Where events go; never waits for the application.
    pub(crate) events: SpoolSender,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) pairing_expiry: Option<PairingExpiry>,
}

impl Ctx {
    /// Report an event to the application; never waits (see `spool.rs`).
    pub(crate) fn emit(&self, event: Event) {
        self.events.push(event);
    }
}

/// Resolves when shutdown was requested or every handle was dropped.
pub(crate) async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    Shutdown,
    /// Lost or given up; retried after backoff.
    Lost(String),
    /// The host refused the identifier (permanent for that host).
    NotAllowed(String),
}

/// A finished connection.
pub(crate) struct Outcome {
    pub(crate) end: End,
    /// Whether it got as far as `auth_success`.
    pub(crate) authenticated: bool,
}

/// What to do after handling one inbound item.
enum Flow {
    Continue,
    End(End),
}

/// Run one connection to its end.
pub(crate) async fn run(ctx: &mut Ctx, ws: Ws, url: &str) -> Outcome {
    let liveness = Liveness::new(ctx.config.effective_liveness_timeout());
    let mut session = Session {
        ctx,
        ws,
        url,
        phase: Phase::Greeting,
        liveness,
        close_reason: None,
        notice: None,
        authenticated: false,
        refused: false,
    };
    let end = session.run().await;
    session.ctx.shared.set_authenticated(false);
    Outcome {
        end,
        authenticated: session.authenticated,
    }
}

struct Session<'a> {
    ctx: &'a mut Ctx,
    ws: Ws,
    url: &'a str,
    phase: Phase,
    liveness: Liveness,
    /// The host's close frame, as text.
    close_reason: Option<String>,
    /// The reason of a `disconnect_notice`.
    notice: Option<String>,
    /// Reached `auth_success` on this connection.
    authenticated: bool,
    /// The host refused the identifier.
    refused: bool,
}

/// When the host was last heard from.
struct Liveness {
    timeout: Duration,
    last_heard: Instant,
    /// A ping was sent since the host was last heard from.
    probed: bool,
}

impl Liveness {
    fn new(timeout: Duration) -> Self {
        Liveness {
            timeout,
            last_heard: Instant::now(),
            probed: false,
        }
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.probed = false;
    }

    /// When to act on the silence: ping halfway through, give up at the end.
    fn deadline(&self) -> Instant {
        let wait = if self.probed {
            self.timeout
        } else {
            self.timeout / 2
        };
        self.last_heard + wait
    }
}

/// `120 s`, `0.6 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Decode a control envelope from the host. Anything that does not decode is logged (without
/// the frame text, which may carry a secret) and ignored.
fn decode(json: &str) -> Option<Message> {
    match Envelope::decode(json) {
        Ok(env) => Some(env.message),
        Err(e) => {
            // A malformed pair_success may carry the secret somewhere in the decode error:
            // name the problem, not the details.
            if json.contains("pair_success") {
                tracing::warn!("ignoring malformed control frame from host (pair_success)");
            } else {
                tracing::warn!("ignoring malformed control frame from host: {e}");
            }
            None
        }
    }
}

impl Session<'_> {
    async fn run(&mut self) -> End {
        let hello = self.hello_frame();
        if let Flow::End(end) = self.send(hello).await {
            return end;
        }
        loop {
            let authed = self.phase.is_authenticated();
            let waits = self.phase.has_timer_or_request();
            let flow = tokio::select! {
                biased;
                _ = shutdown_signal(&mut self.ctx.shutdown) => {
                    self.close(CloseCode::Normal, "follower shutting down").await;
                    return End::Shutdown;
                }
                // Timers and outbound messages before reading: a host that keeps sending must
                // not starve heartbeats or the application's messages.
                due = phase::due(&mut self.phase), if waits => match due {
                    Due::Code(code) => self.on_code(code).await,
                    Due::Heartbeat => self.heartbeat().await,
                },
                _ = self.ctx.shared.queued.notified(), if authed => self.drain().await,
                msg = self.ws.next() => match msg {
                    None => Flow::End(self.lost("connection closed".into())),
                    Some(Err(e)) => Flow::End(self.lost(format!("connection error: {e}"))),
                    Some(Ok(m)) => {
                        self.liveness.heard();
                        self.on_ws_message(m).await
                    }
                },
                _ = tokio::time::sleep_until(self.liveness.deadline()) => self.on_silence().await,
            };
            if let Flow::End(end) = flow {
                return end;
            }
        }
    }

    /// The end of this connection, with the host's close frame and disconnect notice if any.
    fn lost(&self, fallback: String) -> End {
        let base = self.close_reason.clone().unwrap_or(fallback);
        let reason = match &self.notice {
            Some(n) => format!("{base} (disconnect notice: {n})"),
            None => base,
        };
        if self.refused {
            End::NotAllowed(reason)
        } else {
            End::Lost(reason)
        }
    }

    /// Close the connection ourselves and end it.
    async fn give_up(&mut self, reason: String) -> Flow {
        self.close(CloseCode::Normal, "retrying later").await;
        Flow::End(if self.refused {
            End::NotAllowed(reason)
        } else {
            End::Lost(reason)
        })
    }

    /// Send a close frame and wait (briefly) for the host to answer it.
    async fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(Some(frame))).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }

    async fn send(&mut self, text: String) -> Flow {
        self.send_ws(WsMessage::text(text)).await
    }

    /// Write one frame; a write the host does not take within the liveness timeout ends the
    /// connection.
    async fn send_ws(&mut self, message: WsMessage) -> Flow {
        match tokio::time::timeout(self.liveness.timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(e)) => Flow::End(End::Lost(format!("send failed: {e}"))),
            Err(_) => Flow::End(End::Lost(format!(
                "send failed: the host took nothing for {}",
                seconds(self.liveness.timeout)
            ))),
        }
    }

    /// Nothing from the host for a while: ping it once, then give the connection up.
    async fn on_silence(&mut self) -> Flow {
        if !self.liveness.probed {
            self.liveness.probed = true;
            tracing::debug!("host silent; sending a ping");
            return self.send_ws(WsMessage::Ping(Vec::new().into())).await;
        }
        // No close handshake: a host that answers nothing will not answer that either.
        Flow::End(End::Lost(format!(
            "nothing received from the host for {} (liveness timeout): connection lost",
            seconds(self.liveness.timeout)
        )))
    }

    /// Write queued rule messages in order; a message leaves the queue only once written.
    async fn drain(&mut self) -> Flow {
        while self.phase.is_authenticated() {
            let Some(next) = self.ctx.shared.front() else {
                break;
            };
            if let Flow::End(end) = self.send(next).await {
                return Flow::End(end);
            }
            self.ctx.shared.pop_front();
        }
        Flow::Continue
    }

    async fn heartbeat(&mut self) -> Flow {
        let hb = self.control_frame(Message::Heartbeat(Heartbeat {
            identifier: self.ctx.config.identifier.clone(),
            status: Some("online".into()),
        }));
        tracing::trace!("sending heartbeat");
        self.send(hb).await
    }

    async fn on_ws_message(&mut self, m: WsMessage) -> Flow {
        match m {
            WsMessage::Text(text) => self.on_text(text.as_str()).await,
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
                self.close_reason = Some(reason);
                // Let tungstenite answer the close, then stop even if the host keeps the TCP
                // connection open.
                let ws = &mut self.ws;
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                Flow::End(self.lost("closed by host".into()))
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Flow::Continue,
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        match frame::parse(text) {
            Err(e) => {
                tracing::warn!("ignoring malformed frame from host: {e}");
                Flow::Continue
            }
            Ok(Frame::Rule { rule_id, content }) => {
                self.ctx.emit(Event::Rule {
                    rule_id: rule_id.to_string(),
                    content: content.to_string(),
                });
                Flow::Continue
            }
            Ok(Frame::Builtin(json)) => match decode(json) {
                Some(message) => self.on_control(message).await,
                None => Flow::Continue,
            },
        }
    }

    async fn on_control(&mut self, message: Message) -> Flow {
        tracing::debug!(
            kind = message.type_name(),
            phase = self.phase.name(),
            "control message"
        );
        match message {
            Message::HelloAck(ack) if matches!(self.phase, Phase::Greeting) => {
                self.on_hello_ack(ack.next_action).await
            }
            Message::PairRequest(req)
                if matches!(self.phase, Phase::Greeting | Phase::Pairing(_)) =>
            {
                self.on_pair_request(req).await
            }
            Message::PairSuccess(p) if matches!(self.phase, Phase::Pairing(_)) => {
                self.on_pair_success(p.secret).await
            }
            Message::PairFailed(p) if matches!(self.phase, Phase::Pairing(_)) => {
                self.on_pair_failed(p.reason, p.attempts_left).await
            }
            Message::AuthSuccess(_) if matches!(self.phase, Phase::Authenticating) => {
                self.on_auth_success().await
            }
            Message::AuthFailed(p) if matches!(self.phase, Phase::Authenticating) => {
                tracing::debug!(reason = %p.reason, "authentication failed");
                let reason = format!("authentication failed: {}", p.reason);
                self.ctx.emit(Event::AuthFailed { reason: p.reason });
                self.give_up(reason).await
            }
            Message::RePairRequired(p) => {
                tracing::debug!(reason = %p.reason, "host revoked trust; pairing again");
                self.ctx.shared.set_authenticated(false);
                // Drops the heartbeat timer or a pending code request with the old phase.
                self.phase = Phase::Greeting;
                if let Err(e) = self.ctx.state.set_secret(None) {
                    tracing::error!("could not forget the secret on disk: {e}");
                }
                self.ctx.emit(Event::RePairRequired { reason: p.reason });
                let hello = self.hello_frame();
                self.send(hello).await
            }
            Message::HeartbeatAck(_) => {
                tracing::trace!("heartbeat acknowledged");
                Flow::Continue
            }
            Message::StatusUpdate(p) => {
                self.ctx.emit(Event::StatusUpdate {
                    status: p.status,
                    reason: p.reason,
                });
                Flow::Continue
            }
            Message::DisconnectNotice(p) => {
                self.notice = Some(p.reason.clone());
                self.ctx.emit(Event::StatusUpdate {
                    status: "offline".into(),
                    reason: p.reason,
                });
                Flow::Continue
            }
            Message::Error(p) => {
                // Reported through the event only (the application prints it once).
                tracing::debug!(code = %p.code, message = %p.message, "error from host");
                if p.code == ErrorCode::IdentifierNotAllowed {
                    self.refused = true;
                }
                self.ctx.emit(Event::HostError {
                    code: p.code,
                    message: p.message,
                });
                Flow::Continue
            }
            other => {
                tracing::warn!(
                    kind = other.type_name(),
                    phase = self.phase.name(),
                    "ignoring a control message that does not fit this phase"
                );
                Flow::Continue
            }
        }
    }

    async fn on_hello_ack(&mut self, next: NextAction) -> Flow {
        match next {
            NextAction::AuthRequired => {
                let Some(secret) = self.ctx.state.secret().map(str::to_string) else {
                    tracing::debug!("host requires authentication but no secret is stored");
                    self.ctx.emit(Event::NoLocalSecret);
                    return self
                        .give_up("cannot authenticate: no secret stored locally".into())
                        .await;
                };
                self.phase = Phase::Authenticating;
                let auth = self.auth_frame(&secret);
                self.send(auth).await
            }
            NextAction::PairRequired => {
                tracing::debug!("pairing required; waiting for pair_request");
                self.phase = Phase::Pairing(PairingStep::AwaitingRequest);
                Flow::Continue
            }
            NextAction::WaitingPairConfirm => {
                self.ctx.emit(Event::PairingRequired {
                    expires_at: None,
                    ttl_seconds: None,
                    admin_notification: None,
                });
                self.ask_code(false, None);
                Flow::Continue
            }
            next_action @ (NextAction::Rejected | NextAction::Unknown(_)) => {
                tracing::debug!(next_action = %next_action, "host rejected hello");
                self.ctx.emit(Event::HelloRejected { next_action });
                self.give_up("rejected by host".into()).await
            }
        }
    }

    async fn on_pair_request(&mut self, req: PairRequest) -> Flow {
        let ttl = Duration::from_secs(u64::try_from(req.ttl_seconds).unwrap_or(0));
        self.ctx.pairing_expiry = Some(PairingExpiry {
            url: self.url.to_string(),
            expires_at: req.expires_at,
            ttl_seconds: req.ttl_seconds,
            admin_notification: req.admin_notification.clone(),
            deadline: Instant::now() + ttl,
        });
        self.ctx.emit(Event::PairingRequired {
            expires_at: Some(req.expires_at),
            ttl_seconds: Some(req.ttl_seconds),
            admin_notification: Some(req.admin_notification),
        });
        if !self.phase.awaits_code() {
            self.ask_code(false, None);
        }
        Flow::Continue
    }

    /// Ask the code provider; the phase waits for its answer.
    fn ask_code(&mut self, retry: bool, attempts_left: Option<u32>) {
        let prompt = self.prompt(retry, attempts_left);
        self.phase = Phase::Pairing(PairingStep::AwaitingCode((self.ctx.codes)(prompt)));
    }

    /// A prompt with what is known about the pending code on this host.
    fn prompt(&self, retry: bool, attempts_left: Option<u32>) -> PairingPrompt {
        let now = Instant::now();
        let known = self
            .ctx
            .pairing_expiry
            .as_ref()
            .filter(|e| e.url == self.url && e.deadline > now);
        PairingPrompt {
            identifier: self.ctx.config.identifier.clone(),
            expires_at: known.map(|e| e.expires_at),
            ttl_seconds: known.map(|e| e.ttl_seconds),
            expires_in: known.map(|e| e.deadline.saturating_duration_since(now)),
            admin_notification: known.map(|e| e.admin_notification.clone()),
            retry,
            attempts_left,
        }
    }

    async fn on_code(&mut self, code: Option<String>) -> Flow {
        let code = code.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
        let Some(code) = code else {
            tracing::debug!("no pairing code available; abandoning this pairing attempt");
            self.ctx.emit(Event::NoPairingCode);
            return self
                .give_up("pairing abandoned: no pairing code available".into())
                .await;
        };
        self.phase = Phase::Pairing(PairingStep::Confirming);
        let confirm = self.control_frame(Message::PairConfirm(PairConfirm {
            identifier: self.ctx.config.identifier.clone(),
            pairing_code: code,
        }));
        self.send(confirm).await
    }

    async fn on_pair_success(&mut self, secret: String) -> Flow {
        // Durable before use: a secret we could lose must never be relied on.
        if let Err(e) = self.ctx.state.set_secret(Some(secret.clone())) {
            tracing::debug!("could not save the pairing secret: {e}");
            self.ctx.emit(Event::SecretNotSaved {
                error: e.to_string(),
            });
            return self
                .give_up(format!("could not save the pairing secret: {e}"))
                .await;
        }
        tracing::debug!("paired");
        self.ctx.pairing_expiry = None;
        self.ctx.emit(Event::Paired);
        self.phase = Phase::Authenticating;
        let auth = self.auth_frame(&secret);
        self.send(auth).await
    }

    async fn on_pair_failed(&mut self, reason: PairFailReason, attempts_left: Option<u32>) -> Flow {
        tracing::debug!(reason = %reason, attempts_left, "pairing failed");
        self.ctx.emit(Event::PairFailed {
            reason: reason.clone(),
            attempts_left,
        });
        match reason {
            PairFailReason::InvalidCode if attempts_left == Some(0) => {
                // The host closes this connection; the pending code stays valid until it
                // expires, so a new connection may try again.
                self.give_up("pairing code refused; no attempts left on this connection".into())
                    .await
            }
            PairFailReason::InvalidCode => {
                if !self.phase.awaits_code() {
                    self.ask_code(true, attempts_left);
                }
                Flow::Continue
            }
            PairFailReason::Expired => {
                self.ctx.pairing_expiry = None;
                self.give_up("pairing failed: the code expired or the pairing was cancelled".into())
                    .await
            }
            PairFailReason::IdentifierNotAllowed => {
                self.refused = true;
                self.give_up("pairing failed: identifier not allowed".into())
                    .await
            }
            other => self.give_up(format!("pairing failed: {other}")).await,
        }
    }

    async fn on_auth_success(&mut self) -> Flow {
        tracing::debug!("authenticated");
        self.ctx.shared.set_authenticated(true);
        self.authenticated = true;
        let period = self.ctx.config.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.phase = Phase::Authenticated { heartbeat };
        self.ctx.emit(Event::Authenticated);
        self.drain().await
    }

    fn control_frame(&self, message: Message) -> String {
        Envelope::new(message, now_unix()).to_frame()
    }

    fn hello_frame(&self) -> String {
        let state = &self.ctx.state;
        self.control_frame(Message::Hello(Hello {
            identifier: self.ctx.config.identifier.clone(),
            protocol_version: Value::from(yonexus_protocol::PROTOCOL_VERSION),
            public_key: Some(state.public_key_base64()),
            has_secret: Some(state.has_secret()),
            has_key_pair: Some(true),
        }))
    }

    fn auth_frame(&self, secret: &str) -> String {
        let state = &self.ctx.state;
        let nonce = validate::generate_nonce();
        let ts = now_unix();
        let signature = signing::sign(state.signing_key(), secret, &nonce, ts);
        self.control_frame(Message::AuthRequest(AuthRequest {
            identifier: self.ctx.config.identifier.clone(),
            nonce,
            proof_timestamp: ts,
            signature,
            public_key: Some(state.public_key_base64()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding_keeps_unknown_reasons_and_codes() {
        let m = decode(r#"{"type":"error","payload":{"code":"SOMETHING_NEW","message":"m"}}"#);
        assert!(
            matches!(m, Some(Message::Error(ref e)) if e.code == ErrorCode::Unknown("SOMETHING_NEW".into()) && e.code.as_str() == "SOMETHING_NEW"),
            "{m:?}"
        );
        let m = decode(
            r#"{"type":"pair_failed","payload":{"identifier":"a","reason":"new_reason","attemptsLeft":2}}"#,
        );
        assert!(
            matches!(m, Some(Message::PairFailed(ref p)) if p.reason.as_str() == "new_reason" && p.attempts_left == Some(2)),
            "{m:?}"
        );
        let m = decode(r#"{"type":"error","payload":{"code":"RULE_NOT_FOUND","message":"no"}}"#);
        assert!(matches!(m, Some(Message::Error(ref e)) if e.code == ErrorCode::RuleNotFound));
        assert!(decode("not json").is_none());
        assert!(decode(r#"{"type":"hello_ack","payload":{}}"#).is_none());
        assert!(matches!(
            decode(r#"{"type":"heartbeat","payload":{"identifier":"a"}}"#),
            Some(Message::Heartbeat(_))
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
