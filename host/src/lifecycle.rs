//! The follower lifecycle, in one place: every change that touches the registry, the trust
//! store and the lifecycle events together — authenticated, went offline, liveness changed,
//! revoked — is one function here, and these functions are the only ones that emit events.

use crate::events::{FollowerEvent, Recorded};
use crate::hub::Hub;
use crate::liveness::{evaluate, Thresholds, Transition};
use crate::outbound::Peer;
use crate::reply;
use crate::store::{SessionClaim, StoreError};
use crate::trust::{Liveness, TrustRecord};
use std::sync::Arc;

/// Publish an event to the bus (dashboard), to the plugins that handle events and, in a
/// cluster, to the other hosts.
fn emit(hub: &Hub, event: FollowerEvent) {
    hub.router.deliver_event(&event);
    let recorded = Recorded {
        at: hub.now(),
        node: None,
        event,
    };
    if let Some(link) = hub.link() {
        link.publish_event(&recorded);
    }
    hub.events.publish(recorded);
}

/// A lifecycle event that happened on another host (`node`): to this host's plugins and bus.
pub fn remote_event(hub: &Hub, node: &str, at: i64, event: FollowerEvent) {
    if let (Some(link), FollowerEvent::Disconnected { identifier }) = (hub.link(), &event) {
        link.presence.gone(identifier, Some(node));
    }
    hub.router.deliver_event(&event);
    hub.events.publish(Recorded {
        at,
        node: Some(node.into()),
        event,
    });
}

/// A newer session of `identifier` elsewhere (epoch `epoch`) replaces this host's one.
pub fn replaced_elsewhere(hub: &Hub, identifier: &Arc<str>, epoch: u64) {
    if let Some(peer) = hub.registry.get(identifier) {
        if peer.epoch() < epoch {
            tracing::info!(identifier = %identifier, "session replaced by a newer one on another host");
            peer.close(1000, "session replaced");
            went_offline(hub, identifier, peer.conn_id);
        }
    }
}

/// Why [`authenticated`] did not make a connection the follower's session.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticateError {
    /// Revoked (or paired anew) while its proof was being checked: the proof is void.
    #[error("the follower is no longer paired with the secret its proof used")]
    NoLongerPaired,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `identifier` proved it holds `secret` on `peer`: bind its key if it was paired without one
/// (durably, before anything else), claim its session for every host (the newest claim wins),
/// make `peer` its connection (closing the one it replaces with `session replaced`), record it
/// online, and tell everyone.
///
/// A revocation that lands while this runs is not lost: after `peer` is in the registry (where
/// a revocation from now on finds and closes it) the trust record is read again, and a
/// connection whose secret is gone is taken back out.
///
/// Returns the epoch of a newer session on another host whose claim arrived while this one
/// was being made, if any: the caller confirms the authentication, then hands that epoch to
/// [`replaced_elsewhere`] (so the follower learns it authenticated, then that it was replaced).
pub async fn authenticated(
    hub: &Hub,
    identifier: &Arc<str>,
    peer: &Arc<Peer>,
    bind_key: Option<String>,
    secret: &str,
) -> Result<Option<u64>, AuthenticateError> {
    let now = hub.now();
    let still_paired = |r: &TrustRecord| r.is_paired() && r.secret.as_deref() == Some(secret);
    if let Some(key) = bind_key {
        let bound = hub
            .store
            .apply_existing(identifier, |r| {
                if !still_paired(r) {
                    return false;
                }
                if r.public_key.is_none() {
                    r.public_key = Some(key);
                }
                r.updated_at = now;
                true
            })
            .await?;
        if bound != Some(true) {
            return Err(AuthenticateError::NoLongerPaired);
        }
    }
    let mut claim = SessionClaim {
        identifier: identifier.to_string(),
        node: hub.node().unwrap_or("").to_owned(),
        conn_id: peer.conn_id,
        epoch: 0,
        connected_since: peer.connected_since,
        remote: peer.remote.to_string(),
        lease_until: now + crate::cluster::link::LEASE_SECS,
    };
    claim.epoch = hub.store.claim_session(&claim, None).await?.unwrap_or(0);
    peer.set_epoch(claim.epoch);
    peer.set_identity(identifier);
    if let Some(old) = hub
        .registry
        .insert(Arc::clone(identifier), Arc::clone(peer))
    {
        if old.conn_id != peer.conn_id {
            tracing::info!(identifier = %identifier, old_remote = %old.remote, "session replaced by a newer one");
            old.close(1000, "session replaced");
        }
    }
    let current = hub.store.get(identifier).await;
    if !matches!(&current, Ok(Some(r)) if still_paired(r)) {
        hub.registry.remove(identifier, peer.conn_id);
        release_claim(hub, identifier, peer.conn_id);
        return Err(match current {
            Err(e) => e.into(),
            Ok(_) => AuthenticateError::NoLongerPaired,
        });
    }
    hub.store.touch(identifier, |r| {
        r.status = Liveness::Online;
        r.last_authenticated_at = Some(now);
        r.last_heartbeat_at = Some(now);
    });
    // A newer claim from another host that arrived while this one was being made.
    let newer_elsewhere = hub
        .link()
        .and_then(|link| link.presence.epoch_of(identifier))
        .filter(|&epoch| epoch > claim.epoch);
    if let Some(link) = hub.link() {
        link.presence.superseded(identifier, claim.epoch);
        link.publish_claim(&claim);
    }
    emit(
        hub,
        FollowerEvent::Authenticated {
            identifier: Arc::clone(identifier),
        },
    );
    emit(
        hub,
        FollowerEvent::LivenessChanged {
            identifier: Arc::clone(identifier),
            status: Liveness::Online,
        },
    );
    Ok(newer_elsewhere)
}

/// In a cluster, drop this connection's session claim in the background (a follower that
/// left must not stay "connected here" for the other hosts).
fn release_claim(hub: &Hub, identifier: &Arc<str>, conn_id: u64) {
    let Some(node) = hub.node().map(str::to_owned) else {
        return;
    };
    let store = Arc::clone(&hub.store);
    let identifier = Arc::clone(identifier);
    hub.background.spawn(async move {
        if let Err(e) = store.release_session(&identifier, &node, conn_id).await {
            // The reconciliation drops it later (claims of closed connections are not renewed).
            tracing::debug!(error = %e, "cannot release a session claim now");
        }
    });
}

/// A connection ended: take its follower offline if this was its session.
pub fn connection_closed(hub: &Hub, peer: &Peer) {
    if let Some(identifier) = peer.identity() {
        if went_offline(hub, identifier, peer.conn_id) {
            tracing::info!(remote = %peer.remote, identifier = %identifier, "disconnected");
        }
    }
}

/// Connection `conn_id` of `identifier` is gone (closed by either side, dropped, timed out).
/// If it was still the follower's connection: forget it, record it offline, tell everyone.
/// Returns whether it was.
pub fn went_offline(hub: &Hub, identifier: &Arc<str>, conn_id: u64) -> bool {
    if !hub.registry.remove(identifier, conn_id) {
        return false;
    }
    release_claim(hub, identifier, conn_id);
    hub.store
        .touch(identifier, |r| r.status = Liveness::Offline);
    emit(
        hub,
        FollowerEvent::Disconnected {
            identifier: Arc::clone(identifier),
        },
    );
    emit(
        hub,
        FollowerEvent::LivenessChanged {
            identifier: Arc::clone(identifier),
            status: Liveness::Offline,
        },
    );
    true
}

/// Record a liveness change of a connected follower (heartbeat after silence, sweep).
/// Returns the previous status when it changed.
pub fn liveness(
    hub: &Hub,
    identifier: &Arc<str>,
    status: Liveness,
    heartbeat_at: Option<i64>,
) -> Option<Liveness> {
    let previous = hub.store.touch(identifier, |r| {
        let was = r.status;
        r.status = status;
        if let Some(at) = heartbeat_at {
            r.last_heartbeat_at = Some(at);
        }
        was
    })?;
    if previous == status {
        return None;
    }
    emit(
        hub,
        FollowerEvent::LivenessChanged {
            identifier: Arc::clone(identifier),
            status,
        },
    );
    Some(previous)
}

/// One liveness sweep step for a connected follower: decide by heartbeat silence and record
/// in one store step (a heartbeat landing meanwhile is not overwritten), then notify it
/// (`status_update`, or `disconnect_notice` and close 1001) and tell everyone.
pub fn sweep_one(
    hub: &Hub,
    identifier: &Arc<str>,
    peer: &Arc<Peer>,
    now: i64,
    thresholds: Thresholds,
) {
    let Some(transition) = hub.store.touch(identifier, |r| {
        let last = r
            .last_heartbeat_at
            .or(r.last_authenticated_at)
            .unwrap_or(now);
        let t = evaluate(r.status, last, now, thresholds);
        match t {
            Transition::Stay => {}
            Transition::Unstable { .. } => r.status = Liveness::Unstable,
            Transition::Offline { .. } => r.status = Liveness::Offline,
        }
        t
    }) else {
        return;
    };
    match transition {
        Transition::Stay => {}
        Transition::Unstable { reason } => {
            tracing::warn!(identifier = %identifier, reason = %reason, "follower unstable");
            let _ = peer.send(reply::status_update(
                identifier,
                Liveness::Unstable.as_str(),
                &reason,
                now,
            ));
            emit(
                hub,
                FollowerEvent::LivenessChanged {
                    identifier: Arc::clone(identifier),
                    status: Liveness::Unstable,
                },
            );
        }
        Transition::Offline { reason } => {
            tracing::warn!(identifier = %identifier, reason = %reason, "follower offline: disconnecting");
            let _ = peer.send(reply::disconnect_notice(identifier, &reason, now));
            peer.close(1001, &reason);
            went_offline(hub, identifier, peer.conn_id);
        }
    }
}

/// Close `identifier`'s connection (if any) with `code`/`reason` and take it offline.
pub fn disconnect(hub: &Hub, identifier: &str, code: u16, reason: &str) -> bool {
    let Some(peer) = hub.registry.get(identifier) else {
        return false;
    };
    peer.close(code, reason);
    went_offline(hub, &Arc::from(identifier), peer.conn_id);
    true
}

/// What [`revoke`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The follower had a trust record (nothing is changed without one).
    pub existed: bool,
    /// It was paired, or a pairing was pending, until now (not for a record never paired or
    /// already revoked).
    pub was_paired: bool,
    /// Its connection to this host was closed.
    pub disconnected: bool,
}

/// Revoke trust in `identifier`: the secret is forgotten durably first (so a proof checked
/// from now on, on any host, fails), then its connection is closed wherever it is.
pub async fn revoke(
    hub: &Hub,
    identifier: &str,
    close_reason: &str,
) -> Result<Revocation, StoreError> {
    let now = hub.now();
    let was_paired = hub
        .store
        .apply_existing(identifier, |r| {
            let was = r.has_trust_to_revoke();
            r.revoke(now);
            was
        })
        .await?;
    hub.guard.forget(identifier);
    let disconnected = disconnect(hub, identifier, 1008, close_reason);
    if let Some(link) = hub.link() {
        link.publish_revoke(identifier, close_reason);
    }
    Ok(Revocation {
        existed: was_paired.is_some(),
        was_paired: was_paired.unwrap_or(false),
        disconnected,
    })
}
