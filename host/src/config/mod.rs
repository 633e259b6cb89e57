//! The operator's TOML configuration: parsing, defaults and validation, one module per section.
//!
//! Every error names the file, the key and what is wrong (`file: key: message`), and a config with
//! an error is never partly applied. Relative paths (`state_dir`, TLS files, plugin `path`) are
//! resolved against the directory of the config file and normalised ([`paths`]), so the same file
//! works from any working directory.
//!
//! Layout: [`error`] (the error types), [`paths`] (resolving relative paths), then one module per
//! section, each with its raw serde struct, its defaults and its validation: [`server`] (and
//! `[server.tls]`), [`followers`], [`pairing`], [`liveness`], [`limits`], [`reload`], [`admin`],
//! [`store`], [`cluster`], [`plugins`].

pub mod admin;
pub mod cluster;
pub mod error;
pub mod followers;
pub mod limits;
pub mod liveness;
pub mod pairing;
pub mod paths;
pub mod plugins;
pub mod reload;
pub mod server;
pub mod store;

pub use admin::AdminConfig;
pub use cluster::ClusterConfig;
pub use error::ConfigError;
pub use limits::LimitsConfig;
pub use liveness::LivenessConfig;
pub use pairing::PairingConfig;
pub use plugins::PluginConfig;
pub use reload::ReloadConfig;
pub use server::{ServerConfig, TlsConfig};
pub use store::{PostgresUrl, StoreConfig};

use error::Invalid;
use paths::Paths;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;

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
    /// `[admin]`: the admin HTTP port and the name of the token's environment variable.
    pub admin: AdminConfig,
    /// `[store]`: the embedded file (default) or PostgreSQL.
    pub store: StoreConfig,
    /// `[cluster]`: set when several hosts act as one hub.
    pub cluster: Option<ClusterConfig>,
    pub plugins: Vec<PluginConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    followers: followers::RawFollowers,
    #[serde(default)]
    pairing: pairing::RawPairing,
    #[serde(default)]
    liveness: liveness::RawLiveness,
    #[serde(default)]
    reload: reload::RawReload,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    admin: admin::RawAdmin,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    cluster: cluster::RawCluster,
    #[serde(default)]
    plugins: Vec<plugins::RawPlugin>,
}

impl RawConfig {
    /// Each section validates itself, in file order.
    fn validate(self, file: &Path) -> Result<Config, Invalid> {
        let paths = Paths::for_config(file);
        let server = self.server.validate(&paths)?;
        let allow = self.followers.validate()?;
        let pairing = self.pairing.validate()?;
        let liveness = self.liveness.validate()?;
        let reload = self.reload.validate()?;
        self.limits.validate()?;
        let admin = self.admin.validate()?;
        let store = self.store.validate()?;
        let cluster = self.cluster.validate()?;
        if cluster.is_some() && store == StoreConfig::File {
            return Err(Invalid::new(
                "cluster",
                "several hosts share trust through PostgreSQL: set [store] backend = \"postgres\"",
            ));
        }
        let plugins = plugins::validate(self.plugins, &paths)?;
        Ok(Config {
            file: file.to_owned(),
            server,
            allow,
            pairing,
            liveness,
            reload,
            limits: self.limits,
            admin,
            store,
            cluster,
            plugins,
        })
    }
}

impl Config {
    /// Read and validate a config file.
    /// The file must be trusted: not writable by group or others, owned by root or by the
    /// user the host runs as (see [`crate::file_trust`]).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let bytes = crate::file_trust::read_trusted(file).map_err(|e| match e {
            crate::file_trust::UntrustedFile::Unreadable { source, .. } => {
                Invalid::new("", format!("cannot read config file: {source}")).in_file(file)
            }
            other => Invalid::new("", other.to_string()).in_file(file),
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Invalid::new("", "the config file is not UTF-8 text").in_file(file))?;
        Config::parse(file, &text)
    }

    /// The plugin files the config at `file` names, resolved, without validating anything else
    /// (empty when it cannot be read or is not TOML of the right shape): what to watch after a
    /// reload was refused because one of them is missing or broken, so the fix is picked up.
    pub fn plugin_files(file: &Path) -> Vec<PathBuf> {
        let Ok(bytes) = crate::file_trust::read_trusted(file) else {
            return Vec::new();
        };
        let Ok(raw) = std::str::from_utf8(&bytes).map(toml::from_str::<RawConfig>) else {
            return Vec::new();
        };
        let paths = paths::Paths::for_config(file);
        raw.map(|r| r.plugins.iter().map(|p| paths.resolve(p.path())).collect())
            .unwrap_or_default()
    }

    /// Parse and validate config text that came from `file` (used for messages and for
    /// resolving relative paths).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| toml_error(text, &e).in_file(file))?;
        raw.validate(file).map_err(|e| e.in_file(file))
    }
}

/// A TOML error as one line: the key (its table and name, from the line the error points
/// at), the line and column, and toml's message. Only a syntax error is called "invalid TOML":
/// an unknown key or a value of the wrong type is well-formed TOML.
fn toml_error(text: &str, e: &toml::de::Error) -> Invalid {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    const SCHEMA: [&str; 6] = [
        "unknown field",
        "invalid type",
        "missing field",
        "invalid value",
        "unknown variant",
        "duplicate field",
    ];
    let message = if SCHEMA.iter().any(|p| message.starts_with(p)) {
        message
    } else {
        format!("invalid TOML: {message}")
    };
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return Invalid::new("", message);
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let here = text[line_start..].lines().next().unwrap_or("").trim();
    // The key on that line (never its value, which could be a secret), under its table.
    let name = here
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|h| h.trim_start_matches('[').split(']').next())
        .map(str::trim);
    let key = match (table, name) {
        (Some(t), Some(n)) => format!("{t}.{n}"),
        (None, Some(n)) => n.to_owned(),
        _ => String::new(),
    };
    Invalid::new(key, format!("{message} (line {line}, column {column})"))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_config_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("yonexus.toml");
        std::fs::write(&file, "[followers]\nallow = [\"alpha\"]\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Config::load(&file).is_ok());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(e.contains("0666") && e.contains("yonexus.toml"), "{e}");
    }
    use super::*;
    use crate::notify::NotifierConfig;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/yonexus/yonexus.toml"), text)
    }

    #[test]
    fn store_and_cluster_sections() {
        let c = parse("").unwrap();
        assert_eq!(c.store, StoreConfig::File);
        assert!(c.cluster.is_none());
        let c = parse("[store]\nbackend = \"postgres\"\nurl = \"postgres://y:secret@127.0.0.1/y\"\n[cluster]\nnode = \"host-a\"\nnats = [\"nats://127.0.0.1:4222\", \"nats://127.0.0.1:4223\"]\n").unwrap();
        assert!(matches!(c.store, StoreConfig::Postgres(_)));
        assert!(
            !format!("{c:?}").contains("secret"),
            "the URL is never printed"
        );
        assert_eq!(c.cluster.as_ref().unwrap().nats.len(), 2);
        for (text, key) in [
            ("[store]\nbackend = \"mysql\"", "store.backend"),
            ("[store]\nbackend = \"postgres\"", "store.url"),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"http://x\"",
                "store.url",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl_env = \"1X\"",
                "store.url_env",
            ),
            ("[store]\nurl_env = \"YX_PG\"", "store.url_env"),
            ("[store]\nurl = \"postgres://y@h/y\"", "store.url"),
            ("[cluster]\nnode = \"a\"", "cluster.nats"),
            ("[cluster]\nnats = \"nats://x:1\"", "cluster.node"),
            (
                "[cluster]\nnode = \"a b\"\nnats = \"nats://x:1\"",
                "cluster.node",
            ),
            ("[cluster]\nnode = \"a\"\nnats = \"nats://x:1\"", "cluster"),
        ] {
            assert_eq!(parse(text).unwrap_err().key, key, "{text}");
        }
        // A bad NATS URL is named without the credentials it carries.
        let e = parse(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://y@h/y\"\n[cluster]\nnode = \"a\"\nnats = \"u:hunter2@nats.internal:4222\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "cluster.nats[0]");
        let shown = e.to_string();
        assert!(
            shown.contains("nats.internal:4222") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn defaults_and_relative_state_dir() {
        let c = parse("[followers]\nallow = [\"alpha\", \"beta\"]\n").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8787".parse().unwrap());
        assert_eq!(c.server.path, "/");
        assert_eq!(
            c.server.state_dir,
            PathBuf::from("/etc/yonexus/yonexus-state")
        );
        assert_eq!(c.pairing.ttl_secs, 300);
        assert_eq!(c.pairing.max_attempts, 5);
        assert_eq!(c.pairing.notifier, NotifierConfig::Log);
        assert_eq!(c.liveness.unstable_after_secs, 420);
        assert_eq!(c.liveness.offline_after_secs, 660);
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.admin, AdminConfig::default());
        assert_eq!(c.reload.debounce_ms, 500);
        assert_eq!(c.limits, LimitsConfig::default());
        assert!(c.plugins.is_empty());
    }

    #[test]
    fn admin_section() {
        let c = parse("[admin]\nlisten = \"off\"\ntoken_env = \"MY_TOKEN\"\n").unwrap();
        assert_eq!(c.admin.listen, None);
        assert_eq!(c.admin.token_env, "MY_TOKEN");
        let e = parse("[admin]\ntoken_env = \"MY-TOKEN\"\n").unwrap_err();
        assert_eq!(e.key, "admin.token_env");
        assert!(
            e.message.contains("not an environment variable name"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        for (text, key, needle) in [
            (
                "[server]\nlisten = \"nope\"",
                "server.listen",
                "not an IP:port",
            ),
            ("[server]\nlisten = 5", "server.listen", "invalid type"),
            ("[server]\nlistne = \"x\"", "server.listne", "unknown field"),
            ("[server\nlisten = 5", "", "invalid TOML"),
            (
                "[server] # the listener\nlisten = 5",
                "server.listen",
                "invalid type",
            ),
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
                "plugin 'x': plugin file '/nonexistent.so' does not exist",
            ),
            (
                "[[plugins]]\nname = \"relay\"\npath = \"lib/relay.so\"\nrules = [\"x\"]",
                "plugins[0].path",
                "plugin 'relay': plugin file '/etc/yonexus/lib/relay.so' does not exist (the config names 'lib/relay.so', relative to its folder '/etc/yonexus')",
            ),
            (
                "[[plugins]]\nname = \"w\"\npath = \"/bin/sh\"\nrules = [\"x\", \"x\"]",
                "plugins[0].rules[1]",
                "plugin 'w': rule 'x' is listed twice",
            ),
            (
                "[reload]\ndebounce_ms = 1",
                "reload.debounce_ms",
                "out of range",
            ),
            (
                "[limits]\nmax_message_size = 0",
                "limits.max_message_size",
                "must be positive",
            ),
            (
                "[admin]\nlisten = \"nowhere\"",
                "admin.listen",
                "or \"off\"",
            ),
            (
                "[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"",
                "server.tls.cert",
                "'/etc/yonexus/c.pem' does not exist (the config names 'c.pem', relative to its folder '/etc/yonexus')",
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
