//! `yonexus`: run the host, check a config, and administer a running host.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use yonexus_host::admin::{self, Request};
use yonexus_host::clock::{Clock, SystemClock};
use yonexus_host::config::Config;
use yonexus_host::plugins::{self, PluginSpec};
use yonexus_host::server::Host;
use yonexus_host::store::{self, Store};

#[derive(Parser)]
#[command(
    name = "yonexus",
    version,
    about = "Yonexus host: a plugin-hosting hub for rule messages"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host.
    Serve {
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
    },
    /// Validate a config file without starting the host.
    Check {
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
    },
    /// List followers: pairing status, liveness, last heartbeat, connected since.
    Clients {
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List pending pairings with their codes and expiry.
    Pairing {
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Ask the running host to re-read its config and reload changed plugins (as SIGHUP does).
    /// Exits non-zero with the reason when the change is refused.
    Reload {
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Forget a follower's trust and disconnect it now; it must pair again.
    Revoke {
        identifier: String,
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // One async worker more than cores: non-blocking plugins may run inline on at most `cores`
    // of them at once, so one always stays free for every other follower.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    yonexus_host::plugins::set_inline_limit(cores);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores + 1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("yonexus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yonexus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(&load(&config)?).await,
        Command::Check { config } => {
            let c = load(&config)?;
            println!("{}: config OK", c.file.display());
            println!("  listen {} path {}", c.server.listen, c.server.path);
            println!("  state_dir {}", c.server.state_dir.display());
            println!("  {} allowlisted follower(s)", c.allow.len());
            check_plugins(&c)
        }
        Command::Clients { config, json } => {
            let c = load(&config)?;
            let (resp, live) = admin::query(
                &c.server.state_dir,
                &c.allow,
                &Request::Clients,
                SystemClock.now(),
            )?;
            let rows = resp.clients.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                if !live {
                    eprintln!(
                        "(host not running: read from {})",
                        c.server.state_dir.join(store::STATE_FILE).display()
                    );
                }
                println!(
                    "{:<24} {:<9} {:<9} {:<22} {:<22} REMOTE",
                    "IDENTIFIER", "PAIRING", "LIVENESS", "LAST HEARTBEAT", "CONNECTED SINCE"
                );
                for r in rows {
                    println!(
                        "{:<24} {:<9} {:<9} {:<22} {:<22} {}{}",
                        r.identifier,
                        r.pairing_status,
                        r.liveness,
                        fmt_time(r.last_heartbeat_at),
                        fmt_time(r.connected_since),
                        r.remote.unwrap_or_else(|| "-".into()),
                        if r.allowed {
                            ""
                        } else {
                            "  (not on allowlist)"
                        }
                    );
                }
            }
            Ok(())
        }
        Command::Pairing { config, json } => {
            let c = load(&config)?;
            let now = SystemClock.now();
            let (resp, live) = admin::query(&c.server.state_dir, &c.allow, &Request::Pairing, now)?;
            let rows = resp.pairing.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                if !live {
                    eprintln!(
                        "(host not running: read from {})",
                        c.server.state_dir.join(store::STATE_FILE).display()
                    );
                }
                if rows.is_empty() {
                    eprintln!("no pending pairings");
                }
                println!(
                    "{:<24} {:<10} {:<22} {:<10} NOTIFIED",
                    "IDENTIFIER", "CODE", "EXPIRES", "REMAINING"
                );
                for r in rows {
                    println!(
                        "{:<24} {:<10} {:<22} {:<10} {}",
                        r.identifier,
                        r.code,
                        fmt_time(Some(r.expires_at)),
                        format!("{}s", r.expires_at - now),
                        r.notify_status.unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(())
        }
        Command::Reload { config, json } => {
            let c = load(&config)?;
            let resp = admin::request(&c.server.state_dir, &Request::Reload)?;
            let report = resp.reload.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.changes.is_empty() {
                println!("reloaded: nothing changed");
            } else {
                println!("reloaded in {} ms:", report.took_ms);
                for change in &report.changes {
                    println!("  {change}");
                }
            }
            for key in &report.needs_restart {
                eprintln!("needs a restart to take effect: {key}");
            }
            Ok(())
        }
        Command::Revoke {
            identifier,
            config,
            json,
        } => {
            let c = load(&config)?;
            let state_dir = &c.server.state_dir;
            let (revoked, live) = match admin::request(
                state_dir,
                &Request::Revoke {
                    identifier: identifier.clone(),
                },
            ) {
                Ok(resp) => (resp.revoked.unwrap_or(false), true),
                Err(admin::ClientError::NotRunning(_)) => {
                    (revoke_offline(state_dir, &identifier).await?, false)
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "identifier": identifier, "revoked": revoked, "hostRunning": live })
                );
            } else if revoked {
                println!(
                    "revoked '{identifier}'{}",
                    if live {
                        " and disconnected it"
                    } else {
                        " (host not running; state file updated)"
                    }
                );
            } else {
                println!("'{identifier}' has no trust record; nothing to revoke");
            }
            Ok(())
        }
    }
}

/// Load every configured plugin (from a throwaway staging dir) and report it, or why not.
fn check_plugins(config: &Config) -> anyhow::Result<()> {
    let staging = tempfile::tempdir().context("creating a staging directory")?;
    let registry = Arc::new(yonexus_host::registry::Registry::new());
    let clock: yonexus_host::clock::SharedClock = Arc::new(SystemClock);
    let mut failures = 0;
    for p in &config.plugins {
        let spec = PluginSpec::from_config(p);
        match plugins::load(&spec, staging.path()).and_then(|lib| {
            lib.instantiate(&spec, Arc::clone(&registry), Arc::clone(&clock))?;
            Ok(lib.describe(&spec))
        }) {
            Ok(d) => println!("  {d}"),
            Err(e) => {
                failures += 1;
                println!("  REFUSED {e}");
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} plugin(s) refused");
    }
    Ok(())
}

/// Revoke in the state file while no host runs (taking the host's lock so none starts meanwhile).
async fn revoke_offline(state_dir: &Path, identifier: &str) -> anyhow::Result<bool> {
    let _lock = store::lock_state_dir(state_dir)?;
    let store = Store::open_file(state_dir)?;
    let now = SystemClock.now();
    let existed = store
        .apply_existing(identifier, |r| r.revoke(now))
        .await?
        .is_some();
    Ok(existed)
}

fn fmt_time(t: Option<i64>) -> String {
    match t {
        None => "-".into(),
        Some(secs) => {
            let age = SystemClock.now() - secs;
            if age >= 0 {
                format!("{secs} ({age}s ago)")
            } else {
                format!("{secs} (in {}s)", -age)
            }
        }
    }
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let host = Host::start(config, Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot start the host with {}", config.file.display()))?;
    let token = host.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: closing connections (a second signal exits at once)");
        token.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    let reloader = Arc::clone(&host.reloader);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // The outcome (applied or refused with its reason) is logged by the reloader.
                    let _ = reloader.reload("SIGHUP").await;
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; use `yonexus reload`"),
    }
    host.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
