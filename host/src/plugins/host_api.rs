//! The host side of the ABI: the [`HostApi`] callbacks a plugin calls, backed by the real
//! [`Registry`] and clock. Callbacks only queue frames (the registry never blocks) and never let
//! a panic unwind into the plugin.

use crate::clock::SharedClock;
use crate::outbound::SendError;
use crate::registry::Registry;
use crate::reply;
use bytes::Bytes;
use core::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use yonexus_plugin_api::abi::{self, FfiBuf, FfiStr, HostApi, Status};
use yonexus_protocol::envelope::ErrorCode;

/// What the callbacks need; one per plugin instance, boxed so its address is stable, and freed
/// only after the instance's `destroy` has returned.
pub(crate) struct HostCtx {
    pub name: String,
    pub registry: Arc<Registry>,
    pub clock: SharedClock,
}

impl HostCtx {
    /// The API table pointing at `self`. `self` must outlive every use of it.
    pub fn api(&self) -> HostApi {
        HostApi {
            struct_size: core::mem::size_of::<HostApi>() as u32,
            abi_minor: abi::ABI_MINOR,
            _reserved: 0,
            ctx: (self as *const HostCtx).cast(),
            send_to,
            send_error,
            broadcast,
            log,
            log_enabled,
            now,
            connected_followers,
            free_buf,
        }
    }
}

fn ctx<'a>(p: *const c_void) -> &'a HostCtx {
    // SAFETY: every HostApi we hand out carries a pointer to a live boxed HostCtx, kept alive
    // by the worker until after `destroy` returns (ABI contract: valid until destroy).
    unsafe { &*p.cast::<HostCtx>() }
}

fn text<'a>(s: FfiStr) -> Option<&'a str> {
    // SAFETY: the plugin passes strings valid for the duration of the call.
    unsafe { s.as_str() }
}

/// A rule id a plugin may send under (the protocol's one rule).
fn valid_rule(rule: &str) -> bool {
    yonexus_protocol::validate::rule_id(rule).is_ok()
}

/// Queue `frame` for `target`: straight to the connection of the message being handled when
/// the target is its sender (no lookup by name), else through the registry.
fn deliver(ctx: &HostCtx, target: &str, frame: Bytes) -> Result<(), SendError> {
    super::worker::with_current_sender(|current| match current {
        Some(sender) if &*sender.id == target => sender.peer.send(frame),
        _ => ctx.registry.send_to(target, frame),
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
        send_status(deliver(ctx(c), target, reply::rule(rule, content)))
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
        let ctx = ctx(c);
        let frame = reply::error(error_code(code), message, ctx.clock.now(), None);
        send_status(deliver(ctx, target, frame))
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
        let frame = reply::rule(rule, content);
        let except = (!except.is_empty()).then_some(except);
        ctx(c).registry.broadcast(&frame, except) as u64
    })
}

/// Target of every plugin log record; filter with e.g. `RUST_LOG=yonexus::plugin=debug`.
pub const LOG_TARGET: &str = "yonexus::plugin";

unsafe extern "C" fn log(c: *const c_void, level: u32, message: FfiStr) {
    guarded((), || {
        let name = &ctx(c).name;
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
}

unsafe extern "C" fn log_enabled(_c: *const c_void, level: u32) -> u32 {
    guarded(1, || {
        let on = match level {
            abi::LOG_ERROR => tracing::enabled!(target: LOG_TARGET, tracing::Level::ERROR),
            abi::LOG_WARN => tracing::enabled!(target: LOG_TARGET, tracing::Level::WARN),
            abi::LOG_INFO => tracing::enabled!(target: LOG_TARGET, tracing::Level::INFO),
            abi::LOG_DEBUG => tracing::enabled!(target: LOG_TARGET, tracing::Level::DEBUG),
            _ => tracing::enabled!(target: LOG_TARGET, tracing::Level::TRACE),
        };
        u32::from(on)
    })
}

unsafe extern "C" fn now(c: *const c_void) -> i64 {
    guarded(0, || ctx(c).clock.now())
}

unsafe extern "C" fn connected_followers(c: *const c_void, out: *mut FfiBuf) -> Status {
    guarded(abi::STATUS_ERROR, || {
        if out.is_null() {
            return abi::STATUS_INVALID;
        }
        let ids: Vec<std::sync::Arc<str>> = ctx(c)
            .registry
            .connected()
            .into_iter()
            .filter(|id| !id.contains('\n'))
            .collect();
        let buf = FfiBuf::from_vec(ids.join("\n").into_bytes());
        // SAFETY: non-null, writable slot provided by the plugin (ABI contract).
        unsafe { out.write(buf) };
        abi::STATUS_OK
    })
}

unsafe extern "C" fn free_buf(buf: FfiBuf) {
    guarded((), || {
        // SAFETY: only buffers made by `connected_followers` (host allocator) come back here.
        unsafe { buf.free() }
    })
}
