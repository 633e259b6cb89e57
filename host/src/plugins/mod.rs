//! Rule handlers as plugins: `cdylib`s built against `yonexus-plugin-api` alone, loaded with
//! `libloading`, checked before any of their code runs, and run on their own worker threads.
//!
//! Layout:
//! - [`PluginSpec`] (here): what the config says about one plugin.
//! - [`load`] (here): file → checked [`LoadedLibrary`]; [`LoadedLibrary::instantiate`] →
//!   running [`PluginHandler`]; [`LoadedLibrary::describe`] for `yonexus check`.
//! - `error`: [`PluginLoadError`] — one line naming the plugin, the file and the exact reason.
//! - `loader`: file sanity (regular, non-empty, trusted, ELF header/segments inside the file), private staged copy under a never-reused
//!   name, `dlopen(RTLD_NOW | RTLD_LOCAL)`, the never-unloaded library list.
//! - `abi`: header and vtable checks (magic, size, ABI major, pointer width, target,
//!   panic strategy), the 1.1 flags ([`HeaderInfo::non_blocking`], [`HeaderInfo::thread_safe`]),
//!   reading newer optional fields only when the plugin's struct has them.
//! - `host_api`: the callbacks a plugin calls (send, error, broadcast, log, now, connected),
//!   backed by the real [`Registry`]; the table lives in a
//!   never-freed slot so late calls from a destroyed instance return `STATUS_GONE`.
//! - `worker`: the instance's worker thread(s) (one; one per core for a thread-safe plugin),
//!   each with a mailbox drained a batch per wake-up; deadlines, failure replies, panic
//!   breaker; the queue-depth gauge.
//! - `sched`: a thread's time on and waiting for a CPU (Linux schedstat), so the inline
//!   watchdog can tell a plugin that blocks or spins from one that is merely preempted.
//! - `handler`: [`PluginHandler`], the [`RuleHandler`](crate::router::RuleHandler) the router
//!   calls: queues messages and lifecycle events, each follower's to one worker (picked by its
//!   identifier, [`crate::router::shard_key`], so its events and messages stay in order), or
//!   runs a message inline under a watchdog — only for a plugin that declared itself both
//!   non-blocking *and* thread-safe, and only while nothing of it is queued (the full list of
//!   conditions is in `handler`'s docs).
//!
//! Libraries are never `dlclose`d: a superseded generation stays mapped (see
//! [`mapped_libraries`]).

mod abi;
mod error;
mod handler;
mod host_api;
mod loader;
mod sched;
mod worker;

pub use crate::file_trust::{check_trusted_file, read_trusted, Owner, UntrustedFile};
pub use abi::{host_target, HeaderInfo};
pub use error::{LoadErrorKind, PluginLoadError};
pub use handler::{
    inline_watchdog_checks, set_inline_limit, PluginHandler, PluginStats, INLINE_BUDGET,
    WATCHDOG_IDLE_GRACE,
};
pub use host_api::LOG_TARGET;
pub use loader::mapped_libraries;
pub use worker::Latch;
pub use yonexus_plugin_api::abi::{ABI_MAJOR, ABI_MINOR};

use crate::clock::SharedClock;
use crate::registry::Registry;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One configured plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The config's name for it (used in logs and errors).
    pub name: String,
    /// The `.so` to load, already resolved to an absolute path.
    pub path: PathBuf,
    /// Rule ids routed to it.
    pub rules: Vec<String>,
    /// Its config table, passed to the plugin's `create` as JSON.
    pub config: serde_json::Value,
    /// Messages/events that may wait for the worker; beyond that, `Busy`.
    pub queue_capacity: usize,
    /// A call running longer than this is logged and counted (it cannot be interrupted).
    pub call_deadline: Duration,
    /// Panics within `panic_window` that disable the plugin's rules; 0 = never disable.
    pub panic_limit: u32,
    pub panic_window: Duration,
    /// Worker threads for a thread-safe plugin (`None`: one per core). A plugin that is not
    /// thread-safe always has exactly one.
    pub workers: Option<NonZeroUsize>,
}

impl PluginSpec {
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
    pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(1);
    pub const DEFAULT_PANIC_LIMIT: u32 = 5;
    pub const DEFAULT_PANIC_WINDOW: Duration = Duration::from_secs(60);

    /// A spec with the default tuning and an empty config table.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>, rules: Vec<String>) -> Self {
        PluginSpec {
            name: name.into(),
            path: path.into(),
            rules,
            config: serde_json::Value::Object(Default::default()),
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            call_deadline: Self::DEFAULT_CALL_DEADLINE,
            panic_limit: Self::DEFAULT_PANIC_LIMIT,
            panic_window: Self::DEFAULT_PANIC_WINDOW,
            workers: None,
        }
    }

    /// The spec of a configured plugin.
    pub fn from_config(p: &crate::config::PluginConfig) -> Self {
        PluginSpec {
            name: p.name.clone(),
            path: p.path.clone(),
            rules: p.rules.clone(),
            config: p.config.clone(),
            queue_capacity: p.queue_capacity,
            call_deadline: Duration::from_millis(p.call_deadline_ms),
            panic_limit: p.panic_limit,
            panic_window: Duration::from_secs(p.panic_window_secs),
            workers: None,
        }
    }

    fn error(&self, kind: LoadErrorKind) -> PluginLoadError {
        PluginLoadError::new(&self.name, &self.path, kind)
    }
}

/// A mapped, checked plugin library (a private copy of `spec.path`). Cheap to clone; can create
/// any number of instances (e.g. a config-only change re-creates without a new `dlopen`).
#[derive(Debug, Clone)]
pub struct LoadedLibrary {
    info: HeaderInfo,
    source: PathBuf,
    staged: PathBuf,
    functions: abi::Functions,
}

/// What `yonexus check` prints about a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    /// Config name.
    pub name: String,
    /// Name and version the plugin reports.
    pub plugin_name: String,
    pub version: String,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub plugin_api_version: String,
    pub rustc_version: String,
    pub rules: Vec<String>,
    pub path: PathBuf,
    /// ABI 1.1 declarations (see [`HeaderInfo`]).
    pub non_blocking: bool,
    pub thread_safe: bool,
    pub unwinds: bool,
}

impl fmt::Display for PluginDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let declared: Vec<&str> = [
            (self.non_blocking, "non-blocking"),
            (self.thread_safe, "thread-safe"),
            (!self.unwinds, "never unwinds"),
        ]
        .into_iter()
        .filter_map(|(on, what)| on.then_some(what))
        .collect();
        write!(
            f,
            "plugin '{}': {} {} (ABI {}.{}, plugin-api {}, {}){} from {}; rules: {}",
            self.name,
            self.plugin_name,
            self.version,
            self.abi_major,
            self.abi_minor,
            self.plugin_api_version,
            self.rustc_version,
            if declared.is_empty() {
                String::new()
            } else {
                format!(" [{}]", declared.join(", "))
            },
            self.path.display(),
            if self.rules.is_empty() {
                "(none)".to_owned()
            } else {
                self.rules.join(", ")
            }
        )
    }
}

/// Check `spec.path`, stage a private copy in `staging_dir`, `dlopen` it and check its header.
/// Runs no plugin code (only the library's ELF initializers, as any `dlopen` does). Blocking
/// file I/O: call at startup or from `spawn_blocking`. Does not log; log the error's `Display`.
pub fn load(spec: &PluginSpec, staging_dir: &Path) -> Result<LoadedLibrary, PluginLoadError> {
    let bytes = loader::read_file(&spec.path).map_err(|k| spec.error(k))?;
    loader::check_elf(&bytes).map_err(|k| spec.error(k))?;
    let staged = loader::stage(&spec.name, &bytes, staging_dir).map_err(|k| spec.error(k))?;
    drop(bytes);
    let header = loader::open(&staged, yonexus_plugin_api::abi::HEADER_SYMBOL)
        .map_err(|k| spec.error(k))?
        .ok_or_else(|| {
            spec.error(LoadErrorKind::MissingHeader {
                symbol: yonexus_plugin_api::abi::HEADER_SYMBOL_NAME,
            })
        })?;
    // SAFETY: `header` is the address of the exported header symbol in a library that stays
    // mapped forever; `read_header` checks magic and size before reading further.
    let (info, functions) = unsafe { abi::read_header(header) }.map_err(|k| spec.error(k))?;
    tracing::debug!(
        plugin = %spec.name,
        path = %spec.path.display(),
        staged = %staged.display(),
        version = %info.version,
        abi = %format!("{}.{}", info.abi_major, info.abi_minor),
        plugin_api = %info.plugin_api_version,
        mapped_libraries = mapped_libraries(),
        "plugin library loaded (libraries are never unloaded; superseded ones stay mapped)"
    );
    Ok(LoadedLibrary {
        info,
        source: spec.path.clone(),
        staged,
        functions,
    })
}

impl LoadedLibrary {
    /// What the plugin's header says.
    pub fn info(&self) -> &HeaderInfo {
        &self.info
    }

    /// The private copy actually mapped.
    pub fn staged_path(&self) -> &Path {
        &self.staged
    }

    /// Whether the plugin handles follower lifecycle events.
    pub fn handles_events(&self) -> bool {
        self.functions.on_event.is_some()
    }

    /// For `yonexus check`.
    pub fn describe(&self, spec: &PluginSpec) -> PluginDescription {
        PluginDescription {
            name: spec.name.clone(),
            plugin_name: self.info.name.clone(),
            version: self.info.version.clone(),
            abi_major: self.info.abi_major,
            abi_minor: self.info.abi_minor,
            plugin_api_version: self.info.plugin_api_version.clone(),
            rustc_version: self.info.rustc_version.clone(),
            rules: spec.rules.clone(),
            path: self.source.clone(),
            non_blocking: self.info.non_blocking,
            thread_safe: self.info.thread_safe,
            unwinds: self.info.unwinds,
        }
    }

    /// Start a worker thread and create an instance with `spec.config`. Blocks until the
    /// plugin's `create` returns (at most `max(call_deadline, 10 s)`): call at startup or from
    /// `spawn_blocking`, never directly on the reactor.
    pub fn instantiate(
        &self,
        spec: &PluginSpec,
        registry: Arc<Registry>,
        clock: SharedClock,
    ) -> Result<Arc<PluginHandler>, PluginLoadError> {
        let gate = Latch::new();
        gate.set();
        self.instantiate_gated(spec, registry, clock, gate)
    }

    /// Like [`LoadedLibrary::instantiate`], but the instance handles nothing (messages queue up)
    /// until `gate` is set. A hot reload uses this to start a replacement only after its
    /// predecessor has drained, so every sender's messages stay in order. Set the gate before
    /// dropping the handler, or its worker never ends.
    pub fn instantiate_gated(
        &self,
        spec: &PluginSpec,
        registry: Arc<Registry>,
        clock: SharedClock,
        gate: Arc<Latch>,
    ) -> Result<Arc<PluginHandler>, PluginLoadError> {
        let shared = Arc::new(worker::Shared::new(&spec.name));
        let ctx = Box::new(host_api::HostCtx::new(
            &spec.name,
            Arc::clone(&registry),
            clock,
        ));
        let cfg = worker::WorkerConfig {
            name: spec.name.clone(),
            config_json: spec.config.to_string(),
            call_deadline: spec.call_deadline,
            panic_limit: spec.panic_limit,
            panic_window: spec.panic_window,
        };
        let create_timeout = spec.call_deadline.max(Duration::from_secs(10));
        let workers = if self.info.thread_safe {
            spec.workers
                .or_else(|| std::thread::available_parallelism().ok())
                .map_or(1, NonZeroUsize::get)
        } else {
            1
        };
        let started = worker::spawn(
            cfg,
            self.functions,
            ctx,
            Arc::clone(&shared),
            create_timeout,
            Arc::clone(&gate),
            workers,
        )
        .map_err(|k| spec.error(k))?;
        let workers = started.mailboxes.len();
        let handler = Arc::new(PluginHandler::new(
            spec.name.clone(),
            shared,
            started.mailboxes,
            started.instance,
            spec.call_deadline,
            spec.queue_capacity,
            self.handles_events(),
            gate,
            self.info.non_blocking && self.info.thread_safe,
        ));
        tracing::debug!(plugin = %spec.name, rules = ?spec.rules, workers, "plugin instance created");
        Ok(handler)
    }
}
