//! One connection's protocol state machine: hello → pairing | authentication → authenticated.
//!
//! No sockets here: the session reads text, sends frames through its [`SessionHandle`] (the
//! connection's own outbound queue, so replies keep their order) and tells the connection when
//! to close. Every protocol rule can therefore be tested without a network.

use crate::auth::{self, AuthOutcome};
use crate::hub::Hub;
use crate::liveness::Liveness;
use crate::metrics;
use crate::notify::PairingNotice;
use crate::pairing::{self, ConfirmOutcome};
use crate::registry::{FollowerEvent, Outbound, SessionHandle};
use crate::reply;
use crate::router::{DispatchError, RuleMessage};
use crate::store::NotifyStatus;
use std::sync::Arc;
use yonexus_protocol::envelope::*;
use yonexus_protocol::{frame, validate, Envelope, Frame};

/// Longest rule id accepted.
pub const MAX_RULE_ID_CHARS: usize = 128;

/// What the connection does after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Send a close frame with this code and reason, then end the connection.
    Close {
        code: u16,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Nothing said yet.
    Connected,
    /// `hello` accepted for this identifier.
    Greeted {
        identifier: String,
        public_key: Option<String>,
    },
    Authenticated {
        identifier: String,
    },
}

/// The protocol state of one connection.
pub struct Session {
    handle: Arc<SessionHandle>,
    state: State,
    /// A pairing was started or is awaited on this connection (its deadline is extended).
    pairing: bool,
}

impl Session {
    pub fn new(handle: Arc<SessionHandle>) -> Self {
        Session {
            handle,
            state: State::Connected,
            pairing: false,
        }
    }

    /// The authenticated identifier, if any.
    pub fn authenticated_as(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated { identifier } => Some(identifier),
            _ => None,
        }
    }

    /// Whether a pairing is in progress on this connection.
    pub fn in_pairing(&self) -> bool {
        self.pairing && self.authenticated_as().is_none()
    }

    fn send(&self, frame: String) {
        // A full queue closes the connection (slow consumer); nothing more to do here.
        let _ = self.handle.send(Outbound::Text(frame));
    }

    fn error(&self, hub: &Hub, code: ErrorCode, message: impl Into<String>, rid: Option<&str>) {
        self.send(reply::error(code, message, hub.now(), rid));
    }

    /// A binary frame: not part of protocol v1.
    pub fn on_binary(&mut self, hub: &Hub) -> Flow {
        self.error(
            hub,
            ErrorCode::MalformedMessage,
            "binary frames are not part of protocol v1; send text frames",
            None,
        );
        Flow::Continue
    }

    /// One inbound text frame.
    pub async fn on_text(&mut self, hub: &Hub, text: &str) -> Flow {
        match frame::parse(text) {
            Err(e) => {
                metrics::frame_in("malformed", None, text.len());
                self.error(hub, ErrorCode::MalformedMessage, e.to_string(), None);
                Flow::Continue
            }
            Ok(Frame::Builtin(json)) => match decode_counted(json, text.len()) {
                Err(e) => {
                    self.error(hub, ErrorCode::MalformedMessage, e.to_string(), None);
                    Flow::Continue
                }
                Ok(env) => self.on_control(hub, env).await,
            },
            Ok(Frame::Rule { rule_id, content }) => self.on_rule(hub, rule_id, content),
        }
    }

    fn on_rule(&mut self, hub: &Hub, rule_id: &str, content: &str) -> Flow {
        let State::Authenticated { identifier } = &self.state else {
            return Flow::Close {
                code: 1008,
                reason: "Not authenticated".into(),
            };
        };
        if rule_id.chars().count() > MAX_RULE_ID_CHARS {
            self.error(
                hub,
                ErrorCode::MalformedMessage,
                format!("rule id is longer than {MAX_RULE_ID_CHARS} characters"),
                None,
            );
            return Flow::Continue;
        }
        let msg = RuleMessage {
            rule_id: rule_id.to_owned(),
            sender: identifier.clone(),
            content: content.to_owned(),
        };
        let outcome = hub.router.dispatch(msg);
        let known = !matches!(outcome, Err(DispatchError::NotFound(_)));
        metrics::frame_in(
            "rule",
            known.then_some(rule_id),
            rule_id.len() + content.len() + 2,
        );
        match outcome {
            Ok(()) => {}
            Err(e @ DispatchError::NotFound(_)) => {
                self.error(hub, ErrorCode::RuleNotFound, e.to_string(), None)
            }
            Err(e @ DispatchError::Busy(_)) => {
                self.error(hub, ErrorCode::HandlerBusy, e.to_string(), None)
            }
            Err(e @ DispatchError::Failed { .. }) => {
                self.error(hub, ErrorCode::HandlerFailed, e.to_string(), None)
            }
        }
        Flow::Continue
    }

    async fn on_control(&mut self, hub: &Hub, env: Envelope) -> Flow {
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

    async fn on_hello(&mut self, hub: &Hub, hello: Hello, rid: Option<&str>) -> Flow {
        let identifier = hello.identifier.trim().to_owned();
        if self.authenticated_as().is_some() {
            self.error(
                hub,
                ErrorCode::MalformedMessage,
                "this session is already authenticated",
                rid,
            );
            return Flow::Continue;
        }
        if validate::identifier(&identifier).is_err() || !hub.is_allowed(&identifier) {
            tracing::warn!(remote = %self.handle.remote, identifier = %shown(&identifier), "hello from an identifier that is not allowed");
            self.error(
                hub,
                ErrorCode::IdentifierNotAllowed,
                "identifier is not on this host's allowlist",
                rid,
            );
            return Flow::Close {
                code: 1008,
                reason: "Identifier not allowed".into(),
            };
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
            return Flow::Close {
                code: 1002,
                reason: "Unsupported protocol version".into(),
            };
        }
        self.state = State::Greeted {
            identifier: identifier.clone(),
            public_key: hello.public_key.clone(),
        };
        let settings = hub.settings();
        let now = hub.now();
        // Decide and, if needed, create the pairing in one step under the store lock.
        let decision = hub.store.update(&identifier, now, |r| {
            let action = pairing::next_action(Some(r), now);
            match action {
                NextAction::PairRequired => {
                    let before = r.clone();
                    let expires_at =
                        pairing::start(r, now, settings.pairing.ttl_secs, hello.public_key.clone());
                    let code = r.pairing_code.clone().unwrap_or_default();
                    (action, Some((before, expires_at, code)))
                }
                NextAction::WaitingPairConfirm => {
                    pairing::note_public_key(r, hello.public_key.clone());
                    (action, None)
                }
                _ => (action, None),
            }
        });
        tracing::info!(remote = %self.handle.remote, identifier = %identifier, next_action = ?decision.0, "hello");
        let (action, pending) = decision;
        self.pairing = matches!(
            action,
            NextAction::PairRequired | NextAction::WaitingPairConfirm
        );
        let Some((before, expires_at, code)) = pending else {
            self.send(reply::hello_ack(&identifier, action, now, rid));
            return Flow::Continue;
        };
        // The pending pairing is durable before the follower hears of it.
        if let Err(e) = hub.store.persist().await {
            tracing::error!(error = %e, identifier = %identifier, "cannot persist pending pairing");
            hub.store.restore(Some(before), &identifier);
            self.send(reply::hello_ack(&identifier, action, now, rid));
            self.send(reply::pair_failed(
                &identifier,
                PairFailReason::InternalError,
                now,
                rid,
            ));
            return Flow::Continue;
        }
        self.send(reply::hello_ack(&identifier, action, now, rid));
        let notice = PairingNotice {
            identifier: identifier.clone(),
            code,
            expires_at,
        };
        let notifier = hub.notifier();
        let delivered = match notifier.notify(&notice).await {
            Ok(()) => {
                metrics::pairing_result("started");
                tracing::info!(identifier = %identifier, notifier = notifier.kind(), "pairing code delivered to the admin");
                true
            }
            Err(e) => {
                metrics::pairing_result("notify_failed");
                tracing::warn!(identifier = %identifier, notifier = notifier.kind(), error = %e, "pairing notification failed; the code stays available through `yonexus pairing`");
                false
            }
        };
        let notified_at = hub.now();
        hub.store.update_existing(&identifier, |r| {
            if r.pairing_expires_at == Some(expires_at) {
                r.pairing_notify_status = Some(if delivered {
                    NotifyStatus::Sent
                } else {
                    NotifyStatus::Failed
                });
                r.pairing_notified_at = Some(notified_at);
            }
        });
        if let Err(e) = hub.store.persist().await {
            tracing::warn!(error = %e, "cannot persist notification status (will retry with the next write)");
        }
        let status = if delivered {
            AdminNotification::Sent
        } else {
            AdminNotification::Failed
        };
        self.send(reply::pair_request(
            &identifier,
            expires_at,
            expires_at - now,
            status,
            notified_at,
            rid,
        ));
        Flow::Continue
    }

    async fn on_pair_confirm(
        &mut self,
        hub: &Hub,
        confirm: PairConfirm,
        rid: Option<&str>,
    ) -> Flow {
        let identifier = confirm.identifier.trim().to_owned();
        let now = hub.now();
        if !hub.is_allowed(&identifier) {
            self.send(reply::pair_failed(
                &identifier,
                PairFailReason::IdentifierNotAllowed,
                now,
                rid,
            ));
            return Flow::Continue;
        }
        let hello_key = match &self.state {
            State::Greeted {
                identifier: id,
                public_key,
            } if *id == identifier => public_key.clone(),
            _ => None,
        };
        let max_attempts = hub.settings().pairing.max_attempts;
        let outcome = hub.store.update_existing(&identifier, |r| {
            let before = r.clone();
            (
                before,
                pairing::confirm(
                    r,
                    &confirm.pairing_code,
                    hello_key.clone(),
                    now,
                    max_attempts,
                ),
            )
        });
        let Some((before, outcome)) = outcome else {
            self.send(reply::pair_failed(
                &identifier,
                PairFailReason::Expired,
                now,
                rid,
            ));
            return Flow::Continue;
        };
        match outcome {
            ConfirmOutcome::Paired { secret, paired_at } => {
                if let Err(e) = hub.store.persist().await {
                    tracing::error!(error = %e, identifier = %identifier, "cannot persist new pairing; refusing it");
                    hub.store.restore(Some(before), &identifier);
                    self.send(reply::pair_failed(
                        &identifier,
                        PairFailReason::InternalError,
                        now,
                        rid,
                    ));
                    return Flow::Continue;
                }
                hub.reset_auth_windows(&identifier);
                metrics::pairing_result("paired");
                tracing::info!(remote = %self.handle.remote, identifier = %identifier, "paired");
                let public_key = hub.store.get(&identifier).and_then(|r| r.public_key);
                self.state = State::Greeted {
                    identifier: identifier.clone(),
                    public_key,
                };
                self.send(reply::pair_success(&identifier, &secret, paired_at, rid));
            }
            ConfirmOutcome::Failed(reason) => {
                metrics::pairing_result(reason.label());
                tracing::warn!(remote = %self.handle.remote, identifier = %identifier, reason = ?reason, "pair_confirm refused");
                if let Err(e) = hub.store.persist().await {
                    tracing::warn!(error = %e, "cannot persist pairing attempt count");
                }
                self.send(reply::pair_failed(&identifier, reason, now, rid));
            }
        }
        Flow::Continue
    }

    async fn on_auth_request(&mut self, hub: &Hub, req: AuthRequest, rid: Option<&str>) -> Flow {
        let identifier = req.identifier.trim().to_owned();
        let now = hub.now();
        let allowed = hub.is_allowed(&identifier);
        let has_session = match &self.state {
            State::Greeted { identifier: id, .. } | State::Authenticated { identifier: id } => {
                *id == identifier
            }
            State::Connected => false,
        };
        let record = if allowed {
            hub.store.get(&identifier)
        } else {
            None
        };
        let outcome = hub.with_auth_windows(&identifier, |w| {
            auth::check(allowed, record.as_ref(), has_session, w, &req, now)
        });
        match outcome {
            AuthOutcome::Accepted { bind_key } => {
                let bound = bind_key.is_some();
                let before = hub.store.get(&identifier);
                hub.store.update_existing(&identifier, |r| {
                    if let Some(k) = bind_key {
                        r.public_key = Some(k);
                    }
                    r.status = Liveness::Online;
                    r.last_authenticated_at = Some(now);
                    r.last_heartbeat_at = Some(now);
                    r.updated_at = now;
                });
                if bound {
                    if let Err(e) = hub.store.persist().await {
                        tracing::error!(error = %e, "cannot persist the bound public key");
                        hub.store.restore(before, &identifier);
                        self.send(reply::auth_failed(
                            &identifier,
                            AuthFailReason::NotPaired,
                            now,
                            rid,
                        ));
                        return Flow::Continue;
                    }
                }
                self.state = State::Authenticated {
                    identifier: identifier.clone(),
                };
                if let Some(old) = hub.registry.promote(&identifier, Arc::clone(&self.handle)) {
                    if old.conn_id != self.handle.conn_id {
                        tracing::info!(identifier = %identifier, old_remote = %old.remote, "session replaced by a newer one");
                        old.close(1000, "session replaced");
                    }
                }
                hub.registry.emit(FollowerEvent::LivenessChanged {
                    identifier: identifier.clone(),
                    status: Liveness::Online,
                });
                metrics::auth_result("success");
                tracing::info!(remote = %self.handle.remote, identifier = %identifier, "authenticated");
                self.send(reply::auth_success(&identifier, now, rid));
            }
            AuthOutcome::Failed(reason) => {
                metrics::auth_result(reason.label());
                tracing::warn!(remote = %self.handle.remote, identifier = %shown(&identifier), reason = reason.label(), "auth failed");
                self.send(reply::auth_failed(&identifier, reason, now, rid));
            }
            AuthOutcome::RePair(reason) => {
                metrics::auth_result(reason.label());
                tracing::warn!(remote = %self.handle.remote, identifier = %identifier, reason = reason.label(), "trust revoked: re-pair required");
                let own = self.authenticated_as() == Some(identifier.as_str());
                if own {
                    hub.registry.remove(&identifier, self.handle.conn_id);
                }
                // Any other live session of this identifier loses its trust too.
                if let Some(other) = hub.registry.get(&identifier) {
                    let _ = other.send(Outbound::Text(reply::re_pair_required(
                        &identifier,
                        reason.clone(),
                        now,
                        None,
                    )));
                }
                if let Err(e) = hub
                    .revoke(&identifier, "trust revoked: re-pair required")
                    .await
                {
                    tracing::error!(error = %e, "cannot persist revocation");
                }
                self.state = State::Connected;
                self.send(reply::re_pair_required(&identifier, reason, now, rid));
            }
        }
        Flow::Continue
    }

    fn on_heartbeat(&mut self, hub: &Hub, hb: Heartbeat, rid: Option<&str>) -> Flow {
        let Some(identifier) = self.authenticated_as().map(str::to_owned) else {
            self.error(
                hub,
                ErrorCode::AuthFailed,
                "heartbeat before authentication",
                rid,
            );
            return Flow::Continue;
        };
        if hb.identifier.trim() != identifier {
            self.error(
                hub,
                ErrorCode::AuthFailed,
                "heartbeat identifier does not match this session",
                rid,
            );
            return Flow::Continue;
        }
        let now = hub.now();
        let previous = hub.store.update_existing(&identifier, |r| {
            let was = r.status;
            r.status = Liveness::Online;
            r.last_heartbeat_at = Some(now);
            was
        });
        if previous.is_some_and(|p| p != Liveness::Online) {
            hub.registry.emit(FollowerEvent::LivenessChanged {
                identifier: identifier.clone(),
                status: Liveness::Online,
            });
        }
        self.send(reply::heartbeat_ack(
            &identifier,
            Liveness::Online.as_str(),
            now,
            rid,
        ));
        Flow::Continue
    }

    /// The connection ended: forget the session if it is still the active one.
    pub fn on_close(&mut self, hub: &Hub) {
        if let State::Authenticated { identifier } = &self.state {
            if hub.registry.remove(identifier, self.handle.conn_id) {
                hub.store
                    .update_existing(identifier, |r| r.status = Liveness::Offline);
                hub.registry.emit(FollowerEvent::LivenessChanged {
                    identifier: identifier.clone(),
                    status: Liveness::Offline,
                });
                tracing::info!(remote = %self.handle.remote, identifier = %identifier, "disconnected");
            }
        }
    }
}

/// Decode a control envelope, counting the frame.
fn decode_counted(json: &str, frame_len: usize) -> Result<Envelope, yonexus_protocol::DecodeError> {
    metrics::frame_in("builtin", None, frame_len);
    Envelope::decode(json)
}

/// An identifier from the wire, bounded for logging.
fn shown(identifier: &str) -> String {
    identifier
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect()
}
