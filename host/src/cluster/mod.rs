//! Several hosts acting as one hub: trust in PostgreSQL (the [`store`](crate::store)), delivery
//! and events over NATS core subjects (this module). See docs/cluster.md.
//!
//! Layout:
//! - [`link`]: the NATS connection, the subjects and message shapes, and the outbox that
//!   publishes in order without ever blocking a caller;
//! - [`presence`]: where each follower connected to another host is (node, connection, epoch);
//!
//! Applying what other hosts publish to this hub (deliveries, broadcasts, lifecycle events,
//! session claims, revocations) and the periodic reconciliation with the store is
//! [`crate::cluster_inbound`], outside this module: the hub and the lifecycle use this one.
//!
//! Subjects (all under `yonexus.`): `deliver.<node>` (a frame for one follower on that node),
//! `broadcast` (a frame for every follower but one), `events` (lifecycle events), `claims`
//! (session claims: the newest epoch wins), `revoke` (disconnect a revoked follower everywhere).

pub mod link;
pub mod presence;

pub use link::Link;
pub use presence::{Presence, RemoteFollower};
