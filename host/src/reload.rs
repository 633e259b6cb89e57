//! Hot reload of the config file and plugins.
//!
//! A reload reads and validates the whole new config and loads every new or changed plugin
//! (from a fresh private copy) **before** switching anything; any error leaves the running
//! version serving and is reported as one line. Then the routing table is switched in one step:
//! messages already queued finish on the old instance, new ones queue for the new instance,
//! which starts handling them only once its predecessor has drained (bounded by
//! `reload.drain_timeout_ms`), so every follower's messages keep their order. Untouched plugins
//! are not re-created; a change to a plugin's `[plugins.config]` (or tuning) re-creates the
//! instance on the already-loaded library; a new file content loads a new library. Libraries
//! are never unloaded.

use crate::config::{Config, ConfigError, PluginConfig};
use crate::hub::{Hub, Settings};
use crate::notify::{Notifier, NotifyError};
use crate::plugins::{self, Latch, LoadedLibrary, PluginHandler, PluginLoadError, PluginSpec};
use crate::router::{Routes, RuleHandler};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a reload (or the initial load) was refused; the running version keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: pairing: {source}")]
    Notifier { file: PathBuf, source: NotifyError },
    #[error("plugin '{name}' ({path}): cannot read the plugin file: {source}")]
    ReadPlugin {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plugin(#[from] PluginLoadError),
    #[error("{0} task failed: {1}")]
    Task(&'static str, String),
}

/// One running plugin.
#[derive(Clone)]
struct ActivePlugin {
    config: PluginConfig,
    lib: LoadedLibrary,
    /// Hash of the file content the library was loaded from.
    hash: u64,
    handler: Arc<PluginHandler>,
}

struct Applied {
    config: Config,
    plugins: BTreeMap<String, ActivePlugin>,
}

/// The trigger the file watcher reloads with (its reloads that change nothing log at debug).
pub const FILE_CHANGE: &str = "file change";

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Human-readable changes; empty when nothing changed.
    pub changes: Vec<String>,
    /// Settings that changed in the file but only take effect after a restart.
    pub needs_restart: Vec<String>,
    /// Milliseconds from the start of the reload until new instances were serving.
    pub took_ms: u64,
    /// When this one changed nothing: the last reload that did (the file watcher often applies
    /// an edit before `yonexus reload` asks), so the caller can say what it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousReload>,
}

/// The last reload that applied a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousReload {
    /// UTC unix seconds.
    pub at: i64,
    /// What started it (`file change`, `SIGHUP`, `yonexus reload`, `dashboard`).
    pub trigger: String,
    pub changes: Vec<String>,
    pub needs_restart: Vec<String>,
}

/// The plugins prepared for a switch (all loaded and created, not yet serving).
struct Prepared {
    plugins: BTreeMap<String, ActivePlugin>,
    /// New instances and the gate that lets each start.
    gates: Gates,
    changes: Vec<String>,
}

/// Gates of new instances. Dropping them opens every gate, so no worker thread can be left
/// waiting forever (an abandoned or failed reload, a panic while preparing); on success they are
/// opened earlier, in order, by the handover.
#[derive(Default)]
struct Gates(Vec<(String, Arc<Latch>)>);

impl Drop for Gates {
    fn drop(&mut self) {
        for (_, gate) in &self.0 {
            gate.set();
        }
    }
}

impl Prepared {
    /// Abandon: let the never-used new instances run down and end.
    fn abandon(self) {
        drop(self);
    }
}

/// Hash of a plugin file's content (change detection, not security).
fn file_hash(path: &Path) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let mut h = DefaultHasher::new();
    h.write(&bytes);
    h.write_usize(bytes.len());
    Ok(h.finish())
}

/// Owns the applied configuration and performs reloads, one at a time.
pub struct Reloader {
    hub: Arc<Hub>,
    config_path: PathBuf,
    staging: PathBuf,
    applied: tokio::sync::Mutex<Option<Applied>>,
    /// The files whose change triggers a reload (config + plugin files).
    watched: Mutex<Vec<PathBuf>>,
    /// The last reload that applied a change.
    last_applied: Mutex<Option<PreviousReload>>,
}

impl Reloader {
    pub fn new(hub: Arc<Hub>, config_path: &Path, staging: &Path) -> Self {
        Reloader {
            hub,
            config_path: config_path.to_owned(),
            staging: staging.to_owned(),
            applied: tokio::sync::Mutex::new(None),
            watched: Mutex::new(vec![config_path.to_owned()]),
            last_applied: Mutex::new(None),
        }
    }

    /// The files a watcher should follow.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Apply the config the host starts with (loads every plugin). An error stops the start.
    pub async fn apply_initial(&self, config: &Config) -> Result<ReloadReport, ReloadError> {
        let mut applied = self.applied.lock().await;
        self.apply(&mut applied, config.clone()).await
    }

    /// Re-read the config file and apply what changed. On error nothing changes and the error
    /// (file, key or plugin, reason) is returned and logged.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let mut applied = self.applied.lock().await;
        // Whatever started it (SIGHUP, the file watcher, `yonexus reload`, the dashboard),
        // the service manager hears RELOADING=1 … READY=1 around it.
        crate::systemd::reloading();
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| ReloadError::Task("config loader", e.to_string()))
            .and_then(|r| r.map_err(ReloadError::from));
        let result = match loaded {
            Ok(config) => self.apply(&mut applied, config).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Refused (a plugin file missing or not loadable yet, say): watch the files the
            // refused config names too, so the fix — the build landing — is picked up like any
            // other change.
            let path = self.config_path.clone();
            let named = tokio::task::spawn_blocking(move || Config::plugin_files(&path))
                .await
                .unwrap_or_default();
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            for file in named {
                if !watched.contains(&file) {
                    watched.push(file);
                }
            }
        }
        let mut result = result;
        match &mut result {
            Ok(r) if r.changes.is_empty() && r.needs_restart.is_empty() => {
                crate::metrics::reload("unchanged");
                if trigger == FILE_CHANGE {
                    tracing::debug!(trigger, "reload: nothing changed");
                } else {
                    // Asked for: the operator looks for the answer in the log too.
                    tracing::info!(trigger, "reload: nothing changed");
                }
                r.previous = self
                    .last_applied
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
            }
            Ok(r) => {
                *self.last_applied.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(PreviousReload {
                        at: self.hub.now(),
                        trigger: trigger.to_owned(),
                        changes: r.changes.clone(),
                        needs_restart: r.needs_restart.clone(),
                    });
                crate::metrics::reload("applied");
                tracing::info!(trigger, changes = ?r.changes, took_ms = r.took_ms, "reload applied");
                for key in &r.needs_restart {
                    tracing::warn!(trigger, key = %key, "config change needs a restart to take effect; the rest of the change was applied");
                }
            }
            Err(e) => {
                crate::metrics::reload("refused");
                tracing::error!(
                    trigger,
                    "reload refused, the running configuration keeps serving: {e}"
                );
            }
        }
        crate::systemd::ready(match &result {
            Ok(_) => "serving; last reload applied",
            Err(_) => "serving; last reload refused (see the log)",
        });
        result
    }

    /// Shutdown: stop routing, let every plugin instance finish its queue and be destroyed
    /// (waiting at most `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        let mut applied = self.applied.lock().await;
        drop(self.hub.router.swap(Routes::new()));
        let Some(applied) = applied.take() else {
            return;
        };
        let finished: Vec<(String, Arc<Latch>)> = applied
            .plugins
            .iter()
            .map(|(n, p)| (n.clone(), p.handler.finished()))
            .collect();
        drop(applied);
        let _ = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + grace;
            for (name, latch) in finished {
                if !latch.wait(deadline.saturating_duration_since(Instant::now())) {
                    tracing::warn!(plugin = %name, "plugin did not finish its queued calls before shutdown");
                }
            }
        })
        .await;
    }

    async fn apply(
        &self,
        applied: &mut Option<Applied>,
        config: Config,
    ) -> Result<ReloadReport, ReloadError> {
        let started = Instant::now();
        let hub = &self.hub;
        let old_plugins = applied
            .as_ref()
            .map(|a| a.plugins.clone())
            .unwrap_or_default();

        // 1. Everything that can fail, before anything changes.
        let notifier_changed = applied
            .as_ref()
            .is_none_or(|a| a.config.pairing.notifier != config.pairing.notifier);
        let notifier = if notifier_changed {
            Some(
                Notifier::from_config(&config.pairing.notifier).map_err(|source| {
                    ReloadError::Notifier {
                        file: config.file.clone(),
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let (specs, staging, registry, clock) = (
            config.plugins.clone(),
            self.staging.clone(),
            Arc::clone(&hub.registry),
            Arc::clone(&hub.clock),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            prepare(&specs, &old_plugins, &staging, &registry, &clock)
        })
        .await
        .map_err(|e| ReloadError::Task("plugin loader", e.to_string()))??;

        let mut report = ReloadReport {
            changes: prepared.changes.clone(),
            ..Default::default()
        };
        let routes_changed = applied.as_ref().is_none_or(|a| {
            let rules = |m: &BTreeMap<String, ActivePlugin>| -> Vec<(String, Vec<String>)> {
                m.iter()
                    .map(|(n, p)| (n.clone(), p.config.rules.clone()))
                    .collect()
            };
            rules(&a.plugins) != rules(&prepared.plugins)
        });
        if let Some(old) = applied.as_ref() {
            if old.config.server.listen != config.server.listen {
                report.needs_restart.push(format!(
                    "server.listen ({} → {})",
                    old.config.server.listen, config.server.listen
                ));
            }
            if old.config.server.state_dir != config.server.state_dir {
                report.needs_restart.push("server.state_dir".into());
            }
            if old.config.reload.watch != config.reload.watch {
                report.needs_restart.push("reload.watch".into());
            }
            if old.config.server.tls != config.server.tls {
                report.needs_restart.push("server.tls".into());
            }
            if old.config.admin != config.admin {
                report.needs_restart.push("admin".into());
            }
            if old.config.limits.max_handshakes != config.limits.max_handshakes {
                report.needs_restart.push("limits.max_handshakes".into());
            }
            if old.config.store != config.store {
                report.needs_restart.push("store".into());
            }
            if old.config.cluster != config.cluster {
                report.needs_restart.push("cluster".into());
            }
        }
        if prepared.gates.0.is_empty()
            && !routes_changed
            && applied
                .as_ref()
                .is_some_and(|a| same_live_settings(&a.config, &config))
        {
            applied.replace(Applied {
                config,
                plugins: prepared.plugins,
            });
            report.took_ms = started.elapsed().as_millis() as u64;
            return Ok(report);
        }

        // 2. Switch in one step.
        let mut routes = Routes::new();
        for plugin in prepared.plugins.values() {
            for rule in &plugin.config.rules {
                let h: Arc<dyn RuleHandler> = plugin.handler.clone();
                routes.insert(rule.clone(), h);
            }
        }
        drop(hub.router.swap(routes));
        if routes_changed && applied.is_some() {
            report.changes.push("routes changed".into());
        }
        let old_settings = hub.settings();
        let new_settings = Settings::from_config(&config);
        if let Some(n) = notifier {
            hub.set_notifier(n);
            if applied.is_some() {
                report
                    .changes
                    .push(format!("pairing notifier: {}", hub.notifier().kind()));
            }
        }
        if applied.is_some() {
            describe_settings(&old_settings, &new_settings, &mut report.changes);
        }
        let removed: Vec<String> = old_settings
            .allow
            .difference(&new_settings.allow)
            .cloned()
            .collect();
        hub.set_settings(new_settings);
        for id in removed {
            if hub.registry.is_connected(&id) {
                tracing::info!(identifier = %id, "removed from the allowlist: disconnecting (its trust record is kept)");
            }
            crate::lifecycle::disconnect(hub, &id, 1008, "identifier removed from allowlist");
        }

        // 3. Drain replaced instances, then let their successors start.
        let old = applied.take().map(|a| a.plugins).unwrap_or_default();
        // A new instance waits for every old instance that served its name or any of its rules:
        // replaced ones until they have finished, kept ones until they are idle.
        let mut handoffs = Vec::new();
        for (name, gate) in &prepared.gates.0 {
            let rules = prepared
                .plugins
                .get(name)
                .map(|p| p.config.rules.clone())
                .unwrap_or_default();
            let mut waits = Vec::new();
            for (old_name, old_plugin) in &old {
                let related =
                    old_name == name || old_plugin.config.rules.iter().any(|r| rules.contains(r));
                if !related {
                    continue;
                }
                let kept = prepared
                    .plugins
                    .values()
                    .any(|p| Arc::ptr_eq(&p.handler, &old_plugin.handler));
                waits.push(if kept {
                    Wait::Idle(Arc::clone(&old_plugin.handler))
                } else {
                    Wait::Finished(old_plugin.handler.finished())
                });
            }
            handoffs.push((name.clone(), waits, Arc::clone(gate)));
        }
        let replaced = old.len();
        drop(old); // the last references: replaced workers finish their queues and end
        let drain = Duration::from_millis(config.reload.drain_timeout_ms);
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + drain;
            for (name, waits, gate) in handoffs {
                for wait in waits {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !wait.wait(left) {
                        tracing::warn!(plugin = %name, timeout = ?drain, "old plugin instance did not drain in time; the new one starts now (order across the switch is not guaranteed for messages still queued)");
                    }
                }
                gate.set();
            }
        })
        .await
        .map_err(|e| ReloadError::Task("drain", e.to_string()))?;
        *self.watched.lock().unwrap_or_else(|p| p.into_inner()) =
            std::iter::once(self.config_path.clone())
                .chain(config.plugins.iter().map(|p| p.path.clone()))
                .collect();
        applied.replace(Applied {
            config,
            plugins: prepared.plugins,
        });
        report.took_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(
            replaced,
            mapped_libraries = plugins::mapped_libraries(),
            "plugin generations switched"
        );
        Ok(report)
    }
}

/// A running plugin, as the dashboard shows it ([`Reloader::plugin_status`]).
#[derive(Clone)]
pub struct PluginStatus {
    /// Configured name.
    pub name: String,
    /// What the library's header says (its own name, version, ABI).
    pub info: plugins::HeaderInfo,
    pub rules: Vec<String>,
    /// The running instance (hold it only briefly: the last clone keeps a replaced instance).
    pub handler: Arc<PluginHandler>,
}

impl Reloader {
    /// Added for the dashboard (read-only accessor): the running plugins, or `None` while a
    /// reload (or start) holds the applied configuration — ask again later.
    pub fn plugin_status(&self) -> Option<Vec<PluginStatus>> {
        let applied = self.applied.try_lock().ok()?;
        Some(
            applied
                .as_ref()
                .map(|a| {
                    a.plugins
                        .iter()
                        .map(|(name, p)| PluginStatus {
                            name: name.clone(),
                            info: p.lib.info().clone(),
                            rules: p.config.rules.clone(),
                            handler: Arc::clone(&p.handler),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
}

/// Whether an instance created with `a` serves `b` unchanged (everything but the rules equal).
fn same_instance_settings(a: &PluginConfig, b: &PluginConfig) -> bool {
    let mut a = a.clone();
    a.rules = b.rules.clone();
    a == *b
}

/// What a new instance waits for before it starts.
enum Wait {
    /// A replaced instance: until its worker has finished.
    Finished(Arc<Latch>),
    /// An instance that keeps running (a rule moved away from it): until it is idle.
    Idle(Arc<PluginHandler>),
}

impl Wait {
    fn wait(self, timeout: Duration) -> bool {
        match self {
            Wait::Finished(latch) => latch.wait(timeout),
            Wait::Idle(handler) => {
                let deadline = Instant::now() + timeout;
                while !handler.is_idle() {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                true
            }
        }
    }
}

/// Whether the settings that apply live are the same.
fn same_live_settings(a: &Config, b: &Config) -> bool {
    a.allow == b.allow
        && a.pairing == b.pairing
        && a.liveness == b.liveness
        && a.server.path == b.server.path
        && a.limits == b.limits
}

fn describe_settings(old: &Settings, new: &Settings, changes: &mut Vec<String>) {
    let added: Vec<&String> = new.allow.difference(&old.allow).collect();
    let removed: Vec<&String> = old.allow.difference(&new.allow).collect();
    if !added.is_empty() || !removed.is_empty() {
        changes.push(format!("allowlist: added {added:?}, removed {removed:?}"));
    }
    if old.pairing.ttl_secs != new.pairing.ttl_secs
        || old.pairing.max_attempts != new.pairing.max_attempts
    {
        changes.push("pairing settings".into());
    }
    if old.liveness != new.liveness {
        changes.push("liveness settings".into());
    }
    if old.limits != new.limits {
        changes.push("limits (apply to new connections)".into());
    }
    if old.path != new.path {
        changes.push(format!("server.path → {}", new.path));
    }
}

/// Load and create everything the new plugin list needs, reusing what did not change.
/// Blocking. On error, nothing created here keeps running.
fn prepare(
    configs: &[PluginConfig],
    old: &BTreeMap<String, ActivePlugin>,
    staging: &Path,
    registry: &Arc<crate::registry::Registry>,
    clock: &crate::clock::SharedClock,
) -> Result<Prepared, ReloadError> {
    let mut prepared = Prepared {
        plugins: BTreeMap::new(),
        gates: Gates::default(),
        changes: Vec::new(),
    };
    for pc in configs {
        let spec = PluginSpec::from_config(pc);
        let hash = match file_hash(&pc.path) {
            Ok(h) => h,
            Err(source) => {
                prepared.abandon();
                return Err(ReloadError::ReadPlugin {
                    name: pc.name.clone(),
                    path: pc.path.clone(),
                    source,
                });
            }
        };
        let previous = old.get(&pc.name);
        let same_library = previous.filter(|p| p.hash == hash && p.config.path == pc.path);
        // A disabled (repeated panics) or demoted (broke its non-blocking promise) instance
        // is re-created by any reload, also one that changes nothing else.
        let fault = same_library.and_then(|p| {
            if p.handler.is_disabled() {
                Some("it was disabled after repeated panics")
            } else if p.handler.stats().demoted {
                Some("it was demoted from inline calls")
            } else {
                None
            }
        });
        let (lib, what) = match same_library {
            Some(p) if fault.is_none() && same_instance_settings(&p.config, pc) => {
                // Untouched (perhaps re-routed): keep the running instance.
                let kept = ActivePlugin {
                    config: pc.clone(),
                    ..p.clone()
                };
                prepared.plugins.insert(pc.name.clone(), kept);
                continue;
            }
            Some(p) => (
                p.lib.clone(),
                match fault {
                    Some(why) if same_instance_settings(&p.config, pc) => format!(
                        "plugin '{}': instance re-created on the loaded library ({why})",
                        pc.name
                    ),
                    _ => format!(
                        "plugin '{}': settings changed, instance re-created on the loaded library",
                        pc.name
                    ),
                },
            ),
            None => match plugins::load(&spec, staging) {
                Ok(lib) => {
                    let what = match previous {
                        Some(_) => format!(
                            "plugin '{}': new library {} {}",
                            pc.name,
                            lib.info().name,
                            lib.info().version
                        ),
                        None => format!(
                            "plugin '{}': loaded {} {}",
                            pc.name,
                            lib.info().name,
                            lib.info().version
                        ),
                    };
                    (lib, what)
                }
                Err(e) => {
                    prepared.abandon();
                    return Err(e.into());
                }
            },
        };
        let gate = Latch::new();
        match lib.instantiate_gated(
            &spec,
            Arc::clone(registry),
            Arc::clone(clock),
            Arc::clone(&gate),
        ) {
            Ok(handler) => {
                prepared.gates.0.push((pc.name.clone(), gate));
                prepared.changes.push(what);
                prepared.plugins.insert(
                    pc.name.clone(),
                    ActivePlugin {
                        config: pc.clone(),
                        lib,
                        hash,
                        handler,
                    },
                );
            }
            Err(e) => {
                gate.set();
                prepared.abandon();
                return Err(e.into());
            }
        }
    }
    for name in old.keys().filter(|n| !prepared.plugins.contains_key(*n)) {
        prepared.changes.push(format!("plugin '{name}' removed"));
    }
    Ok(prepared)
}
