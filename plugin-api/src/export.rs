//! [`export_plugin!`](crate::export_plugin) and the generic `extern "C"` shims it instantiates.
//! Every shim runs the author's code inside `catch_unwind`: a panic becomes [`STATUS_PANIC`]
//! with the panic message, never an unwind across the C boundary (which would abort the host).

use crate::abi::*;
use crate::sdk::{Config, Event, Host, Liveness, Message, Plugin};
use core::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Generate the exported header and every C shim for a [`Plugin`] type. Use once per library:
///
/// ```ignore
/// yonexus_plugin_api::export_plugin!(MyPlugin);
/// ```
///
/// The header records `cfg!(panic = "unwind")` *as compiled in the plugin crate*, so a
/// `panic = "abort"` build is refused by the host before any plugin code runs.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        static __YONEXUS_PLUGIN_VTABLE: $crate::abi::PluginVTable =
            $crate::__private::vtable::<$plugin>();

        /// Read by the Yonexus host before any plugin code runs.
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static yonexus_plugin_header_v1: $crate::abi::ExportedHeader =
            $crate::__private::header(
                <$plugin as $crate::Plugin>::NAME,
                ::core::env!("CARGO_PKG_VERSION"),
                &__YONEXUS_PLUGIN_VTABLE,
                ::core::cfg!(panic = "unwind"),
            );
    };
}

/// The per-instance state behind the opaque instance pointer.
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

/// Run `f`, mapping `Err((status, message))` and panics to a status plus a message in `*err`.
fn guard(err: *mut FfiBuf, f: impl FnOnce() -> Result<(), (Status, String)>) -> Status {
    let (status, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return STATUS_OK,
        Ok(Err(e)) => e,
        Err(payload) => (STATUS_PANIC, panic_message(&*payload)),
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

/// # Safety
/// Called by the host per the ABI contract (`crate::docs`).
pub unsafe extern "C" fn create<T: Plugin>(
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
        // destroy returns.
        let host = unsafe { Host::from_raw(host) };
        let config = Config::from_json(text(config_json, "config")?)
            .map_err(|e| (STATUS_ERROR, format!("config: {e}")))?;
        let plugin = T::create(&config, &host).map_err(|e| (STATUS_ERROR, e))?;
        let boxed = Box::into_raw(Box::new(Instance { plugin, host }));
        // SAFETY: out_instance is non-null and writable (host contract).
        unsafe { out_instance.write(boxed.cast()) };
        Ok(())
    })
}

/// # Safety
/// `instance` must come from `create::<T>` and not be destroyed; calls are serialized.
pub unsafe extern "C" fn on_message<T: Plugin>(
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
        // SAFETY: made by `create::<T>`; the host never calls one instance concurrently.
        let inst = unsafe { &mut *instance.cast::<Instance<T>>() };
        let msg = Message {
            rule: text(rule, "rule")?,
            sender: text(sender, "sender")?,
            content: text(content, "content")?,
        };
        let host = inst.host;
        inst.plugin
            .on_message(&host, &msg)
            .map_err(|e| (STATUS_ERROR, e))
    })
}

/// # Safety
/// As for [`on_message`].
pub unsafe extern "C" fn on_event<T: Plugin>(
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
        // SAFETY: as in `on_message`.
        let inst = unsafe { &mut *instance.cast::<Instance<T>>() };
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
        let host = inst.host;
        inst.plugin
            .on_event(&host, &event)
            .map_err(|e| (STATUS_ERROR, e))
    })
}

/// # Safety
/// `instance` must come from `create::<T>`; no call may be running or follow.
pub unsafe extern "C" fn destroy<T: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panic in Drop is swallowed: there is nobody to report it to, and it must not unwind
    // into the host.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by Box::into_raw in `create::<T>`, destroyed once.
        drop(unsafe { Box::from_raw(instance.cast::<Instance<T>>()) });
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

/// The function table for `T`.
pub const fn vtable<T: Plugin>() -> PluginVTable {
    PluginVTable {
        struct_size: core::mem::size_of::<PluginVTable>() as u32,
        abi_minor: ABI_MINOR,
        _reserved: 0,
        create: create::<T>,
        on_message: on_message::<T>,
        destroy: destroy::<T>,
        free_buf,
        on_event: if T::HANDLES_EVENTS {
            Some(on_event::<T>)
        } else {
            None
        },
    }
}

/// The exported header.
pub const fn header(
    name: &'static str,
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
        panic_unwind: panic_unwind as u16,
        _reserved: 0,
        target_triple: FfiStr::new(crate::TARGET),
        plugin_name: FfiStr::new(name),
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
        let vt = vtable::<P>();
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
            assert_eq!(
                take(std::mem::replace(&mut err, FfiBuf::empty())),
                "panicked: boom"
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
        assert_eq!(h.panic_unwind, 1);
        // SAFETY: static strings.
        unsafe {
            assert_eq!(h.plugin_name.as_str(), Some("p"));
            assert_eq!(h.target_triple.as_str(), Some(crate::TARGET));
        }
        assert!(!h.vtable.is_null());
    }
}
