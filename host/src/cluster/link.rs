//! The NATS link between hosts: one connection per host, a bounded outbox drained by one task
//! (so everything this host publishes keeps its order, and no caller ever waits on the
//! network), the subjects, and the message shapes.
//!
//! Frames for followers travel as the already-encoded WebSocket frame (the receiving host
//! queues the same bytes); everything else is small JSON. When NATS is unreachable, sends to
//! followers on other hosts answer "offline" at once (never hang, never drop silently), local
//! delivery goes on, and the client reconnects by itself.

use super::presence::Presence;
use crate::clock::SharedClock;
pub use crate::config::cluster::redact_url;
use crate::events::{FollowerEvent, Recorded};
use crate::outbound::SendError;
use crate::registry::Elsewhere;
use crate::store::SessionClaim;
use crate::trust::Liveness;
use async_nats::connection::State;
use async_nats::{HeaderMap, Subscriber};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a host's session claims hold unless it renews them.
pub const LEASE_SECS: i64 = 30;
/// How often a host renews its claims and reconciles with the store.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// Messages waiting to be published; beyond it sends to other hosts answer "busy".
const OUTBOX: usize = 16 * 1024;
/// Largest JSON control message accepted from another host.
pub const MAX_CONTROL: usize = 16 * 1024;

pub const SUBJECT_BROADCAST: &str = "yonexus.broadcast";
pub const SUBJECT_EVENTS: &str = "yonexus.events";
pub const SUBJECT_CLAIMS: &str = "yonexus.claims";
pub const SUBJECT_REVOKE: &str = "yonexus.revoke";
/// Header: the identifier a delivered frame is for.
pub const HEADER_TARGET: &str = "Yonexus-Target";
/// Header: the host a broadcast came from.
pub const HEADER_ORIGIN: &str = "Yonexus-Origin";
/// Header: the identifier a broadcast skips.
pub const HEADER_EXCEPT: &str = "Yonexus-Except";

/// `yonexus.deliver.<node>`: frames for followers connected to `node`.
pub fn deliver_subject(node: &str) -> String {
    format!("yonexus.deliver.{node}")
}

/// A lifecycle event, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMsg {
    pub origin: String,
    /// `authenticated`, `disconnected`, `liveness_changed`.
    pub kind: String,
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub at: i64,
}

impl EventMsg {
    pub fn event(&self) -> Option<FollowerEvent> {
        let identifier: Arc<str> = self.identifier.as_str().into();
        Some(match self.kind.as_str() {
            "authenticated" => FollowerEvent::Authenticated { identifier },
            "disconnected" => FollowerEvent::Disconnected { identifier },
            "liveness_changed" => FollowerEvent::LivenessChanged {
                identifier,
                status: Liveness::from_wire(self.status.as_deref()?)?,
            },
            _ => return None,
        })
    }
}

/// A revocation, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeMsg {
    pub origin: String,
    pub identifier: String,
    pub reason: String,
}

enum Outgoing {
    Deliver {
        subject: String,
        target: String,
        frame: Bytes,
    },
    Broadcast {
        frame: Bytes,
        except: Option<String>,
    },
    Json {
        subject: &'static str,
        body: Vec<u8>,
    },
}

/// Refuse to join as `node` while another running host uses that name: two hosts under one
/// name take each other's session claims and messages. Each host answers on its node's
/// `whoami` subject; the client does not hear its own messages (`no_echo`), so any answer is
/// another host's. Checked only if NATS answers within 2 s of the start (a host that starts
/// while NATS is away is checked by the next one that starts under its name).
async fn unique_node(
    client: &async_nats::Client,
    node: &str,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let subject = format!("yonexus.node.{node}.whoami");
    let mut asks = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (answers, stop) = (client.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ask = futures_util::StreamExt::next(&mut asks) => match ask {
                    Some(ask) => {
                        if let Some(reply) = ask.reply {
                            let _ = answers.publish(reply, Bytes::from_static(b"here")).await;
                        }
                    }
                    None => return,
                },
            }
        }
    });
    let connected = async {
        while client.connection_state() != State::Connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), connected)
        .await
        .is_err()
    {
        return Ok(());
    }
    match tokio::time::timeout(
        Duration::from_secs(1),
        client.request(subject, Bytes::new()),
    )
    .await
    {
        Ok(Ok(_)) => Err(format!(
            "another running host already uses node name {node:?} (cluster.node must be unique \
             per host: two hosts under one name take each other's sessions and messages)"
        )),
        // No responders, or no answer: nobody else has that name.
        _ => Ok(()),
    }
}

/// This host's link to the others.
pub struct Link {
    pub node: Arc<str>,
    client: async_nats::Client,
    outbox: mpsc::Sender<Outgoing>,
    pub presence: Presence,
    clock: SharedClock,
    /// Messages that could not be published (NATS down, outbox full).
    pub dropped: AtomicU64,
}

/// The subscriptions [`crate::cluster_inbound::run`] serves.
pub struct Subscriptions {
    pub deliver: Subscriber,
    pub broadcast: Subscriber,
    pub events: Subscriber,
    pub claims: Subscriber,
    pub revoke: Subscriber,
}

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("NATS ({servers}): {detail}")]
    Nats { servers: String, detail: String },
}

impl Link {
    /// Connect to NATS (retrying in the background when it is down at start: the host serves
    /// its own followers meanwhile), start the publisher task, and subscribe.
    pub async fn connect(
        node: &str,
        urls: &[String],
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Link>, Subscriptions), LinkError> {
        let servers = urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(", ");
        let err = |detail: String| LinkError::Nats {
            servers: servers.clone(),
            detail,
        };
        let addrs: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("bad server address: {e}")))?;
        let log_servers = servers.clone();
        // Down until the client's own Connected event (it also comes for the first connection).
        crate::metrics::set_cluster_link_up(false);
        let client = async_nats::ConnectOptions::new()
            .name(format!("yonexus-{node}"))
            .no_echo()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(3))
            .max_reconnects(None)
            .event_callback(move |event| {
                let servers = log_servers.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            crate::metrics::set_cluster_link_up(true);
                            tracing::info!(servers = %servers, "cluster link: connected to NATS")
                        }
                        async_nats::Event::Disconnected => {
                            crate::metrics::set_cluster_link_up(false);
                            tracing::warn!(
                                servers = %servers,
                                "cluster link: NATS unreachable; followers on other hosts are offline from here until it returns"
                            )
                        }
                        other => tracing::debug!(servers = %servers, "cluster link: {other}"),
                    }
                }
            })
            .connect(addrs)
            .await
            .map_err(|e| err(e.to_string()))?;
        // It connects in the background; if the first attempts fail no "disconnected" event
        // follows, so say so once the first attempt has had its time.
        let (first, first_servers) = (client.clone(), servers.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            if first.connection_state() != State::Connected {
                tracing::warn!(
                    servers = %first_servers,
                    "cluster link: NATS not reachable; followers on other hosts are offline from here until it answers (retrying)"
                );
            }
        });
        let sub = |subject: String| {
            let client = client.clone();
            async move { client.subscribe(subject).await }
        };
        let subscriptions = Subscriptions {
            deliver: sub(deliver_subject(node))
                .await
                .map_err(|e| err(e.to_string()))?,
            broadcast: sub(SUBJECT_BROADCAST.into())
                .await
                .map_err(|e| err(e.to_string()))?,
            events: sub(SUBJECT_EVENTS.into())
                .await
                .map_err(|e| err(e.to_string()))?,
            claims: sub(SUBJECT_CLAIMS.into())
                .await
                .map_err(|e| err(e.to_string()))?,
            revoke: sub(SUBJECT_REVOKE.into())
                .await
                .map_err(|e| err(e.to_string()))?,
        };
        unique_node(&client, node, &shutdown).await.map_err(err)?;
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let link = Arc::new(Link {
            node: node.into(),
            client: client.clone(),
            outbox,
            presence: Presence::default(),
            clock,
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(publish(client, Arc::clone(&link.node), rx, shutdown));
        Ok((link, subscriptions))
    }

    /// Whether NATS is reachable right now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn push(&self, out: Outgoing) -> Result<(), SendError> {
        if !self.connected() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Offline);
        }
        self.outbox.try_send(out).map_err(|e| {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SendError::Offline,
            }
        })
    }

    fn push_json<T: Serialize>(&self, subject: &'static str, msg: &T) {
        match serde_json::to_vec(msg) {
            Ok(body) => {
                if self.push(Outgoing::Json { subject, body }).is_err() {
                    tracing::debug!(subject, "cluster link: not published (NATS down)");
                }
            }
            Err(e) => tracing::error!(subject, error = %e, "cluster link: cannot encode"),
        }
    }

    /// Tell the other hosts about a local lifecycle event.
    pub fn publish_event(&self, recorded: &Recorded) {
        let (kind, status) = match &recorded.event {
            FollowerEvent::LivenessChanged { status, .. } => {
                ("liveness_changed", Some(status.as_str().to_owned()))
            }
            other => (other.kind(), None),
        };
        self.push_json(
            SUBJECT_EVENTS,
            &EventMsg {
                origin: self.node.to_string(),
                kind: kind.to_owned(),
                identifier: recorded.event.identifier().to_string(),
                status,
                at: recorded.at,
            },
        );
    }

    /// Tell the other hosts a follower's session is now here (`epoch` from the store).
    pub fn publish_claim(&self, claim: &SessionClaim) {
        self.push_json(SUBJECT_CLAIMS, claim);
    }

    /// Tell the other hosts to disconnect a revoked follower.
    pub fn publish_revoke(&self, identifier: &str, reason: &str) {
        self.push_json(
            SUBJECT_REVOKE,
            &RevokeMsg {
                origin: self.node.to_string(),
                identifier: identifier.to_owned(),
                reason: reason.to_owned(),
            },
        );
    }
}

/// Try each NATS server once (for `yonexus check`): `(server, Ok | why not)`, credentials
/// never shown.
pub async fn probe(urls: &[String]) -> Vec<(String, Result<(), String>)> {
    let mut out = Vec::new();
    for url in urls {
        let shown = redact_url(url);
        let result = match url.parse::<async_nats::ServerAddr>() {
            Err(e) => Err(format!("bad server address: {e}")),
            Ok(addr) => {
                let attempt = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(3))
                    .connect(addr);
                match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                    Ok(Ok(client)) => {
                        let _ = client.flush().await;
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 5 s".into()),
                }
            }
        };
        out.push((shown, result));
    }
    out
}

/// Tell the running hosts to disconnect a revoked follower, from outside any host (`yonexus
/// revoke` while no host runs on this machine): the first NATS server that answers gets one
/// `yonexus.revoke` message. An error says why none did (credentials never shown).
pub async fn announce_revoke(
    urls: &[String],
    origin: &str,
    identifier: &str,
    reason: &str,
) -> Result<(), String> {
    let body = serde_json::to_vec(&RevokeMsg {
        origin: origin.to_owned(),
        identifier: identifier.to_owned(),
        reason: reason.to_owned(),
    })
    .map_err(|e| format!("cannot encode the revocation: {e}"))?;
    let mut why = Vec::new();
    for url in urls {
        let shown = redact_url(url);
        let addr = match url.parse::<async_nats::ServerAddr>() {
            Ok(a) => a,
            Err(e) => {
                why.push(format!("{shown}: bad server address: {e}"));
                continue;
            }
        };
        let attempt = async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(3))
                .connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            client
                .publish(SUBJECT_REVOKE, body.clone().into())
                .await
                .map_err(|e| e.to_string())?;
            client.flush().await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => why.push(format!("{shown}: {e}")),
            Err(_) => why.push(format!("{shown}: no answer within 5 s")),
        }
    }
    Err(why.join("; "))
}

impl Elsewhere for Link {
    fn send_to(&self, target: &str, frame: Bytes) -> Result<(), SendError> {
        let Some(node) = self.presence.node_of(target, self.clock.now()) else {
            return Err(SendError::Offline);
        };
        self.push(Outgoing::Deliver {
            subject: deliver_subject(&node),
            target: target.to_owned(),
            frame,
        })
    }

    fn broadcast(&self, frame: &Bytes, except: Option<&str>) -> usize {
        let now = self.clock.now();
        let mut reached = self.presence.count(now);
        if except.is_some_and(|e| self.presence.node_of(e, now).is_some()) {
            reached = reached.saturating_sub(1);
        }
        if reached == 0 {
            return 0;
        }
        match self.push(Outgoing::Broadcast {
            frame: frame.clone(),
            except: except.map(str::to_owned),
        }) {
            Ok(()) => reached,
            Err(_) => 0,
        }
    }

    fn connected(&self) -> Vec<Arc<str>> {
        self.presence
            .all(self.clock.now())
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }
}

/// The publisher: everything this host publishes, in order, over its one connection.
async fn publish(
    client: async_nats::Client,
    node: Arc<str>,
    mut rx: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
) {
    loop {
        let out = tokio::select! {
            _ = shutdown.cancelled() => break,
            out = rx.recv() => match out { Some(o) => o, None => break },
        };
        let result = match out {
            Outgoing::Deliver {
                subject,
                target,
                frame,
            } => {
                let mut headers = HeaderMap::new();
                headers.insert(HEADER_TARGET, target.as_str());
                client.publish_with_headers(subject, headers, frame).await
            }
            Outgoing::Broadcast { frame, except } => {
                let mut headers = HeaderMap::new();
                headers.insert(HEADER_ORIGIN, &*node);
                if let Some(except) = &except {
                    headers.insert(HEADER_EXCEPT, except.as_str());
                }
                client
                    .publish_with_headers(SUBJECT_BROADCAST, headers, frame)
                    .await
            }
            Outgoing::Json { subject, body } => client.publish(subject, body.into()).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "cluster link: publish failed");
        }
    }
    let _ = client.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redact_url("nats://u:p@10.0.0.1:4222"),
            "nats://10.0.0.1:4222"
        );
        assert_eq!(redact_url("nats://10.0.0.1:4222"), "nats://10.0.0.1:4222");
    }

    #[test]
    fn event_messages_round_trip() {
        let m = EventMsg {
            origin: "a".into(),
            kind: "liveness_changed".into(),
            identifier: "alpha".into(),
            status: Some("unstable".into()),
            at: 5,
        };
        assert!(matches!(
            m.event(),
            Some(FollowerEvent::LivenessChanged {
                status: Liveness::Unstable,
                ..
            })
        ));
        let bad = EventMsg {
            kind: "nonsense".into(),
            ..m
        };
        assert!(bad.event().is_none());
    }
}
