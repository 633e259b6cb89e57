//! Starting and stopping the host: state directory and lock, trust store, listener (bound
//! before any plugin loads, so "port in use" is the first thing an operator hears), plugins,
//! notifier, the accept loop with its admission caps, background tasks, the admin socket, and
//! graceful shutdown.

use crate::admission::{ConnectionRate, Refusal, Ticket};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::guard::AddressKey;
use crate::hub::{Hub, Settings};
use crate::notify::Notifier;
use crate::reload::{ReloadError, Reloader};
use crate::router::Router;
use crate::store::{self, Store};
use crate::trust::Liveness;
use crate::ws::handshake;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Refusals (503 answers) being written at once; beyond it a refused socket is just closed.
const MAX_REFUSALS: usize = 64;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("pairing notifier: {0}")]
    Notifier(#[from] crate::notify::NotifyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Admin(std::io::Error),
    #[error(transparent)]
    Plugins(#[from] ReloadError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::link::LinkError),
    /// The admin HTTP port (dashboard) could not start.
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::Error),
}

/// A running host.
pub struct Host {
    pub hub: Arc<Hub>,
    pub reloader: Arc<Reloader>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if enabled.
    pub admin_addr: Option<SocketAddr>,
    pub local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    _lock: std::fs::File,
}

/// Directory (inside `state_dir`) holding the private copies of loaded plugin libraries.
pub const STAGING_DIR: &str = "plugins-staging";

/// Connections the kernel may hold completed but not yet accepted (capped by
/// `net.core.somaxconn`). The OS default of 128 drops SYNs when a few hundred followers
/// reconnect at once (a host restart, a failover), costing each a retransmit of a second or more.
const LISTEN_BACKLOG: u32 = 1024;

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let map = |source| StartError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(map)?;
    socket.set_reuseaddr(true).map_err(map)?;
    socket.bind(addr).map_err(map)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(map)?;
    let local = listener.local_addr().map_err(map)?;
    Ok((listener, local))
}

impl Host {
    /// Start serving `config` with `clock`. Returns once the listener is bound and every plugin
    /// is loaded.
    pub async fn start(config: &Config, clock: SharedClock) -> Result<Host, StartError> {
        let state_dir = &config.server.state_dir;
        store::ensure_state_dir(state_dir)?;
        let lock = store::lock_state_dir(state_dir)?;
        let store = Store::open(&config.store, state_dir).await?;
        // Nobody is connected yet, whatever the file says from the last run.
        for record in store.snapshot().await? {
            if record.status != Liveness::Offline {
                store.touch(&record.identifier, |r| r.status = Liveness::Offline);
            }
        }
        // Bind first: a port in use is reported before anything else happens.
        let (listener, local_addr) = bind(config.server.listen).await?;
        let admin_http = match config.admin.listen {
            None => None,
            Some(addr) => Some(crate::dashboard::bind(addr, &config.admin.token_env).await?),
        };
        let metrics = crate::metrics::install().map_err(StartError::Metrics)?;
        let notifier = Notifier::from_config(&config.pairing.notifier)?;
        let router = Arc::new(Router::default());
        let shutdown = CancellationToken::new();
        let hub = Arc::new(Hub::new(
            Settings::from_config(config),
            notifier,
            store,
            router,
            clock,
        ));

        // In a cluster: the link to the other hosts, before any follower can connect.
        let tracker = TaskTracker::new();
        if let Some(cluster) = &config.cluster {
            let (link, subscriptions) = crate::cluster::Link::connect(
                &cluster.node,
                &cluster.nats,
                Arc::clone(&hub.clock),
                shutdown.clone(),
            )
            .await?;
            hub.set_link(Arc::clone(&link));
            tracker.spawn(crate::cluster_inbound::run(
                Arc::clone(&hub),
                Arc::clone(&link),
                subscriptions,
                shutdown.clone(),
            ));
            tracker.spawn(crate::cluster_inbound::reconcile_loop(
                Arc::clone(&hub),
                link,
                shutdown.clone(),
            ));
            tracing::info!(node = %cluster.node, "joined the cluster");
        }

        // Plugins load through the same path a hot reload takes.
        let staging = state_dir.join(STAGING_DIR);
        // We hold the state-dir lock, so anything staged here belongs to a previous run.
        let _ = std::fs::remove_dir_all(&staging);
        store::ensure_state_dir(&staging)?;
        let reloader = Arc::new(Reloader::new(Arc::clone(&hub), &config.file, &staging));
        let report = reloader.apply_initial(config).await?;
        for change in &report.changes {
            tracing::debug!("{change}");
        }

        let tls = match &config.server.tls {
            Some(t) => Some(crate::tls::acceptor(t).map_err(StartError::Tls)?),
            None => None,
        };
        let scheme = if tls.is_some() { "wss" } else { "ws" };

        let ready = Arc::new(AtomicBool::new(false));
        let admin_addr = admin_http.map(|bound| {
            let view = crate::dashboard::HostView::new(
                Arc::clone(&hub),
                Arc::clone(&reloader),
                metrics,
                Arc::clone(&ready),
            );
            bound.serve(Arc::new(view), shutdown.clone())
        });
        let admin = crate::admin::bind(state_dir).map_err(StartError::Admin)?;
        tracker.spawn(crate::admin::serve(
            Arc::clone(&hub),
            Arc::clone(&reloader),
            admin,
            shutdown.clone(),
        ));
        if config.reload.watch {
            let debounce = Duration::from_millis(config.reload.debounce_ms);
            tracker.spawn(crate::watch::run(
                Arc::clone(&reloader),
                debounce,
                shutdown.clone(),
            ));
        }
        tracker.spawn(crate::tasks::sweep_loop(Arc::clone(&hub), shutdown.clone()));
        tracker.spawn(crate::tasks::store_health_loop(
            Arc::clone(&hub),
            shutdown.clone(),
        ));
        ready.store(true, Ordering::Release);
        // Logged once /readyz says ready: whoever waits for this line may rely on it.
        tracing::info!(address = %local_addr, path = %config.server.path, scheme, plugins = config.plugins.len(), "listening");
        let task = tokio::spawn(accept_loop(
            Arc::clone(&hub),
            listener,
            tls,
            Arc::clone(&reloader),
            shutdown.clone(),
            tracker,
            ready,
        ));
        Ok(Host {
            hub,
            reloader,
            local_addr,
            admin_addr,
            shutdown,
            task,
            _lock: lock,
        })
    }

    /// A token that stops the host when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stop accepting, close every follower with 1001, persist state, and wait.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Wait until the host stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Refuse a connection over the caps without any handshake: a fixed 503 for plain
/// connections (written without reading the request, then the socket is drained briefly so
/// the client sees the answer rather than a reset), nothing for TLS ones.
fn refuse(
    stream: TcpStream,
    remote: SocketAddr,
    reason: Refusal,
    tls: bool,
    refusals: &Arc<Semaphore>,
    hub: &Hub,
) {
    crate::metrics::connection_rejected(reason.as_str());
    if hub.may_log_refusal() {
        tracing::warn!(remote = %remote, reason = reason.as_str(), "connection refused before its handshake: limit reached");
    }
    if tls {
        return;
    }
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            stream.write_all(&handshake::unavailable()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 512];
            let mut total = 0;
            while total < 16 * 1024 {
                let n = stream.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                total += n;
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        drop(permit);
    });
}

async fn accept_loop(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    ready: Arc<AtomicBool>,
) {
    let handshakes = Arc::new(Semaphore::new(hub.settings().limits.max_handshakes));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let limits = hub.settings().limits;
        let ticket: Ticket = match hub.admission.try_admit(
            AddressKey::of(remote.ip()),
            remote.ip().to_canonical().is_loopback(),
            std::time::Instant::now(),
            ConnectionRate::from_limits(&limits),
            limits.max_unauthenticated,
            limits.max_unauthenticated_per_ip,
        ) {
            Ok(t) => t,
            Err(reason) => {
                refuse(stream, remote, reason, tls.is_some(), &refusals, &hub);
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
            drop(ticket);
            refuse(
                stream,
                remote,
                Refusal::TooManyHandshakes,
                tls.is_some(),
                &refusals,
                &hub,
            );
            continue;
        };
        let deadline = Instant::now() + Duration::from_millis(limits.upgrade_timeout_ms);
        let hub = Arc::clone(&hub);
        match tls.clone() {
            None => {
                tracker.spawn(crate::connection::run(
                    hub, stream, remote, ticket, permit, deadline,
                ));
            }
            Some(acceptor) => {
                tracker.spawn(async move {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            crate::connection::run(
                                hub, tls_stream, remote, ticket, permit, deadline,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(remote = %remote, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            crate::metrics::connection_rejected("upgrade_timeout");
                            tracing::debug!(remote = %remote, "TLS handshake deadline passed")
                        }
                    }
                });
            }
        }
    }
    ready.store(false, Ordering::Release);
    drop(listener);
    // Every connection sends what is queued, then its close frame; those still in their
    // upgrade are closed as they open.
    hub.open.close_all(1001, "host shutting down");
    tracker.close();
    let grace = Duration::from_millis(hub.settings().limits.shutdown_grace_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not close within the shutdown grace period");
    }
    // Work the connections handed off (notifications in flight, claim releases).
    hub.background.close();
    if tokio::time::timeout(grace, hub.background.wait())
        .await
        .is_err()
    {
        tracing::warn!("some pairing notifications or claim releases did not finish within the shutdown grace period");
    }
    if let Some(node) = hub.node() {
        // No session of this host is left: its followers are free to be claimed elsewhere now.
        if let Err(e) = hub.store.sync_claims(node, hub.now(), &[]).await {
            tracing::warn!(error = %e, "cannot drop this host's session claims; they expire with their lease");
        }
    }
    reloader.shutdown(grace).await;
    if let Err(e) = hub.store.flush().await {
        tracing::error!(error = %e, "cannot persist state at shutdown");
    }
    tracing::info!("host stopped");
}
