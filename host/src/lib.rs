//! The Yonexus host library (the `yonexus` binary is a thin CLI over it).
//!
//! Layout:
//! - [`clock`]: the injectable wall clock.
//! - [`reply`]: every frame the host sends, one builder per message kind.
//! - [`registry`]: authenticated sessions, outbound queues, follower lifecycle events.
//! - [`router`]: rule id → handler, swapped atomically; the built-in `echo` handler.
//! - [`liveness`]: online / unstable / offline by heartbeat silence.
//! - [`plugins`]: rule handlers as `cdylib` plugins (C ABI checks, loading, worker threads).

pub mod clock;
pub mod liveness;
pub mod plugins;
pub mod registry;
pub mod reply;
pub mod router;
