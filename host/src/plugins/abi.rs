//! Reading and checking a plugin's exported header and function table, before any plugin code
//! runs. Each check has its own error; see [`LoadErrorKind`].

use super::error::LoadErrorKind;
use core::mem::{offset_of, size_of};
use yonexus_plugin_api::abi::{
    self, CreateFn, DestroyFn, FfiStr, FreeBufFn, OnEventFn, OnMessageFn, PluginHeader,
    PluginVTable,
};

/// What a plugin says about itself (from its header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub name: String,
    pub version: String,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub plugin_api_version: String,
    /// `rustc -V`, or a C compiler's description (informational).
    pub rustc_version: String,
    pub target: String,
    /// (ABI ≥ 1.1, `FLAG_NON_BLOCKING`) The plugin promises its calls are short and never
    /// block: the host may call it directly on its async threads (with a watchdog that demotes
    /// it to its worker thread when a call overruns). Always false for 1.0 plugins.
    pub non_blocking: bool,
    /// (ABI ≥ 1.1, `FLAG_THREAD_SAFE`) The instance may be called concurrently (`on_message`
    /// and `on_event`): the host may shard it over several workers by sender, keeping each
    /// sender's messages in order on one thread. Always false for 1.0 plugins.
    pub thread_safe: bool,
    /// True for Rust `panic = "unwind"` plugins (panics are caught by the SDK's shims and come
    /// back as `STATUS_PANIC`); false for code that never unwinds (C, Zig, …; `PANIC_NONE`).
    pub unwinds: bool,
    /// The raw `flags` word as read (0 for 1.0 plugins); bits this host does not know are
    /// ignored.
    pub flags: u32,
}

/// The plugin's functions, copied out of its vtable. Function pointers into a library that is
/// never unloaded, so they stay valid for the life of the process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Functions {
    pub create: CreateFn,
    pub on_message: OnMessageFn,
    pub destroy: DestroyFn,
    pub free_buf: FreeBufFn,
    /// `None` when the plugin's vtable predates it or leaves it null.
    pub on_event: Option<OnEventFn>,
}

/// Host-side target triple (the same build-script value plugins record).
pub fn host_target() -> &'static str {
    yonexus_plugin_api::TARGET
}

/// Header strings are `'static` in the plugin; bound their length so a corrupt header cannot
/// make us read far.
const MAX_HEADER_STR: usize = 4096;

/// # Safety
/// `s` must come from a header that passed the size check.
unsafe fn header_str(s: FfiStr) -> String {
    if s.len > MAX_HEADER_STR {
        return format!("<{} bytes: too long>", s.len);
    }
    // SAFETY: the plugin's header points at static string data of `len` bytes.
    String::from_utf8_lossy(unsafe { s.as_bytes() }).into_owned()
}

fn show_magic(m: &[u8; 8]) -> String {
    format!("\"{}\"", m.escape_ascii())
}

/// Check the header at `ptr` (the address of the exported symbol) and copy out the functions.
///
/// # Safety
/// `ptr` must be the address of the `yonexus_plugin_header_v1` symbol in a mapped library, and
/// at least 12 bytes (magic + size) must be readable there.
pub(crate) unsafe fn read_header(ptr: *const u8) -> Result<(HeaderInfo, Functions), LoadErrorKind> {
    // SAFETY: the symbol holds at least magic (8 bytes) + header_size (4 bytes); unaligned reads
    // so a corrupt symbol cannot cause a misaligned access.
    let magic: [u8; 8] = unsafe { ptr.cast::<[u8; 8]>().read_unaligned() };
    if magic != abi::MAGIC {
        return Err(LoadErrorKind::BadMagic {
            found: show_magic(&magic),
            expected: show_magic(&abi::MAGIC),
        });
    }
    // SAFETY: as above.
    let header_size: u32 = unsafe { ptr.add(8).cast::<u32>().read_unaligned() };
    if (header_size as usize) < abi::HEADER_V1_0_SIZE {
        return Err(LoadErrorKind::HeaderTooSmall {
            found: header_size,
            needed: abi::HEADER_V1_0_SIZE,
            major: abi::ABI_MAJOR,
        });
    }
    // SAFETY: the plugin declares at least the v1.0 header size, and magic matched.
    let h: PluginHeader = unsafe { ptr.cast::<PluginHeader>().read_unaligned() };
    // In 1.0 the flags word was reserved: never trust it from a 1.0 plugin.
    let flags = if h.abi_minor >= 1 { h.flags } else { 0 };
    // SAFETY: size checked above; strings are static data in the plugin.
    let info = unsafe {
        HeaderInfo {
            name: header_str(h.plugin_name),
            version: header_str(h.plugin_version),
            abi_major: h.abi_major,
            abi_minor: h.abi_minor,
            plugin_api_version: header_str(h.plugin_api_version),
            rustc_version: header_str(h.rustc_version),
            target: header_str(h.target_triple),
            non_blocking: flags & abi::FLAG_NON_BLOCKING != 0,
            thread_safe: flags & abi::FLAG_THREAD_SAFE != 0,
            unwinds: h.panic_unwind == abi::PANIC_UNWIND,
            flags,
        }
    };
    if h.abi_major != abi::ABI_MAJOR {
        return Err(LoadErrorKind::AbiMajor {
            plugin_major: h.abi_major,
            plugin_minor: h.abi_minor,
            plugin_api: info.plugin_api_version,
            host_major: abi::ABI_MAJOR,
            host_minor: abi::ABI_MINOR,
            host_api: yonexus_plugin_api::VERSION.to_owned(),
        });
    }
    let host_width = size_of::<usize>() as u16;
    if h.ptr_width != host_width {
        return Err(LoadErrorKind::PointerWidth {
            plugin: h.ptr_width * 8,
            host: host_width * 8,
        });
    }
    if info.target != host_target() {
        return Err(LoadErrorKind::Target {
            plugin: info.target,
            host: host_target().to_owned(),
        });
    }
    match h.panic_unwind {
        abi::PANIC_UNWIND => {}
        abi::PANIC_NONE if h.abi_minor >= 1 => {}
        abi::PANIC_ABORT => {
            return Err(LoadErrorKind::PanicAbort {
                abi: format!("{}.{}", h.abi_major, h.abi_minor),
                plugin_api: info.plugin_api_version,
            })
        }
        other => {
            return Err(LoadErrorKind::PanicStrategy {
                value: other,
                abi: format!("{}.{}", h.abi_major, h.abi_minor),
            })
        }
    }
    // SAFETY: the vtable pointer comes from a header that passed every check above.
    let functions = unsafe { read_vtable(h.vtable) }?;
    Ok((info, functions))
}

/// Read a field of a vtable of `size` bytes, or `None` when the field lies beyond it.
///
/// # Safety
/// `base..base+size` must be readable; `T` must be the field's type at `offset`.
unsafe fn field<T: Copy>(base: *const PluginVTable, size: usize, offset: usize) -> Option<T> {
    if !abi::has_field(size, offset, size_of::<T>()) {
        return None;
    }
    // SAFETY: inside the struct the plugin declared; unaligned read for robustness.
    Some(unsafe { base.cast::<u8>().add(offset).cast::<T>().read_unaligned() })
}

/// # Safety
/// `vt` must be null or point to the plugin's static vtable.
unsafe fn read_vtable(vt: *const PluginVTable) -> Result<Functions, LoadErrorKind> {
    if vt.is_null() {
        return Err(LoadErrorKind::BadVTable(
            "the header's vtable pointer is null".into(),
        ));
    }
    // SAFETY: struct_size is the first field of every vtable version.
    let size = unsafe { vt.cast::<u32>().read_unaligned() } as usize;
    if size < abi::VTABLE_V1_0_MIN_SIZE {
        return Err(LoadErrorKind::BadVTable(format!(
            "struct_size is {size} bytes, ABI 1.0 needs at least {}",
            abi::VTABLE_V1_0_MIN_SIZE
        )));
    }
    let missing = |what: &str| LoadErrorKind::BadVTable(format!("`{what}` is null"));
    // SAFETY: each field is read only when `size` covers it; required fields are read as
    // `Option<fn>` (same layout, null niche) so a null entry is detected instead of being UB.
    unsafe {
        Ok(Functions {
            create: field::<Option<CreateFn>>(vt, size, offset_of!(PluginVTable, create))
                .flatten()
                .ok_or_else(|| missing("create"))?,
            on_message: field::<Option<OnMessageFn>>(
                vt,
                size,
                offset_of!(PluginVTable, on_message),
            )
            .flatten()
            .ok_or_else(|| missing("on_message"))?,
            destroy: field::<Option<DestroyFn>>(vt, size, offset_of!(PluginVTable, destroy))
                .flatten()
                .ok_or_else(|| missing("destroy"))?,
            free_buf: field::<Option<FreeBufFn>>(vt, size, offset_of!(PluginVTable, free_buf))
                .flatten()
                .ok_or_else(|| missing("free_buf"))?,
            on_event: field::<Option<OnEventFn>>(vt, size, offset_of!(PluginVTable, on_event))
                .flatten(),
        })
    }
}
