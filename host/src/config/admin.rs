//! `[admin]`: the admin HTTP port and the token that authorises its actions.

use super::error::{is_env_var_name, Invalid};
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Default name of the environment variable holding the admin token.
pub const DEFAULT_TOKEN_ENV: &str = "YONEXUS_ADMIN_TOKEN";

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The HTTP address of `/metrics`, `/healthz`, `/readyz` (None = off).
    pub listen: Option<SocketAddr>,
    /// Name of the environment variable holding the admin token (read at start; the token itself
    /// is never in the config file).
    pub token_env: String,
}

/// Default `admin.listen`.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9787));

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(DEFAULT_LISTEN),
            token_env: DEFAULT_TOKEN_ENV.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    listen: String,
    token_env: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: DEFAULT_LISTEN.to_string(),
            token_env: DEFAULT_TOKEN_ENV.into(),
        }
    }
}

impl RawAdmin {
    pub(super) fn validate(self) -> Result<AdminConfig, Invalid> {
        let listen = match self.listen.trim() {
            "" | "off" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                Invalid::new(
                    "admin.listen",
                    format!("'{text}' is not an IP:port address (or \"off\")"),
                )
            })?),
        };
        if !is_env_var_name(&self.token_env) {
            return Err(Invalid::new(
                "admin.token_env",
                format!(
                    "{:?} is not an environment variable name (letters, digits and '_', not starting with a digit), e.g. \"{DEFAULT_TOKEN_ENV}\"",
                    self.token_env
                ),
            ));
        }
        Ok(AdminConfig {
            listen,
            token_env: self.token_env,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let a = AdminConfig::default();
        assert_eq!(a.listen, Some("127.0.0.1:9787".parse().unwrap()));
        assert_eq!(a.token_env, "YONEXUS_ADMIN_TOKEN");
        assert_eq!(RawAdmin::default().validate().unwrap(), a);
    }
}
