//! `yonexus init`: a working, commented starter config.
//!
//! The bundled plugins are looked for, in order, in `--plugin-dir`, next to the `yonexus`
//! executable (a cargo build: `target/debug/` or `target/release/`), and in `../lib/yonexus/plugins`
//! beside its `bin/` folder (an installed layout: `/usr/local/bin/yonexus` →
//! `/usr/local/lib/yonexus/plugins/`). The first folder holding every bundled plugin wins; with
//! none, the installed layout's folder is written and the caller warns. Plugin paths are written
//! absolute, so the config works from any folder. The file holds no secret: it is written with
//! mode 0644, atomically (temporary file, fsync, rename), and never over an existing file
//! unless `force` is set.

use std::path::{Path, PathBuf};

use crate::atomic_file::{self, Existing};
use crate::config::paths::normalize;

/// The bundled plugins and the rule each one serves.
pub const BUNDLED: [&str; 4] = ["echo", "relay", "broadcast", "presence"];

/// Why `init` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already exists; pass --force to replace it (the old file is not kept)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The file name of bundled plugin `name` on this platform (`libyonexus_plugin_echo.so`).
pub fn plugin_file(name: &str) -> String {
    format!(
        "{}yonexus_plugin_{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Bundled plugins missing from `dir`.
pub fn missing_plugins(dir: &Path) -> Vec<&'static str> {
    BUNDLED
        .into_iter()
        .filter(|name| !dir.join(plugin_file(name)).is_file())
        .collect()
}

/// Where bundled plugins are looked for, for an executable at `exe` (see the module docs).
pub fn candidate_dirs(exe: &Path) -> Vec<PathBuf> {
    let Some(bin) = exe.parent() else {
        return Vec::new();
    };
    vec![
        bin.to_owned(),
        normalize(&bin.join("../lib/yonexus/plugins")),
    ]
}

/// The folder to write plugin paths for: the first candidate with every bundled plugin, else the
/// installed layout's folder. The flag says whether the plugins were found there.
pub fn find_plugin_dir(exe: &Path) -> (PathBuf, bool) {
    let candidates = candidate_dirs(exe);
    if let Some(dir) = candidates.iter().find(|d| missing_plugins(d).is_empty()) {
        return (dir.clone(), true);
    }
    let fallback = candidates
        .last()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/usr/local/lib/yonexus/plugins"));
    (fallback, false)
}

/// A TOML basic string holding `s`.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The starter config: allowlist example, bundled plugins from `plugin_dir`, `state_dir` as
/// given (relative = against the config file's folder), comments on each section.
pub fn starter_config(plugin_dir: &Path, state_dir: &str) -> String {
    let plugin = |name: &str| toml_str(&plugin_dir.join(plugin_file(name)).to_string_lossy());
    format!(
        r#"# Yonexus host configuration, written by `yonexus init`.
#
#   yonexus check --config THIS_FILE    validate it and load every plugin, without starting
#   yonexus serve --config THIS_FILE    run the host
#
# Keys left out take their defaults; every key is explained in the README's "Configuration"
# table. Unknown keys are errors. Relative paths are resolved against this file's folder.
# The file holds no secret (tokens are read from environment variables it names).

[server]
# Followers connect to ws://127.0.0.1:8787/ . To accept followers from other machines, listen on
# "0.0.0.0:8787" and put TLS in front: [server.tls] below, or a reverse proxy (docs/deploy-tls.md).
listen = "127.0.0.1:8787"
path = "/"
# Trust records (trust.json, mode 0600), the host lock and the admin socket live here. Back it up:
# losing it means every follower pairs again.
state_dir = {state_dir}

# Serve wss:// directly (PEM files; certificate renewal needs a restart, see docs/deploy-tls.md):
# [server.tls]
# cert = "/etc/letsencrypt/live/hub.example.org/fullchain.pem"
# key = "/etc/letsencrypt/live/hub.example.org/privkey.pem"

[followers]
# Only these identifiers may pair and connect (example names: put yours here). Removing one
# disconnects it and keeps it out; `yonexus revoke ID` alone forgets its trust but lets it pair
# again at once.
allow = ["alpha", "beta"]

[pairing]
# How a new follower's pairing code reaches you. "log" prints it on the host's stderr: fine for a
# first try, not for production. There, use "command" (runs your program with
# YONEXUS_IDENTIFIER, YONEXUS_PAIRING_CODE and YONEXUS_EXPIRES_AT in its environment) or
# "discord" (a DM from your bot; its token is read from the variable named below):
#   notify = "command"
#   command = ["/usr/local/bin/notify-admin"]
# or
#   notify = "discord"
#   discord_admin_user_id = "123456789012345678"
#   discord_bot_token_env = "YONEXUS_DISCORD_TOKEN"
notify = "log"
ttl_secs = 300       # how long a code stays valid
max_attempts = 5     # wrong codes per connection before it is closed; the code stays valid

[liveness]
# A follower silent (no heartbeat) this long is "unstable", then "offline" and disconnected.
unstable_after_secs = 420
offline_after_secs = 660

[admin]
# /metrics (Prometheus), /healthz and /readyz; "off" disables it. Keep it on loopback.
listen = "127.0.0.1:9787"
# The environment variable holding the admin token (never the token itself).
token_env = "YONEXUS_ADMIN_TOKEN"

[reload]
# Edits to this file and new plugin builds are picked up by themselves (SIGHUP and
# `yonexus reload` work too); a change that fails validation is refused and nothing changes.
watch = true

# Rule handlers. A follower sending `echo::hi` gets `echo::echo: hi` back; each rule belongs to
# one plugin. Plugin paths: the bundled plugins (built by `cargo build --workspace`, or installed
# to ../lib/yonexus/plugins beside the yonexus binary).
[[plugins]]
name = "echo"
path = {echo}
rules = ["echo"]            # echo::<text> → the sender gets echo::<prefix><text>
[plugins.config]
prefix = "echo: "

[[plugins]]
name = "relay"
path = {relay}
rules = ["relay"]           # relay::<target>::<text> → the target gets relay::<sender>::<text>

[[plugins]]
name = "broadcast"
path = {broadcast}
rules = ["broadcast"]       # broadcast::<text> → every other follower gets broadcast::<sender>::<text>

[[plugins]]
name = "presence"
path = {presence}
rules = ["presence"]        # presence::subscribe → presence::<identifier>::online|unstable|offline
"#,
        state_dir = toml_str(state_dir),
        echo = plugin("echo"),
        relay = plugin("relay"),
        broadcast = plugin("broadcast"),
        presence = plugin("presence"),
    )
}

/// Write `text` to `path` atomically with mode 0644, creating its folder. Refuses to replace an
/// existing file unless `force`.
pub fn write_config(path: &Path, text: &str, force: bool) -> Result<(), InitError> {
    let io = |source| InitError::Io {
        path: path.to_owned(),
        source,
    };
    if !force && path.symlink_metadata().is_ok() {
        return Err(InitError::Exists(path.to_owned()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let existing = if force {
        Existing::Replace
    } else {
        // Atomic "create, never replace": a file that appeared meanwhile is not overwritten.
        Existing::Keep
    };
    atomic_file::write(path, text.as_bytes(), 0o644, existing).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            InitError::Exists(path.to_owned())
        } else {
            io(e)
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::os::unix::fs::MetadataExt;

    fn fake_plugins(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for name in BUNDLED {
            std::fs::write(dir.join(plugin_file(name)), b"not really a plugin").unwrap();
        }
    }

    #[test]
    fn the_starter_config_is_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let plugins = tmp.path().join("plugins dir \"quoted\"");
        fake_plugins(&plugins);
        let file = tmp.path().join("etc/yonexus.toml");
        let text = starter_config(&plugins, "./yonexus-state");
        let c = Config::parse(&file, &text).unwrap();
        assert_eq!(c.server.state_dir, tmp.path().join("etc/yonexus-state"));
        assert_eq!(c.plugins.len(), 4);
        assert_eq!(c.plugins[0].path, plugins.join(plugin_file("echo")));
        assert_eq!(c.plugins[0].config["prefix"], "echo: ");
        assert_eq!(c.pairing.notifier, crate::notify::NotifierConfig::Log);
        assert!(c.allow.contains("alpha") && c.allow.contains("beta"));
        assert_eq!(c.admin.token_env, "YONEXUS_ADMIN_TOKEN");
        let abs = starter_config(&plugins, "/var/lib/yonexus");
        let c = Config::parse(&file, &abs).unwrap();
        assert_eq!(c.server.state_dir, PathBuf::from("/var/lib/yonexus"));
    }

    #[test]
    fn plugin_dir_next_to_the_binary_then_installed_layout() {
        let tmp = tempfile::tempdir().unwrap();
        // A cargo build: plugins beside the binary.
        let build = tmp.path().join("target/debug");
        fake_plugins(&build);
        assert_eq!(
            find_plugin_dir(&build.join("yonexus")),
            (build.clone(), true)
        );
        // An installed layout.
        let bin = tmp.path().join("usr/local/bin");
        let lib = tmp.path().join("usr/local/lib/yonexus/plugins");
        std::fs::create_dir_all(&bin).unwrap();
        assert_eq!(find_plugin_dir(&bin.join("yonexus")), (lib.clone(), false));
        fake_plugins(&lib);
        assert_eq!(find_plugin_dir(&bin.join("yonexus")), (lib.clone(), true));
        // One plugin missing: that folder is not chosen.
        std::fs::remove_file(lib.join(plugin_file("relay"))).unwrap();
        assert_eq!(missing_plugins(&lib), vec!["relay"]);
        assert!(!find_plugin_dir(&bin.join("yonexus")).1);
    }

    #[test]
    fn writes_0644_atomically_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new/dir/yonexus.toml");
        write_config(&path, "one", false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let e = write_config(&path, "two", false).unwrap_err();
        assert!(matches!(e, InitError::Exists(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        write_config(&path, "three", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("yonexus.toml")]);
    }
}
