//! Where one connection stands in the handshake: [`Phase`]. Each phase holds only the data it
//! needs (the pending code request while pairing, the heartbeat timer once authenticated), so
//! leaving a phase drops what belonged to it.
//!
//! What outlives one connection (the identity, what the last `pair_request` said about the
//! code's expiry) lives in the session's context instead.
//!
//! The whole life of a follower:
//!
//! ```text
//! Connecting (client.rs: TCP + WebSocket handshake, failover, backoff)
//!   └─ Greeting            hello sent, waiting for hello_ack
//!        ├─ auth_required ─────────────────────────────┐
//!        ├─ pair_required / pair_request ─┐            │
//!        └─ waiting_pair_confirm ─────────┤            │
//!                                         ▼            │
//!      Pairing: AwaitingRequest → AwaitingCode → Confirming
//!                      (invalid_code: back to AwaitingCode)
//!                                         │ pair_success│
//!                                         ▼            ▼
//!                                    Authenticating (auth_request sent)
//!                                         │ auth_success
//!                                         ▼
//!                                    Authenticated (heartbeats, rule messages)
//! ```
//!
//! `re_pair_required` (any phase) forgets the secret and sends a fresh `hello`: back to
//! Greeting on the same connection.

use crate::event::CodeFuture;
use tokio::time::Interval;

/// The phase of one connection.
pub(crate) enum Phase {
    /// `hello` sent; waiting for `hello_ack`.
    Greeting,
    /// Pairing with a code the admin received out of band.
    Pairing(PairingStep),
    /// `auth_request` sent; waiting for `auth_success` or `auth_failed`.
    Authenticating,
    /// Authenticated: heartbeats on `heartbeat`, rule messages both ways.
    Authenticated { heartbeat: Interval },
}

/// Steps within [`Phase::Pairing`].
pub(crate) enum PairingStep {
    /// `hello_ack pair_required`: waiting for the host's `pair_request`.
    AwaitingRequest,
    /// Waiting for the code provider's answer.
    AwaitingCode(CodeFuture),
    /// `pair_confirm` sent; waiting for `pair_success` or `pair_failed`.
    Confirming,
}

impl Phase {
    /// A short name for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Greeting => "greeting",
            Phase::Pairing(step) => match step {
                PairingStep::AwaitingRequest => "pairing (awaiting pair_request)",
                PairingStep::AwaitingCode(_) => "pairing (awaiting a code)",
                PairingStep::Confirming => "pairing (confirming)",
            },
            Phase::Authenticating => "authenticating",
            Phase::Authenticated { .. } => "authenticated",
        }
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        matches!(self, Phase::Authenticated { .. })
    }

    pub(crate) fn awaits_code(&self) -> bool {
        matches!(self, Phase::Pairing(PairingStep::AwaitingCode(_)))
    }

    /// Whether [`due`] can resolve in this phase.
    pub(crate) fn has_timer_or_request(&self) -> bool {
        self.awaits_code() || self.is_authenticated()
    }
}

/// Something the phase itself waits for.
pub(crate) enum Due {
    /// The code provider answered (`None`: no code available).
    Code(Option<String>),
    /// Time for a heartbeat.
    Heartbeat,
}

/// Resolves when the phase's own timer or request is due: the code provider's answer while
/// pairing waits for one, each heartbeat tick while authenticated; never otherwise.
pub(crate) async fn due(phase: &mut Phase) -> Due {
    match phase {
        Phase::Pairing(PairingStep::AwaitingCode(code)) => Due::Code(code.await),
        Phase::Authenticated { heartbeat } => {
            heartbeat.tick().await;
            Due::Heartbeat
        }
        _ => std::future::pending().await,
    }
}
