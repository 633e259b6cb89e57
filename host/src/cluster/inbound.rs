//! What other hosts publish, applied here: frames for this host's followers, broadcasts,
//! lifecycle events (to this host's plugins and dashboard), session claims (a newer session
//! elsewhere closes this host's one), revocations. And, every [`RECONCILE_EVERY`], the
//! reconciliation with the store: renew this host's claims, learn every live claim (so a
//! crashed host's followers drop out when their lease ends), and close local sessions whose
//! claim another host won while a message was lost.

use super::link::{
    EventMsg, Link, RevokeMsg, Subscriptions, HEADER_EXCEPT, HEADER_ORIGIN, HEADER_TARGET,
    LEASE_SECS, MAX_CONTROL, RECONCILE_EVERY,
};
use super::presence::RemoteFollower;
use crate::hub::Hub;
use crate::lifecycle;
use crate::store::SessionClaim;
use futures_util::StreamExt;
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
    lifecycle::replaced_elsewhere(hub, &identifier, claim.epoch);
    link.presence.claimed(
        identifier,
        RemoteFollower {
            node: claim.node.as_str().into(),
            conn_id: claim.conn_id,
            epoch: claim.epoch,
            connected_since: claim.connected_since,
            remote: claim.remote,
            lease_until: claim.lease_until,
        },
    );
}

/// Renew this host's claims, learn the others', and close local sessions that lost theirs.
async fn reconcile(hub: &Hub, link: &Link) {
    let now = hub.now();
    if let Err(e) = hub.store.renew_claims(&link.node, now + LEASE_SECS).await {
        tracing::warn!(error = %e, "cluster: cannot renew session claims");
        return;
    }
    let claims = match hub.store.claims(now).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: cannot read session claims");
            return;
        }
    };
    let mut remote = Vec::new();
    for c in &claims {
        if c.node == *link.node {
            continue;
        }
        let identifier: Arc<str> = c.identifier.as_str().into();
        lifecycle::replaced_elsewhere(hub, &identifier, c.epoch);
        remote.push((identifier, remote_of(c)));
    }
    link.presence.reset(remote);
    // A local session with no claim at all (the store was down when it authenticated, or the
    // claim expired): claim it again.
    for (identifier, peer) in hub.registry.sessions() {
        let claimed = claims.iter().any(|c| {
            c.identifier == *identifier && c.node == *link.node && c.conn_id == peer.conn_id
        });
        if !claimed {
            let mut claim = SessionClaim {
                identifier: identifier.to_string(),
                node: link.node.to_string(),
                conn_id: peer.conn_id,
                epoch: 0,
                connected_since: peer.connected_since,
                remote: peer.remote.to_string(),
                lease_until: now + LEASE_SECS,
            };
            if let Ok(epoch) = hub.store.claim_session(&claim).await {
                peer.set_epoch(epoch);
                claim.epoch = epoch;
                link.publish_claim(&claim);
            }
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
    let mut every = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => reconcile(&hub, &link).await,
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
                let Some(m) = json::<RevokeMsg>(&msg) else { continue };
                if m.origin == *link.node {
                    continue;
                }
                hub.guard.forget(&m.identifier);
                link.presence.gone(&m.identifier, None);
                lifecycle::disconnect(&hub, &m.identifier, 1008, &m.reason);
            }
            else => return,
        }
    }
}
