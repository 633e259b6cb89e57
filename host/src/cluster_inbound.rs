//! What other hosts publish, applied here: frames for this host's followers, broadcasts,
//! lifecycle events (to this host's plugins and dashboard), session claims (a newer session
//! elsewhere closes this host's one), revocations. And, every [`RECONCILE_EVERY`], the
//! reconciliation with the store: renew this host's claims, learn every live claim (so a
//! crashed host's followers drop out when their lease ends), and close local sessions whose
//! claim another host won while a message was lost.
//!
//! Beside [`crate::cluster`], not in it: the cluster module is the transport (the NATS link,
//! who is where) that the hub and the lifecycle use; this is what drives the hub from it.

use crate::cluster::link::{
    EventMsg, Link, RevokeMsg, Subscriptions, HEADER_EXCEPT, HEADER_ORIGIN, HEADER_TARGET,
    LEASE_SECS, MAX_CONTROL, RECONCILE_EVERY,
};
use crate::cluster::presence::RemoteFollower;
use crate::events::FollowerEvent;
use crate::hub::Hub;
use crate::lifecycle;
use crate::store::SessionClaim;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn header<'a>(msg: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn json<T: serde::de::DeserializeOwned>(msg: &async_nats::Message) -> Option<T> {
    if msg.payload.len() > MAX_CONTROL {
        return None;
    }
    serde_json::from_slice(&msg.payload).ok()
}

fn remote_of(c: &SessionClaim) -> RemoteFollower {
    RemoteFollower {
        node: c.node.as_str().into(),
        conn_id: c.conn_id,
        epoch: c.epoch,
        connected_since: c.connected_since,
        remote: c.remote.clone(),
        lease_until: c.lease_until,
    }
}

fn on_claim(hub: &Hub, link: &Link, claim: SessionClaim) {
    if claim.node == *link.node
        || yonexus_protocol::validate::identifier(&claim.identifier).is_err()
    {
        return;
    }
    let identifier: Arc<str> = claim.identifier.as_str().into();
    // An older claim than this host's own session of the follower changes nothing.
    if hub
        .registry
        .get(&identifier)
        .is_some_and(|p| p.epoch() > claim.epoch)
    {
        return;
    }
    lifecycle::replaced_elsewhere(hub, &identifier, claim.epoch);
    link.presence.claimed(identifier, remote_of(&claim));
}

/// Renew this host's claims (and drop those of connections that ended), learn the others',
/// tell this host's plugins about followers that vanished from other hosts (crashed), and
/// close or re-claim local sessions as the store says.
async fn reconcile(hub: &Hub, link: &Link) {
    let now = hub.now();
    let local: Vec<(Arc<str>, Arc<crate::outbound::Peer>)> = hub.registry.sessions();
    let live: Vec<(String, u64)> = local
        .iter()
        .map(|(id, p)| (id.to_string(), p.conn_id))
        .collect();
    let synced = hub
        .store
        .sync_claims(&link.node, now + LEASE_SECS, &live)
        .await;
    let claims = match synced {
        Ok(()) => hub.store.claims(now).await,
        Err(e) => Err(e),
    };
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            // Nobody can renew a claim while the store is down: keep what is known (disconnect
            // events still arrive over NATS) instead of letting every lease run out.
            link.presence.hold(now + LEASE_SECS);
            tracing::warn!(error = %e, "cluster: cannot reconcile session claims with the store");
            return;
        }
    };
    let mut remote = Vec::new();
    let mut mine = HashSet::new();
    for c in &claims {
        if c.node == *link.node {
            mine.insert((c.identifier.as_str(), c.conn_id));
            continue;
        }
        let identifier: Arc<str> = c.identifier.as_str().into();
        lifecycle::replaced_elsewhere(hub, &identifier, c.epoch);
        remote.push((identifier, remote_of(c)));
    }
    let learned = link.presence.reset(remote, now);
    for (identifier, node) in learned.vanished {
        lifecycle::remote_event(hub, &node, now, FollowerEvent::Disconnected { identifier });
    }
    // Connected elsewhere without this host hearing it (NATS was down): the plugins hear it
    // now (a late duplicate of an event in flight is harmless: presence reports changes only).
    for (identifier, node) in learned.appeared {
        lifecycle::remote_event(hub, &node, now, FollowerEvent::Authenticated { identifier });
    }
    // A local session without its claim (it expired while the store was down): claim it
    // again, unless another host holds a live claim meanwhile — then that session is newer.
    for (identifier, peer) in local {
        if mine.contains(&(&*identifier, peer.conn_id)) || hub.registry.get(&identifier).is_none() {
            continue;
        }
        let mut claim = SessionClaim {
            identifier: identifier.to_string(),
            node: link.node.to_string(),
            conn_id: peer.conn_id,
            epoch: 0,
            connected_since: peer.connected_since,
            remote: peer.remote.to_string(),
            lease_until: now + LEASE_SECS,
        };
        match hub.store.claim_session(&claim, Some(now)).await {
            Ok(Some(epoch)) => {
                peer.set_epoch(epoch);
                claim.epoch = epoch;
                link.publish_claim(&claim);
            }
            Ok(None) => {
                tracing::info!(identifier = %identifier, "session replaced by a newer one on another host");
                peer.close(1000, "session replaced");
                lifecycle::went_offline(hub, &identifier, peer.conn_id);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster: cannot re-claim a session now");
            }
        }
    }
}

/// Every [`RECONCILE_EVERY`], the reconciliation with the store (in its own task: a slow store never holds up the
/// delivery of messages from other hosts).
pub async fn reconcile_loop(hub: Arc<Hub>, link: Arc<Link>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RECONCILE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => reconcile(&hub, &link).await,
        }
    }
}

/// Serve the subscriptions until shutdown.
pub async fn run(hub: Arc<Hub>, link: Arc<Link>, subs: Subscriptions, shutdown: CancellationToken) {
    let Subscriptions {
        mut deliver,
        mut broadcast,
        mut events,
        mut claims,
        mut revoke,
    } = subs;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(msg) = deliver.next() => {
                let Some(target) = header(&msg, HEADER_TARGET) else { continue };
                if hub.registry.send_local(target, msg.payload.clone()).is_err() {
                    crate::metrics::cluster_undeliverable();
                }
            }
            Some(msg) = broadcast.next() => {
                if header(&msg, HEADER_ORIGIN) == Some(&*link.node) {
                    continue;
                }
                let except = header(&msg, HEADER_EXCEPT);
                hub.registry.broadcast_local(&msg.payload, except);
            }
            Some(msg) = events.next() => {
                let Some(m) = json::<EventMsg>(&msg) else { continue };
                if m.origin == *link.node {
                    continue;
                }
                if let Some(event) = m.event() {
                    lifecycle::remote_event(&hub, &m.origin, m.at, event);
                }
            }
            Some(msg) = claims.next() => {
                if let Some(claim) = json::<SessionClaim>(&msg) {
                    on_claim(&hub, &link, claim);
                }
            }
            Some(msg) = revoke.next() => {
                // Not filtered by origin: this host never receives its own messages (no_echo),
                // and `yonexus revoke` run where no host runs sends with the node's own name.
                let Some(m) = json::<RevokeMsg>(&msg) else { continue };
                hub.guard.forget(&m.identifier);
                link.presence.gone(&m.identifier, None);
                // Named only when connected here: then it is one of ours, not text off the bus.
                if lifecycle::disconnect(&hub, &m.identifier, 1008, &m.reason) {
                    tracing::info!(identifier = %m.identifier, "trust revoked on another host: connection closed");
                }
            }
            else => return,
        }
    }
}
