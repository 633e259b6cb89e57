//! From a path to a mapped library: file sanity checks, a private copy under a never-reused
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

/// Regular file, non-empty, ELF magic — each failure with its own message.
pub(crate) fn check_file(path: &Path) -> Result<(), LoadErrorKind> {
    let meta = fs::metadata(path).map_err(LoadErrorKind::Unreadable)?;
    if !meta.is_file() {
        return Err(LoadErrorKind::NotRegularFile);
    }
    if meta.len() == 0 {
        return Err(LoadErrorKind::Empty);
    }
    let mut head = [0u8; 4];
    let mut file = fs::File::open(path).map_err(LoadErrorKind::Unreadable)?;
    let mut n = 0;
    while n < head.len() {
        match file
            .read(&mut head[n..])
            .map_err(LoadErrorKind::Unreadable)?
        {
            0 => break,
            k => n += k,
        }
    }
    if n < head.len() || head != ELF_MAGIC {
        let shown: Vec<String> = head[..n].iter().map(|b| format!("{b:02x}")).collect();
        return Err(LoadErrorKind::NotElf(shown.join(" ")));
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
pub(crate) fn stage(name: &str, src: &Path, dir: &Path) -> Result<PathBuf, LoadErrorKind> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stage_err = |source| LoadErrorKind::Stage {
        dir: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(stage_err)?;
    let bytes = fs::read(src).map_err(LoadErrorKind::Unreadable)?;
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
                f.write_all(&bytes).map_err(stage_err)?;
                f.sync_all().map_err(stage_err)?;
                return Ok(path);
            }
            // Leftover from an earlier process with the same pid: pick the next counter.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(stage_err(e)),
        }
    }
}

/// `dlopen` the staged copy and look up `symbol`. The library joins the never-unloaded list as
/// soon as it is mapped (its ELF initializers have run). Returns the symbol's address, or
/// `None` when the library does not export it.
pub(crate) fn open(path: &Path, symbol: &[u8]) -> Result<Option<*const u8>, LoadErrorKind> {
    // SAFETY: dlopen runs the library's ELF initializers; plugins are trusted code from the
    // operator's configured paths (documented), and the staged copy is private to us.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| LoadErrorKind::Dlopen(e.to_string()))?;
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
        assert!(matches!(check_file(&empty), Err(LoadErrorKind::Empty)));
        let text = dir.path().join("text.so");
        fs::write(&text, b"hello world").unwrap();
        assert!(matches!(check_file(&text), Err(LoadErrorKind::NotElf(_))));
        let short = dir.path().join("short.so");
        fs::write(&short, b"\x7fE").unwrap();
        assert!(matches!(check_file(&short), Err(LoadErrorKind::NotElf(_))));
        assert!(matches!(
            check_file(dir.path()),
            Err(LoadErrorKind::NotRegularFile)
        ));
        assert!(matches!(
            check_file(&dir.path().join("missing.so")),
            Err(LoadErrorKind::Unreadable(_))
        ));
    }

    #[test]
    fn staged_names_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.so");
        fs::write(&src, b"\x7fELFxyz").unwrap();
        let stage_dir = dir.path().join("staging");
        let a = stage("my/plugin", &src, &stage_dir).unwrap();
        let b = stage("my/plugin", &src, &stage_dir).unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("my_plugin-{}-", std::process::id())));
        assert_eq!(fs::read(&b).unwrap(), b"\x7fELFxyz");
    }
}
