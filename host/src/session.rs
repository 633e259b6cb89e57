//! One connection's protocol state machine: hello → pairing | authentication → authenticated.
//!
//! No sockets here: the session reads text, queues replies on its connection's outbound side
//! ([`Peer`], so replies keep their order) and tells the connection when to close. Each phase
//! holds only its own data. Rule messages and heartbeats are handled synchronously
//! ([`Session::on_text_now`]); `hello`, `pair_confirm` and `auth_request` may wait on the
//! store, the admin notifier or a deliberate delay, so they run as [`Session::on_control`],
//! which the connection drives without blocking its other duties.
//!
//! Policy for everything a stranger can send (SECURITY.md): refused, counted per connection
//! and per address, answered more slowly after a free allowance, never a cause of revocation;
//! a connection that keeps failing is closed.

use crate::auth::{self, AuthOutcome};
use crate::guard::AddressKey;
use crate::hub::Hub;
use crate::lifecycle::{self, AuthenticateError};
use crate::metrics;
use crate::notify::PairingNotice;
use crate::outbound::Peer;
use crate::pairing::{self, CodeCheck, Completed};
use crate::reply;
use crate::router::{DispatchError, RuleMessage, Sender};
use crate::store::StoreError;
use crate::trust::{Liveness, NotifyStatus};
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use yonexus_protocol::envelope::*;
use yonexus_protocol::{frame, signing, validate, Envelope, Frame};

/// What the connection does after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Send a close frame with this code and reason, then end the connection.
    Close {
        code: u16,
        reason: Cow<'static, str>,
    },
}

impl Flow {
    fn close(code: u16, reason: &'static str) -> Flow {
        Flow::Close {
            code,
            reason: Cow::Borrowed(reason),
        }
    }
}

/// The result of handling a frame at once.
#[derive(Debug)]
pub enum Step {
    Done(Flow),
    /// A control message that needs [`Session::on_control`].
    Control(Envelope),
}

/// `hello` accepted for this identifier on this connection.
#[derive(Debug, Clone)]
struct Greeted {
    identifier: Arc<str>,
    /// The key from this connection's `hello`, in canonical form (bound if it confirms a code).
    public_key: Option<String>,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Nothing said yet.
    Connected,
    Greeted(Greeted),
    Authenticated(Sender),
}

/// The protocol state of one connection.
pub struct Session {
    peer: Arc<Peer>,
    address: AddressKey,
    phase: Phase,
    /// Refused proofs and requests without a session on this connection.
    auth_failures: u32,
    /// Wrong pairing codes on this connection.
    wrong_codes: u32,
    /// A later authentication deadline than the connection's own: while a pairing is awaited
    /// (a human relays the code), then for the authentication right after `pair_success`.
    deadline: Option<Instant>,
}

/// An identifier from the wire as it may appear in a log line: allowlisted ones as they are,
/// anything else not at all.
fn logged(hub: &Hub, identifier: &str) -> String {
    if validate::identifier(identifier).is_ok() && hub.is_allowed(identifier) {
        identifier.to_owned()
    } else {
        "(not allowlisted)".to_owned()
    }
}

impl Session {
    pub fn new(peer: Arc<Peer>) -> Self {
        let address = AddressKey::of(peer.remote.ip());
        Session {
            peer,
            address,
            phase: Phase::Connected,
            auth_failures: 0,
            wrong_codes: 0,
            deadline: None,
        }
    }

    /// The authenticated identifier, if any.
    pub fn authenticated_as(&self) -> Option<&Arc<str>> {
        match &self.phase {
            Phase::Authenticated(s) => Some(&s.id),
            _ => None,
        }
    }

    /// The authentication deadline this session grants beyond the connection's own, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Let the connection live `secs` more before it must have authenticated.
    fn extend_deadline(&mut self, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        self.deadline = Some(self.deadline.map_or(until, |d| d.max(until)));
    }

    fn greeted_as(&self) -> Option<&Arc<str>> {
        match &self.phase {
            Phase::Greeted(g) => Some(&g.identifier),
            Phase::Authenticated(s) => Some(&s.id),
            Phase::Connected => None,
        }
    }

    fn send(&self, frame: Bytes) {
        // A full queue closes the connection (slow consumer); nothing more to do here.
        let _ = self.peer.send(frame);
    }

    fn error(&self, hub: &Hub, code: ErrorCode, message: impl Into<String>, rid: Option<&str>) {
        self.send(reply::error(code, message, hub.now(), rid));
    }

    /// The trust store failed: say so, and close (the follower retries later).
    fn unavailable(&self, hub: &Hub, e: &StoreError, rid: Option<&str>) -> Flow {
        tracing::error!(error = %e, "trust store unavailable");
        self.error(
            hub,
            ErrorCode::AuthFailed,
            "the host's trust store is unavailable; try again later",
            rid,
        );
        Flow::close(1013, "try again later")
    }

    /// A binary frame: not part of protocol v1.
    pub fn on_binary(&mut self, hub: &Hub, len: usize) -> Flow {
        metrics::frame_in("binary", len);
        self.error(
            hub,
            ErrorCode::MalformedMessage,
            "binary frames are not part of protocol v1; send text frames",
            None,
        );
        Flow::Continue
    }

    /// One inbound text frame, all the way (tests and the fuzzer; the connection uses
    /// [`Session::on_text_now`] and [`Session::on_control`]).
    pub async fn on_text(&mut self, hub: &Arc<Hub>, text: String) -> Flow {
        match self.on_text_now(hub, text) {
            Step::Done(flow) => flow,
            Step::Control(env) => self.on_control(hub, env).await,
        }
    }

    /// Handle what needs no waiting: rule messages, heartbeats, malformed frames.
    pub fn on_text_now(&mut self, hub: &Hub, text: String) -> Step {
        let rule_end = match frame::parse(&text) {
            Err(e) => {
                metrics::frame_in("malformed", text.len());
                self.error(hub, ErrorCode::MalformedMessage, e.to_string(), None);
                return Step::Done(Flow::Continue);
            }
            Ok(Frame::Rule { rule_id, .. }) => rule_id.len(),
            Ok(Frame::Builtin(json)) => {
                metrics::frame_in("builtin", text.len());
                return match Envelope::decode(json) {
                    Err(e) => {
                        self.error(hub, ErrorCode::MalformedMessage, e.to_string(), None);
                        Step::Done(Flow::Continue)
                    }
                    Ok(Envelope {
                        message: Message::Heartbeat(hb),
                        request_id,
                        ..
                    }) => Step::Done(self.on_heartbeat(hub, hb, request_id.as_deref())),
                    Ok(env) => Step::Control(env),
                };
            }
        };
        Step::Done(self.on_rule(hub, text, rule_end))
    }

    fn on_rule(&mut self, hub: &Hub, text: String, rule_end: usize) -> Flow {
        let Phase::Authenticated(sender) = &self.phase else {
            return Flow::close(1008, "Not authenticated");
        };
        metrics::rule_bytes_in(text.len());
        if let Err(e) = validate::rule_id(&text[..rule_end]) {
            self.error(hub, ErrorCode::MalformedMessage, e.to_string(), None);
            return Flow::Continue;
        }
        let Some(msg) = RuleMessage::new(text, rule_end, sender.clone()) else {
            return Flow::Continue;
        };
        let (code, message) = match hub.router.dispatch(msg) {
            Ok(()) => return Flow::Continue,
            Err(e @ DispatchError::NotFound(_)) => (ErrorCode::RuleNotFound, e.to_string()),
            Err(e @ DispatchError::Busy(_)) => (ErrorCode::HandlerBusy, e.to_string()),
            Err(e @ DispatchError::Failed { .. }) => (ErrorCode::HandlerFailed, e.to_string()),
        };
        self.error(hub, code, message, None);
        Flow::Continue
    }

    /// `hello`, `pair_confirm`, `auth_request` (and host-only types, which are refused).
    pub async fn on_control(&mut self, hub: &Arc<Hub>, env: Envelope) -> Flow {
        // The type only: payloads may carry codes and secrets.
        tracing::trace!(
            conn = self.peer.conn_id,
            kind = env.message.type_name(),
            "control message"
        );
        let rid = env.request_id.as_deref();
        match env.message {
            Message::Hello(h) => self.on_hello(hub, h, rid).await,
            Message::PairConfirm(p) => self.on_pair_confirm(hub, p, rid).await,
            Message::AuthRequest(a) => self.on_auth_request(hub, a, rid).await,
            Message::Heartbeat(h) => self.on_heartbeat(hub, h, rid),
            other => {
                let t = other.type_name();
                self.error(
                    hub,
                    ErrorCode::MalformedMessage,
                    format!("'{t}' is sent by the host and not accepted from a follower"),
                    rid,
                );
                Flow::Continue
            }
        }
    }

    async fn on_hello(&mut self, hub: &Arc<Hub>, hello: Hello, rid: Option<&str>) -> Flow {
        if self.authenticated_as().is_some() {
            self.error(
                hub,
                ErrorCode::MalformedMessage,
                "this session is already authenticated",
                rid,
            );
            return Flow::Continue;
        }
        let identifier = hello.identifier.trim();
        // Validated and checked against the allowlist before anything is stored or logged.
        if validate::identifier(identifier).is_err() || !hub.is_allowed(identifier) {
            metrics::auth_refused("not_allowed");
            if hub.may_log_refusal() {
                // A stranger's identifier is never stored nor logged: only its size.
                tracing::warn!(remote = %self.peer.remote, identifier_chars = identifier.chars().count(), "hello from an identifier that is not allowed");
            }
            self.error(
                hub,
                ErrorCode::IdentifierNotAllowed,
                "identifier is not on this host's allowlist",
                rid,
            );
            return Flow::close(1008, "Identifier not allowed");
        }
        if !hello.version_supported() {
            self.error(
                hub,
                ErrorCode::UnsupportedProtocolVersion,
                format!(
                    "protocol version {} is not supported; this host speaks \"1\"",
                    hello.protocol_version
                ),
                rid,
            );
            return Flow::close(1002, "Unsupported protocol version");
        }
        let public_key = match hello.public_key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match signing::decode_public_key(text) {
                Ok(raw) => Some(signing::encode_base64(&raw)),
                Err(e) => {
                    self.error(
                        hub,
                        ErrorCode::MalformedMessage,
                        format!("hello.publicKey cannot be used: {e} (expected the 32-byte Ed25519 key as base64, hex or PEM)"),
                        rid,
                    );
                    return Flow::Continue;
                }
            },
        };
        let identifier: Arc<str> = Arc::from(identifier);
        let settings = hub.settings();
        let now = hub.now();
        // Decide and, when needed, create the pairing in one durable step.
        let ttl = settings.pairing.ttl_secs;
        let decision = match hub.store.get(&identifier).await {
            Err(e) => return self.unavailable(hub, &e, rid),
            Ok(Some(r)) if r.is_paired() || r.live_pending(now) => {
                (pairing::next_action(Some(&r), now), None)
            }
            Ok(_) => match hub
                .store
                .apply(&identifier, now, |r| pairing::on_hello(r, now, ttl))
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, identifier = %identifier, "cannot persist a pending pairing");
                    self.send(reply::hello_ack(
                        &identifier,
                        NextAction::PairRequired,
                        now,
                        rid,
                    ));
                    self.send(reply::pair_failed(
                        &identifier,
                        PairFailReason::InternalError,
                        None,
                        now,
                        rid,
                    ));
                    return Flow::Continue;
                }
            },
        };
        let (action, started) = decision;
        tracing::debug!(remote = %self.peer.remote, identifier = %identifier, next_action = %action, "hello");
        self.phase = Phase::Greeted(Greeted {
            identifier: Arc::clone(&identifier),
            public_key,
        });
        if matches!(
            action,
            NextAction::PairRequired | NextAction::WaitingPairConfirm
        ) {
            let ttl = u64::try_from(settings.pairing.ttl_secs).unwrap_or(0);
            self.extend_deadline(settings.limits.auth_timeout_secs.saturating_add(ttl));
        }
        self.send(reply::hello_ack(&identifier, action, now, rid));
        if let Some(started) = started {
            // The pending pairing is durable; the admin is told in the background (never more
            // than one notification per identifier per TTL: a new pairing starts only when
            // none is live), and `pair_request` follows on this connection when told.
            hub.background.spawn(notify_admin(
                Arc::clone(hub),
                identifier,
                started,
                Arc::clone(&self.peer),
                rid.map(str::to_owned),
            ));
        }
        Flow::Continue
    }

    /// A refused pairing attempt on this connection: slow the answer, then close past the
    /// per-connection allowance.
    async fn wrong_code(
        &mut self,
        hub: &Hub,
        identifier: &str,
        reason: PairFailReason,
        delay: Duration,
        rid: Option<&str>,
    ) -> Flow {
        self.wrong_codes += 1;
        let max = hub.settings().pairing.max_attempts;
        let delay = delay.max(
            hub.guard
                .failure_anywhere(&hub.store, self.address, hub.now())
                .await,
        );
        if !delay.is_zero() {
            metrics::throttled("pairing");
            hub.delay(delay).await;
        }
        let left = max.saturating_sub(self.wrong_codes);
        self.send(reply::pair_failed(
            identifier,
            reason,
            Some(left),
            hub.now(),
            rid,
        ));
        if left == 0 {
            metrics::abuser_closed("pairing");
            return Flow::close(1008, "too many wrong pairing codes");
        }
        Flow::Continue
    }

    async fn on_pair_confirm(
        &mut self,
        hub: &Hub,
        confirm: PairConfirm,
        rid: Option<&str>,
    ) -> Flow {
        let identifier = confirm.identifier.trim();
        let now = hub.now();
        // Only the connection that said hello for this identifier may confirm its code.
        let Some(greeted) = self.greeted_as().filter(|id| &***id == identifier).cloned() else {
            metrics::pairing_result("no_hello");
            if hub.may_log_refusal() {
                tracing::warn!(remote = %self.peer.remote, identifier = %logged(hub, identifier), "pair_confirm on a connection that did not say hello for it");
            }
            self.error(
                hub,
                ErrorCode::MalformedMessage,
                "send hello for this identifier on this connection before pair_confirm",
                rid,
            );
            return self.wrong_code_without_answer(hub).await;
        };
        let checked = hub
            .store
            .apply_existing(&greeted, |r| {
                pairing::check_code(r, &confirm.pairing_code, now)
            })
            .await;
        let checked = match checked {
            Err(e) => return self.unavailable(hub, &e, rid),
            Ok(c) => c.unwrap_or(CodeCheck::Expired),
        };
        match checked {
            CodeCheck::Right => {}
            CodeCheck::Wrong { failures } => {
                metrics::pairing_result("invalid_code");
                if hub.may_log_refusal() {
                    tracing::warn!(remote = %self.peer.remote, identifier = %greeted, failures, "wrong pairing code");
                }
                let delay = pairing::wrong_code_delay(failures);
                return self
                    .wrong_code(hub, &greeted, PairFailReason::InvalidCode, delay, rid)
                    .await;
            }
            CodeCheck::AlreadyPaired => {
                metrics::pairing_result("invalid_code");
                return self
                    .wrong_code(
                        hub,
                        &greeted,
                        PairFailReason::InvalidCode,
                        Duration::ZERO,
                        rid,
                    )
                    .await;
            }
            CodeCheck::Expired => {
                metrics::pairing_result("expired");
                self.send(reply::pair_failed(
                    &greeted,
                    PairFailReason::Expired,
                    None,
                    now,
                    rid,
                ));
                return Flow::Continue;
            }
        }
        let key = match &self.phase {
            Phase::Greeted(g) => g.public_key.clone(),
            _ => None,
        };
        let code = confirm.pairing_code;
        let completed = hub
            .store
            .apply(&greeted, now, move |r| {
                pairing::complete(r, &code, key, now)
            })
            .await;
        match completed {
            Ok(Completed::Paired { secret, paired_at }) => {
                hub.guard.forget(&greeted);
                metrics::pairing_result("paired");
                tracing::info!(remote = %self.peer.remote, identifier = %greeted, "paired");
                // The key is bound now; the follower authenticates next, on this connection.
                self.phase = Phase::Greeted(Greeted {
                    identifier: Arc::clone(&greeted),
                    public_key: None,
                });
                self.extend_deadline(hub.settings().limits.auth_timeout_secs);
                self.send(reply::pair_success(&greeted, &secret, paired_at, rid));
            }
            Ok(Completed::Lost(reason)) => {
                metrics::pairing_result(reason.label());
                self.send(reply::pair_failed(&greeted, reason, None, now, rid));
            }
            Err(e) => {
                tracing::error!(error = %e, identifier = %greeted, "cannot persist a new pairing; refusing it");
                self.send(reply::pair_failed(
                    &greeted,
                    PairFailReason::InternalError,
                    None,
                    now,
                    rid,
                ));
            }
        }
        Flow::Continue
    }

    /// A pairing request that cannot be checked (no hello): counted like a wrong code.
    async fn wrong_code_without_answer(&mut self, hub: &Hub) -> Flow {
        self.wrong_codes += 1;
        let delay = hub
            .guard
            .failure_anywhere(&hub.store, self.address, hub.now())
            .await;
        if !delay.is_zero() {
            metrics::throttled("pairing");
            hub.delay(delay).await;
        }
        if self.wrong_codes >= hub.settings().pairing.max_attempts {
            metrics::abuser_closed("pairing");
            return Flow::close(1008, "too many wrong pairing codes");
        }
        Flow::Continue
    }

    async fn on_auth_request(
        &mut self,
        hub: &Arc<Hub>,
        req: AuthRequest,
        rid: Option<&str>,
    ) -> Flow {
        let now = hub.now();
        let identifier = req.identifier.trim();
        let allowed = validate::identifier(identifier).is_ok() && hub.is_allowed(identifier);
        let has_session = self.greeted_as().is_some_and(|id| &**id == identifier);
        let record = if allowed && has_session {
            match hub.store.get(identifier).await {
                Ok(r) => r,
                Err(e) => return self.unavailable(hub, &e, rid),
            }
        } else {
            None
        };
        let outcome = auth::check(allowed, record.as_ref(), has_session, &req, now, |nonce| {
            hub.guard.replayed(identifier, nonce, now)
        });
        let bind_key = match outcome {
            AuthOutcome::Accepted { bind_key } => bind_key,
            AuthOutcome::Refused(refusal) => {
                // Only a well-formed identifier is echoed (a stranger's text is not sent back).
                let shown = if validate::identifier(identifier).is_ok() {
                    identifier
                } else {
                    ""
                };
                return self
                    .refuse_auth(hub, shown, refusal.kind, refusal.reason, rid)
                    .await;
            }
        };
        let (Some(greeted), Some(secret)) =
            (self.greeted_as().cloned(), record.and_then(|r| r.secret))
        else {
            return Flow::Continue;
        };
        // The nonce is accepted once, on every host (a replay, also one racing on another
        // connection, is refused); a follower that reconnects too fast is slowed, not refused.
        match hub
            .guard
            .accept_proof(&hub.store, &greeted, &req.nonce, now)
            .await
        {
            Ok(Some(delay)) => {
                if !delay.is_zero() {
                    metrics::throttled("identifier");
                    hub.delay(delay).await;
                }
            }
            Ok(None) => {
                return self
                    .refuse_auth(
                        hub,
                        &greeted,
                        "replayed",
                        AuthFailReason::InvalidSignature,
                        rid,
                    )
                    .await
            }
            Err(e) => return self.unavailable(hub, &e, rid),
        }
        let newer_elsewhere = match lifecycle::authenticated(
            hub, &greeted, &self.peer, bind_key, &secret,
        )
        .await
        {
            Ok(newer) => newer,
            Err(AuthenticateError::Store(e)) => return self.unavailable(hub, &e, rid),
            Err(AuthenticateError::NoLongerPaired) => {
                metrics::auth_result(AuthFailReason::NotPaired.label());
                tracing::info!(remote = %self.peer.remote, identifier = %greeted, "authentication void: trust was revoked meanwhile");
                self.send(reply::auth_failed(
                    &greeted,
                    AuthFailReason::NotPaired,
                    hub.now(),
                    rid,
                ));
                return Flow::close(1008, "trust revoked");
            }
        };
        self.phase =
            Phase::Authenticated(Sender::new(Arc::clone(&greeted), Arc::clone(&self.peer)));
        metrics::auth_result("success");
        tracing::info!(remote = %self.peer.remote, identifier = %greeted, "authenticated");
        self.send(reply::auth_success(&greeted, hub.now(), rid));
        if let Some(epoch) = newer_elsewhere {
            lifecycle::replaced_elsewhere(hub, &greeted, epoch);
        }
        Flow::Continue
    }

    /// A refused proof: counted on this connection and for its address, answered after the
    /// address's delay, the connection closed past its allowance.
    async fn refuse_auth(
        &mut self,
        hub: &Hub,
        identifier: &str,
        kind: &'static str,
        reason: AuthFailReason,
        rid: Option<&str>,
    ) -> Flow {
        self.auth_failures += 1;
        metrics::auth_refused(kind);
        metrics::auth_result(reason.label());
        if hub.may_log_refusal() {
            tracing::warn!(remote = %self.peer.remote, identifier = %logged(hub, identifier), reason = kind, "authentication refused");
        }
        let delay = hub
            .guard
            .failure_anywhere(&hub.store, self.address, hub.now())
            .await;
        if !delay.is_zero() {
            metrics::throttled("address");
            hub.delay(delay).await;
        }
        self.send(reply::auth_failed(identifier, reason, hub.now(), rid));
        if self.auth_failures >= hub.settings().limits.auth_failures_per_connection {
            metrics::abuser_closed("auth");
            return Flow::close(1008, "too many failed authentication attempts");
        }
        Flow::Continue
    }

    fn on_heartbeat(&mut self, hub: &Hub, hb: Heartbeat, rid: Option<&str>) -> Flow {
        let Some(identifier) = self.authenticated_as().cloned() else {
            self.error(
                hub,
                ErrorCode::AuthFailed,
                "heartbeat before authentication",
                rid,
            );
            return Flow::Continue;
        };
        if hb.identifier.trim() != &*identifier {
            self.error(
                hub,
                ErrorCode::AuthFailed,
                "heartbeat identifier does not match this session",
                rid,
            );
            return Flow::Continue;
        }
        let now = hub.now();
        lifecycle::liveness(hub, &identifier, Liveness::Online, Some(now));
        self.send(reply::heartbeat_ack(
            &identifier,
            Liveness::Online.as_str(),
            now,
            rid,
        ));
        Flow::Continue
    }
}

/// Deliver a new pairing code to the admin (at most [`NOTIFICATIONS_IN_FLIGHT`] at once across
/// every notifier), record how that went, then send `pair_request` on the connection that
/// started the pairing (if it is still open). Runs in the background: a slow notifier never
/// holds up the connection, and a connection that closes meanwhile does not cancel it.
///
/// [`NOTIFICATIONS_IN_FLIGHT`]: crate::hub::NOTIFICATIONS_IN_FLIGHT
async fn notify_admin(
    hub: Arc<Hub>,
    identifier: Arc<str>,
    started: pairing::Started,
    peer: Arc<Peer>,
    rid: Option<String>,
) {
    let notice = PairingNotice {
        identifier: identifier.to_string(),
        code: started.code.clone(),
        expires_at: started.expires_at,
    };
    let notifier = hub.notifier();
    let delivered = match tokio::time::timeout(
        crate::notify::DEFAULT_TIMEOUT,
        hub.notifications.acquire(),
    )
    .await
    {
        Ok(Ok(permit)) => {
            let result = notifier.notify(&notice).await;
            drop(permit);
            match result {
                Ok(()) => {
                    metrics::pairing_result("started");
                    tracing::info!(identifier = %identifier, notifier = notifier.kind(), expires_at = started.expires_at, "pairing started; code delivered to the admin");
                    true
                }
                Err(e) => {
                    metrics::pairing_result("notify_failed");
                    tracing::warn!(identifier = %identifier, notifier = notifier.kind(), error = %e, "pairing notification failed; the code stays available through `yonexus pairing`");
                    false
                }
            }
        }
        _ => {
            metrics::pairing_result("notify_failed");
            tracing::warn!(identifier = %identifier, "too many pairing notifications in flight; the code stays available through `yonexus pairing`");
            false
        }
    };
    let notified_at = hub.now();
    let expires_at = started.expires_at;
    let status = if delivered {
        NotifyStatus::Sent
    } else {
        NotifyStatus::Failed
    };
    let recorded = hub
        .store
        .apply_existing(&identifier, |r| {
            if r.pairing_expires_at == Some(expires_at) {
                r.pairing_notify_status = Some(status);
                r.pairing_notified_at = Some(notified_at);
            }
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cannot persist the notification status (it is informational)");
    }
    let admin = if delivered {
        AdminNotification::Sent
    } else {
        AdminNotification::Failed
    };
    let _ = peer.send(reply::pair_request(
        &identifier,
        expires_at,
        expires_at - notified_at,
        admin,
        notified_at,
        rid.as_deref(),
    ));
}
