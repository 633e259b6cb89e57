//! Why a plugin could not be loaded or instantiated. Every message names the plugin, the file and
//! the exact reason, in one line (the log line an operator sees).

use std::fmt;
use std::path::PathBuf;

/// A refused plugin: `plugin '<name>' (<path>): <reason>`.
#[derive(Debug)]
pub struct PluginLoadError {
    pub name: String,
    pub path: PathBuf,
    pub kind: LoadErrorKind,
}

impl PluginLoadError {
    pub(crate) fn new(name: &str, path: &std::path::Path, kind: LoadErrorKind) -> Self {
        PluginLoadError {
            name: name.to_owned(),
            path: path.to_owned(),
            kind,
        }
    }
}

impl fmt::Display for PluginLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin '{}' ({}): {}",
            self.name,
            self.path.display(),
            self.kind
        )
    }
}

impl std::error::Error for PluginLoadError {}

/// The exact reason.
#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("cannot read the plugin file: {0}")]
    Unreadable(std::io::Error),
    #[error("not a regular file")]
    NotRegularFile,
    #[error("the file is empty (0 bytes)")]
    Empty,
    #[error("{}", .0.reason())]
    Untrusted(Box<crate::file_trust::UntrustedFile>),
    #[error("not a shared library: no ELF magic at the start of the file (first bytes {0})")]
    NotElf(String),
    #[error(
        "the file is truncated: its ELF headers describe {needed} bytes but it has {size} (incomplete build or copy?)"
    )]
    Truncated { needed: u64, size: u64 },
    #[error("not a loadable plugin library: {0}")]
    WrongElf(String),
    #[error("cannot stage a private copy in {dir}: {source}")]
    Stage {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the dynamic loader refused it: {0}")]
    Dlopen(String),
    #[error(
        "not a Yonexus plugin: it exports no `{symbol}` symbol (built without yonexus_plugin_api::export_plugin!?)"
    )]
    MissingHeader { symbol: &'static str },
    #[error("not a Yonexus plugin: header magic is {found}, expected {expected}")]
    BadMagic { found: String, expected: String },
    #[error("plugin header is {found} bytes, ABI {major}.x needs at least {needed}")]
    HeaderTooSmall {
        found: u32,
        needed: usize,
        major: u16,
    },
    #[error(
        "built for plugin ABI {plugin_major}.{plugin_minor} (plugin-api {plugin_api}), host supports ABI {host_major}.x (up to {host_major}.{host_minor}, plugin-api {host_api})"
    )]
    AbiMajor {
        plugin_major: u16,
        plugin_minor: u16,
        plugin_api: String,
        host_major: u16,
        host_minor: u16,
        host_api: String,
    },
    #[error("built for {plugin}-bit pointers, host uses {host}-bit")]
    PointerWidth { plugin: u16, host: u16 },
    #[error("built for target {plugin}, host is {host}")]
    Target { plugin: String, host: String },
    #[error(
        "built with panic = \"abort\" (plugin ABI {abi}, plugin-api {plugin_api}); rebuild with panic = \"unwind\" so the host can contain plugin panics"
    )]
    PanicAbort { abi: String, plugin_api: String },
    #[error(
        "unknown panic strategy {value} in the plugin header (plugin ABI {abi}): expected 1 (Rust, panic = \"unwind\") or, from ABI 1.1, 2 (code that never unwinds, e.g. C)"
    )]
    PanicStrategy { value: u16, abi: String },
    #[error("plugin function table is invalid: {0}")]
    BadVTable(String),
    #[error("create failed: {0}")]
    Create(String),
    #[error("create panicked: {0}")]
    CreatePanicked(String),
    #[error("create did not return within {0:?}")]
    CreateTimedOut(std::time::Duration),
    #[error("cannot start the plugin worker thread: {0}")]
    Thread(std::io::Error),
}
