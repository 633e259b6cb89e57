//! `[server]` and `[server.tls]`: where the host listens and keeps its state.

use super::error::Invalid;
use super::paths::Paths;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub path: String,
    /// Resolved against the config file's folder and normalised.
    pub state_dir: PathBuf,
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: serve `wss://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain and private key (resolved against the config file's directory).
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    listen: String,
    path: String,
    state_dir: PathBuf,
    tls: Option<RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8787".into(),
            path: "/".into(),
            state_dir: PathBuf::from("./yonexus-state"),
            tls: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

impl RawServer {
    pub(super) fn validate(self, paths: &Paths) -> Result<ServerConfig, Invalid> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            Invalid::new(
                "server.listen",
                format!(
                    "'{}' is not an IP:port address (e.g. \"127.0.0.1:8787\")",
                    self.listen
                ),
            )
        })?;
        if !self.path.starts_with('/') {
            return Err(Invalid::new(
                "server.path",
                format!("'{}' must start with '/'", self.path),
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(Invalid::new("server.state_dir", "must not be empty"));
        }
        let existing = |key: &str, configured: &Path| -> Result<PathBuf, Invalid> {
            let resolved = paths.resolve(configured);
            if resolved.is_file() {
                Ok(resolved)
            } else {
                Err(Invalid::new(
                    key,
                    format!(
                        "file '{}' does not exist{}",
                        resolved.display(),
                        paths.relative_hint(configured)
                    ),
                ))
            }
        };
        let tls = match &self.tls {
            None => None,
            Some(t) => Some(TlsConfig {
                cert: existing("server.tls.cert", &t.cert)?,
                key: existing("server.tls.key", &t.key)?,
            }),
        };
        Ok(ServerConfig {
            listen,
            path: self.path,
            state_dir: paths.resolve(&self.state_dir),
            tls,
        })
    }
}
