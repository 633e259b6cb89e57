//! The Yonexus host library (the `yonexus` binary is a thin CLI over it).
//!
//! One message's way: TCP accept ([`server`]) → WebSocket upgrade and reader/writer
//! ([`connection`]) → per-connection state machine ([`session`]) → pairing ([`pairing`]),
//! authentication ([`auth`]), liveness ([`liveness`]) against the trust store ([`store`]) — or,
//! for rule messages, the [`router`] → a handler → the [`registry`] of sessions → the target's
//! outbound queue.
//!
//! Layout:
//! - [`config`]: the operator's TOML file, one module per section, validated, errors naming file
//!   and key.
//! - [`server`]: start (state dir lock, store, notifier, routes, listener), accept loop,
//!   liveness sweep task, graceful shutdown.
//! - [`connection`]: one socket: upgrade with limits, reader, batched writer.
//! - [`session`]: the protocol state machine of one connection (no sockets inside).
//! - [`pairing`], [`auth`], [`liveness`]: the protocol rules, as plain functions.
//! - [`store`]: durable trust records, atomic writes, host lock.
//! - [`hub`]: the shared context (settings, store, registry, router, notifier, clock).
//! - [`registry`]: authenticated sessions, outbound queues, follower lifecycle events.
//! - [`router`]: rule id → handler, swapped atomically.
//! - [`plugins`]: rule handlers as `cdylib` plugins (C ABI checks, loading, worker threads).
//! - [`reload`]: hot reload of config and plugins (prepare everything, switch atomically,
//!   drain, hand over in order); [`watch`]: file watching that triggers it.
//! - [`notify`]: delivering pairing codes to the admin (log, command, Discord).
//! - [`tls`]: the rustls acceptor for `wss://`.
//! - [`admission`]: caps on unauthenticated connections (total and per IP).
//! - [`admin`]: the admin socket and the CLI's client side.
//! - [`reply`]: every frame the host sends, one builder per message kind.
//! - [`metrics`]: every metric's name and labels, the small recording functions, the recorder.
//! - [`http`]: the admin HTTP port (`/metrics`, `/healthz`, `/readyz`), a minimal HTTP/1.1 server.
//! - [`clock`]: the injectable wall clock.
//! - [`systemd`]: the service manager's notify protocol (ready, reloading, stopping, watchdog).
//! - [`init`]: `yonexus init`, the starter config; [`timefmt`]: times for people in the CLI.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod clock;
pub mod config;
pub mod connection;
pub mod http;
pub mod hub;
pub mod init;
pub mod liveness;
pub mod metrics;
pub mod notify;
pub mod pairing;
pub mod plugins;
pub mod registry;
pub mod reload;
pub mod reply;
pub mod router;
pub mod server;
pub mod session;
pub mod store;
pub mod systemd;
pub mod timefmt;
pub mod tls;
pub mod watch;
