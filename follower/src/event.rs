//! What the connection task reports ([`Event`]), why it stopped ([`StopReason`]), and the
//! pairing-code callback ([`CodeProvider`], [`PairingPrompt`]).
//!
//! Values that travel on the wire keep the protocol crate's types
//! ([`ErrorCode`], [`PairFailReason`], …); each has `as_str()` for its wire name and an
//! `Unknown(String)` variant for a value a newer host sends. Conditions that arise on this side
//! (no code available, no stored secret, a secret that could not be saved) have events of their
//! own rather than made-up wire values.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use yonexus_protocol::envelope::{
    AdminNotification, AuthFailReason, ErrorCode, NextAction, PairFailReason, RePairReason,
};

/// Future returned by a [`CodeProvider`].
pub type CodeFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// Supplies pairing codes (the admin receives the code out of band). `None` means "no code
/// available": this pairing attempt is abandoned (disconnect, retry later with backoff).
///
/// The future is dropped, unfinished, when the connection it was asked for ends; the next
/// connection asks again.
pub type CodeProvider = Arc<dyn Fn(PairingPrompt) -> CodeFuture + Send + Sync>;

/// What the host told us about the pairing a code is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingPrompt {
    pub identifier: String,
    /// The host's `expiresAt` (its clock, Unix seconds); `None` when unknown (the host answered
    /// `waiting_pair_confirm` and this process has not seen the pairing's `pair_request`).
    pub expires_at: Option<i64>,
    /// The host's `ttlSeconds` as sent in `pair_request` (the lifetime of the code when it was
    /// issued, not what is left of it: see [`expires_in`](Self::expires_in)).
    pub ttl_seconds: Option<i64>,
    /// What is left of the code's lifetime when this prompt was made, counted from the host's
    /// `ttlSeconds` on this machine's monotonic clock (so clock skew does not matter); `None`
    /// when unknown.
    pub expires_in: Option<Duration>,
    /// Whether the host could tell the admin the code (`None` when unknown).
    pub admin_notification: Option<AdminNotification>,
    /// True when the previous code was refused (`pair_failed invalid_code`).
    pub retry: bool,
    /// With `retry`: wrong codes this connection may still send (the host's `attemptsLeft`);
    /// `None` when the host does not say.
    pub attempts_left: Option<u32>,
}

/// What the connection task reports, in order. The task never waits for the application: events
/// it has not read yet are held in a bounded backlog ([`Config::event_backlog`]), and when that
/// is full the oldest rule messages are dropped and reported as [`Event::Dropped`].
///
/// [`Config::event_backlog`]: crate::Config::event_backlog
///
/// Host errors and failures are reported here **only**: the library logs them at `debug` level,
/// so an application that prints events prints each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The WebSocket handshake with `url` (one of [`Config::urls`](crate::Config::urls))
    /// succeeded; `hello` follows.
    Connected { url: String },
    /// Pairing is needed. From `pair_request`: the host's `expiresAt`, `ttlSeconds` and
    /// `adminNotification`; all `None` after `hello_ack waiting_pair_confirm` (a pairing started
    /// earlier is still pending: same code as before).
    PairingRequired {
        expires_at: Option<i64>,
        ttl_seconds: Option<i64>,
        admin_notification: Option<AdminNotification>,
    },
    /// `pair_success`: the secret is saved in the state file; authentication follows.
    Paired,
    /// `auth_success`: heartbeats start and queued rule messages are written.
    Authenticated,
    /// A rule message from the host, `<rule_id>::<content>`.
    Rule { rule_id: String, content: String },
    /// An `error` frame from the host. `IDENTIFIER_NOT_ALLOWED` is permanent: see
    /// [`StopReason::IdentifierNotAllowed`].
    HostError { code: ErrorCode, message: String },
    /// `hello_ack` with `nextAction` `rejected` (or a value this version does not know): the
    /// connection is closed and retried after backoff.
    HelloRejected { next_action: NextAction },
    /// `pair_failed`. With `invalid_code` and `attempts_left > 0` (or unknown) the provider is
    /// asked again (`retry`); with `attempts_left == Some(0)` the follower closes this connection
    /// and reconnects after backoff (the pending code stays valid until it expires). With
    /// `expired` the pending pairing is gone (expired, or cancelled after too many wrong codes):
    /// the next connection starts a new pairing and the admin gets a new code.
    /// `identifier_not_allowed` is permanent, like `IDENTIFIER_NOT_ALLOWED`.
    PairFailed {
        reason: PairFailReason,
        attempts_left: Option<u32>,
    },
    /// The [`CodeProvider`] returned `None`: this pairing attempt is abandoned (disconnect,
    /// retry after backoff).
    NoPairingCode,
    /// The secret from `pair_success` could not be saved, so it was not used (disconnect, retry
    /// after backoff). `error` names the file and the cause; it never contains the secret.
    SecretNotSaved { error: String },
    /// `auth_failed`; the connection is closed and retried after backoff.
    AuthFailed { reason: AuthFailReason },
    /// The host wants authentication but no secret is stored locally: the host's admin must
    /// revoke this follower so that it can pair again.
    NoLocalSecret,
    /// `re_pair_required`: the host revoked trust. The secret is forgotten (also on disk) and a
    /// fresh `hello` starts pairing on the same connection.
    RePairRequired { reason: RePairReason },
    /// `status_update`, and `disconnect_notice` (reported as status `offline`).
    StatusUpdate { status: String, reason: String },
    /// The connection ended, or a connection attempt failed (`reason` says which and why).
    Disconnected { reason: String },
    /// The next connection attempt goes to `url` after `delay` (backoff with jitter).
    Reconnecting { url: String, delay: Duration },
    /// The application fell behind: its backlog of unread events
    /// ([`Config::event_backlog`](crate::Config::event_backlog) events or
    /// [`event_backlog_bytes`](crate::Config::event_backlog_bytes)) was full, so the oldest
    /// `rules` rule messages were dropped (and, only when no rule message was left to drop, the
    /// oldest `other` events). Delivered where the dropped events would have been, before the
    /// next event; the counts start again from zero after each report.
    Dropped { rules: u64, other: u64 },
}

/// Why the connection task ended (see [`FollowerHandle::stop_reason`](crate::FollowerHandle::stop_reason)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// [`FollowerHandle::shutdown`](crate::FollowerHandle::shutdown) was called, or every handle
    /// was dropped.
    Shutdown,
    /// [`Config::reconnect`](crate::Config::reconnect) is off and the connection ended (or no
    /// host could be reached).
    ReconnectDisabled,
    /// Every configured host refused this identifier (`error IDENTIFIER_NOT_ALLOWED` or
    /// `pair_failed identifier_not_allowed`) since the last successful authentication. This is
    /// permanent until an admin adds the identifier to the hosts' allowlist, so the library
    /// stops instead of retrying. (With several URLs, a refusal moves on to the next host; the
    /// task stops only when each one refused.)
    IdentifierNotAllowed,
}
