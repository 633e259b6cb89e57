//! The Yonexus follower: a client that connects to a Yonexus host over WebSocket, pairs,
//! authenticates, keeps itself alive with heartbeats and exchanges rule messages. The
//! `yonexus-follower` binary is a CLI over this library.
//!
//! Layout (library):
//! - [`config`]: [`Config`] (host URLs, identifier, state directory, intervals, liveness
//!   timeout, event backlog).
//! - [`state`]: the persisted identity `<state_dir>/<identifier>.json` (Ed25519 keypair, secret),
//!   written atomically with mode 0600.
//! - [`client`]: [`spawn`] and the connection task: connect, fail over, back off, stop.
//! - `failover` (private): the order in which several host URLs are tried.
//! - `session` (private): one connection from `hello` to its end, driven by its phase.
//! - `phase` (private): the explicit phase of a connection (greeting, pairing, authenticating,
//!   authenticated), each holding only its own data.
//! - [`handle`]: [`FollowerHandle`], how the application talks to the connection task.
//! - [`event`]: [`Event`] (what the task reports, with the protocol's enums), [`StopReason`],
//!   and the pairing-code callback [`CodeProvider`] / [`PairingPrompt`].
//! - `spool` (private): the bounded backlog of events the application has not read yet; the
//!   connection task hands events to it without ever waiting (drop-oldest when full).
//! - [`backoff`]: exponential reconnect backoff with jitter.
//! - [`line`]: parsing of the CLI's `rule::content` input lines.
//! - [`tls`]: rustls client configuration for `wss://` (web roots plus an optional CA file).
//! - [`error`]: the error type, [`FollowerError`].
//!
//! The binary (`src/main.rs`) keeps its pieces in `src/cli/`: arguments, pairing-code sources
//! (flag, environment, file, stdin), the `--exec` runner, output, and logging.
//!
//! The wire format itself (frames, envelopes and their enums, signing input, rule-id and code
//! formats) comes from `yonexus-protocol`.
//!
//! Logging: events are the library's report of what happens; anything that is an [`Event`] is
//! logged at `debug` at most, so an application printing events shows each thing once. The
//! library never logs a pairing code, the secret or the private key, at any level.

pub mod backoff;
pub mod client;
pub mod config;
pub mod error;
pub mod event;
mod failover;
pub mod handle;
pub mod line;
mod phase;
mod session;
mod spool;
pub mod state;
pub mod tls;

pub use client::{spawn, CONNECT_TIMEOUT, EVENT_CHANNEL};
pub use config::Config;
pub use error::FollowerError;
pub use event::{CodeFuture, CodeProvider, Event, PairingPrompt, StopReason};
pub use handle::{FollowerHandle, OUTBOUND_BUFFER};
pub use state::State;
