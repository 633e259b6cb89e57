//! `[pairing]`: code lifetime, attempts, and how the code reaches the admin.

use super::error::{is_env_var_name, Invalid};
use crate::notify::NotifierConfig;
use serde::Deserialize;

/// `[pairing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingConfig {
    pub ttl_secs: i64,
    pub max_attempts: u32,
    pub notifier: NotifierConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPairing {
    ttl_secs: i64,
    max_attempts: u32,
    notify: String,
    command: Vec<String>,
    discord_bot_token_env: String,
    discord_admin_user_id: String,
    discord_api_base: String,
}

impl Default for RawPairing {
    fn default() -> Self {
        RawPairing {
            ttl_secs: 300,
            max_attempts: 5,
            notify: "log".into(),
            command: Vec::new(),
            discord_bot_token_env: "YONEXUS_DISCORD_TOKEN".into(),
            discord_admin_user_id: String::new(),
            discord_api_base: "https://discord.com/api/v10".into(),
        }
    }
}

impl RawPairing {
    pub(super) fn validate(self) -> Result<PairingConfig, Invalid> {
        if !(10..=86_400).contains(&self.ttl_secs) {
            return Err(Invalid::new(
                "pairing.ttl_secs",
                format!("{} is out of range (10..=86400 seconds)", self.ttl_secs),
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(Invalid::new(
                "pairing.max_attempts",
                format!("{} is out of range (1..=100)", self.max_attempts),
            ));
        }
        let notifier = match self.notify.as_str() {
            "log" => NotifierConfig::Log,
            "command" => {
                if self.command.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(Invalid::new(
                        "pairing.command",
                        "notify = \"command\" needs a non-empty command array, e.g. [\"/usr/local/bin/notify-admin\"]",
                    ));
                }
                NotifierConfig::Command {
                    program: self.command,
                }
            }
            "discord" => {
                if self.discord_admin_user_id.is_empty()
                    || !self
                        .discord_admin_user_id
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                {
                    return Err(Invalid::new(
                        "pairing.discord_admin_user_id",
                        "notify = \"discord\" needs the admin's numeric Discord user id",
                    ));
                }
                if !is_env_var_name(&self.discord_bot_token_env) {
                    return Err(Invalid::new(
                        "pairing.discord_bot_token_env",
                        format!(
                            "must name an environment variable (letters, digits, '_'), got {:?}",
                            self.discord_bot_token_env
                        ),
                    ));
                }
                if !(self.discord_api_base.starts_with("https://")
                    || self.discord_api_base.starts_with("http://"))
                {
                    return Err(Invalid::new(
                        "pairing.discord_api_base",
                        format!("'{}' is not an http(s) URL", self.discord_api_base),
                    ));
                }
                NotifierConfig::Discord {
                    token_env: self.discord_bot_token_env,
                    admin_user_id: self.discord_admin_user_id,
                    api_base: self.discord_api_base,
                }
            }
            other => {
                return Err(Invalid::new(
                    "pairing.notify",
                    format!("'{other}' is not one of \"log\", \"command\", \"discord\""),
                ))
            }
        };
        Ok(PairingConfig {
            ttl_secs: self.ttl_secs,
            max_attempts: self.max_attempts,
            notifier,
        })
    }
}
