//! The C ABI: every type and constant that crosses the host ⇄ plugin boundary.
//!
//! Everything here is `#[repr(C)]`, made of fixed-width integers, raw pointers and
//! `extern "C"` function pointers. See [`crate::docs`] for the contract (ownership, threading,
//! versioning) that goes with these layouts.

use core::ffi::c_void;

/// First 8 bytes of [`PluginHeader`].
pub const MAGIC: [u8; 8] = *b"YNXPLUG\0";
/// Incompatible changes bump the major; host and plugin majors must be equal.
pub const ABI_MAJOR: u16 = 1;
/// Appended fields/functions, or new meanings for reserved fields and values, bump the minor;
/// older minors keep loading. 1.1 added [`PluginHeader::flags`], [`PANIC_NONE`] and
/// [`STATUS_GONE`] (see [`crate::docs`], "Versioning").
pub const ABI_MINOR: u16 = 1;
/// Name of the exported [`ExportedHeader`] static (NUL-terminated for `dlsym`).
pub const HEADER_SYMBOL: &[u8] = b"yonexus_plugin_header_v1\0";
/// The same name without the NUL, for messages.
pub const HEADER_SYMBOL_NAME: &str = "yonexus_plugin_header_v1";

/// Call outcome. A plain integer, never a Rust enum: a newer peer may return a code this side
/// does not know, which must be treated as [`STATUS_ERROR`].
pub type Status = u32;
/// Success.
pub const STATUS_OK: Status = 0;
/// Failure; a UTF-8 message may be in the error buffer.
pub const STATUS_ERROR: Status = 1;
/// The plugin panicked; the shim caught it and put the panic message in the error buffer.
pub const STATUS_PANIC: Status = 2;
/// `send_to`: the target follower is not connected.
pub const STATUS_OFFLINE: Status = 3;
/// `send_to`: the target's outbound queue is full (it is being disconnected as a slow consumer).
pub const STATUS_BUSY: Status = 4;
/// An argument was rejected (bad UTF-8, empty or reserved rule id, …).
pub const STATUS_INVALID: Status = 5;
/// (ABI 1.1) Any host callback: the plugin instance this [`HostApi`] was given to has been
/// destroyed (or replaced by a reload). Nothing was done. The handle stays safe to call — every
/// later call returns this status (or the callback's "nothing" value: `broadcast` 0, `now` 0,
/// `log_enabled` 0, `log` does nothing) — but it will never work again: stop the thread that
/// holds it. A 1.0 host never returns it.
pub const STATUS_GONE: Status = 6;

/// [`PluginHeader::panic_unwind`] of a Rust plugin built with `panic = "abort"`: one of its
/// panics would abort the host. Refused.
pub const PANIC_ABORT: u16 = 0;
/// [`PluginHeader::panic_unwind`] of a Rust plugin built with `panic = "unwind"`, whose shims
/// catch every panic ([`crate::export_plugin!`] does). Accepted.
pub const PANIC_UNWIND: u16 = 1;
/// (ABI 1.1) [`PluginHeader::panic_unwind`] of code that never unwinds across the boundary
/// (C; C++ that catches every exception inside its `extern "C"` functions; Zig; Go): failures
/// are returned as statuses. Accepted from plugins that declare ABI minor ≥ 1.
pub const PANIC_NONE: u16 = 2;

/// (ABI 1.1) Bit of [`PluginHeader::flags`] (promises a plugin makes so the host may run it
/// faster; each is optional, a host ignores bits it does not know, and reads `flags` only from
/// plugins that declare ABI minor ≥ 1 — in 1.0 the field was reserved).
///
/// Non-blocking: every call (`on_message`, `on_event`) returns within a few
/// microseconds to a millisecond and never blocks — no sleeping, no blocking I/O, no waiting on a
/// lock another thread holds for long, no waiting for another follower. The host may then call
/// the plugin directly on its async I/O threads instead of handing each message to the plugin's
/// worker thread (this host does so for `on_message` of plugins that are also
/// [`FLAG_THREAD_SAFE`], and only then; events always go to a worker). The host times such calls; one that overruns the host's budget makes the host
/// stop calling the instance directly (it is "demoted" to its worker thread, with a warning in
/// the log) until it is reloaded. `create` and `destroy` always run on a worker thread.
pub const FLAG_NON_BLOCKING: u32 = 1 << 0;
/// (ABI 1.1) Bit of [`PluginHeader::flags`]. Thread-safe: the instance may be called
/// concurrently from several threads (`on_message` and `on_event`, each with itself and with the
/// other). The host may then shard it over several worker threads by sender: one sender's
/// messages stay in order on one thread, different senders run in parallel. `create` and `destroy` are never concurrent with anything.
/// The Rust SDK sets it for [`crate::SharedPlugin`]s (`export_plugin!(shared T)`).
pub const FLAG_THREAD_SAFE: u32 = 1 << 1;
/// Every flag this ABI version defines.
pub const KNOWN_FLAGS: u32 = FLAG_NON_BLOCKING | FLAG_THREAD_SAFE;

/// Log levels for [`HostApi::log`].
pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;
pub const LOG_TRACE: u32 = 5;

/// Error codes a plugin may send with [`HostApi::send_error`]; the host maps them onto the wire
/// protocol's `error` codes. Unknown values become `HANDLER_FAILED`.
pub const ERR_HANDLER_FAILED: u32 = 1;
pub const ERR_TARGET_OFFLINE: u32 = 2;
pub const ERR_HANDLER_BUSY: u32 = 3;
pub const ERR_RULE_NOT_FOUND: u32 = 4;
pub const ERR_MALFORMED_MESSAGE: u32 = 5;

/// Lifecycle event kinds for [`PluginVTable::on_event`].
pub const EVENT_AUTHENTICATED: u32 = 1;
pub const EVENT_DISCONNECTED: u32 = 2;
pub const EVENT_LIVENESS_CHANGED: u32 = 3;

/// Borrowed UTF-8 bytes, valid only for the duration of the call that received them
/// (or `'static` inside the header). `ptr` may be null when `len == 0`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FfiStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl FfiStr {
    /// The empty string.
    pub const EMPTY: FfiStr = FfiStr {
        ptr: core::ptr::null(),
        len: 0,
    };

    /// Borrow a string (usable in `static` initialisers).
    pub const fn new(s: &str) -> FfiStr {
        FfiStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// View the bytes.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be readable for `'a` (or `ptr` null / `len` 0).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees the range is readable for 'a.
            unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    /// View as UTF-8, `None` when the bytes are not UTF-8.
    ///
    /// # Safety
    /// As for [`FfiStr::as_bytes`].
    pub unsafe fn as_str<'a>(self) -> Option<&'a str> {
        // SAFETY: forwarded to the caller.
        core::str::from_utf8(unsafe { self.as_bytes() }).ok()
    }
}

/// An owned byte buffer. It is freed only by the side that allocated it, through the `free_buf`
/// function that side exports ([`PluginVTable::free_buf`] or [`HostApi::free_buf`]).
/// `ptr` null means "no buffer".
#[repr(C)]
#[derive(Debug)]
pub struct FfiBuf {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl FfiBuf {
    /// No buffer.
    pub const fn empty() -> FfiBuf {
        FfiBuf {
            ptr: core::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    /// Hand a `Vec` across; must come back to this side's [`FfiBuf::free`].
    pub fn from_vec(v: Vec<u8>) -> FfiBuf {
        let mut v = core::mem::ManuallyDrop::new(v);
        FfiBuf {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// Release a buffer made by [`FfiBuf::from_vec`] *on this side of the boundary*.
    ///
    /// # Safety
    /// `self` must come from `FfiBuf::from_vec` in the same shared object (same allocator) and
    /// must not have been freed before.
    pub unsafe fn free(self) {
        if !self.ptr.is_null() {
            // SAFETY: the caller guarantees the parts come from a Vec of this allocator.
            drop(unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) });
        }
    }

    /// Copy the bytes out (does not free).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be readable (or `ptr` null).
    pub unsafe fn to_vec(&self) -> Vec<u8> {
        if self.ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: forwarded to the caller.
            unsafe { core::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
        }
    }
}

/// The static every plugin exports under [`HEADER_SYMBOL`]; read by the host *before any
/// plugin code runs*. Fields are only ever appended (minor bump); `header_size` tells the
/// reader how much exists.
#[repr(C)]
#[derive(Debug)]
pub struct PluginHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// `size_of::<PluginHeader>()` as the plugin was built.
    pub header_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    /// `size_of::<usize>()` in bytes.
    pub ptr_width: u16,
    /// [`PANIC_UNWIND`] (1) for Rust built with `panic = "unwind"`, [`PANIC_ABORT`] (0) for
    /// `panic = "abort"` (refused by the host), [`PANIC_NONE`] (2, ABI 1.1) for code that never
    /// unwinds (C and friends). The name predates the third value.
    pub panic_unwind: u16,
    /// (ABI 1.1; reserved and 0 in 1.0) `FLAG_*` bits: [`FLAG_NON_BLOCKING`],
    /// [`FLAG_THREAD_SAFE`]. Read only when `abi_minor` ≥ 1.
    pub flags: u32,
    /// Target triple the plugin was compiled for, e.g. `x86_64-unknown-linux-gnu`.
    pub target_triple: FfiStr,
    pub plugin_name: FfiStr,
    pub plugin_version: FfiStr,
    /// Version of the `yonexus-plugin-api` crate the plugin was built with (informational).
    pub plugin_api_version: FfiStr,
    /// `rustc -V` of the compiler that built the plugin, or any description of a C compiler
    /// (informational, never used to refuse).
    pub rustc_version: FfiStr,
    /// The plugin's function table (a static in the plugin).
    pub vtable: *const PluginVTable,
}

/// Wrapper that lets a [`PluginHeader`] (which holds raw pointers to static data) be a `static`.
#[repr(transparent)]
#[derive(Debug)]
pub struct ExportedHeader(pub PluginHeader);

// SAFETY: the header is immutable and every pointer in it refers to immutable 'static data.
unsafe impl Sync for ExportedHeader {}

/// `create`: build an instance from the JSON config. On success `*out_instance` is set; on
/// failure `*err` may receive a plugin-owned message (free with `free_buf`).
pub type CreateFn = unsafe extern "C" fn(
    host: *const HostApi,
    config_json: FfiStr,
    out_instance: *mut *mut c_void,
    err: *mut FfiBuf,
) -> Status;
/// `on_message`: handle one rule message (`rule`, `sender`, `content`).
pub type OnMessageFn = unsafe extern "C" fn(
    instance: *mut c_void,
    rule: FfiStr,
    sender: FfiStr,
    content: FfiStr,
    err: *mut FfiBuf,
) -> Status;
/// `on_event`: one follower lifecycle event. `status` is `online|unstable|offline` for
/// [`EVENT_LIVENESS_CHANGED`] and empty otherwise.
pub type OnEventFn = unsafe extern "C" fn(
    instance: *mut c_void,
    kind: u32,
    identifier: FfiStr,
    status: FfiStr,
    err: *mut FfiBuf,
) -> Status;
/// `destroy`: drop an instance. Never called concurrently with another call on it.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);
/// Free a buffer allocated by the side that exports this function.
pub type FreeBufFn = unsafe extern "C" fn(buf: FfiBuf);

/// The plugin's functions. Append-only; `struct_size` first so the host knows which exist.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginVTable {
    pub struct_size: u32,
    pub abi_minor: u16,
    pub _reserved: u16,
    pub create: CreateFn,
    pub on_message: OnMessageFn,
    pub destroy: DestroyFn,
    pub free_buf: FreeBufFn,
    /// Optional (null = plugin ignores lifecycle events). The host reads it only when
    /// `struct_size` covers it.
    pub on_event: Option<OnEventFn>,
}

/// Host callbacks. Append-only; `struct_size` first. All are synchronous, thread-safe, never
/// block on network I/O (the host only queues), and work from `create` until `destroy` returns.
/// (ABI 1.1 hosts) The table and `ctx` are never freed: a call after the instance was destroyed
/// is memory-safe and returns [`STATUS_GONE`] (see that constant for the other callbacks).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostApi {
    pub struct_size: u32,
    pub abi_minor: u16,
    pub _reserved: u16,
    /// Opaque; pass back to every callback.
    pub ctx: *const c_void,
    /// Queue `<rule>::<content>` for follower `target`. Returns [`STATUS_OK`],
    /// [`STATUS_OFFLINE`], [`STATUS_BUSY`] or [`STATUS_INVALID`] (bad UTF-8, empty or
    /// `builtin` rule).
    pub send_to: unsafe extern "C" fn(
        ctx: *const c_void,
        target: FfiStr,
        rule: FfiStr,
        content: FfiStr,
    ) -> Status,
    /// Queue an `error{code, message}` frame (`ERR_*` code) for follower `target`.
    pub send_error: unsafe extern "C" fn(
        ctx: *const c_void,
        target: FfiStr,
        code: u32,
        message: FfiStr,
    ) -> Status,
    /// Queue `<rule>::<content>` for every authenticated follower except `except` (empty = none).
    /// Returns how many followers it was queued for.
    pub broadcast: unsafe extern "C" fn(
        ctx: *const c_void,
        rule: FfiStr,
        content: FfiStr,
        except: FfiStr,
    ) -> u64,
    /// Emit one log record (`LOG_*` level) through the host's logger, tagged with the plugin name.
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u32, message: FfiStr),
    /// Whether a record at `level` would be recorded (skip formatting when 0).
    pub log_enabled: unsafe extern "C" fn(ctx: *const c_void, level: u32) -> u32,
    /// Current time, UTC unix seconds (the host's clock).
    pub now: unsafe extern "C" fn(ctx: *const c_void) -> i64,
    /// Identifiers of the authenticated followers, `\n`-separated UTF-8, written to `*out`
    /// (host-owned: release with [`HostApi::free_buf`]).
    pub connected_followers: unsafe extern "C" fn(ctx: *const c_void, out: *mut FfiBuf) -> Status,
    /// Free a buffer the host allocated.
    pub free_buf: FreeBufFn,
}

/// Bytes of the v1.0 header: every field up to and including `vtable` (1.1 only gave the
/// reserved `flags` word a meaning, so the size is unchanged).
pub const HEADER_V1_0_SIZE: usize = core::mem::size_of::<PluginHeader>();
/// Bytes of the v1.0 vtable up to and including `free_buf` (everything after is optional).
pub const VTABLE_V1_0_MIN_SIZE: usize =
    core::mem::offset_of!(PluginVTable, free_buf) + core::mem::size_of::<FreeBufFn>();
/// Bytes of the v1.0 host API.
pub const HOST_API_V1_0_SIZE: usize = core::mem::size_of::<HostApi>();

/// Whether a struct of `struct_size` bytes contains the field at `offset` of `size` bytes.
pub const fn has_field(struct_size: usize, offset: usize, size: usize) -> bool {
    offset + size <= struct_size
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_are_pinned_on_64_bit() {
        if size_of::<usize>() != 8 {
            return;
        }
        assert_eq!(size_of::<FfiStr>(), 16);
        assert_eq!(size_of::<FfiBuf>(), 24);
        assert_eq!(offset_of!(PluginHeader, header_size), 8);
        assert_eq!(offset_of!(PluginHeader, abi_major), 12);
        assert_eq!(offset_of!(PluginHeader, panic_unwind), 18);
        assert_eq!(offset_of!(PluginHeader, flags), 20);
        assert_eq!(offset_of!(PluginHeader, target_triple), 24);
        assert_eq!(offset_of!(PluginHeader, vtable), 104);
        assert_eq!(size_of::<PluginHeader>(), 112);
        assert_eq!(offset_of!(PluginVTable, create), 8);
        assert_eq!(offset_of!(PluginVTable, on_event), 40);
        assert_eq!(size_of::<PluginVTable>(), 48);
        assert_eq!(VTABLE_V1_0_MIN_SIZE, 40);
        assert_eq!(offset_of!(HostApi, ctx), 8);
        assert_eq!(size_of::<HostApi>(), 80);
    }

    #[test]
    fn buf_round_trip() {
        let b = FfiBuf::from_vec(b"hello".to_vec());
        // SAFETY: b was just made by from_vec on this side.
        unsafe {
            assert_eq!(b.to_vec(), b"hello");
            b.free();
        }
        // SAFETY: empty buffers are no-ops.
        unsafe { FfiBuf::empty().free() };
    }
}
