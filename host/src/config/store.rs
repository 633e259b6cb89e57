//! `[store]`: where trust records live — the embedded `trust.json` file (default), or
//! PostgreSQL shared by several hosts.

use super::error::{is_env_var_name, Invalid};
use serde::Deserialize;
use std::fmt;

/// `[store]`.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// `<state_dir>/trust.json`.
    #[default]
    File,
    /// PostgreSQL. The URL (which may hold a password) is never logged or shown.
    Postgres(PostgresUrl),
}

/// Where the PostgreSQL URL comes from.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    /// `url` from the file, if any.
    pub url: Option<String>,
    /// `url_env`: read the URL from this environment variable (wins over `url` when set).
    pub url_env: Option<String>,
}

impl PostgresUrl {
    /// The URL to connect with: the environment variable's value when it is set, else `url`.
    pub fn resolve(&self) -> Result<String, String> {
        if let Some(var) = &self.url_env {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => return Ok(v.trim().to_owned()),
                _ if self.url.is_none() => {
                    return Err(format!(
                        "store.url_env: environment variable {var} (the PostgreSQL URL) is not set"
                    ))
                }
                _ => {}
            }
        }
        self.url
            .clone()
            .ok_or_else(|| "store: backend = \"postgres\" needs url or url_env".to_owned())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: never printed.
        f.debug_struct("PostgresUrl")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("url_env", &self.url_env)
            .finish()
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::File => f.write_str("File"),
            StoreConfig::Postgres(u) => f.debug_tuple("Postgres").field(u).finish(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    backend: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
}

impl RawStore {
    pub(super) fn validate(self) -> Result<StoreConfig, Invalid> {
        match self.backend.as_deref().unwrap_or("file") {
            "file" => {
                if self.url.is_some() || self.url_env.is_some() {
                    let key = if self.url.is_some() {
                        "store.url"
                    } else {
                        "store.url_env"
                    };
                    return Err(Invalid::new(
                        key,
                        "url and url_env are for backend = \"postgres\" (the file store is the default backend)",
                    ));
                }
                Ok(StoreConfig::File)
            }
            "postgres" => {
                if let Some(var) = &self.url_env {
                    if !is_env_var_name(var) {
                        return Err(Invalid::new(
                            "store.url_env",
                            format!("{var:?} is not an environment variable name"),
                        ));
                    }
                }
                if let Some(url) = &self.url {
                    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                        return Err(Invalid::new(
                            "store.url",
                            "must be a postgres:// or postgresql:// URL",
                        ));
                    }
                }
                if self.url.is_none() && self.url_env.is_none() {
                    return Err(Invalid::new(
                        "store.url",
                        "backend = \"postgres\" needs url (or url_env naming a variable that holds it)",
                    ));
                }
                Ok(StoreConfig::Postgres(PostgresUrl {
                    url: self.url,
                    url_env: self.url_env,
                }))
            }
            other => Err(Invalid::new(
                "store.backend",
                format!("'{other}' is not one of \"file\", \"postgres\""),
            )),
        }
    }
}
