//! The admin interface: a Unix socket in `state_dir` (mode 0600) that speaks one JSON request
//! per line and answers one JSON line, plus the client side the CLI uses. When no host is
//! running, `clients` and `pairing` are answered from the state file instead.

use crate::hub::Hub;
use crate::reload::Reloader;
use crate::store::{self, Liveness, PairingStatus, SessionClaim, TrustRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// File name of the admin socket inside `state_dir`.
pub const SOCKET_FILE: &str = "admin.sock";
/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;

/// An admin request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Clients,
    Pairing,
    Revoke {
        identifier: String,
    },
    /// Re-read the config file and apply it (as SIGHUP does).
    Reload,
}

/// One row of `yonexus clients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientRow {
    pub identifier: String,
    pub allowed: bool,
    pub pairing_status: String,
    pub liveness: String,
    pub last_heartbeat_at: Option<i64>,
    pub last_authenticated_at: Option<i64>,
    pub connected_since: Option<i64>,
    pub remote: Option<String>,
    /// In a cluster: the host it is connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One row of `yonexus pairing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRow {
    pub identifier: String,
    pub code: String,
    pub expires_at: i64,
    pub notify_status: Option<String>,
    pub wrong_attempts: u32,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<ClientRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<Vec<PairingRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,
    /// `revoke`: whether it was paired (or pairing) until then, and whether its connection to
    /// this host was closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_paired: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<crate::reload::ReloadReport>,
}

impl Response {
    fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            clients: None,
            pairing: None,
            revoked: None,
            was_paired: None,
            disconnected: None,
            reload: None,
        }
    }
    fn ok() -> Self {
        Response {
            ok: true,
            error: None,
            clients: None,
            pairing: None,
            revoked: None,
            was_paired: None,
            disconnected: None,
            reload: None,
        }
    }
}

/// Where a follower is connected, as the client table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whereabouts {
    pub connected_since: i64,
    pub remote: String,
    /// The host it is connected to (clustered hosts only).
    pub node: Option<String>,
}

/// Where followers are connected, for [`client_rows`].
pub enum Seen<'a> {
    /// The running hub: who is connected here and, in a cluster, on which other host.
    Hub(&'a Hub),
    /// Session claims read from the shared store (no host runs on this machine), by identifier.
    Claims(HashMap<&'a str, &'a SessionClaim>),
    /// Nothing known (no host runs; file store).
    Nothing,
}

impl Seen<'_> {
    fn locate(&self, identifier: &str) -> Option<Whereabouts> {
        match self {
            Seen::Hub(hub) => {
                if let Some(p) = hub.registry.get(identifier) {
                    return Some(Whereabouts {
                        connected_since: p.connected_since,
                        remote: p.remote.to_string(),
                        node: hub.node().map(str::to_owned),
                    });
                }
                let r = hub.link()?.presence.get(identifier, hub.now())?;
                Some(Whereabouts {
                    connected_since: r.connected_since,
                    remote: r.remote.clone(),
                    node: Some(r.node.to_string()),
                })
            }
            Seen::Claims(claims) => claims.get(identifier).map(|c| Whereabouts {
                connected_since: c.connected_since,
                remote: c.remote.clone(),
                node: Some(c.node.clone()),
            }),
            Seen::Nothing => None,
        }
    }
}

/// Build the client table from trust records, the allowlist and where followers are connected.
pub fn client_rows(
    records: &[TrustRecord],
    allow: &BTreeSet<String>,
    seen: &Seen<'_>,
) -> Vec<ClientRow> {
    let by_id: HashMap<&str, &TrustRecord> =
        records.iter().map(|r| (r.identifier.as_str(), r)).collect();
    let mut ids: BTreeSet<&str> = allow.iter().map(String::as_str).collect();
    ids.extend(by_id.keys().copied());
    ids.into_iter()
        .map(|id| {
            let record = by_id.get(id).copied();
            let at = seen.locate(id);
            // Liveness is written lazily, and a crashed host never writes it: a follower not
            // connected anywhere is offline, one connected (here or elsewhere) at least online.
            let liveness = match (&at, record.map(|r| r.status)) {
                (None, _) => Liveness::Offline,
                (Some(_), Some(Liveness::Unstable)) => Liveness::Unstable,
                (Some(_), _) => Liveness::Online,
            };
            // Authenticating counts as being heard from; the host it happened on writes that
            // at its next liveness flush, so until then the claim's time is the newer fact.
            let since = at.as_ref().map(|w| w.connected_since);
            let at_least = |written: Option<i64>| written.max(since);
            ClientRow {
                allowed: allow.contains(id),
                pairing_status: record
                    .map_or(PairingStatus::Unpaired, |r| r.pairing_status)
                    .as_str()
                    .into(),
                liveness: liveness.as_str().into(),
                last_heartbeat_at: at_least(record.and_then(|r| r.last_heartbeat_at)),
                last_authenticated_at: at_least(record.and_then(|r| r.last_authenticated_at)),
                connected_since: at.as_ref().map(|w| w.connected_since),
                remote: at.as_ref().map(|w| w.remote.clone()),
                node: at.and_then(|w| w.node),
                identifier: id.to_owned(),
            }
        })
        .collect()
}

/// Pending pairings that are still live at `now`.
pub fn pairing_rows(records: &[TrustRecord], now: i64) -> Vec<PairingRow> {
    records
        .iter()
        .filter(|r| r.live_pending(now))
        .map(|r| PairingRow {
            identifier: r.identifier.clone(),
            code: r.pairing_code.clone().unwrap_or_default(),
            expires_at: r.pairing_expires_at.unwrap_or_default(),
            notify_status: r.pairing_notify_status.map(|s| s.as_str().to_owned()),
            wrong_attempts: r.pairing_attempts,
        })
        .collect()
}

/// Bind the admin socket (removing a stale one: the caller holds the state-dir lock).
pub fn bind(state_dir: &Path) -> std::io::Result<UnixListener> {
    let path = state_dir.join(SOCKET_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve admin requests until shutdown.
pub async fn serve(
    hub: Arc<Hub>,
    reloader: Arc<Reloader>,
    listener: UnixListener,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(path) = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf)) {
                    let _ = std::fs::remove_file(path);
                }
                return;
            }
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let hub = Arc::clone(&hub);
        let reloader = Arc::clone(&reloader);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
            let response =
                match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
                    .await
                {
                    Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                        Ok(req) => handle(&hub, &reloader, req).await,
                        Err(e) => Response::error(format!("bad admin request: {e}")),
                    },
                    _ => Response::error("no request received"),
                };
            let mut out = serde_json::to_vec(&response).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

use tokio::io::AsyncReadExt as _;

async fn handle(hub: &Hub, reloader: &Reloader, req: Request) -> Response {
    match req {
        Request::Clients => match hub.store.snapshot().await {
            Ok(records) => Response {
                clients: Some(client_rows(
                    &records,
                    &hub.settings().allow,
                    &Seen::Hub(hub),
                )),
                ..Response::ok()
            },
            Err(e) => Response::error(e.to_string()),
        },
        Request::Pairing => match hub.store.snapshot().await {
            Ok(records) => Response {
                pairing: Some(pairing_rows(&records, hub.now())),
                ..Response::ok()
            },
            Err(e) => Response::error(e.to_string()),
        },
        Request::Revoke { identifier } => {
            match crate::lifecycle::revoke(hub, &identifier, "trust revoked by the operator").await
            {
                Ok(r) => {
                    if r.was_paired || r.disconnected {
                        tracing::info!(identifier = %identifier, was_paired = r.was_paired, disconnected = r.disconnected, "revoked by the operator");
                    }
                    Response {
                        revoked: Some(r.existed),
                        was_paired: Some(r.was_paired),
                        disconnected: Some(r.disconnected),
                        ..Response::ok()
                    }
                }
                Err(e) => Response::error(e.to_string()),
            }
        }
        Request::Reload => match reloader.reload("yonexus reload").await {
            Ok(report) => Response {
                reload: Some(report),
                ..Response::ok()
            },
            Err(e) => Response::error(format!("reload refused: {e}")),
        },
    }
}

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no yonexus host is running on state directory {0}")]
    NotRunning(PathBuf),
    #[error("admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the host answered: {0}")]
    Host(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Send one request to the running host's admin socket.
pub fn request(state_dir: &Path, req: &Request) -> Result<Response, ClientError> {
    let path = state_dir.join(SOCKET_FILE);
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    if !store::host_running(state_dir) {
        return Err(ClientError::NotRunning(state_dir.to_owned()));
    }
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).unwrap_or_default();
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    let response: Response = serde_json::from_str(answer.trim())
        .map_err(|e| ClientError::Host(format!("unreadable admin answer: {e}")))?;
    if !response.ok {
        return Err(ClientError::Host(response.error.unwrap_or_default()));
    }
    Ok(response)
}

/// Answer `clients`/`pairing` from trust records and session claims read while no host runs on
/// this machine (`None` for requests that need a running host).
pub fn offline_answer(
    records: &[TrustRecord],
    claims: &[SessionClaim],
    allow: &BTreeSet<String>,
    req: &Request,
    now: i64,
) -> Option<Response> {
    let seen = if claims.is_empty() {
        Seen::Nothing
    } else {
        let mut newest: HashMap<&str, &SessionClaim> = HashMap::new();
        for c in claims {
            let slot = newest.entry(c.identifier.as_str()).or_insert(c);
            if c.epoch > slot.epoch {
                *slot = c;
            }
        }
        Seen::Claims(newest)
    };
    match req {
        Request::Clients => Some(Response {
            clients: Some(client_rows(records, allow, &seen)),
            ..Response::ok()
        }),
        Request::Pairing => Some(Response {
            pairing: Some(pairing_rows(records, now)),
            ..Response::ok()
        }),
        Request::Revoke { .. } | Request::Reload => None,
    }
}
