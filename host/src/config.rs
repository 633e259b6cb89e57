//! The operator's TOML configuration: parsing, defaults and validation.
//!
//! Every error names the file, the key and what is wrong, and a config with an error is never
//! partly applied. Relative paths (`state_dir`, plugin `path`) are resolved against the directory
//! of the config file, so the same file works from any working directory.

use crate::notify::NotifierConfig;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use yonexus_protocol::validate;

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub path: String,
    pub state_dir: PathBuf,
    pub tls: Option<TlsConfig>,
}

/// `[pairing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingConfig {
    pub ttl_secs: i64,
    pub max_attempts: u32,
    pub notifier: NotifierConfig,
}

/// `[liveness]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    pub unstable_after_secs: i64,
    pub offline_after_secs: i64,
    pub sweep_interval_secs: u64,
}

/// `[limits]`: protection against hostile and slow peers. Every value has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Deadline for the WebSocket upgrade after TCP accept.
    pub upgrade_timeout_ms: u64,
    /// Deadline to authenticate after the upgrade (extended by the pairing TTL while a pairing
    /// is in progress, so a human has time to relay the code).
    pub auth_timeout_secs: u64,
    /// Unauthenticated connections in total, and per remote IP; beyond them upgrades get 503.
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_ip: usize,
    /// Largest message accepted before authentication, and after it.
    pub max_unauthenticated_message: usize,
    pub max_message_size: usize,
    /// Inbound messages per second per connection, and the burst allowed above that rate.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// Consecutive rate-limited messages after which the connection is closed (1008).
    pub rate_abuse_close_after: u32,
    /// Outbound queue per connection, in frames and bytes; a follower whose queue is full is
    /// closed as a slow consumer (1008).
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    /// WebSocket ping interval; a peer silent for two intervals is dropped.
    pub ping_interval_secs: u64,
    /// How long shutdown waits for connections and plugins to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            upgrade_timeout_ms: 5_000,
            auth_timeout_secs: 10,
            max_unauthenticated: 1_000,
            max_unauthenticated_per_ip: 20,
            max_unauthenticated_message: 64 * 1024,
            max_message_size: 1024 * 1024,
            rate_per_sec: 1_000,
            rate_burst: 2_000,
            rate_abuse_close_after: 1_000,
            outbound_queue: 1_024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            ping_interval_secs: 30,
            shutdown_grace_ms: 5_000,
        }
    }
}

impl LimitsConfig {
    fn validate(&self, err: impl Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 12] = [
            ("limits.upgrade_timeout_ms", self.upgrade_timeout_ms),
            ("limits.auth_timeout_secs", self.auth_timeout_secs),
            (
                "limits.max_unauthenticated",
                self.max_unauthenticated as u64,
            ),
            (
                "limits.max_unauthenticated_per_ip",
                self.max_unauthenticated_per_ip as u64,
            ),
            (
                "limits.max_unauthenticated_message",
                self.max_unauthenticated_message as u64,
            ),
            ("limits.max_message_size", self.max_message_size as u64),
            ("limits.rate_per_sec", u64::from(self.rate_per_sec)),
            ("limits.rate_burst", u64::from(self.rate_burst)),
            ("limits.outbound_queue", self.outbound_queue as u64),
            (
                "limits.outbound_queue_bytes",
                self.outbound_queue_bytes as u64,
            ),
            ("limits.ping_interval_secs", self.ping_interval_secs),
            ("limits.shutdown_grace_ms", self.shutdown_grace_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(err(key, "must be positive".into()));
            }
        }
        if self.max_message_size > 64 * 1024 * 1024 {
            return Err(err(
                "limits.max_message_size",
                "must be at most 64 MiB".into(),
            ));
        }
        if self.max_unauthenticated_message > self.max_message_size {
            return Err(err(
                "limits.max_unauthenticated_message",
                format!(
                    "must not exceed limits.max_message_size ({})",
                    self.max_message_size
                ),
            ));
        }
        if self.outbound_queue_bytes < self.max_message_size {
            return Err(err(
                "limits.outbound_queue_bytes",
                format!(
                    "must be at least limits.max_message_size ({})",
                    self.max_message_size
                ),
            ));
        }
        Ok(())
    }
}

/// `[server.tls]`: serve `wss://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain and private key (resolved against the config file's directory).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[reload]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the config file and plugin files and reload on change.
    pub watch: bool,
    /// Quiet time after the last file event before a reload starts.
    pub debounce_ms: u64,
    /// How long a replaced plugin instance may take to finish its queued messages.
    pub drain_timeout_ms: u64,
}

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub name: String,
    /// Absolute (resolved against the config file's directory).
    pub path: PathBuf,
    pub rules: Vec<String>,
    /// The `[plugins.config]` table as JSON.
    pub config: serde_json::Value,
    /// Messages that may wait for the plugin's worker before senders get `HANDLER_BUSY`.
    pub queue_capacity: usize,
    /// A call running longer than this is logged and counted.
    pub call_deadline_ms: u64,
    /// Panics within `panic_window_secs` that disable the plugin's rules (0 = never).
    pub panic_limit: u32,
    pub panic_window_secs: u64,
}

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from.
    pub file: PathBuf,
    pub server: ServerConfig,
    pub allow: BTreeSet<String>,
    pub pairing: PairingConfig,
    pub liveness: LivenessConfig,
    pub reload: ReloadConfig,
    pub limits: LimitsConfig,
    /// `[admin]`: the admin HTTP port (metrics, health, dashboard).
    pub admin: AdminConfig,
    pub plugins: Vec<PluginConfig>,
}

/// `[admin]`: the admin HTTP port (`/metrics`, `/healthz`, `/readyz`, the dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `[admin] listen`: its address (None = off).
    pub listen: Option<SocketAddr>,
    /// `[admin] token_env`: the environment variable holding the admin token the dashboard's
    /// actions require (read once at start).
    pub token_env: String,
}

/// The default of `[admin] token_env`.
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "YONEXUS_ADMIN_TOKEN";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    followers: RawFollowers,
    #[serde(default)]
    pairing: RawPairing,
    #[serde(default)]
    liveness: RawLiveness,
    #[serde(default)]
    reload: RawReload,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: String,
    token_env: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9787".into(),
            token_env: DEFAULT_ADMIN_TOKEN_ENV.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReload {
    watch: bool,
    debounce_ms: u64,
    drain_timeout_ms: u64,
}

impl Default for RawReload {
    fn default() -> Self {
        RawReload {
            watch: true,
            debounce_ms: 500,
            drain_timeout_ms: 5000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFollowers {
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPairing {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLiveness {
    unstable_after_secs: i64,
    offline_after_secs: i64,
    sweep_interval_secs: u64,
}

impl Default for RawLiveness {
    fn default() -> Self {
        RawLiveness {
            unstable_after_secs: 420,
            offline_after_secs: 660,
            sweep_interval_secs: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: String,
    path: PathBuf,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default = "default_queue_capacity")]
    queue_capacity: usize,
    #[serde(default = "default_call_deadline_ms")]
    call_deadline_ms: u64,
    #[serde(default = "default_panic_limit")]
    panic_limit: u32,
    #[serde(default = "default_panic_window_secs")]
    panic_window_secs: u64,
}

fn default_queue_capacity() -> usize {
    1024
}
fn default_call_deadline_ms() -> u64 {
    1000
}
fn default_panic_limit() -> u32 {
    5
}
fn default_panic_window_secs() -> u64 {
    60
}

impl Config {
    /// Read and validate a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        })?;
        Config::parse(file, &text)
    }

    /// Parse and validate config text that came from `file` (used for messages and for
    /// resolving relative paths).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: file.to_owned(),
            key: key.into(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message already carries the line, column and offending key.
            err("", format!("invalid TOML: {}", e.to_string().trim_end()))
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };

        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            err(
                "server.listen",
                format!(
                    "'{}' is not an IP:port address (e.g. \"127.0.0.1:8787\")",
                    raw.server.listen
                ),
            )
        })?;
        if !raw.server.path.starts_with('/') {
            return Err(err(
                "server.path",
                format!("'{}' must start with '/'", raw.server.path),
            ));
        }
        if raw.server.state_dir.as_os_str().is_empty() {
            return Err(err("server.state_dir", "must not be empty".into()));
        }

        let mut allow = BTreeSet::new();
        for (i, id) in raw.followers.allow.iter().enumerate() {
            validate::identifier(id)
                .map_err(|e| err(&format!("followers.allow[{i}]"), format!("{id:?}: {e}")))?;
            if !allow.insert(id.clone()) {
                return Err(err(
                    &format!("followers.allow[{i}]"),
                    format!("{id:?} is listed twice"),
                ));
            }
        }

        let p = &raw.pairing;
        if !(10..=86_400).contains(&p.ttl_secs) {
            return Err(err(
                "pairing.ttl_secs",
                format!("{} is out of range (10..=86400 seconds)", p.ttl_secs),
            ));
        }
        if p.max_attempts == 0 || p.max_attempts > 100 {
            return Err(err(
                "pairing.max_attempts",
                format!("{} is out of range (1..=100)", p.max_attempts),
            ));
        }
        let notifier = match p.notify.as_str() {
            "log" => NotifierConfig::Log,
            "command" => {
                if p.command.is_empty() || p.command[0].trim().is_empty() {
                    return Err(err("pairing.command", "notify = \"command\" needs a non-empty command array, e.g. [\"/usr/local/bin/notify-admin\"]".into()));
                }
                NotifierConfig::Command {
                    program: p.command.clone(),
                }
            }
            "discord" => {
                if p.discord_admin_user_id.is_empty()
                    || !p.discord_admin_user_id.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(err(
                        "pairing.discord_admin_user_id",
                        "notify = \"discord\" needs the admin's numeric Discord user id".into(),
                    ));
                }
                if p.discord_bot_token_env.trim().is_empty() {
                    return Err(err(
                        "pairing.discord_bot_token_env",
                        "must name an environment variable".into(),
                    ));
                }
                if !(p.discord_api_base.starts_with("https://")
                    || p.discord_api_base.starts_with("http://"))
                {
                    return Err(err(
                        "pairing.discord_api_base",
                        format!("'{}' is not an http(s) URL", p.discord_api_base),
                    ));
                }
                NotifierConfig::Discord {
                    token_env: p.discord_bot_token_env.clone(),
                    admin_user_id: p.discord_admin_user_id.clone(),
                    api_base: p.discord_api_base.clone(),
                }
            }
            other => {
                return Err(err(
                    "pairing.notify",
                    format!("'{other}' is not one of \"log\", \"command\", \"discord\""),
                ))
            }
        };

        let l = &raw.liveness;
        if l.unstable_after_secs <= 0 {
            return Err(err(
                "liveness.unstable_after_secs",
                "must be positive".into(),
            ));
        }
        if l.offline_after_secs <= l.unstable_after_secs {
            return Err(err(
                "liveness.offline_after_secs",
                format!(
                    "{} must be greater than unstable_after_secs ({})",
                    l.offline_after_secs, l.unstable_after_secs
                ),
            ));
        }
        if l.sweep_interval_secs == 0 {
            return Err(err(
                "liveness.sweep_interval_secs",
                "must be positive".into(),
            ));
        }

        if !(10..=60_000).contains(&raw.reload.debounce_ms) {
            return Err(err(
                "reload.debounce_ms",
                format!("{} is out of range (10..=60000)", raw.reload.debounce_ms),
            ));
        }
        if !(1..=600_000).contains(&raw.reload.drain_timeout_ms) {
            return Err(err(
                "reload.drain_timeout_ms",
                format!(
                    "{} is out of range (1..=600000)",
                    raw.reload.drain_timeout_ms
                ),
            ));
        }

        raw.limits.validate(err)?;
        let admin_listen = match raw.admin.listen.trim() {
            "" | "off" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                err(
                    "admin.listen",
                    format!("'{text}' is not an IP:port address (or \"off\")"),
                )
            })?),
        };
        let token_env = raw.admin.token_env.trim().to_owned();
        if token_env.is_empty()
            || !token_env
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(err(
                "admin.token_env",
                format!("'{token_env}' is not an environment variable name (letters, digits, _), e.g. \"{DEFAULT_ADMIN_TOKEN_ENV}\""),
            ));
        }
        let tls = match &raw.server.tls {
            None => None,
            Some(t) => {
                let (cert, key) = (resolve(&t.cert), resolve(&t.key));
                for (k, p) in [("server.tls.cert", &cert), ("server.tls.key", &key)] {
                    if !p.is_file() {
                        return Err(err(k, format!("file '{}' does not exist", p.display())));
                    }
                }
                Some(TlsConfig { cert, key })
            }
        };

        let mut plugins = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut owners: HashMap<String, (usize, String)> = HashMap::new();
        for (i, rp) in raw.plugins.into_iter().enumerate() {
            let key = format!("plugins[{i}]");
            if rp.name.trim().is_empty() {
                return Err(err(&format!("{key}.name"), "must not be empty".into()));
            }
            if let Some(prev) = names.insert(rp.name.clone(), i) {
                return Err(err(
                    &format!("{key}.name"),
                    format!(
                        "plugin name '{}' is already used by plugins[{prev}]",
                        rp.name
                    ),
                ));
            }
            let path = resolve(&rp.path);
            if !path.is_file() {
                return Err(err(
                    &format!("{key}.path"),
                    format!("plugin file '{}' does not exist", path.display()),
                ));
            }
            if rp.rules.is_empty() {
                return Err(err(
                    &format!("{key}.rules"),
                    format!("plugin '{}' routes no rules", rp.name),
                ));
            }
            for (j, rule) in rp.rules.iter().enumerate() {
                let rkey = format!("{key}.rules[{j}]");
                if rule == yonexus_protocol::BUILTIN_RULE {
                    return Err(err(
                        &rkey,
                        "'builtin' is reserved for the control protocol".into(),
                    ));
                }
                if rule.is_empty()
                    || rule.contains(yonexus_protocol::SEPARATOR)
                    || rule.chars().any(|c| c.is_whitespace() || c.is_control())
                    || rule.len() > 128
                {
                    return Err(err(&rkey, format!("{rule:?} is not a valid rule id (1-128 chars, no '::', whitespace or control characters)")));
                }
                if let Some((other, other_name)) = owners.insert(rule.clone(), (i, rp.name.clone()))
                {
                    return Err(err(
                        &rkey,
                        format!("rule '{rule}' is claimed by both plugin '{other_name}' (plugins[{other}]) and plugin '{}' (plugins[{i}])", rp.name),
                    ));
                }
            }
            let config = serde_json::to_value(&rp.config).map_err(|e| {
                err(
                    &format!("{key}.config"),
                    format!("cannot be converted to JSON: {e}"),
                )
            })?;
            if !(1..=1_000_000).contains(&rp.queue_capacity) {
                return Err(err(
                    &format!("{key}.queue_capacity"),
                    format!("{} is out of range (1..=1000000)", rp.queue_capacity),
                ));
            }
            if rp.call_deadline_ms == 0 {
                return Err(err(
                    &format!("{key}.call_deadline_ms"),
                    "must be positive".into(),
                ));
            }
            if rp.panic_window_secs == 0 {
                return Err(err(
                    &format!("{key}.panic_window_secs"),
                    "must be positive".into(),
                ));
            }
            plugins.push(PluginConfig {
                name: rp.name,
                path,
                rules: rp.rules,
                config,
                queue_capacity: rp.queue_capacity,
                call_deadline_ms: rp.call_deadline_ms,
                panic_limit: rp.panic_limit,
                panic_window_secs: rp.panic_window_secs,
            });
        }

        Ok(Config {
            file: file.to_owned(),
            server: ServerConfig {
                listen,
                path: raw.server.path,
                state_dir: resolve(&raw.server.state_dir),
                tls,
            },
            limits: raw.limits,
            admin: AdminConfig {
                listen: admin_listen,
                token_env,
            },
            allow,
            pairing: PairingConfig {
                ttl_secs: p.ttl_secs,
                max_attempts: p.max_attempts,
                notifier,
            },
            liveness: LivenessConfig {
                unstable_after_secs: l.unstable_after_secs,
                offline_after_secs: l.offline_after_secs,
                sweep_interval_secs: l.sweep_interval_secs,
            },
            reload: ReloadConfig {
                watch: raw.reload.watch,
                debounce_ms: raw.reload.debounce_ms,
                drain_timeout_ms: raw.reload.drain_timeout_ms,
            },
            plugins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/yonexus/yonexus.toml"), text)
    }

    #[test]
    fn defaults_and_relative_state_dir() {
        let c = parse("[followers]\nallow = [\"alpha\", \"beta\"]\n").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8787".parse().unwrap());
        assert_eq!(c.server.path, "/");
        assert_eq!(
            c.server.state_dir,
            PathBuf::from("/etc/yonexus/./yonexus-state")
        );
        assert_eq!(c.pairing.ttl_secs, 300);
        assert_eq!(c.pairing.max_attempts, 5);
        assert_eq!(c.pairing.notifier, NotifierConfig::Log);
        assert_eq!(c.liveness.unstable_after_secs, 420);
        assert_eq!(c.liveness.offline_after_secs, 660);
        assert_eq!(c.allow.len(), 2);
    }

    #[test]
    fn errors_name_file_and_key() {
        for (text, key, needle) in [
            (
                "[server]\nlisten = \"nope\"",
                "server.listen",
                "not an IP:port",
            ),
            ("[server]\nlisten = 5", "", "invalid TOML"),
            ("[server]\nlistne = \"x\"", "", "unknown field"),
            (
                "[followers]\nallow = [\"a::b\"]",
                "followers.allow[0]",
                "'::'",
            ),
            (
                "[followers]\nallow = [\"a\", \"a\"]",
                "followers.allow[1]",
                "twice",
            ),
            (
                "[pairing]\nnotify = \"pigeon\"",
                "pairing.notify",
                "not one of",
            ),
            (
                "[pairing]\nnotify = \"command\"",
                "pairing.command",
                "non-empty",
            ),
            (
                "[pairing]\nnotify = \"discord\"",
                "pairing.discord_admin_user_id",
                "numeric",
            ),
            (
                "[pairing]\nttl_secs = 0",
                "pairing.ttl_secs",
                "out of range",
            ),
            (
                "[liveness]\nunstable_after_secs = 10\noffline_after_secs = 5",
                "liveness.offline_after_secs",
                "greater",
            ),
            (
                "[[plugins]]\nname = \"x\"\npath = \"/nonexistent.so\"\nrules = [\"x\"]",
                "plugins[0].path",
                "does not exist",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
            assert!(
                e.to_string().starts_with("/etc/yonexus/yonexus.toml"),
                "{e}"
            );
        }
    }

    #[test]
    fn plugin_rule_conflicts_name_both_places() {
        let dir = tempfile::tempdir().unwrap();
        let so = dir.path().join("lib.so");
        std::fs::write(&so, b"x").unwrap();
        let file = dir.path().join("y.toml");
        let text = "[[plugins]]\nname = \"a\"\npath = \"lib.so\"\nrules = [\"echo\"]\n[[plugins]]\nname = \"b\"\npath = \"lib.so\"\nrules = [\"echo\"]\n";
        let e = Config::parse(&file, text).unwrap_err();
        assert_eq!(e.key, "plugins[1].rules[0]");
        assert!(
            e.message.contains("plugin 'a' (plugins[0])")
                && e.message.contains("plugin 'b' (plugins[1])"),
            "{e}"
        );
        let text = "[[plugins]]\nname = \"a\"\npath = \"lib.so\"\nrules = [\"builtin\"]\n";
        assert!(Config::parse(&file, text)
            .unwrap_err()
            .message
            .contains("reserved"));
        let text = "[[plugins]]\nname = \"a\"\npath = \"lib.so\"\nrules = [\"echo\"]\n[plugins.config]\nprefix = \">\"\n";
        let c = Config::parse(&file, text).unwrap();
        assert_eq!(c.plugins[0].path, so);
        assert_eq!(c.plugins[0].config["prefix"], ">");
    }
}
