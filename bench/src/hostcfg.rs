//! `yonexus-bench config`: a ready host configuration for benchmarking.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ConfigArgs {
    /// Followers to allowlist (<prefix>0 … <prefix>N-1). Relay needs 2 per pair, broadcast
    /// receivers + 1.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub followers: usize,
    /// Port the host listens on (127.0.0.1).
    #[arg(short = 'p', long, default_value_t = 8787)]
    pub port: u16,
    /// Directory to write into (created): yonexus.toml, notify.sh, codes.txt is appended to by
    /// the host, state/ is the host's state dir, plugins/ holds the copied plugins.
    #[arg(long)]
    pub dir: PathBuf,
    /// Identifier prefix (must match the bench's --id-prefix).
    #[arg(long, default_value = "bench-")]
    pub id_prefix: String,
    /// Where the built plugins are [default: the directory of this executable, e.g. target/release].
    #[arg(long)]
    pub plugins_from: Option<PathBuf>,
    /// `queue_capacity` of each plugin (the host's default is 1024).
    #[arg(long)]
    pub queue_capacity: Option<u32>,
    /// Leave out the `[limits]` keys that hosts before the security limits do not know
    /// (`max_handshakes`, `free_logins_per_identifier`); such a host refuses unknown keys.
    /// bench.sh falls back to this when `yonexus check` reports an unknown field.
    #[arg(long)]
    pub compat_limits: bool,
}

const PLUGINS: [&str; 3] = ["echo", "relay", "broadcast"];

/// The config text (pure, for testing).
pub fn render(args: &ConfigArgs, dir: &Path) -> String {
    let allow: Vec<String> = (0..args.followers)
        .map(|i| format!("\"{}{i}\"", args.id_prefix))
        .collect();
    let mut out = format!(
        "# Written by `yonexus-bench config`. Relative paths are against this file's directory.\n\
         [server]\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"state\"\n\n\
         [followers]\nallow = [{}]\n\n\
         [pairing]\nnotify = \"command\"\ncommand = [\"/bin/sh\", \"{}\"]\n\n\
         # Every bench connection comes from 127.0.0.1 and pipelines: lift the per-IP and\n\
         # per-connection limits that protect a production host.\n\
         [limits]\nmax_unauthenticated = 100000\nmax_unauthenticated_per_ip = 100000\n\
         auth_timeout_secs = 120\nrate_per_sec = 10000000\nrate_burst = 10000000\n{}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[reload]\ndebounce_ms = 100\n\n",
        args.port,
        allow.join(", "),
        dir.join("notify.sh").display(),
        if args.compat_limits {
            ""
        } else {
            // Every bench connection authenticates from 127.0.0.1, 256 at a time, and bench-0
            // logs in once per scenario.
            "max_handshakes = 100000\nfree_logins_per_identifier = 1000000\n"
        }
    );
    for p in PLUGINS {
        out.push_str(&format!(
            "[[plugins]]\nname = \"{p}\"\npath = \"plugins/libyonexus_plugin_{p}.so\"\nrules = [\"{p}\"]\n"
        ));
        if let Some(q) = args.queue_capacity {
            out.push_str(&format!("queue_capacity = {q}\n"));
        }
        out.push('\n');
    }
    out
}

pub fn write(args: &ConfigArgs) -> Result<()> {
    std::fs::create_dir_all(args.dir.join("plugins"))
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let from = match &args.plugins_from {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    for p in PLUGINS {
        let name = format!("libyonexus_plugin_{p}.so");
        let src = from.join(&name);
        if !src.is_file() {
            bail!(
                "{} not found: build the plugins first (cargo build --release -p yonexus-plugin-{p}) \
                 or pass --plugins-from",
                src.display()
            );
        }
        // Copy to a temp name and rename, so a running host watching the file sees one change.
        let tmp = dir.join("plugins").join(format!(".{name}.tmp"));
        std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
        std::fs::rename(&tmp, dir.join("plugins").join(&name))?;
    }
    let codes = dir.join("codes.txt");
    let script = dir.join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Appends one line per pairing code for yonexus-bench to read.\n\
             echo \"$YONEXUS_IDENTIFIER $YONEXUS_PAIRING_CODE $YONEXUS_EXPIRES_AT\" >> '{}'\n",
            codes.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let config = dir.join("yonexus.toml");
    std::fs::write(&config, render(args, &dir))?;
    println!("wrote {}", config.display());
    println!(
        "start the host:  taskset -c 0 ./target/release/yonexus serve --config {}",
        config.display()
    );
    println!(
        "run the bench:   taskset -c 1 ./target/release/yonexus-bench echo --url ws://127.0.0.1:{}/ --codes-file {} --host-pid <PID>",
        args.port,
        codes.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_allowlist_notifier_and_plugins() {
        let args = ConfigArgs {
            followers: 3,
            port: 9000,
            dir: "/d".into(),
            id_prefix: "b-".into(),
            plugins_from: None,
            queue_capacity: Some(4096),
            compat_limits: false,
        };
        let text = render(&args, Path::new("/d"));
        assert!(
            text.contains("allow = [\"b-0\", \"b-1\", \"b-2\"]"),
            "{text}"
        );
        assert!(text.contains("listen = \"127.0.0.1:9000\""));
        assert!(text.contains("command = [\"/bin/sh\", \"/d/notify.sh\"]"));
        assert!(text.contains("path = \"plugins/libyonexus_plugin_relay.so\""));
        assert_eq!(text.matches("queue_capacity = 4096").count(), 3);
        assert!(text.contains("max_handshakes = 100000\n"), "{text}");
        let v: toml_like::Checked = toml_like::check(&text);
        assert!(v.0);
        let old = render(
            &ConfigArgs {
                compat_limits: true,
                ..args
            },
            Path::new("/d"),
        );
        assert!(
            !old.contains("max_handshakes") && !old.contains("free_logins"),
            "{old}"
        );
        assert!(old.contains("rate_burst = 10000000\n"), "{old}");
        assert!(toml_like::check(&old).0);
    }

    /// Minimal sanity check that every line is a table header, a key = value, or a comment.
    mod toml_like {
        pub struct Checked(pub bool);
        pub fn check(text: &str) -> Checked {
            Checked(text.lines().all(|l| {
                let l = l.trim();
                l.is_empty() || l.starts_with('#') || l.starts_with('[') || l.contains(" = ")
            }))
        }
    }
}
