//! [`AdminView`]: everything the dashboard reads from and asks of the host, as one trait, so
//! the HTTP side never touches the host's internals (the host's implementation is
//! [`super::host_view::HostView`]). The row types here are also the JSON the `/api/…`
//! endpoints answer with (camelCase, Unix seconds).

use crate::admin::ClientRow;
use crate::reload::ReloadReport;
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::broadcast;

/// One follower (`GET /api/followers`): exactly the CLI's `yonexus clients --json` row (in a
/// cluster, `node` names the host it is connected to).
pub type FollowerRow = ClientRow;

/// The followers and the pending pairings, both made from one read of the trust store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustLists {
    pub followers: Vec<FollowerRow>,
    pub pairings: Vec<PendingPairing>,
}

/// The trust store could not be read (e.g. a database outage): the store's error, safe to show
/// (store errors never hold the URL or password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreUnavailable(pub String);

/// One pending pairing (`GET /api/pairings`): the CLI's `yonexus pairing --json` row without
/// the code, which only [`AdminView::reveal_code`] gives out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPairing {
    pub identifier: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Seconds left when this row was made (so a page can count down without trusting its own
    /// clock).
    pub expires_in: i64,
    pub notify_status: Option<String>,
    pub wrong_attempts: u32,
}

/// A revealed pairing code (`POST /api/pairings/{identifier}/reveal`).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevealedCode {
    pub identifier: String,
    pub code: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for RevealedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealedCode")
            .field("identifier", &self.identifier)
            .field("code", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The panic breaker of a plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Breaker {
    /// Serving.
    Closed,
    /// Tripped by repeated panics: the plugin's rules are refused until it is reloaded.
    Open,
}

/// One configured plugin (`GET /api/plugins`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginRow {
    /// Configured name (`[[plugins]] name`).
    pub name: String,
    /// The name the library reports in its header.
    pub library: String,
    pub version: String,
    /// `major.minor` of the plugin ABI.
    pub abi: String,
    pub rules: Vec<String>,
    /// 1 for the instance created at start, +1 for every instance a reload created since.
    pub generation: u64,
    /// Messages and events waiting for the worker.
    pub queue_depth: u64,
    /// Calls completed by the current instance.
    pub calls: u64,
    /// Calls per second over the last sample interval (filled in by the dashboard's sampler).
    pub calls_per_sec: f64,
    pub panics: u64,
    pub errors: u64,
    pub breaker: Breaker,
    /// A non-blocking plugin whose call overran the inline budget: its calls now go to its own
    /// threads, until a reload.
    pub demoted: bool,
}

/// What happened to a follower (or, for `reload`, to the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Authenticated,
    Disconnected,
    /// `detail` is the new liveness.
    Liveness,
    /// Trust revoked by the operator.
    Revoked,
    /// Configuration reloaded; `detail` says what changed (or why it was refused).
    Reload,
}

/// One lifecycle event (`GET /api/events`, SSE `lifecycle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    /// Unix seconds.
    pub at: i64,
    pub kind: EventKind,
    /// The follower, or `None` for host-wide events.
    pub identifier: Option<String>,
    pub detail: Option<String>,
    /// In a cluster: the other host it happened on (`None`, not serialised: this host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Running totals of frames through the host, for the messages-per-second chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageCounters {
    /// Frames received from followers (every kind), since the process started.
    pub received: u64,
    /// Frames sent to followers (every kind), since the process started.
    pub sent: u64,
}

/// Why an action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The host refused (e.g. an invalid config on reload); the message says why and is safe to
    /// show.
    #[error("{0}")]
    Refused(String),
    /// Something failed inside the host.
    #[error("{0}")]
    Failed(String),
    /// The trust store cannot be reached right now; try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// The host as the dashboard sees it. Every method is cheap and never blocks on a reload in
/// progress (return the last known state instead); what comes from the trust store is a
/// future.
pub trait AdminView: Send + Sync + 'static {
    /// Unix seconds now, by the host's clock.
    fn now(&self) -> i64;
    /// Every known follower (allowlisted or with a trust record), sorted by identifier, and
    /// the live pending pairings without their codes — from one read of the trust store (which
    /// may be a database: hence a future, and an error while it cannot be read).
    fn trust(&self) -> BoxFuture<'static, Result<TrustLists, StoreUnavailable>>;
    /// The code of `identifier`'s live pending pairing, if there is one. An action: only
    /// called for an authorised admin.
    fn reveal_code(
        &self,
        identifier: String,
    ) -> BoxFuture<'static, Result<Option<RevealedCode>, ActionError>>;
    /// The configured plugins (`calls_per_sec` may be left 0; the dashboard fills it in).
    fn plugins(&self) -> Vec<PluginRow>;
    /// The most recent lifecycle events, oldest first.
    fn recent_events(&self) -> Vec<LifecycleEvent>;
    /// Lifecycle events from now on.
    fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent>;
    /// Frame totals for the messages-per-second chart.
    fn counters(&self) -> MessageCounters;
    /// Whether the host accepts followers (`/readyz`).
    fn ready(&self) -> bool;
    /// The Prometheus text exposition of every metric (`/metrics`).
    fn metrics_text(&self) -> String;
    /// Revoke trust in `identifier` and disconnect it. `Ok(false)`: no record existed.
    fn revoke(&self, identifier: String) -> BoxFuture<'static, Result<bool, ActionError>>;
    /// Re-read the config file and apply it (as SIGHUP does).
    fn reload(&self) -> BoxFuture<'static, Result<ReloadReport, ActionError>>;
}
