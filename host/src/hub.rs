//! The state every connection shares: settings, trust store, registry, router, notifier,
//! clock, and the in-memory auth windows. Behaviour lives in the modules that own each concept
//! (`session`, `pairing`, `auth`, `liveness`); this is only the context they run in.

use crate::admission::Admission;
use crate::auth::AuthWindows;
use crate::clock::SharedClock;
use crate::config::{Config, LimitsConfig, LivenessConfig, PairingConfig};
use crate::liveness::{Liveness, Thresholds};
use crate::notify::Notifier;
use crate::registry::Registry;
use crate::router::Router;
use crate::store::{Store, StoreError};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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
}

/// Shared host state.
pub struct Hub {
    settings: RwLock<Arc<Settings>>,
    notifier: RwLock<Arc<Notifier>>,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub router: Router,
    pub clock: SharedClock,
    pub admission: Arc<Admission>,
    auth_windows: Mutex<HashMap<String, AuthWindows>>,
    next_conn_id: AtomicU64,
}

impl Hub {
    pub fn new(
        settings: Settings,
        notifier: Notifier,
        store: Store,
        registry: Arc<Registry>,
        router: Router,
        clock: SharedClock,
    ) -> Self {
        Hub {
            settings: RwLock::new(Arc::new(settings)),
            notifier: RwLock::new(Arc::new(notifier)),
            store,
            registry,
            router,
            clock,
            admission: Arc::new(Admission::default()),
            auth_windows: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_settings(&self, settings: Settings) {
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

    /// Run `f` on the auth windows of `identifier`.
    pub fn with_auth_windows<R>(
        &self,
        identifier: &str,
        f: impl FnOnce(&mut AuthWindows) -> R,
    ) -> R {
        let mut map = self.auth_windows.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(identifier.to_owned()).or_default())
    }

    /// Forget the auth windows of `identifier` (after pairing anew or revocation).
    pub fn reset_auth_windows(&self, identifier: &str) {
        self.auth_windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(identifier);
    }

    /// Revoke trust in `identifier`: forget its secret, persist, and close its session now.
    /// Returns whether a record existed.
    pub async fn revoke(&self, identifier: &str, close_reason: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let existed = self
            .store
            .update_existing(identifier, |r| r.revoke(now))
            .is_some();
        // Trust is gone in memory at once: no session keeps serving, whatever the disk says.
        self.reset_auth_windows(identifier);
        self.disconnect(identifier, 1008, close_reason);
        if existed {
            self.store.persist().await?;
        }
        Ok(existed)
    }

    /// Close `identifier`'s session (if any), forget it, and mark the record offline.
    pub fn disconnect(&self, identifier: &str, code: u16, reason: &str) {
        if let Some(handle) = self.registry.get(identifier) {
            handle.close(code, reason);
            if self.registry.remove(identifier, handle.conn_id) {
                self.store
                    .update_existing(identifier, |r| r.status = Liveness::Offline);
                self.registry
                    .emit(crate::registry::FollowerEvent::LivenessChanged {
                        identifier: identifier.to_owned(),
                        status: Liveness::Offline,
                    });
            }
        }
    }
}
