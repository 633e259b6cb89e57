//! Background tasks that keep the hub honest over time: the liveness sweep (unstable →
//! offline by heartbeat silence), the lazy write of liveness to the trust store, and forgetting
//! what the guard no longer needs.

use crate::hub::Hub;
use crate::lifecycle;
use crate::trust::Liveness;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Publish the followers-by-liveness gauge from the trust store.
pub async fn publish_liveness_gauge(hub: &Hub) {
    let Ok(records) = hub.store.snapshot().await else {
        return;
    };
    let (mut online, mut unstable, mut offline) = (0, 0, 0);
    for record in records {
        match record.status {
            Liveness::Online => online += 1,
            Liveness::Unstable => unstable += 1,
            Liveness::Offline => offline += 1,
        }
    }
    crate::metrics::set_followers_by_liveness(online, unstable, offline);
}

/// Apply the liveness rule to every authenticated follower once, then write liveness lazily.
pub async fn sweep(hub: &Hub) {
    let now = hub.now();
    let thresholds = hub.settings().thresholds();
    for (identifier, peer) in hub.registry.sessions() {
        lifecycle::sweep_one(hub, &identifier, &peer, now, thresholds);
    }
    hub.guard.sweep(now);
    hub.admission.sweep(
        std::time::Instant::now(),
        crate::admission::ConnectionRate::from_limits(&hub.settings().limits),
    );
    publish_liveness_gauge(hub).await;
    if let Err(e) = hub.store.flush().await {
        tracing::warn!(error = %e, "cannot write liveness to the trust store");
    }
}

/// Run [`sweep`] every `liveness.sweep_interval_secs` until shutdown.
pub async fn sweep_loop(hub: Arc<Hub>, shutdown: CancellationToken) {
    loop {
        let every = Duration::from_secs(hub.settings().liveness.sweep_interval_secs.max(1));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => sweep(&hub).await,
        }
    }
}

/// While the trust store is unreachable, check it every few seconds, so readiness (and the
/// refusals of new followers) end as soon as it is back.
pub async fn store_health_loop(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                if !hub.store.healthy() && hub.store.ping().await.is_ok() {
                    tracing::info!(store = %hub.store.describe(), "trust store reachable again");
                }
            }
        }
    }
}
