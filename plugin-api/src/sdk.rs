//! The safe Rust SDK: the [`Plugin`] trait an author implements and the [`Host`] handle through
//! which a plugin talks to the hub. [`crate::export_plugin!`] turns a `Plugin` into the C ABI.

use crate::abi::{self, FfiBuf, FfiStr, HostApi};
use crate::json;
use std::fmt;

/// A rule-handler plugin, exported with `export_plugin!(Type)`.
///
/// Calls to one instance are serialized by the host (never concurrent), but may come from
/// different threads over its life, hence `Send`. The host runs such a plugin on one worker
/// thread of its own (`plugin-<name>`), fed by a bounded queue: that thread makes every call
/// (`create`, `on_message`, `on_event`, `drop`), so a slow call delays only this plugin's next
/// messages, and a full queue answers `HANDLER_BUSY`. Every call must still return promptly. For
/// an instance that may be called from several threads at once, see [`SharedPlugin`].
pub trait Plugin: Send + Sized + 'static {
    /// Short plugin name, shown in host logs and `yonexus check`.
    const NAME: &'static str;

    /// Build an instance from the plugin's config table. An `Err` refuses the load with that
    /// message. `host` stays valid for the whole life of the instance and may be cloned and kept.
    fn create(config: &Config, host: &Host) -> Result<Self, String>;

    /// Handle one rule message. `Err` sends `error HANDLER_FAILED` with the message to the
    /// sender (a panic does the same, and is counted towards disabling the plugin).
    fn on_message(&mut self, host: &Host, msg: &Message<'_>) -> Result<(), String>;

    /// Whether the plugin wants follower lifecycle events. Set it to `false` when `on_event` is
    /// not used: the host then never queues events for the plugin (no wake-ups per connect).
    const HANDLES_EVENTS: bool = true;

    /// Promise that `on_message` and `on_event` are short and never block (no sleeping, no
    /// blocking I/O, no waiting on a lock held for long). Calling [`Host`] methods is fine (they
    /// only queue). Sets [`abi::FLAG_NON_BLOCKING`].
    ///
    /// On a `Plugin` this changes nothing in how the Yonexus host runs it (`yonexus check` shows
    /// the flag): its calls are serialized, so they always go to its worker thread. The host
    /// calls a plugin inline — `on_message` directly on the async I/O thread that read the
    /// message, without a thread hop — only when it is non-blocking *and* thread-safe, i.e. a
    /// [`SharedPlugin`] with `NON_BLOCKING = true`; see [`SharedPlugin::NON_BLOCKING`].
    const NON_BLOCKING: bool = false;

    /// A follower lifecycle event. The default ignores it.
    fn on_event(&mut self, host: &Host, event: &Event<'_>) -> Result<(), String> {
        let _ = (host, event);
        Ok(())
    }
}

/// A rule-handler plugin whose instance may be called from several threads at once, exported
/// with `export_plugin!(shared Type)` (which sets [`abi::FLAG_THREAD_SAFE`]).
///
/// The methods take `&self` and the type must be `Sync`: keep mutable state behind your own
/// `Mutex`, atomics or sharded maps. The Yonexus host then runs the instance on one worker thread
/// per core, each with its own bounded queue: messages are sharded by sender (connection), so
/// one sender's messages still arrive in order (on one thread at a time) while different
/// senders are handled in parallel; events are sharded by follower identifier and may run
/// concurrently with messages. `create` runs on the first worker and `drop` after every worker
/// has finished, never concurrently with anything. Use it when a busy rule should use more than
/// one core; a [`Plugin`] is simpler and always serialized.
///
/// (There is no `THREAD_SAFE` switch on [`Plugin`]: its `&mut self` methods cannot soundly be
/// called concurrently, so thread safety is a different trait, checked by the compiler.)
pub trait SharedPlugin: Send + Sync + Sized + 'static {
    /// Short plugin name, shown in host logs and `yonexus check`.
    const NAME: &'static str;

    /// As [`Plugin::HANDLES_EVENTS`].
    const HANDLES_EVENTS: bool = true;

    /// Promise that `on_message` and `on_event` are short and never block, as for
    /// [`Plugin::NON_BLOCKING`]. Together with thread safety it lets the Yonexus host call
    /// `on_message` inline, on the async I/O thread that read the message, instead of queueing
    /// it for a worker — when none of this plugin's messages are still queued (so each
    /// sender's order holds) and fewer inline calls than the host has cores are running across
    /// all plugins (one I/O thread always stays free). `on_event`, `create` and `drop` always
    /// run on a worker.
    ///
    /// The promise is checked: a watchdog times every inline call, and one that runs longer
    /// than 2 ms — running or blocked; time its thread is merely preempted by other threads
    /// does not count — demotes the instance until it is reloaded — a warning is logged and all its
    /// later messages go to its worker threads. The overrunning call itself is not interrupted:
    /// it holds that I/O thread, and every follower served by it, until it returns. So a broken
    /// promise costs latency once, not forever.
    const NON_BLOCKING: bool = false;

    /// As [`Plugin::create`] (never concurrent with anything).
    fn create(config: &Config, host: &Host) -> Result<Self, String>;

    /// As [`Plugin::on_message`], possibly concurrently with other calls.
    fn on_message(&self, host: &Host, msg: &Message<'_>) -> Result<(), String>;

    /// As [`Plugin::on_event`], possibly concurrently with other calls.
    fn on_event(&self, host: &Host, event: &Event<'_>) -> Result<(), String> {
        let _ = (host, event);
        Ok(())
    }
}

/// One rule message, as the host routed it: `rule::sender::content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The rule id it was routed by.
    pub rule: &'a str,
    /// The authenticated identifier of the follower that sent it (injected by the host).
    pub sender: &'a str,
    /// Everything after `rule::` in the follower's frame (may itself contain `::`).
    pub content: &'a str,
}

/// A follower's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Online,
    Unstable,
    Offline,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Online => "online",
            Liveness::Unstable => "unstable",
            Liveness::Offline => "offline",
        }
    }
    pub fn parse(s: &str) -> Option<Liveness> {
        match s {
            "online" => Some(Liveness::Online),
            "unstable" => Some(Liveness::Unstable),
            "offline" => Some(Liveness::Offline),
            _ => None,
        }
    }
}

/// A follower lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The follower completed authentication (it is now connected).
    Authenticated { identifier: &'a str },
    /// The follower's session ended.
    Disconnected { identifier: &'a str },
    /// Heartbeat-based liveness changed.
    LivenessChanged {
        identifier: &'a str,
        status: Liveness,
    },
}

impl Event<'_> {
    pub fn identifier(&self) -> &str {
        match self {
            Event::Authenticated { identifier }
            | Event::Disconnected { identifier }
            | Event::LivenessChanged { identifier, .. } => identifier,
        }
    }
}

/// Error codes a plugin can answer a follower with (see [`Host::reply_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    HandlerFailed,
    TargetOffline,
    HandlerBusy,
    RuleNotFound,
    MalformedMessage,
}

impl ErrorCode {
    pub fn to_abi(self) -> u32 {
        match self {
            ErrorCode::HandlerFailed => abi::ERR_HANDLER_FAILED,
            ErrorCode::TargetOffline => abi::ERR_TARGET_OFFLINE,
            ErrorCode::HandlerBusy => abi::ERR_HANDLER_BUSY,
            ErrorCode::RuleNotFound => abi::ERR_RULE_NOT_FOUND,
            ErrorCode::MalformedMessage => abi::ERR_MALFORMED_MESSAGE,
        }
    }
}

/// Why the host did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The target follower is not connected. Nothing is queued for later.
    Offline,
    /// The target's outbound queue is full; it is being disconnected as a slow consumer.
    Busy,
    /// The host rejected the arguments (empty or reserved rule id, …).
    Invalid,
    /// This plugin instance has been destroyed or replaced (e.g. by a hot reload) and the
    /// handle was used afterwards, typically from a thread the plugin spawned. Nothing was sent,
    /// and nothing ever will be through this handle: stop the thread.
    Gone,
    /// A status this SDK does not know (a newer host).
    Other(u32),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Offline => f.write_str("follower is not connected"),
            SendError::Busy => f.write_str("follower's outbound queue is full"),
            SendError::Invalid => f.write_str("rejected by the host (invalid rule or text)"),
            SendError::Gone => {
                f.write_str("this plugin instance was destroyed or replaced; the handle is dead")
            }
            SendError::Other(s) => write!(f, "host returned status {s}"),
        }
    }
}

impl std::error::Error for SendError {}

fn status_to_result(status: abi::Status) -> Result<(), SendError> {
    match status {
        abi::STATUS_OK => Ok(()),
        abi::STATUS_OFFLINE => Err(SendError::Offline),
        abi::STATUS_BUSY => Err(SendError::Busy),
        abi::STATUS_INVALID => Err(SendError::Invalid),
        abi::STATUS_GONE => Err(SendError::Gone),
        other => Err(SendError::Other(other)),
    }
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    fn to_abi(self) -> u32 {
        match self {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
            Level::Trace => abi::LOG_TRACE,
        }
    }
}

/// The plugin's config table, as JSON.
#[derive(Debug, Clone)]
pub struct Config {
    raw: String,
    value: json::Value,
}

impl Config {
    /// Parse the JSON the host passed (`""` counts as an empty table).
    pub fn from_json(raw: &str) -> Result<Config, json::ParseError> {
        let value = if raw.trim().is_empty() {
            json::Value::Object(Default::default())
        } else {
            json::parse(raw)?
        };
        Ok(Config {
            raw: raw.to_owned(),
            value,
        })
    }
    /// The JSON text as given (parse it with `serde_json` if you prefer).
    pub fn raw(&self) -> &str {
        &self.raw
    }
    /// The parsed table.
    pub fn value(&self) -> &json::Value {
        &self.value
    }
    /// Member `key` of the table.
    pub fn get(&self, key: &str) -> Option<&json::Value> {
        self.value.get(key)
    }
    /// A string member; `Err` when present with another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None | Some(json::Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| format!("config key '{key}' must be a string")),
        }
    }
}

/// Handle to the hub's services. Works from `create` until the instance is destroyed; cheap to
/// copy; may be used from any thread. All calls are synchronous and only queue work: the host
/// does every I/O.
///
/// After the instance is destroyed or replaced (a hot reload), a handle kept elsewhere (in a
/// thread the plugin spawned) stays memory-safe with an ABI ≥ 1.1 host: every call does nothing
/// and reports it — [`SendError::Gone`], `broadcast` 0, `connected` empty, `now` 0, logging
/// disabled. A 1.0 host freed the table, so there the rule is: never use a handle after
/// `destroy`. Either way, stop your threads in your type's `Drop`.
#[derive(Clone, Copy)]
pub struct Host {
    api: *const HostApi,
}

// SAFETY: the host guarantees its callbacks are thread-safe and the HostApi outlives the instance
// (from ABI 1.1 hosts: the table and its ctx are never freed at all).
unsafe impl Send for Host {}
// SAFETY: as above; Host has no interior state.
unsafe impl Sync for Host {}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Wrap a host API pointer (the generated shims do this; tests use [`crate::testing`]).
    ///
    /// # Safety
    /// `api` must point to a valid [`HostApi`] of at least [`abi::HOST_API_V1_0_SIZE`] bytes
    /// that outlives every use of the returned handle.
    pub unsafe fn from_raw(api: *const HostApi) -> Host {
        Host { api }
    }

    fn api(&self) -> &HostApi {
        // SAFETY: guaranteed by `from_raw`'s contract.
        unsafe { &*self.api }
    }

    /// Send `<rule>::<content>` to follower `target`.
    pub fn send(&self, target: &str, rule: &str, content: &str) -> Result<(), SendError> {
        let api = self.api();
        // SAFETY: valid callback and ctx per `from_raw`; the strings live across the call.
        let status = unsafe {
            (api.send_to)(
                api.ctx,
                FfiStr::new(target),
                FfiStr::new(rule),
                FfiStr::new(content),
            )
        };
        status_to_result(status)
    }

    /// Reply `<msg.rule>::<content>` to the sender of `msg`.
    pub fn reply(&self, msg: &Message<'_>, content: &str) -> Result<(), SendError> {
        self.send(msg.sender, msg.rule, content)
    }

    /// Send `error{code, message}` to follower `target`.
    pub fn send_error(
        &self,
        target: &str,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), SendError> {
        let api = self.api();
        // SAFETY: as in `send`.
        let status = unsafe {
            (api.send_error)(
                api.ctx,
                FfiStr::new(target),
                code.to_abi(),
                FfiStr::new(message),
            )
        };
        status_to_result(status)
    }

    /// Answer the sender of `msg` with `error{code, message}`.
    pub fn reply_error(
        &self,
        msg: &Message<'_>,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), SendError> {
        self.send_error(msg.sender, code, message)
    }

    /// Send `<rule>::<content>` to every authenticated follower except `except`; returns how
    /// many it was queued for.
    pub fn broadcast(&self, rule: &str, content: &str, except: Option<&str>) -> usize {
        let api = self.api();
        // SAFETY: as in `send`.
        let n = unsafe {
            (api.broadcast)(
                api.ctx,
                FfiStr::new(rule),
                FfiStr::new(content),
                FfiStr::new(except.unwrap_or("")),
            )
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Whether a record at `level` would be recorded.
    pub fn log_enabled(&self, level: Level) -> bool {
        let api = self.api();
        // SAFETY: as in `send`.
        unsafe { (api.log_enabled)(api.ctx, level.to_abi()) != 0 }
    }

    /// Log through the host's logger; the host tags the record with the plugin's name.
    pub fn log(&self, level: Level, message: &str) {
        let api = self.api();
        // SAFETY: as in `send`.
        unsafe { (api.log)(api.ctx, level.to_abi(), FfiStr::new(message)) }
    }

    pub fn error(&self, message: &str) {
        self.log(Level::Error, message)
    }
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message)
    }
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message)
    }
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message)
    }

    /// Current time, UTC unix seconds, from the host's clock.
    pub fn now(&self) -> i64 {
        let api = self.api();
        // SAFETY: as in `send`.
        unsafe { (api.now)(api.ctx) }
    }

    /// Identifiers of the authenticated followers (sorted by the host); empty when the instance
    /// is gone.
    pub fn connected(&self) -> Vec<String> {
        let api = self.api();
        let mut buf = FfiBuf::empty();
        // SAFETY: as in `send`; `buf` is a valid out pointer.
        let status = unsafe { (api.connected_followers)(api.ctx, &mut buf) };
        // SAFETY: the host filled `buf` (or left it empty); we copy, then hand it back to the
        // host's own free function — the side that allocated frees.
        let bytes = unsafe { buf.to_vec() };
        // SAFETY: `buf` came from the host; freed once.
        unsafe { (api.free_buf)(buf) };
        if status != abi::STATUS_OK {
            return Vec::new();
        }
        String::from_utf8_lossy(&bytes)
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Log with `format!` arguments, skipping the formatting when the level is disabled:
/// `plugin_log!(host, Info, "got {} bytes", n)`.
#[macro_export]
macro_rules! plugin_log {
    ($host:expr, $level:ident, $($arg:tt)+) => {{
        let host: &$crate::Host = &$host;
        if host.log_enabled($crate::Level::$level) {
            host.log($crate::Level::$level, &::std::format!($($arg)+));
        }
    }};
}
