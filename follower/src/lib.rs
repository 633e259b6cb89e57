//! The Yonexus follower: a client that connects to a Yonexus host over WebSocket, pairs,
//! authenticates, keeps itself alive with heartbeats and exchanges rule messages. The
//! `yonexus-follower` binary is a thin CLI over this library.
//!
//! Layout:
//! - [`config`]: [`Config`] (URL, identifier, state directory, intervals).
//! - [`state`]: the persisted identity `<state_dir>/<identifier>.json` (Ed25519 keypair, secret),
//!   written atomically with mode 0600.
//! - [`client`]: [`spawn`], the connection loop and its state machine, [`FollowerHandle`],
//!   [`Event`], and the pairing-code callback [`CodeProvider`].
//! - [`backoff`]: exponential reconnect backoff with jitter.
//! - [`line`]: rule id validation and parsing of `rule::content` input lines.
//! - [`tls`]: rustls client configuration for `wss://` (web roots plus an optional CA file).
//! - [`error`]: the error type, [`FollowerError`].
//!
//! The wire format itself (frames, envelopes, signing input) comes from `yonexus-protocol`.

pub mod backoff;
pub mod client;
pub mod config;
pub mod error;
pub mod line;
pub mod state;
pub mod tls;

pub use client::{
    spawn, CodeFuture, CodeProvider, Event, FollowerHandle, PairingPrompt, OUTBOUND_BUFFER,
};
pub use config::Config;
pub use error::FollowerError;
pub use state::State;
