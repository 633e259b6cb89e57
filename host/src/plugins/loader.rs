//! From a path to a mapped library: file sanity and permission checks, a private copy under a never-reused
//! name, `dlopen(RTLD_NOW | RTLD_LOCAL)`, and the process-wide list of libraries that are never
//! unloaded.

use super::error::LoadErrorKind;
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// Every library this process has `dlopen`ed. Never dropped: `dlclose` on a Rust `cdylib` that
/// has run may do nothing or crash later (thread-local destructors), so superseded generations
/// stay mapped for the life of the process.
fn mapped() -> &'static Mutex<Vec<Library>> {
    static MAPPED: OnceLock<Mutex<Vec<Library>>> = OnceLock::new();
    MAPPED.get_or_init(|| Mutex::new(Vec::new()))
}

/// How many plugin libraries are mapped (loaded, superseded or refused after `dlopen`).
pub fn mapped_libraries() -> usize {
    mapped().lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// Regular file, non-empty, trusted (see [`file_trust`](crate::file_trust): not writable by
/// group or others, owned by root or the host's user — checked on the open descriptor), then the
/// whole content read from that same descriptor (checked with [`check_elf`] and staged from
/// memory, so what is checked is exactly what gets mapped).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, LoadErrorKind> {
    // Checked before opening, so a FIFO or device cannot block or surprise the open.
    let meta = fs::metadata(path).map_err(LoadErrorKind::Unreadable)?;
    if !meta.is_file() {
        return Err(LoadErrorKind::NotRegularFile);
    }
    if meta.len() == 0 {
        return Err(LoadErrorKind::Empty);
    }
    let mut file = fs::File::open(path).map_err(LoadErrorKind::Unreadable)?;
    let meta = file.metadata().map_err(LoadErrorKind::Unreadable)?;
    if !meta.is_file() {
        return Err(LoadErrorKind::NotRegularFile);
    }
    crate::file_trust::check_metadata(path, &meta)
        .map_err(|e| LoadErrorKind::Untrusted(Box::new(e)))?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(LoadErrorKind::Unreadable)?;
    if bytes.is_empty() {
        return Err(LoadErrorKind::Empty);
    }
    Ok(bytes)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The ELF machine of this host.
const HOST_MACHINE: Option<u16> = if cfg!(target_arch = "x86_64") {
    Some(62)
} else if cfg!(target_arch = "aarch64") {
    Some(183)
} else {
    None
};

/// ELF sanity before `dlopen`: magic, 64-bit little-endian shared object for this machine, and
/// every header, segment and section table inside the file. A truncated library would otherwise
/// be mapped past its end and crash the host with SIGBUS during relocation.
pub(crate) fn check_elf(b: &[u8]) -> Result<(), LoadErrorKind> {
    if b.len() < 4 || b[..4] != ELF_MAGIC {
        let shown: Vec<String> = b.iter().take(4).map(|x| format!("{x:02x}")).collect();
        return Err(LoadErrorKind::NotElf(shown.join(" ")));
    }
    if !(cfg!(target_pointer_width = "64") && cfg!(target_endian = "little")) {
        // Layout checks below are for ELF64 little-endian hosts; dlopen still validates.
        return Ok(());
    }
    let truncated = |needed: u64| LoadErrorKind::Truncated {
        needed,
        size: b.len() as u64,
    };
    if b.len() < 64 {
        return Err(truncated(64));
    }
    if b[4] != 2 || b[5] != 1 {
        return Err(LoadErrorKind::WrongElf(format!(
            "ELF class {} / data encoding {}, host needs 64-bit little-endian",
            b[4], b[5]
        )));
    }
    let e_type = u16_at(b, 16).unwrap_or(0);
    if e_type != 3 {
        return Err(LoadErrorKind::WrongElf(format!(
            "ELF type {e_type} is not a shared object (ET_DYN = 3); build the plugin with crate-type = [\"cdylib\"]"
        )));
    }
    let machine = u16_at(b, 18).unwrap_or(0);
    if let Some(host) = HOST_MACHINE {
        if machine != host {
            return Err(LoadErrorKind::WrongElf(format!(
                "built for ELF machine {machine}, host is machine {host}"
            )));
        }
    }
    let len = b.len() as u64;
    let (phoff, shoff) = (u64_at(b, 32).unwrap_or(0), u64_at(b, 40).unwrap_or(0));
    let (phentsize, phnum) = (
        u16_at(b, 54).unwrap_or(0) as u64,
        u16_at(b, 56).unwrap_or(0) as u64,
    );
    let (shentsize, shnum) = (
        u16_at(b, 58).unwrap_or(0) as u64,
        u16_at(b, 60).unwrap_or(0) as u64,
    );
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if ph_end > len {
        return Err(truncated(ph_end));
    }
    if phentsize < 56 && phnum > 0 {
        return Err(LoadErrorKind::WrongElf(format!(
            "program header size {phentsize} is invalid"
        )));
    }
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        let p_type = u32_at(b, at).unwrap_or(0);
        let offset = u64_at(b, at + 8).unwrap_or(u64::MAX);
        let filesz = u64_at(b, at + 32).unwrap_or(u64::MAX);
        // PT_NULL entries carry no data.
        if p_type != 0 {
            let end = offset.saturating_add(filesz);
            if end > len {
                return Err(truncated(end));
            }
        }
    }
    if shoff != 0 {
        let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
        if sh_end > len {
            return Err(truncated(sh_end));
        }
    }
    Ok(())
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        "plugin".into()
    } else {
        s
    }
}

/// Copy `src` to `<dir>/<name>-<pid>-<counter>-<nanos>.so`, a path never used before in this
/// process (`create_new` guarantees we never write into an existing — possibly mapped — file).
pub(crate) fn stage(name: &str, bytes: &[u8], dir: &Path) -> Result<PathBuf, LoadErrorKind> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stage_err = |source| LoadErrorKind::Stage {
        dir: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(stage_err)?;
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            "{}-{}-{}-{}.so",
            sanitize(name),
            std::process::id(),
            n,
            nanos
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(bytes).map_err(stage_err)?;
                f.sync_all().map_err(stage_err)?;
                return Ok(path);
            }
            // Leftover from an earlier process with the same pid: pick the next counter.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(stage_err(e)),
        }
    }
}

/// The loader's own words for why `dlopen` failed (libloading's message is only "dlopen
/// failed"; the system's reason — a missing symbol or library — is its source), without the
/// private staging path the system names, which means nothing to the operator.
fn dlopen_reason(e: &libloading::Error) -> String {
    use std::error::Error as _;
    let Some(reason) = e.source().map(ToString::to_string) else {
        return e.to_string();
    };
    // "<staged path>: undefined symbol: x" → "undefined symbol: x".
    match reason.split_once(": ") {
        Some((path, rest)) if path.starts_with('/') => rest.to_owned(),
        _ => reason,
    }
}

/// `dlopen` the staged copy and look up `symbol`. The library joins the never-unloaded list as
/// soon as it is mapped (its ELF initializers have run). Returns the symbol's address, or
/// `None` when the library does not export it.
pub(crate) fn open(path: &Path, symbol: &[u8]) -> Result<Option<*const u8>, LoadErrorKind> {
    // SAFETY: dlopen runs the library's ELF initializers; plugins are trusted code from the
    // operator's configured paths (documented), and the staged copy is private to us.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| LoadErrorKind::Dlopen(dlopen_reason(&e)))?;
    // SAFETY: we only take the symbol's address; nothing is called and nothing is read here.
    let addr = unsafe { lib.get::<*const u8>(symbol) }
        .ok()
        .map(|sym| sym.into_raw() as *const u8)
        .filter(|p| !p.is_null());
    let total = {
        let mut list = mapped().lock().unwrap_or_else(|p| p.into_inner());
        list.push(lib);
        list.len()
    };
    tracing::debug!(path = %path.display(), mapped = total, "plugin library mapped (never unloaded)");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_file_has_its_own_reason() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.so");
        fs::write(&empty, b"").unwrap();
        assert!(matches!(read_file(&empty), Err(LoadErrorKind::Empty)));
        assert!(matches!(
            check_elf(b"hello world"),
            Err(LoadErrorKind::NotElf(_))
        ));
        assert!(matches!(check_elf(b"\x7fE"), Err(LoadErrorKind::NotElf(_))));
        assert!(matches!(
            check_elf(b"\x7fELF\x02\x01"),
            Err(LoadErrorKind::Truncated { .. })
        ));
        assert!(matches!(
            read_file(dir.path()),
            Err(LoadErrorKind::NotRegularFile)
        ));
        assert!(matches!(
            read_file(&dir.path().join("missing.so")),
            Err(LoadErrorKind::Unreadable(_))
        ));
    }

    #[test]
    fn a_group_writable_plugin_file_is_refused_before_it_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lib.so");
        fs::write(&p, b"\x7fELF whatever").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o664)).unwrap();
        let e = read_file(&p).expect_err("refused");
        assert!(matches!(e, LoadErrorKind::Untrusted(_)), "{e}");
        assert!(e.to_string().contains("mode 0664"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_file(&p).unwrap(), b"\x7fELF whatever");
    }

    #[test]
    fn the_test_binary_itself_passes_the_elf_layout_checks_but_is_not_a_library() {
        // A PIE executable is ET_DYN too; it must pass the layout checks, and a truncated copy
        // must not.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        if check_elf(&me).is_ok() {
            assert!(matches!(
                check_elf(&me[..4096]),
                Err(LoadErrorKind::Truncated { .. })
            ));
        }
    }

    #[test]
    fn staged_names_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let stage_dir = dir.path().join("staging");
        let a = stage("my/plugin", b"\x7fELFxyz", &stage_dir).unwrap();
        let b = stage("my/plugin", b"\x7fELFxyz", &stage_dir).unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("my_plugin-{}-", std::process::id())));
        assert_eq!(fs::read(&b).unwrap(), b"\x7fELFxyz");
    }
}
