//! Starting and stopping the host: state directory and lock, trust store, notifier, routes,
//! the accept loop, the liveness sweep, the admin socket, and graceful shutdown.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::hub::{Hub, Settings};
use crate::liveness::Liveness;
use crate::notify::Notifier;
use crate::registry::Registry;
use crate::reload::Reloader;
use crate::router::Router;
use crate::store::{self, Store};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("pairing notifier: {0}")]
    Notifier(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Admin(std::io::Error),
    #[error("{0}")]
    Plugin(String),
    #[error("{0}")]
    Tls(String),
    #[error("metrics: {0}")]
    Metrics(String),
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

impl Host {
    /// Start serving `config` with `clock`. Returns once the listener is bound.
    pub async fn start(config: &Config, clock: SharedClock) -> Result<Host, StartError> {
        let state_dir = &config.server.state_dir;
        store::ensure_state_dir(state_dir)?;
        let lock = store::lock_state_dir(state_dir)?;
        let store = Store::open(state_dir)?;
        // Nobody is connected yet, whatever the file says from the last run.
        for record in store.snapshot() {
            if record.status != Liveness::Offline {
                store.update_existing(&record.identifier, |r| r.status = Liveness::Offline);
            }
        }
        let notifier = Notifier::from_config(&config.pairing.notifier)
            .map_err(|e| StartError::Notifier(e.to_string()))?;
        let registry = Arc::new(Registry::new());
        let router = Router::default();
        let hub = Arc::new(Hub::new(
            Settings::from_config(config),
            notifier,
            store,
            Arc::clone(&registry),
            router,
            clock,
        ));

        // Plugins load through the same path a hot reload takes.
        let staging = state_dir.join(STAGING_DIR);
        // We hold the state-dir lock, so anything staged here belongs to a previous run.
        let _ = std::fs::remove_dir_all(&staging);
        store::ensure_state_dir(&staging)?;
        let reloader = Arc::new(Reloader::new(Arc::clone(&hub), &config.file, &staging));
        let report = reloader
            .apply_initial(config)
            .await
            .map_err(StartError::Plugin)?;
        for change in &report.changes {
            tracing::info!("{change}");
        }

        let tls = match &config.server.tls {
            Some(t) => Some(crate::tls::acceptor(t).map_err(StartError::Tls)?),
            None => None,
        };
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.server.listen,
            source,
        })?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        tracing::info!(address = %local_addr, path = %config.server.path, scheme, "listening");

        let shutdown = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let admin_addr = match config.admin.listen {
            None => None,
            Some(addr) => {
                let metrics = crate::metrics::install().map_err(StartError::Metrics)?;
                let view = crate::dashboard::HostView::new(
                    Arc::clone(&hub),
                    Arc::clone(&reloader),
                    metrics,
                    Arc::clone(&ready),
                );
                Some(
                    crate::dashboard::serve(
                        addr,
                        &config.admin.token_env,
                        Arc::new(view),
                        shutdown.clone(),
                    )
                    .await?,
                )
            }
        };
        let admin = crate::admin::bind(state_dir).map_err(StartError::Admin)?;
        let tracker = TaskTracker::new();
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
        tracker.spawn(sweep_loop(Arc::clone(&hub), shutdown.clone()));
        ready.store(true, Ordering::Release);
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

async fn accept_loop(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    ready: Arc<AtomicBool>,
) {
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
        let ticket = hub
            .admission
            .try_admit(
                remote.ip(),
                limits.max_unauthenticated,
                limits.max_unauthenticated_per_ip,
            )
            .map_err(|r| r.as_str());
        let (hub, shutdown) = (Arc::clone(&hub), shutdown.clone());
        match tls.clone() {
            None => {
                tracker.spawn(crate::connection::run(
                    hub, stream, remote, ticket, shutdown,
                ));
            }
            Some(acceptor) => {
                tracker.spawn(async move {
                    let deadline = Duration::from_millis(limits.upgrade_timeout_ms);
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            crate::connection::run(hub, tls_stream, remote, ticket, shutdown).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(remote = %remote, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(remote = %remote, "TLS handshake deadline passed")
                        }
                    }
                });
            }
        }
    }
    ready.store(false, Ordering::Release);
    drop(listener);
    tracker.close();
    let grace = Duration::from_millis(hub.settings().limits.shutdown_grace_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("some connections did not close within the shutdown grace period");
    }
    reloader.shutdown(grace).await;
    if let Err(e) = hub.store.flush_if_dirty().await {
        tracing::error!(error = %e, "cannot persist state at shutdown");
    }
    tracing::info!("host stopped");
}

async fn sweep_loop(hub: Arc<Hub>, shutdown: CancellationToken) {
    loop {
        let every = Duration::from_secs(hub.settings().liveness.sweep_interval_secs.max(1));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => crate::liveness::sweep(&hub).await,
        }
    }
}
