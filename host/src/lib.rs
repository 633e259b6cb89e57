//! The Yonexus host library (the `yonexus` binary is a thin CLI over it).
//!
//! Layout:
//! - [`clock`]: the injectable wall clock.
//! - [`reply`]: every frame the host sends, one builder per message kind.
//! - [`registry`]: authenticated sessions, outbound queues, follower lifecycle events.
//! - [`router`]: rule id → handler, swapped atomically; the built-in `echo` handler.
//! - [`liveness`]: online / unstable / offline by heartbeat silence.
//! - [`notify`]: out-of-band delivery of pairing codes to the admin (log, command, Discord DM).

pub mod clock;
pub mod liveness;
pub mod notify;
pub mod registry;
pub mod reply;
pub mod router;
