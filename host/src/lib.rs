//! The Yonexus host library (the `yonexus` binary is a thin CLI over it).
//!
//! One message's way: TCP accept with admission caps ([`server`], [`admission`]) → TLS
//! ([`tls`]) and the WebSocket upgrade ([`ws::handshake`]) → one task per connection
//! ([`connection`]) that owns the socket, decodes frames ([`ws::codec`]) and hands them to the
//! protocol state machine ([`session`]). Control messages go through pairing ([`pairing`]) and
//! authentication ([`auth`]), guarded against strangers ([`guard`]), against the trust store
//! ([`store`]); follower lifecycle changes happen in [`lifecycle`]. Rule messages go through
//! the [`router`] to a plugin ([`plugins`]), whose replies are queued, already encoded, on the
//! target's outbound side ([`outbound`], found through the [`registry`] or carried with the
//! message), and written by that connection's task in one batch.
//!
//! Layout, leaves first: a module uses only modules above it (no import cycles).
//! - [`clock`]: the injectable wall clock. [`trust`]: trust records and their enums.
//!   [`metrics`]: every metric's name and labels, cached handles, the recorder. [`ws`]: WebSocket
//!   upgrade and frame codec (server side). [`fanout`]: recent items plus a broadcast of new
//!   ones. [`file_trust`]: refuse config and plugin files others could have written.
//!   [`atomic_file`]: write-then-rename. [`timefmt`]: times for people. [`systemd`]: the service
//!   manager's notify protocol.
//! - [`liveness`]: the pure liveness rule. [`events`]: lifecycle events and their bus.
//!   [`outbound`]: a connection's outbound queue. [`reply`]: every control frame the host sends.
//!   [`loglimit`]: rate-limited logging of refused peers. [`pairing`]: the pairing rules, as
//!   plain functions. [`notify`]: delivering pairing codes to the admin (log, command, Discord).
//! - [`registry`]: who is connected (identifier → outbound side). [`open`]: every open
//!   connection's outbound side (shutdown closes them through it). [`router`]: rule id →
//!   handler, swapped atomically; rule messages and their sender.
//! - [`config`]: the operator's TOML file, validated, errors naming file and key.
//! - [`store`]: the trust store (the embedded `trust.json` file, or PostgreSQL shared by several
//!   hosts), durable changes and lazy liveness.
//! - [`guard`]: what strangers can make the host remember, bounded; failure delays.
//!   [`auth`]: the authentication rule, a plain function. [`admission`]: caps on
//!   unauthenticated connections (total and per address) and the rate of new ones per address.
//! - [`plugins`]: rule handlers as `cdylib` plugins (C ABI checks, loading, workers).
//! - [`cluster`]: several hosts as one hub — the NATS link and where remote followers are
//!   (`link`, `presence`).
//! - [`hub`]: the shared context (settings, store, registry, router, notifier, guard, events,
//!   the cluster link, background work).
//! - [`lifecycle`]: authenticated, went offline, liveness changed, revoked — registry, store
//!   and events changed together, in one place.
//! - [`cluster_inbound`]: what other hosts publish, applied to this hub; the reconciliation
//!   with the store.
//! - [`session`]: the protocol state machine of one connection (no sockets inside).
//! - [`connection`]: one connection's task: socket, session, outbound queue.
//! - [`tasks`]: background tasks (liveness sweep, lazy writes, store health).
//! - [`reload`]: hot reload of config and plugins; [`watch`]: file watching that triggers it.
//! - [`admin`]: the admin socket and the CLI's client side.
//! - [`dashboard`]: the admin HTTP port (axum): the operator dashboard, its JSON API,
//!   `/metrics`, `/healthz`, `/readyz`.
//! - [`tls`]: the rustls acceptor for `wss://`. [`init`]: `yonexus init`, the starter config.
//! - [`server`]: start (bind, state dir lock, store, plugins), accept loop, shutdown.
//! - `fuzzing` (hidden): the session fuzzer's driver, also replayed by the test suite.

pub mod admin;
pub mod admission;
pub mod atomic_file;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod cluster_inbound;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod events;
pub mod fanout;
pub mod file_trust;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod hub;
pub mod init;
pub mod lifecycle;
pub mod liveness;
pub mod loglimit;
pub mod metrics;
pub mod notify;
pub mod open;
pub mod outbound;
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
pub mod tasks;
pub mod timefmt;
pub mod tls;
pub mod trust;
pub mod watch;
pub mod ws;
