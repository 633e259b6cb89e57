//! [`HostView`]: the [`AdminView`] of the running host, over the [`Hub`] (store, registry,
//! settings, event bus), the [`Reloader`] (plugins, reload) and the metrics recorder. The one
//! file that knows the host's internals on the dashboard's behalf.

use super::event_log::EventLog;
use super::view::{
    ActionError, AdminView, Breaker, EventKind, LifecycleEvent, MessageCounters, PendingPairing,
    PluginRow, RevealedCode, StoreUnavailable, TrustLists,
};
use crate::events::{FollowerEvent, Recorded};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::reload::{ReloadReport, Reloader};
use crate::store::StoreError;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::broadcast;

/// The running host, as the dashboard sees it.
pub struct HostView {
    hub: Arc<Hub>,
    reloader: Arc<Reloader>,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    log: Arc<EventLog>,
    /// Per plugin name: the instance last seen (weak: never keeps a replaced one alive) and its
    /// generation.
    generations: Mutex<HashMap<String, (Weak<crate::plugins::PluginHandler>, u64)>>,
    /// The plugin rows last built, served while a reload holds the plugin table.
    last_plugins: Mutex<Vec<PluginRow>>,
}

impl HostView {
    /// Build the view and start forwarding the registry's follower events into its event log
    /// (the forwarder ends when the registry or the view is gone). Call inside the runtime.
    pub fn new(
        hub: Arc<Hub>,
        reloader: Arc<Reloader>,
        metrics: Metrics,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let log = Arc::new(EventLog::default());
        tokio::spawn(forward_events(hub.events.subscribe(), Arc::downgrade(&log)));
        for recorded in hub.events.recent() {
            log.publish(lifecycle_event(recorded));
        }
        HostView {
            hub,
            reloader,
            metrics,
            ready,
            log,
            generations: Mutex::new(HashMap::new()),
            last_plugins: Mutex::new(Vec::new()),
        }
    }

    /// The generation of `handler` under `name`: 1 for the first instance seen, +1 per new one.
    fn generation(&self, name: &str, handler: &Arc<crate::plugins::PluginHandler>) -> u64 {
        let mut map = lock(&self.generations);
        let entry = map
            .entry(name.to_owned())
            .or_insert_with(|| (Arc::downgrade(handler), 1));
        if !std::ptr::eq(entry.0.as_ptr(), Arc::as_ptr(handler)) {
            *entry = (Arc::downgrade(handler), entry.1 + 1);
        }
        entry.1
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the plain data inside stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lifecycle_event(recorded: Recorded) -> LifecycleEvent {
    let (kind, identifier, detail) = match recorded.event {
        FollowerEvent::Authenticated { identifier } => (EventKind::Authenticated, identifier, None),
        FollowerEvent::Disconnected { identifier } => (EventKind::Disconnected, identifier, None),
        FollowerEvent::LivenessChanged { identifier, status } => (
            EventKind::Liveness,
            identifier,
            Some(status.as_str().to_owned()),
        ),
    };
    LifecycleEvent {
        at: recorded.at,
        kind,
        identifier: Some(identifier.to_string()),
        detail,
        node: recorded.node.map(|n| n.to_string()),
    }
}

async fn forward_events(mut rx: broadcast::Receiver<Recorded>, log: Weak<EventLog>) {
    loop {
        let recorded = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "dashboard: follower event log lagged");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(log) = log.upgrade() else { return };
        log.publish(lifecycle_event(recorded));
    }
}

/// A store error as the dashboard reports it: unavailable (503) when the store cannot be
/// reached, else failed.
fn action_error(e: StoreError) -> ActionError {
    match e {
        StoreError::Unavailable(_) => ActionError::Unavailable(e.to_string()),
        _ => ActionError::Failed(e.to_string()),
    }
}

impl AdminView for HostView {
    fn now(&self) -> i64 {
        self.hub.now()
    }

    fn trust(&self) -> BoxFuture<'static, Result<TrustLists, StoreUnavailable>> {
        let hub = Arc::clone(&self.hub);
        Box::pin(async move {
            let records = hub
                .store
                .snapshot()
                .await
                .map_err(|e| StoreUnavailable(e.to_string()))?;
            let now = hub.now();
            let followers = crate::admin::client_rows(
                &records,
                &hub.settings().allow,
                &crate::admin::Seen::Hub(&hub),
            );
            let pairings = crate::admin::pairing_rows(&records, now)
                .into_iter()
                .map(|r| PendingPairing {
                    expires_in: (r.expires_at - now).max(0),
                    identifier: r.identifier,
                    expires_at: r.expires_at,
                    notify_status: r.notify_status,
                    wrong_attempts: r.wrong_attempts,
                })
                .collect();
            Ok(TrustLists {
                followers,
                pairings,
            })
        })
    }

    fn reveal_code(
        &self,
        identifier: String,
    ) -> BoxFuture<'static, Result<Option<RevealedCode>, ActionError>> {
        let hub = Arc::clone(&self.hub);
        Box::pin(async move {
            let now = hub.now();
            let Some(r) = hub.store.get(&identifier).await.map_err(action_error)? else {
                return Ok(None);
            };
            if !r.live_pending(now) {
                return Ok(None);
            }
            let (Some(code), Some(expires_at)) = (r.pairing_code, r.pairing_expires_at) else {
                return Ok(None);
            };
            Ok(Some(RevealedCode {
                code,
                expires_at,
                identifier: r.identifier,
            }))
        })
    }

    fn plugins(&self) -> Vec<PluginRow> {
        let Some(status) = self.reloader.plugin_status() else {
            return lock(&self.last_plugins).clone();
        };
        let rows: Vec<PluginRow> = status
            .iter()
            .map(|p| {
                let stats = p.handler.stats();
                let queue_depth = stats.queued as u64;
                PluginRow {
                    name: p.name.clone(),
                    library: p.info.name.clone(),
                    version: p.info.version.clone(),
                    abi: format!("{}.{}", p.info.abi_major, p.info.abi_minor),
                    rules: p.rules.clone(),
                    generation: self.generation(&p.name, &p.handler),
                    queue_depth,
                    calls: stats.calls,
                    calls_per_sec: 0.0,
                    panics: stats.panics,
                    errors: stats.errors,
                    breaker: if stats.disabled {
                        Breaker::Open
                    } else {
                        Breaker::Closed
                    },
                    demoted: stats.demoted,
                }
            })
            .collect();
        drop(status);
        *lock(&self.last_plugins) = rows.clone();
        rows
    }

    fn recent_events(&self) -> Vec<LifecycleEvent> {
        self.log.recent()
    }

    fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.log.subscribe()
    }

    fn counters(&self) -> MessageCounters {
        let (received, sent) = crate::metrics::frame_totals();
        MessageCounters { received, sent }
    }

    fn ready(&self) -> bool {
        // Not ready while the trust store is unreachable: new followers would be refused.
        self.ready.load(Ordering::Acquire) && self.hub.store.healthy()
    }

    fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    fn revoke(&self, identifier: String) -> BoxFuture<'static, Result<bool, ActionError>> {
        let (hub, log) = (Arc::clone(&self.hub), Arc::clone(&self.log));
        Box::pin(async move {
            let r = crate::lifecycle::revoke(&hub, &identifier, "trust revoked by the operator")
                .await
                .map_err(action_error)?;
            if r.was_paired || r.disconnected {
                log.publish(LifecycleEvent {
                    at: hub.now(),
                    kind: EventKind::Revoked,
                    identifier: Some(identifier),
                    detail: None,
                    node: None,
                });
            }
            Ok(r.existed)
        })
    }

    fn reload(&self) -> BoxFuture<'static, Result<ReloadReport, ActionError>> {
        let (hub, reloader, log) = (
            Arc::clone(&self.hub),
            Arc::clone(&self.reloader),
            Arc::clone(&self.log),
        );
        Box::pin(async move {
            let result = reloader.reload("dashboard").await;
            let detail = match &result {
                Ok(r) if r.changes.is_empty() => "nothing changed".to_owned(),
                Ok(r) => r.changes.join("; "),
                Err(e) => format!("refused: {e}"),
            };
            log.publish(LifecycleEvent {
                at: hub.now(),
                kind: EventKind::Reload,
                identifier: None,
                detail: Some(detail),
                node: None,
            });
            result.map_err(|e| ActionError::Refused(format!("reload refused: {e}")))
        })
    }
}
