//! [`export_plugin!`](crate::export_plugin) and the generic `extern "C"` shims it instantiates.
//! Every shim runs the author's code inside `catch_unwind`: a panic becomes [`STATUS_PANIC`]
//! with the panic message, never an unwind across the C boundary (which would abort the host).
//!
//! The shims are generic over an [`Adapter`]: [`Exclusive<T>`] for a [`Plugin`] (called through
//! `&mut`, so the host must serialize calls — the header does not set [`FLAG_THREAD_SAFE`]) and
//! [`Shared<T>`] for a [`SharedPlugin`] (called through `&`, `T: Sync`, and the header sets
//! [`FLAG_THREAD_SAFE`]). The flag and the reference kind come from the same impl, so they
//! cannot disagree.

use crate::abi::*;
use crate::sdk::{Config, Event, Host, Liveness, Message, Plugin, SharedPlugin};
use core::ffi::c_void;
use core::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Generate the exported header and every C shim for a plugin type. Use once per library:
///
/// ```ignore
/// yonexus_plugin_api::export_plugin!(MyPlugin);          // a `Plugin`: calls serialized
/// yonexus_plugin_api::export_plugin!(shared MyShared);   // a `SharedPlugin`: thread-safe
/// ```
///
/// The header records `cfg!(panic = "unwind")` *as compiled in the plugin crate*, so a
/// `panic = "abort"` build is refused by the host before any plugin code runs, and the flags
/// declared by the type ([`Plugin::NON_BLOCKING`], thread safety for `shared`).
#[macro_export]
macro_rules! export_plugin {
    (@adapter $adapter:ty) => {
        static __YONEXUS_PLUGIN_VTABLE: $crate::abi::PluginVTable =
            $crate::__private::vtable::<$adapter>();

        /// Read by the Yonexus host before any plugin code runs.
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static yonexus_plugin_header_v1: $crate::abi::ExportedHeader =
            $crate::__private::header::<$adapter>(
                ::core::env!("CARGO_PKG_VERSION"),
                &__YONEXUS_PLUGIN_VTABLE,
                ::core::cfg!(panic = "unwind"),
            );
    };
    (shared $plugin:ty) => {
        $crate::export_plugin!(@adapter $crate::__private::Shared<$plugin>);
    };
    ($plugin:ty) => {
        $crate::export_plugin!(@adapter $crate::__private::Exclusive<$plugin>);
    };
}

/// How the shims reach a plugin type. Not a stable API.
///
/// # Safety
/// `FLAGS` must contain [`FLAG_THREAD_SAFE`] only when `on_message` / `on_event` are sound to
/// call concurrently on one instance (they must then only ever take `&Inner`, with `Inner: Sync`).
pub unsafe trait Adapter: 'static {
    /// The instance's type.
    type Inner: Send + 'static;
    const NAME: &'static str;
    const HANDLES_EVENTS: bool;
    /// `FLAG_*` bits for the header.
    const FLAGS: u32;
    fn create(config: &Config, host: &Host) -> Result<Self::Inner, String>;
    /// # Safety
    /// `p` points to a live instance made by `create`; unless `FLAGS` has
    /// [`FLAG_THREAD_SAFE`], no other call on it runs concurrently.
    unsafe fn on_message(p: *mut Self::Inner, host: &Host, msg: &Message<'_>)
        -> Result<(), String>;
    /// # Safety
    /// As for [`Adapter::on_message`].
    unsafe fn on_event(p: *mut Self::Inner, host: &Host, event: &Event<'_>) -> Result<(), String>;
}

/// A [`Plugin`] behind the ABI: calls serialized by the host.
pub struct Exclusive<T>(PhantomData<fn() -> T>);

// SAFETY: never sets FLAG_THREAD_SAFE; the host serializes calls, so `&mut` is exclusive.
unsafe impl<T: Plugin> Adapter for Exclusive<T> {
    type Inner = T;
    const NAME: &'static str = T::NAME;
    const HANDLES_EVENTS: bool = T::HANDLES_EVENTS;
    const FLAGS: u32 = if T::NON_BLOCKING {
        FLAG_NON_BLOCKING
    } else {
        0
    };
    fn create(config: &Config, host: &Host) -> Result<T, String> {
        T::create(config, host)
    }
    unsafe fn on_message(p: *mut T, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        // SAFETY: live instance, and no concurrent call (the header does not claim thread
        // safety, so the host serializes calls).
        unsafe { &mut *p }.on_message(host, msg)
    }
    unsafe fn on_event(p: *mut T, host: &Host, event: &Event<'_>) -> Result<(), String> {
        // SAFETY: as in `on_message`.
        unsafe { &mut *p }.on_event(host, event)
    }
}

/// A [`SharedPlugin`] behind the ABI: may be called concurrently.
pub struct Shared<T>(PhantomData<fn() -> T>);

// SAFETY: sets FLAG_THREAD_SAFE and only ever creates `&T`, with `T: Sync`.
unsafe impl<T: SharedPlugin> Adapter for Shared<T> {
    type Inner = T;
    const NAME: &'static str = T::NAME;
    const HANDLES_EVENTS: bool = T::HANDLES_EVENTS;
    const FLAGS: u32 = FLAG_THREAD_SAFE
        | if T::NON_BLOCKING {
            FLAG_NON_BLOCKING
        } else {
            0
        };
    fn create(config: &Config, host: &Host) -> Result<T, String> {
        T::create(config, host)
    }
    unsafe fn on_message(p: *mut T, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        // SAFETY: live instance; shared references may coexist and T is Sync.
        unsafe { &*p }.on_message(host, msg)
    }
    unsafe fn on_event(p: *mut T, host: &Host, event: &Event<'_>) -> Result<(), String> {
        // SAFETY: as in `on_message`.
        unsafe { &*p }.on_event(host, event)
    }
}

/// The per-instance state behind the opaque instance pointer. Only ever accessed through raw
/// pointers to its fields (never a `&mut Instance`), so concurrent calls on a shared plugin
/// never create overlapping unique references.
struct Instance<T> {
    plugin: T,
    host: Host,
}

/// Text of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked (non-string payload)".to_owned()
    }
}

std::thread_local! {
    /// Whether this thread is inside a shim (a panic is caught and reported to the host).
    static IN_SHIM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last panic caught in a shim on this thread happened.
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Once per library: a panic hook that, inside a shim, only notes where the panic happened
/// (the shim reports it with its message through the host, into the host's log and its
/// format) instead of printing the default lines to stderr, which broke a host logging JSON.
/// Panics elsewhere (threads the plugin started, `Drop` in `destroy`) go to the hook that was
/// there before.
fn quiet_panics_in_shims() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_SHIM.with(std::cell::Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Run `f`, mapping `Err((status, message))` and panics to a status plus a message in `*err`.
fn guard(err: *mut FfiBuf, f: impl FnOnce() -> Result<(), (Status, String)>) -> Status {
    quiet_panics_in_shims();
    let outer = IN_SHIM.with(|s| s.replace(true));
    let caught = catch_unwind(AssertUnwindSafe(f));
    IN_SHIM.with(|s| s.set(outer));
    let (status, message) = match caught {
        Ok(Ok(())) => return STATUS_OK,
        Ok(Err(e)) => e,
        Err(payload) => {
            let mut message = panic_message(&*payload);
            if let Some(at) = PANIC_AT.with(|p| p.borrow_mut().take()) {
                message.push_str(&format!(" (at {at})"));
            }
            (STATUS_PANIC, message)
        }
    };
    if !err.is_null() {
        // SAFETY: the host passes a valid, writable FfiBuf slot (or null, checked above).
        unsafe { err.write(FfiBuf::from_vec(message.into_bytes())) };
    }
    status
}

fn text<'a>(s: FfiStr, what: &str) -> Result<&'a str, (Status, String)> {
    // SAFETY: the host passes strings valid for the duration of the call.
    unsafe { s.as_str() }.ok_or_else(|| (STATUS_INVALID, format!("{what} is not UTF-8")))
}

/// The instance's plugin and a copy of its host handle.
///
/// # Safety
/// `instance` must be non-null and come from `create::<A>`, not yet destroyed.
unsafe fn parts<A: Adapter>(instance: *mut c_void) -> (*mut A::Inner, Host) {
    let inst = instance.cast::<Instance<A::Inner>>();
    // SAFETY: live instance per the caller; field projections through the raw pointer create
    // no reference to the whole struct; `host` is Copy and never written after create.
    unsafe { (&raw mut (*inst).plugin, (*inst).host) }
}

/// # Safety
/// Called by the host per the ABI contract (`crate::docs`).
pub unsafe extern "C" fn create<A: Adapter>(
    host: *const HostApi,
    config_json: FfiStr,
    out_instance: *mut *mut c_void,
    err: *mut FfiBuf,
) -> Status {
    guard(err, || {
        if host.is_null() || out_instance.is_null() {
            return Err((STATUS_INVALID, "null host or out pointer".into()));
        }
        // SAFETY: non-null and provided by the host; `struct_size` is the first field of every
        // HostApi version.
        let size = unsafe { (*host).struct_size } as usize;
        if size < HOST_API_V1_0_SIZE {
            return Err((
                STATUS_INVALID,
                format!(
                    "host API struct is {size} bytes, plugin needs at least {HOST_API_V1_0_SIZE}"
                ),
            ));
        }
        // SAFETY: checked above that every v1.0 field exists; the host keeps it alive until
        // destroy returns (1.1 hosts: forever).
        let host = unsafe { Host::from_raw(host) };
        let config = Config::from_json(text(config_json, "config")?)
            .map_err(|e| (STATUS_ERROR, format!("config: {e}")))?;
        let plugin = A::create(&config, &host).map_err(|e| (STATUS_ERROR, e))?;
        let boxed = Box::into_raw(Box::new(Instance { plugin, host }));
        // SAFETY: out_instance is non-null and writable (host contract).
        unsafe { out_instance.write(boxed.cast()) };
        Ok(())
    })
}

/// # Safety
/// `instance` must come from `create::<A>` and not be destroyed; calls are serialized unless
/// `A::FLAGS` has [`FLAG_THREAD_SAFE`].
pub unsafe extern "C" fn on_message<A: Adapter>(
    instance: *mut c_void,
    rule: FfiStr,
    sender: FfiStr,
    content: FfiStr,
    err: *mut FfiBuf,
) -> Status {
    guard(err, || {
        if instance.is_null() {
            return Err((STATUS_INVALID, "null instance".into()));
        }
        let msg = Message {
            rule: text(rule, "rule")?,
            sender: text(sender, "sender")?,
            content: text(content, "content")?,
        };
        // SAFETY: made by `create::<A>`, live (host contract).
        let (plugin, host) = unsafe { parts::<A>(instance) };
        // SAFETY: the host honours the header's flags (serialized unless thread-safe).
        unsafe { A::on_message(plugin, &host, &msg) }.map_err(|e| (STATUS_ERROR, e))
    })
}

/// # Safety
/// As for [`on_message`].
pub unsafe extern "C" fn on_event<A: Adapter>(
    instance: *mut c_void,
    kind: u32,
    identifier: FfiStr,
    status: FfiStr,
    err: *mut FfiBuf,
) -> Status {
    guard(err, || {
        if instance.is_null() {
            return Err((STATUS_INVALID, "null instance".into()));
        }
        let identifier = text(identifier, "identifier")?;
        let event = match kind {
            EVENT_AUTHENTICATED => Event::Authenticated { identifier },
            EVENT_DISCONNECTED => Event::Disconnected { identifier },
            EVENT_LIVENESS_CHANGED => {
                let s = text(status, "status")?;
                let status = Liveness::parse(s)
                    .ok_or_else(|| (STATUS_INVALID, format!("unknown liveness '{s}'")))?;
                Event::LivenessChanged { identifier, status }
            }
            // A newer host may send kinds this plugin does not know: ignore them.
            _ => return Ok(()),
        };
        // SAFETY: as in `on_message`.
        let (plugin, host) = unsafe { parts::<A>(instance) };
        // SAFETY: as in `on_message`.
        unsafe { A::on_event(plugin, &host, &event) }.map_err(|e| (STATUS_ERROR, e))
    })
}

/// # Safety
/// `instance` must come from `create::<A>`; no call may be running or follow.
pub unsafe extern "C" fn destroy<A: Adapter>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panic in Drop is swallowed: there is nobody to report it to, and it must not unwind
    // into the host.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by Box::into_raw in `create::<A>`, destroyed once.
        drop(unsafe { Box::from_raw(instance.cast::<Instance<A::Inner>>()) });
    }));
}

/// Frees buffers this plugin allocated (error messages).
///
/// # Safety
/// `buf` must come from this plugin (`FfiBuf::from_vec` on the plugin side), freed once.
pub unsafe extern "C" fn free_buf(buf: FfiBuf) {
    // SAFETY: forwarded to the caller.
    unsafe { buf.free() }
}

/// The function table for the adapter `A` (`Exclusive<MyPlugin>` or `Shared<MyPlugin>`).
pub const fn vtable<A: Adapter>() -> PluginVTable {
    PluginVTable {
        struct_size: core::mem::size_of::<PluginVTable>() as u32,
        abi_minor: ABI_MINOR,
        _reserved: 0,
        create: create::<A>,
        on_message: on_message::<A>,
        destroy: destroy::<A>,
        free_buf,
        on_event: if A::HANDLES_EVENTS {
            Some(on_event::<A>)
        } else {
            None
        },
    }
}

/// The exported header for the adapter `A`: its name and flags, this crate's ABI version.
pub const fn header<A: Adapter>(
    version: &'static str,
    vtable: &'static PluginVTable,
    panic_unwind: bool,
) -> ExportedHeader {
    ExportedHeader(PluginHeader {
        magic: MAGIC,
        header_size: core::mem::size_of::<PluginHeader>() as u32,
        abi_major: ABI_MAJOR,
        abi_minor: ABI_MINOR,
        ptr_width: core::mem::size_of::<usize>() as u16,
        panic_unwind: if panic_unwind {
            PANIC_UNWIND
        } else {
            PANIC_ABORT
        },
        flags: A::FLAGS,
        target_triple: FfiStr::new(crate::TARGET),
        plugin_name: FfiStr::new(A::NAME),
        plugin_version: FfiStr::new(version),
        plugin_api_version: FfiStr::new(crate::VERSION),
        rustc_version: FfiStr::new(crate::RUSTC_VERSION),
        vtable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Sent, TestHost};

    struct P;
    impl Plugin for P {
        const NAME: &'static str = "p";
        fn create(config: &Config, _host: &Host) -> Result<Self, String> {
            if config.get("fail").is_some() {
                return Err("told to fail".into());
            }
            Ok(P)
        }
        fn on_message(&mut self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
            match msg.content {
                "panic" => panic!("boom"),
                "err" => Err("nope".into()),
                c => host.reply(msg, c).map_err(|e| e.to_string()),
            }
        }
    }

    fn take(buf: FfiBuf) -> String {
        // SAFETY: made by this crate's from_vec.
        let s = String::from_utf8(unsafe { buf.to_vec() }).unwrap();
        // SAFETY: freed once.
        unsafe { free_buf(buf) };
        s
    }

    #[test]
    fn shims_map_results_and_panics_to_statuses() {
        let th = TestHost::new();
        th.connect("alice");
        let vt = vtable::<Exclusive<P>>();
        let mut inst = core::ptr::null_mut();
        let mut err = FfiBuf::empty();
        // SAFETY: valid host API, out pointers and strings.
        unsafe {
            let st = (vt.create)(th.api(), FfiStr::new("{\"fail\":1}"), &mut inst, &mut err);
            assert_eq!(st, STATUS_ERROR);
            assert_eq!(
                take(std::mem::replace(&mut err, FfiBuf::empty())),
                "told to fail"
            );
            let st = (vt.create)(th.api(), FfiStr::new("{"), &mut inst, &mut err);
            assert_eq!(st, STATUS_ERROR);
            assert!(take(std::mem::replace(&mut err, FfiBuf::empty())).starts_with("config:"));
            let st = (vt.create)(th.api(), FfiStr::new("{}"), &mut inst, &mut err);
            assert_eq!(st, STATUS_OK);
            let call = |content: &str, err: &mut FfiBuf| {
                (vt.on_message)(
                    inst,
                    FfiStr::new("r"),
                    FfiStr::new("alice"),
                    FfiStr::new(content),
                    err,
                )
            };
            assert_eq!(call("hi", &mut err), STATUS_OK);
            assert_eq!(th.take_sent(), vec![Sent::message("alice", "r", "hi")]);
            assert_eq!(call("err", &mut err), STATUS_ERROR);
            assert_eq!(take(std::mem::replace(&mut err, FfiBuf::empty())), "nope");
            assert_eq!(call("panic", &mut err), STATUS_PANIC);
            let message = take(std::mem::replace(&mut err, FfiBuf::empty()));
            assert!(
                message.starts_with("panicked: boom (at plugin-api/src/export.rs:"),
                "{message}"
            );
            // Still serving after the panic.
            assert_eq!(call("again", &mut err), STATUS_OK);
            let ev = vt.on_event.unwrap();
            assert_eq!(
                ev(inst, 99, FfiStr::new("x"), FfiStr::EMPTY, &mut err),
                STATUS_OK
            );
            (vt.destroy)(inst);
        }
    }

    crate::export_plugin!(P);

    #[test]
    fn header_describes_this_build() {
        let h = &yonexus_plugin_header_v1.0;
        assert_eq!(h.magic, MAGIC);
        assert_eq!(h.abi_major, ABI_MAJOR);
        assert_eq!(h.abi_minor, 1);
        assert_eq!(h.panic_unwind, PANIC_UNWIND);
        assert_eq!(h.flags, 0, "a plain Plugin promises nothing");
        // SAFETY: static strings.
        unsafe {
            assert_eq!(h.plugin_name.as_str(), Some("p"));
            assert_eq!(h.target_triple.as_str(), Some(crate::TARGET));
        }
        assert!(!h.vtable.is_null());
    }

    struct Quick;
    impl Plugin for Quick {
        const NAME: &'static str = "quick";
        const NON_BLOCKING: bool = true;
        const HANDLES_EVENTS: bool = false;
        fn create(_: &Config, _: &Host) -> Result<Self, String> {
            Ok(Quick)
        }
        fn on_message(&mut self, _: &Host, _: &Message<'_>) -> Result<(), String> {
            Ok(())
        }
    }

    /// Counts messages per sender from many threads at once; records whether two calls ever
    /// overlapped (they must be allowed to).
    #[derive(Default)]
    struct Counter {
        per_sender: std::sync::Mutex<std::collections::HashMap<String, u64>>,
        inside: std::sync::atomic::AtomicUsize,
        max_inside: std::sync::atomic::AtomicUsize,
    }
    impl SharedPlugin for Counter {
        const NAME: &'static str = "counter";
        const NON_BLOCKING: bool = true;
        fn create(_: &Config, _: &Host) -> Result<Self, String> {
            Ok(Counter::default())
        }
        fn on_message(&self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.inside.fetch_add(1, SeqCst) + 1;
            self.max_inside.fetch_max(now, SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(1));
            if msg.content == "panic" {
                self.inside.fetch_sub(1, SeqCst);
                panic!("shared boom");
            }
            let n = {
                let mut m = self.per_sender.lock().unwrap();
                let n = m.entry(msg.sender.to_owned()).or_default();
                *n += 1;
                *n
            };
            self.inside.fetch_sub(1, SeqCst);
            host.reply(msg, &n.to_string()).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn flags_follow_the_trait_and_its_constants() {
        assert_eq!(<Exclusive<P> as Adapter>::FLAGS, 0);
        assert_eq!(<Exclusive<Quick> as Adapter>::FLAGS, FLAG_NON_BLOCKING);
        assert_eq!(
            <Shared<Counter> as Adapter>::FLAGS,
            FLAG_THREAD_SAFE | FLAG_NON_BLOCKING
        );
        let h = header::<Shared<Counter>>("9.9.9", &SHARED_VT, true).0;
        assert_eq!(h.flags, FLAG_THREAD_SAFE | FLAG_NON_BLOCKING);
        // SAFETY: static strings.
        unsafe {
            assert_eq!(h.plugin_name.as_str(), Some("counter"));
            assert_eq!(h.plugin_version.as_str(), Some("9.9.9"));
        }
        assert_eq!(
            header::<Exclusive<P>>("1", &SHARED_VT, false)
                .0
                .panic_unwind,
            PANIC_ABORT
        );
        assert!(vtable::<Exclusive<Quick>>().on_event.is_none());
    }

    static SHARED_VT: PluginVTable = vtable::<Shared<Counter>>();

    fn inst_plugin_max_inside(inst: &*mut c_void) -> usize {
        // SAFETY: a live Shared<Counter> instance; only a shared reference is made.
        let (plugin, _) = unsafe { parts::<Shared<Counter>>(*inst) };
        // SAFETY: as above.
        unsafe { &*plugin }
            .max_inside
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_shared_plugin_is_called_concurrently_through_the_shims() {
        let th = TestHost::new();
        let senders: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
        for s in &senders {
            th.connect(s);
        }
        let mut inst = core::ptr::null_mut();
        let mut err = FfiBuf::empty();
        // SAFETY: valid host API and out pointers.
        let st = unsafe { (SHARED_VT.create)(th.api(), FfiStr::new("{}"), &mut inst, &mut err) };
        assert_eq!(st, STATUS_OK);
        struct SendPtr(*mut c_void);
        // SAFETY: the instance is a Shared<Counter> (Sync); the threads end before destroy.
        unsafe impl Sync for SendPtr {}
        let inst = SendPtr(inst);
        std::thread::scope(|scope| {
            for s in &senders {
                let inst = &inst;
                scope.spawn(move || {
                    for _ in 0..20 {
                        let mut err = FfiBuf::empty();
                        // SAFETY: live instance; concurrent calls allowed (thread-safe flag).
                        let st = unsafe {
                            (SHARED_VT.on_message)(
                                inst.0,
                                FfiStr::new("r"),
                                FfiStr::new(s),
                                FfiStr::new("x"),
                                &mut err,
                            )
                        };
                        assert_eq!(st, STATUS_OK);
                    }
                });
            }
        });
        let mut err = FfiBuf::empty();
        // SAFETY: as above; a panic is caught and reported.
        let st = unsafe {
            (SHARED_VT.on_message)(
                inst.0,
                FfiStr::new("r"),
                FfiStr::new("s0"),
                FfiStr::new("panic"),
                &mut err,
            )
        };
        assert_eq!(st, STATUS_PANIC);
        let message = take(err);
        assert!(
            message.starts_with("panicked: shared boom (at plugin-api/src/export.rs:"),
            "{message}"
        );
        let overlap = inst_plugin_max_inside(&inst.0);
        assert!(
            overlap >= 2,
            "calls never overlapped (max {overlap} at once)"
        );
        let sent = th.take_sent();
        assert_eq!(sent.len(), 80);
        for s in &senders {
            // Each sender's own counter saw 1..=20, in its order.
            let mine: Vec<String> = sent
                .iter()
                .filter_map(|x| match x {
                    Sent::Message {
                        target, content, ..
                    } if target == s => Some(content.clone()),
                    _ => None,
                })
                .collect();
            let want: Vec<String> = (1..=20).map(|n: u32| n.to_string()).collect();
            assert_eq!(mine, want, "{s}");
        }
        // SAFETY: no call running; destroyed once.
        unsafe { (SHARED_VT.destroy)(inst.0) };
    }

    #[test]
    fn send_after_retire_is_gone() {
        let th = TestHost::new();
        th.connect("alice");
        let host = th.host();
        assert_eq!(host.send("alice", "r", "x"), Ok(()));
        th.retire();
        assert_eq!(host.send("alice", "r", "x"), Err(crate::SendError::Gone));
        assert_eq!(host.broadcast("r", "x", None), 0);
        assert!(host.connected().is_empty());
        assert_eq!(host.now(), 0);
        assert!(!host.log_enabled(crate::Level::Error));
        host.info("dropped");
        assert!(th.logs().is_empty());
        assert_eq!(th.take_sent(), vec![Sent::message("alice", "r", "x")]);
    }
}
