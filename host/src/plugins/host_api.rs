//! The host side of the ABI: the [`HostApi`] callbacks a plugin calls, backed by the real
//! [`Registry`] and clock. Callbacks only queue frames (the registry never blocks) and never let
//! a panic unwind into the plugin.
//!
//! Late calls are memory-safe. A plugin may keep its `Host` handle (it is `Copy + Send + Sync`)
//! in a thread of its own and call it after its instance was destroyed or replaced by a reload.
//! So the [`HostApi`] table and the `ctx` it carries live in a [`Slot`] that is never freed
//! (leaked on purpose: one small allocation per instance ever created, bounded by the number of
//! loads and reloads). Dropping the [`HostCtx`] *clears* the slot's content (registry, clock);
//! a callback on a cleared slot does nothing and returns `STATUS_GONE` (or its "nothing" value)
//! without touching freed memory. The hot path is one uncontended `RwLock` read; clearing takes
//! the write lock, so it waits for callbacks already running and none starts on stale content.

use crate::clock::SharedClock;
use crate::outbound::SendError;
use crate::registry::Registry;
use crate::reply;
use crate::router::Sender;
use bytes::Bytes;
use core::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use yonexus_plugin_api::abi::{self, FfiBuf, FfiStr, HostApi, Status};
use yonexus_protocol::envelope::ErrorCode;

/// What the callbacks of a live instance reach.
struct Live {
    registry: Arc<Registry>,
    clock: SharedClock,
}

/// The never-freed part of one instance: the table handed to the plugin, and its `ctx`
/// (`api.ctx` points at the slot itself).
struct Slot {
    api: HostApi,
    /// The plugin's config name, for the one warning about late calls.
    name: Box<str>,
    live: RwLock<Option<Live>>,
    /// Set once the first late call was logged (a looping thread must not flood the log).
    late_call_logged: AtomicBool,
}

// SAFETY: `api` is immutable after construction (plain function pointers and a pointer to this
// never-freed slot); everything mutable is behind the RwLock or atomic.
unsafe impl Sync for Slot {}
// SAFETY: as above; nothing in the slot is tied to a thread.
unsafe impl Send for Slot {}

/// What the callbacks need; one per plugin instance. The host API it hands out
/// ([`HostCtx::api`]) stays valid forever; dropping the `HostCtx` — only after the instance's
/// `destroy` has returned (or its `create` failed) — turns every later callback into a no-op
/// that returns `STATUS_GONE`.
pub(crate) struct HostCtx {
    pub clock: SharedClock,
    slot: &'static Slot,
}

impl HostCtx {
    pub fn new(name: &str, registry: Arc<Registry>, clock: SharedClock) -> HostCtx {
        let slot = Box::into_raw(Box::new(Slot {
            api: HostApi {
                struct_size: core::mem::size_of::<HostApi>() as u32,
                abi_minor: abi::ABI_MINOR,
                _reserved: 0,
                ctx: core::ptr::null(),
                send_to,
                send_error,
                broadcast,
                log,
                log_enabled,
                now,
                connected_followers,
                free_buf,
            },
            name: name.into(),
            live: RwLock::new(Some(Live {
                registry: Arc::clone(&registry),
                clock: Arc::clone(&clock),
            })),
            late_call_logged: AtomicBool::new(false),
        }));
        // SAFETY: `slot` is a fresh, valid, unaliased allocation; we point its ctx at itself
        // before any shared reference to it exists.
        unsafe { (*slot).api.ctx = slot.cast_const().cast() };
        HostCtx {
            clock,
            // SAFETY: leaked on purpose (never freed), so 'static; only read from now on
            // (interior mutability through the RwLock and the AtomicBool).
            slot: unsafe { &*slot },
        }
    }

    /// The API table to pass to `create`: valid for the life of the process.
    pub fn api(&self) -> *const HostApi {
        &self.slot.api
    }
}

impl Drop for HostCtx {
    fn drop(&mut self) {
        // Waits for callbacks in flight; every later one sees `None`.
        *self.slot.live.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Run `f` on the live content of the slot `p`, or return `gone` when the instance is gone.
fn with_live<T>(p: *const c_void, gone: T, f: impl FnOnce(&Live, &str) -> T) -> T {
    if p.is_null() {
        return gone;
    }
    // SAFETY: every HostApi we hand out carries a pointer to a leaked Slot, never freed; a
    // plugin that passes another pointer breaks the ABI contract (nothing can defend that).
    let slot = unsafe { &*p.cast::<Slot>() };
    let live = slot.live.read().unwrap_or_else(|p| p.into_inner());
    match live.as_ref() {
        Some(l) => f(l, &slot.name),
        None => {
            drop(live);
            if !slot.late_call_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    plugin = %slot.name,
                    "a plugin called the host after its instance was destroyed or replaced (a thread kept its Host handle); refused with STATUS_GONE (logged once per instance)"
                );
            }
            gone
        }
    }
}

fn text<'a>(s: FfiStr) -> Option<&'a str> {
    // SAFETY: the plugin passes strings valid for the duration of the call.
    unsafe { s.as_str() }
}

/// A rule id a plugin may send under (the protocol's one rule).
fn valid_rule(rule: &str) -> bool {
    yonexus_protocol::validate::rule_id(rule).is_ok()
}

thread_local! {
    /// The sender of the message being handled on this thread, so a reply to it goes straight
    /// to its connection instead of being looked up by name.
    static CURRENT_SENDER: std::cell::RefCell<Option<Sender>> = const { std::cell::RefCell::new(None) };
}

/// Set (before a call) or clear (after it) the sender of the message this thread handles.
pub(crate) fn set_current_sender(sender: Option<Sender>) {
    CURRENT_SENDER.with(|c| *c.borrow_mut() = sender);
}

/// Queue `frame` for `target`: straight to the connection of the message being handled when
/// the target is its sender (no lookup by name), else through the registry.
fn deliver(live: &Live, target: &str, frame: Bytes) -> Result<(), SendError> {
    CURRENT_SENDER.with(|c| match c.borrow().as_ref() {
        Some(sender) if &*sender.id == target => sender.peer.send(frame),
        _ => live.registry.send_to(target, frame),
    })
}

fn send_status(r: Result<(), SendError>) -> Status {
    match r {
        Ok(()) => abi::STATUS_OK,
        Err(SendError::Offline) => abi::STATUS_OFFLINE,
        Err(SendError::QueueFull) => abi::STATUS_BUSY,
    }
}

fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

unsafe extern "C" fn send_to(
    c: *const c_void,
    target: FfiStr,
    rule: FfiStr,
    content: FfiStr,
) -> Status {
    guarded(abi::STATUS_ERROR, || {
        let (Some(target), Some(rule), Some(content)) = (text(target), text(rule), text(content))
        else {
            return abi::STATUS_INVALID;
        };
        if !valid_rule(rule) {
            return abi::STATUS_INVALID;
        }
        with_live(c, abi::STATUS_GONE, |live, _| {
            send_status(deliver(live, target, reply::rule(rule, content)))
        })
    })
}

fn error_code(code: u32) -> ErrorCode {
    match code {
        abi::ERR_TARGET_OFFLINE => ErrorCode::TargetOffline,
        abi::ERR_HANDLER_BUSY => ErrorCode::HandlerBusy,
        abi::ERR_RULE_NOT_FOUND => ErrorCode::RuleNotFound,
        abi::ERR_MALFORMED_MESSAGE => ErrorCode::MalformedMessage,
        _ => ErrorCode::HandlerFailed,
    }
}

unsafe extern "C" fn send_error(
    c: *const c_void,
    target: FfiStr,
    code: u32,
    message: FfiStr,
) -> Status {
    guarded(abi::STATUS_ERROR, || {
        let (Some(target), Some(message)) = (text(target), text(message)) else {
            return abi::STATUS_INVALID;
        };
        with_live(c, abi::STATUS_GONE, |live, _| {
            let frame = reply::error(error_code(code), message, live.clock.now(), None);
            send_status(deliver(live, target, frame))
        })
    })
}

unsafe extern "C" fn broadcast(
    c: *const c_void,
    rule: FfiStr,
    content: FfiStr,
    except: FfiStr,
) -> u64 {
    guarded(0, || {
        let (Some(rule), Some(content), Some(except)) = (text(rule), text(content), text(except))
        else {
            return 0;
        };
        if !valid_rule(rule) {
            return 0;
        }
        let except = (!except.is_empty()).then_some(except);
        with_live(c, 0, |live, _| {
            live.registry.broadcast(&reply::rule(rule, content), except) as u64
        })
    })
}

/// Target of every plugin log record; filter with e.g. `RUST_LOG=yonexus::plugin=debug`.
pub const LOG_TARGET: &str = "yonexus::plugin";

unsafe extern "C" fn log(c: *const c_void, level: u32, message: FfiStr) {
    guarded((), || {
        with_live(c, (), |_, name| {
            // SAFETY: valid for the call (plugin contract); lossy so bad UTF-8 still logs.
            let msg = String::from_utf8_lossy(unsafe { message.as_bytes() });
            match level {
                abi::LOG_ERROR => tracing::error!(target: LOG_TARGET, plugin = %name, "{msg}"),
                abi::LOG_WARN => tracing::warn!(target: LOG_TARGET, plugin = %name, "{msg}"),
                abi::LOG_INFO => tracing::info!(target: LOG_TARGET, plugin = %name, "{msg}"),
                abi::LOG_DEBUG => tracing::debug!(target: LOG_TARGET, plugin = %name, "{msg}"),
                _ => tracing::trace!(target: LOG_TARGET, plugin = %name, "{msg}"),
            }
        })
    })
}

unsafe extern "C" fn log_enabled(c: *const c_void, level: u32) -> u32 {
    guarded(1, || {
        with_live(c, 0, |_, _| {
            let on = match level {
                abi::LOG_ERROR => tracing::enabled!(target: LOG_TARGET, tracing::Level::ERROR),
                abi::LOG_WARN => tracing::enabled!(target: LOG_TARGET, tracing::Level::WARN),
                abi::LOG_INFO => tracing::enabled!(target: LOG_TARGET, tracing::Level::INFO),
                abi::LOG_DEBUG => tracing::enabled!(target: LOG_TARGET, tracing::Level::DEBUG),
                _ => tracing::enabled!(target: LOG_TARGET, tracing::Level::TRACE),
            };
            u32::from(on)
        })
    })
}

unsafe extern "C" fn now(c: *const c_void) -> i64 {
    guarded(0, || with_live(c, 0, |live, _| live.clock.now()))
}

unsafe extern "C" fn connected_followers(c: *const c_void, out: *mut FfiBuf) -> Status {
    guarded(abi::STATUS_ERROR, || {
        if out.is_null() {
            return abi::STATUS_INVALID;
        }
        let listed = with_live(c, None, |live, _| {
            let ids: Vec<Arc<str>> = live
                .registry
                .connected()
                .into_iter()
                .filter(|id| !id.contains('\n'))
                .collect();
            Some(ids.join("\n"))
        });
        let (buf, status) = match listed {
            Some(text) => (FfiBuf::from_vec(text.into_bytes()), abi::STATUS_OK),
            None => (FfiBuf::empty(), abi::STATUS_GONE),
        };
        // SAFETY: non-null, writable slot provided by the plugin (ABI contract).
        unsafe { out.write(buf) };
        status
    })
}

unsafe extern "C" fn free_buf(buf: FfiBuf) {
    guarded((), || {
        // SAFETY: only buffers made by `connected_followers` (host allocator) come back here.
        unsafe { buf.free() }
    })
}
