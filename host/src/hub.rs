//! The context every connection and task runs in: settings, trust store, registry, router,
//! notifier, clock, guard, event bus. Behaviour lives in the modules that own each concept
//! (`session`, `lifecycle`, `pairing`, `auth`, `tasks`); this only holds them together.

use crate::admission::Admission;
use crate::clock::SharedClock;
use crate::cluster::Link;
use crate::config::{Config, LimitsConfig, LivenessConfig, PairingConfig};
use crate::events::EventBus;
use crate::guard::Guard;
use crate::liveness::Thresholds;
use crate::loglimit::LogLimiter;
use crate::notify::Notifier;
use crate::open::OpenConnections;
use crate::outbound::QueueLimits;
use crate::registry::Registry;
use crate::router::Router;
use crate::store::Store;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Pairing notifications in flight at once, across every notifier.
pub const NOTIFICATIONS_IN_FLIGHT: usize = 4;

/// Settings that may change while the host runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub allow: BTreeSet<String>,
    pub pairing: PairingConfig,
    pub liveness: LivenessConfig,
    /// WebSocket path.
    pub path: String,
    pub limits: LimitsConfig,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Settings {
            allow: config.allow.clone(),
            pairing: config.pairing.clone(),
            liveness: config.liveness,
            path: config.server.path.clone(),
            limits: config.limits,
        }
    }

    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            unstable_after: self.liveness.unstable_after_secs,
            offline_after: self.liveness.offline_after_secs,
        }
    }

    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            frames: self.limits.outbound_queue,
            bytes: self.limits.outbound_queue_bytes,
        }
    }
}

/// Shared host state.
pub struct Hub {
    settings: RwLock<Arc<Settings>>,
    notifier: RwLock<Arc<Notifier>>,
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub router: Arc<Router>,
    pub clock: SharedClock,
    pub admission: Arc<Admission>,
    pub guard: Guard,
    pub events: EventBus,
    /// Every open connection (shutdown closes them through it).
    pub open: OpenConnections,
    /// Pairing notifications in flight (one permit each), shared by every notifier.
    pub notifications: Semaphore,
    /// Slow work a connection hands off instead of waiting for it (pairing notifications,
    /// releasing a session claim); waited for, within the grace period, at shutdown.
    pub background: TaskTracker,
    /// Lines about refused peers.
    pub log_limit: LogLimiter,
    next_conn_id: AtomicU64,
    /// Deliberate answer delays are real (false only in the fuzzer, which runs many in a row).
    delays: bool,
    /// The link to the other hosts, when this host is part of a cluster.
    link: OnceLock<Arc<Link>>,
}

impl Hub {
    pub fn new(
        settings: Settings,
        notifier: Notifier,
        store: Store,
        router: Arc<Router>,
        clock: SharedClock,
    ) -> Self {
        let guard = Guard::new(crate::guard::Policy::from_limits(&settings.limits));
        Hub {
            settings: RwLock::new(Arc::new(settings)),
            notifier: RwLock::new(Arc::new(notifier)),
            store: Arc::new(store),
            registry: Arc::new(Registry::new()),
            router,
            clock,
            admission: Arc::new(Admission::default()),
            guard,
            events: EventBus::default(),
            open: OpenConnections::default(),
            notifications: Semaphore::new(NOTIFICATIONS_IN_FLIGHT),
            background: TaskTracker::new(),
            log_limit: LogLimiter::new(20, 60),
            next_conn_id: AtomicU64::new(1),
            delays: true,
            link: OnceLock::new(),
        }
    }

    /// Join a cluster: followers on other hosts become reachable through `link`.
    pub fn set_link(&self, link: Arc<Link>) {
        self.registry.set_elsewhere(Arc::clone(&link) as _);
        let _ = self.link.set(link);
    }

    /// The link to the other hosts, when clustered.
    pub fn link(&self) -> Option<&Arc<Link>> {
        self.link.get()
    }

    /// This host's node name in a cluster.
    pub fn node(&self) -> Option<&str> {
        self.link.get().map(|l| &*l.node)
    }

    /// The same hub without deliberate delays (the fuzzer).
    #[doc(hidden)]
    pub fn without_delays(mut self) -> Self {
        self.delays = false;
        self
    }

    /// Wait `d` before answering (a throttled peer): the connection keeps serving meanwhile.
    pub async fn delay(&self, d: std::time::Duration) {
        if self.delays && !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_settings(&self, settings: Settings) {
        self.guard
            .set_policy(crate::guard::Policy::from_limits(&settings.limits));
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    pub fn notifier(&self) -> Arc<Notifier> {
        Arc::clone(&self.notifier.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_notifier(&self, notifier: Notifier) {
        *self.notifier.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(notifier);
    }

    pub fn is_allowed(&self, identifier: &str) -> bool {
        self.settings().allow.contains(identifier)
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a line about a refused peer may be logged now.
    pub fn may_log_refusal(&self) -> bool {
        self.log_limit.allow(self.now())
    }
}
