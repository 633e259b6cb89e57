//! `yonexus`: run the host, check a config, administer a running host, and set one up (starter
//! config, shell completions, man pages).

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use yonexus_host::admin::{self, Request};
use yonexus_host::clock::{Clock, SystemClock};
use yonexus_host::config::Config;
use yonexus_host::plugins::{self, PluginSpec};
use yonexus_host::server::Host;
use yonexus_host::store::{self, Store};
use yonexus_host::timefmt::when;
use yonexus_host::{init, systemd};

#[derive(Parser)]
#[command(
    name = "yonexus",
    version,
    about = "Yonexus host: a plugin-hosting hub for rule messages",
    long_about = "Yonexus host: a plugin-hosting hub for rule messages.\n\n\
        Followers connect over WebSocket, pair once with a code the admin receives, then \
        authenticate with Ed25519 on every connect. Their rule messages (rule::content) are \
        handed to plugins. Start with `yonexus init`, then `yonexus check` and `yonexus serve`.",
    after_help = "Logs go to stderr; RUST_LOG sets the filter (default: info for serve, warn \
        otherwise). Colour only on a terminal; NO_COLOR disables it."
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
    ///
    /// Listens for followers, loads the plugins and serves until SIGINT or SIGTERM (a second
    /// signal exits at once). SIGHUP reloads the config. Under systemd (Type=notify) it reports
    /// READY once listening, RELOADING/READY around reloads, STOPPING at shutdown, and sends
    /// watchdog pings when WatchdogSec= is set.
    Serve {
        /// The config file.
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
    },
    /// Validate a config file and load every plugin, without starting the host.
    ///
    /// Prints a summary and each plugin's name, version, ABI and rules, or why it was refused;
    /// exits non-zero on any error.
    Check {
        /// The config file.
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
    },
    /// List followers: pairing status, liveness, last heartbeat, connected since.
    ///
    /// Asks the running host over its admin socket; with no host running, reads the state file.
    Clients {
        /// The config file (for its state_dir).
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        /// Print JSON (times as Unix seconds) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List pending pairings with their codes and expiry.
    Pairing {
        /// The config file (for its state_dir).
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        /// Print JSON (times as Unix seconds) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running host to re-read its config and reload changed plugins (as SIGHUP does).
    ///
    /// Prints what changed; exits non-zero with the reason when the change is refused.
    Reload {
        /// The config file (for its state_dir).
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Forget a follower's trust and disconnect it now; it must pair again.
    ///
    /// While it stays on the allowlist it can pair again at once (a new code goes to the
    /// admin); to keep it out, remove it from followers.allow as well.
    Revoke {
        /// The follower's identifier.
        identifier: String,
        /// The config file (for its state_dir).
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create or upgrade the PostgreSQL trust store's schema (`[store] backend = "postgres"`).
    ///
    /// Applies every missing migration in one transaction and prints the schema version before
    /// and after. A host does the same when it starts; run this first to upgrade the schema
    /// before restarting the hosts one by one.
    Migrate {
        /// The config file (for its [store]).
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
    },
    /// Write a commented starter config (allowlist example, the bundled plugins, log notifier).
    ///
    /// Bundled plugins are looked for in --plugin-dir, beside this executable (a cargo build),
    /// then in ../lib/yonexus/plugins beside its bin/ folder (an installed layout). The file is
    /// written atomically with mode 0644 and never over an existing file without --force.
    Init {
        /// Where to write it.
        #[arg(long, default_value = "./yonexus.toml")]
        config: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// The folder holding the bundled plugin libraries.
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
        /// The state directory to write (relative paths are against the config file's folder).
        #[arg(long, value_name = "DIR", default_value = "./yonexus-state")]
        state_dir: String,
    },
    /// Print a shell completion script to stdout.
    ///
    /// e.g. `yonexus completions bash > /etc/bash_completion.d/yonexus`,
    /// `yonexus completions zsh > ~/.zfunc/_yonexus`,
    /// `yonexus completions fish > ~/.config/fish/completions/yonexus.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per subcommand with --dir.
    ///
    /// e.g. `yonexus manpage | man -l -`, or
    /// `yonexus manpage --dir /usr/local/share/man/man1`.
    Manpage {
        /// Write yonexus.1 and `yonexus-<command>.1` into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Colour only for a person at a terminal, and never when `NO_COLOR` is set (no-color.org).
fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `default` applies unless `RUST_LOG` is set.
fn init_logging(format: LogFormat, default: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The file watcher's own trace lines, whatever RUST_LOG says: with the log file in a
    // watched folder each line written is an event it traces, which is written, … (100 MB in
    // seconds at `RUST_LOG=trace`). Its warnings still show.
    if let Ok(quiet) = "notify=warn".parse() {
        filter = filter.add_directive(quiet);
    }
    // A log line that cannot be written (stderr closed: the reader of a pipe went away) is
    // dropped. Reporting it would print to that same stderr, and that panic would end whichever
    // task logged — the signal handler's, so SIGTERM no longer stopped the host.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour())
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The host logs its own events at info; one-shot commands print their result and log only
    // warnings. Both steps below run before any thread starts.
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        // Reads and removes NOTIFY_SOCKET & co. from the environment.
        systemd::init_from_env();
        // The NATS client's own info lines repeat every few seconds while a server is away and
        // name none; the cluster link logs what matters (unreachable, back) itself.
        "info,async_nats=warn"
    } else {
        exit_quietly_on_closed_stdout();
        "warn"
    };
    init_logging(cli.log_format, default_level);
    let outcome = match cli.command {
        Command::Init {
            config,
            force,
            plugin_dir,
            state_dir,
        } => run_init(&config, force, plugin_dir, &state_dir),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "yonexus",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpage { dir } => manpage(dir.as_deref()),
        Command::Check { config } => check(&config),
        Command::Migrate { config } => migrate(&config),
        Command::Clients { config, json } => clients(&config, json),
        Command::Pairing { config, json } => pairing(&config, json),
        Command::Reload { config, json } => reload(&config, json),
        Command::Serve { config } => load(&config).and_then(|c| block_on(true, serve(&c))),
        Command::Revoke {
            identifier,
            config,
            json,
        } => revoke(&config, &identifier, json),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yonexus: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// One-shot commands write to stdout, often into a pipe (`yonexus manpage | head`): when the
/// reader goes away, end quietly like other Unix tools instead of panicking in `println!`.
/// (Rust ignores SIGPIPE by default; the host itself keeps ignoring it.)
fn exit_quietly_on_closed_stdout() {
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run_init(
    config: &Path,
    force: bool,
    plugin_dir: Option<PathBuf>,
    state_dir: &str,
) -> anyhow::Result<()> {
    let (plugin_dir, found) = match plugin_dir {
        Some(dir) => {
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            let found = init::missing_plugins(&dir).is_empty();
            (dir, found)
        }
        None => {
            let exe = std::env::current_exe()
                .and_then(|e| e.canonicalize())
                .context("cannot find this executable's folder (pass --plugin-dir)")?;
            init::find_plugin_dir(&exe)
        }
    };
    let text = init::starter_config(&plugin_dir, state_dir);
    init::write_config(config, &text, force)?;
    println!("wrote {}", config.display());
    println!("  plugins from {}", plugin_dir.display());
    if !found {
        let missing = init::missing_plugins(&plugin_dir);
        eprintln!(
            "warning: bundled plugin(s) {} not found in {}: build them (`cargo build --workspace`) \
             or install them there, or run init again with --plugin-dir DIR --force",
            missing.join(", "),
            plugin_dir.display()
        );
    }
    // As the user invoked us (`./target/debug/yonexus` or `yonexus`), so the lines can be pasted.
    let me = std::env::args().next().unwrap_or_else(|| "yonexus".into());
    println!("next:");
    println!("  {me} check --config {}", config.display());
    println!("  {me} serve --config {}", config.display());
    Ok(())
}

fn manpage(dir: Option<&Path>) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .context("writing the man page"),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            println!("wrote man pages into {}", dir.display());
            Ok(())
        }
    }
}

/// Run `f` to completion on a Tokio runtime: multi-threaded for the host, one thread for the
/// CLI's short jobs.
/// An error and its causes on one line, each cause once: errors that already show their
/// source in their own message (`cannot listen on …: Address already in use`) do not repeat it.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// How often (in tasks run) an async worker looks at the runtime's shared queue before its
/// own; tokio's default is 61. Under load every follower's task is ready at once: a worker's own
/// queue holds 256, the rest overflow into the shared queue, as do tasks woken from plugin
/// threads (replies of plugins that are not run inline). At 61 those waited behind dozens of
/// rounds of the local ones: 500 followers × 2 in flight on one core had a p99 of 19–24 ms at a
/// p50 of 5 ms. At 2 the p99 is 10–14 ms at the same p50 and throughput; the other scenarios
/// are unchanged but broadcast 1 → 100 × 16, 2–3 % fewer deliveries per CPU-second
/// (bench/README.md, bench/results/2026-11-28-queue-interval/).
const GLOBAL_QUEUE_INTERVAL: u32 = 2;

fn block_on<T>(
    multi_thread: bool,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let mut builder = if multi_thread {
        // One async worker more than cores: non-blocking plugins may run inline on at most
        // `cores` of them at once, so one always stays free for every other follower.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        yonexus_host::plugins::set_inline_limit(cores);
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cores + 1)
            .global_queue_interval(GLOBAL_QUEUE_INTERVAL);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn check(config: &Path) -> anyhow::Result<()> {
    let c = load(config)?;
    println!("{}: config OK", c.file.display());
    println!("  listen {} path {}", c.server.listen, c.server.path);
    println!("  state_dir {}", c.server.state_dir.display());
    println!("  {} allowlisted follower(s)", c.allow.len());
    let tls = check_tls(&c);
    let notifier = check_notifier(&c);
    let store = check_store(&c);
    let cluster = check_cluster(&c);
    let plugins = check_plugins(&c);
    tls.and(notifier).and(store).and(cluster).and(plugins)
}

/// `check`'s TLS line: the certificate chain and key load and form a pair, as `serve` needs.
fn check_tls(c: &Config) -> anyhow::Result<()> {
    let Some(tls) = &c.server.tls else {
        return Ok(());
    };
    match yonexus_host::tls::acceptor(tls) {
        Ok(_) => {
            println!(
                "  tls cert {} key {}: usable",
                tls.cert.display(),
                tls.key.display()
            );
            Ok(())
        }
        Err(why) => {
            println!("  tls NOT USABLE: {why}");
            anyhow::bail!("{why}")
        }
    }
}

/// `check`'s pairing-notifier line: the notifier builds as `serve` builds it (the Discord bot
/// token is in its variable), and a command notifier's program is there to run.
fn check_notifier(c: &Config) -> anyhow::Result<()> {
    use yonexus_host::notify::{Notifier, NotifierConfig};
    let notifier = match Notifier::from_config(&c.pairing.notifier) {
        Ok(n) => n,
        Err(e) => {
            println!("  pairing notifier NOT USABLE: {e}");
            return Err(e.into());
        }
    };
    if let NotifierConfig::Command { program } = &c.pairing.notifier {
        let exe = program.first().map(String::as_str).unwrap_or("");
        let Some(found) = find_program(exe) else {
            println!("  pairing notifier command: {exe} NOT FOUND");
            anyhow::bail!(
                "pairing.command: `{exe}` is not an executable file{}: pairing codes could not be delivered",
                if exe.contains('/') { "" } else { " on PATH" }
            );
        };
        println!("  pairing notifier command: {}", found.display());
    } else {
        println!("  pairing notifier {}", notifier.kind());
    }
    Ok(())
}

/// Where `exe` runs from, as the command notifier starts it: a path (with a `/`, relative to
/// the working directory) or a name looked up on `PATH`; `None` unless it is an executable file.
fn find_program(exe: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if exe.is_empty() {
        return None;
    }
    if exe.contains('/') {
        let p = PathBuf::from(exe);
        return executable(&p).then_some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(exe))
            .find(|p| executable(p))
    })
}

/// `check`'s cluster lines: this node's name and whether each NATS server answers (a host
/// starts without NATS and keeps retrying, so only none answering fails the check).
fn check_cluster(c: &Config) -> anyhow::Result<()> {
    let Some(cluster) = &c.cluster else {
        return Ok(());
    };
    println!("  cluster node \"{}\"", cluster.node);
    let probes = block_on(false, async {
        Ok(yonexus_host::cluster::link::probe(&cluster.nats).await)
    })?;
    let mut reachable = 0;
    for (server, result) in &probes {
        match result {
            Ok(()) => {
                reachable += 1;
                println!("  NATS {server}: reachable");
            }
            Err(why) => println!("  NATS {server}: NOT REACHABLE ({why})"),
        }
    }
    if reachable == 0 {
        anyhow::bail!("no NATS server answers: this host would serve only its own followers");
    }
    Ok(())
}

/// Answer `clients`/`pairing` from the host running on this machine, or, when none runs, from
/// the trust store itself (the state file, or PostgreSQL with the cluster's session claims).
/// Returns the answer and, when it did not come from a running host, where it was read.
fn query(c: &Config, req: &Request, now: i64) -> anyhow::Result<(admin::Response, Option<String>)> {
    use yonexus_host::config::StoreConfig;
    match admin::request(&c.server.state_dir, req) {
        Ok(resp) => return Ok((resp, None)),
        Err(admin::ClientError::NotRunning(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let (records, claims, source) = match &c.store {
        StoreConfig::File => {
            let file = c.server.state_dir.join(store::STATE_FILE);
            let records: Vec<_> = store::load_file(&file)?.into_values().collect();
            (records, Vec::new(), file.display().to_string())
        }
        StoreConfig::Postgres(_) => block_on(false, async {
            let store = Store::open_without_migrating(&c.store, &c.server.state_dir).await?;
            Ok((
                store.snapshot().await?,
                store.claims(now).await?,
                store.describe(),
            ))
        })?,
    };
    let resp = admin::offline_answer(&records, &claims, &c.allow, req, now)
        .context("this request needs a running host")?;
    Ok((resp, Some(source)))
}

/// Shown when `clients`/`pairing` read the store because no host runs on this machine.
fn note_offline(source: &str) {
    eprintln!("(no host running here: read from {source})");
}

fn clients(config: &Path, json: bool) -> anyhow::Result<()> {
    let c = load(config)?;
    let now = SystemClock.now();
    let (resp, offline) = query(&c, &Request::Clients, now)?;
    let rows = resp.clients.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if let Some(source) = &offline {
        note_offline(source);
    }
    let clustered = rows.iter().any(|r| r.node.is_some());
    println!(
        "{:<24} {:<9} {:<9} {:<30} {:<30} {}REMOTE",
        "IDENTIFIER",
        "PAIRING",
        "LIVENESS",
        "LAST HEARTBEAT",
        "CONNECTED SINCE",
        if clustered { "HOST         " } else { "" }
    );
    for r in rows {
        let host = match (&r.node, clustered) {
            (_, false) => String::new(),
            (Some(n), true) => format!("{n:<12} "),
            (None, true) => format!("{:<12} ", "-"),
        };
        println!(
            "{:<24} {:<9} {:<9} {:<30} {:<30} {host}{}{}",
            r.identifier,
            r.pairing_status,
            r.liveness,
            when(r.last_heartbeat_at, now),
            when(r.connected_since, now),
            r.remote.unwrap_or_else(|| "-".into()),
            if r.allowed {
                ""
            } else {
                "  (not on allowlist)"
            }
        );
    }
    Ok(())
}

fn pairing(config: &Path, json: bool) -> anyhow::Result<()> {
    let c = load(config)?;
    let now = SystemClock.now();
    let (resp, offline) = query(&c, &Request::Pairing, now)?;
    let rows = resp.pairing.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if let Some(source) = &offline {
        note_offline(source);
    }
    if rows.is_empty() {
        eprintln!("no pending pairings");
        return Ok(());
    }
    println!(
        "{:<24} {:<10} {:<30} {:<6} NOTIFIED",
        "IDENTIFIER", "CODE", "EXPIRES", "WRONG"
    );
    for r in rows {
        println!(
            "{:<24} {:<10} {:<30} {:<6} {}",
            r.identifier,
            r.code,
            when(Some(r.expires_at), now),
            r.wrong_attempts,
            r.notify_status.unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

fn reload(config: &Path, json: bool) -> anyhow::Result<()> {
    let c = load(config)?;
    let resp = admin::request(&c.server.state_dir, &Request::Reload)?;
    let report = resp.reload.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.changes.is_empty() {
        match &report.previous {
            Some(p) => {
                println!(
                    "reloaded: nothing changed since the last reload ({}, {}), which {}",
                    when(Some(p.at), SystemClock.now()),
                    p.trigger,
                    if p.changes.is_empty() {
                        "changed only settings that need a restart"
                    } else {
                        "applied:"
                    }
                );
                for change in &p.changes {
                    println!("  {change}");
                }
                for key in &p.needs_restart {
                    eprintln!("needs a restart to take effect: {key}");
                }
            }
            None => println!("reloaded: nothing changed"),
        }
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

fn revoke(config: &Path, identifier: &str, json: bool) -> anyhow::Result<()> {
    let c = load(config)?;
    yonexus_protocol::validate::identifier(identifier)
        .map_err(|e| anyhow::anyhow!("{identifier:?} is not a follower identifier: {e}"))?;
    let request = Request::Revoke {
        identifier: identifier.to_owned(),
    };
    let (revoked, was_paired, disconnected, offline) =
        match admin::request(&c.server.state_dir, &request) {
            Ok(resp) => (
                resp.revoked.unwrap_or(false),
                // A host from before these fields: take a revoked record as paired.
                resp.was_paired.or(resp.revoked).unwrap_or(false),
                resp.disconnected.unwrap_or(false),
                None,
            ),
            Err(admin::ClientError::NotRunning(_)) => {
                let o = block_on(false, revoke_offline(&c, identifier))?;
                (o.existed, o.was_paired, false, Some(o))
            }
            Err(e) => return Err(e.into()),
        };
    if json {
        let mut out = serde_json::json!({
            "identifier": identifier,
            "revoked": revoked,
            "wasPaired": was_paired,
            "disconnected": disconnected,
            "hostRunning": offline.is_none(),
        });
        if let Some(Some(told)) = offline.as_ref().map(|o| &o.cluster) {
            out["clusterTold"] = serde_json::json!(told.is_ok());
        }
        println!("{out}");
        return Ok(());
    }
    let connection = if disconnected {
        " and disconnected it"
    } else if offline.is_none() {
        " (it was not connected to this host)"
    } else {
        ""
    };
    match (&offline, revoked, was_paired) {
        (_, false, _) => println!("'{identifier}' has no trust record; nothing to revoke"),
        (_, true, false) => {
            println!("'{identifier}' was not paired (never, or already revoked); nothing to revoke")
        }
        (None, true, true) => println!("revoked '{identifier}'{connection}"),
        (Some(o), true, true) => println!(
            "revoked '{identifier}' (no host running here; {} updated)",
            o.store
        ),
    }
    match offline.as_ref().and_then(|o| o.cluster.as_ref()) {
        Some(Ok(())) => println!("  told the cluster's hosts to disconnect it (NATS)"),
        Some(Err(why)) => eprintln!(
            "warning: could not tell the cluster's hosts over NATS ({why}): a host that has \
             '{identifier}' connected keeps that session until it disconnects; its next \
             authentication is refused everywhere"
        ),
        None => {}
    }
    if c.allow.contains(identifier) {
        eprintln!(
            "note: '{identifier}' is still on the allowlist, so it can pair again at once (a new \
             code goes to the admin); to keep it out, remove it from followers.allow in {}",
            c.file.display()
        );
    }
    Ok(())
}

/// What `revoke` did while no host runs on this machine.
struct OfflineRevoke {
    /// Whether the follower had a trust record.
    existed: bool,
    /// Whether it was paired (or pairing) until now.
    was_paired: bool,
    /// The store that was changed.
    store: String,
    /// Clustered: whether the other hosts were told to disconnect it.
    cluster: Option<Result<(), String>>,
}

/// Revoke in the trust store while no host runs here: the state file (taking the host's lock
/// so none starts meanwhile), or PostgreSQL, then (clustered) tell the running hosts over NATS.
async fn revoke_offline(c: &Config, identifier: &str) -> anyhow::Result<OfflineRevoke> {
    use yonexus_host::config::StoreConfig;
    let _lock = match &c.store {
        StoreConfig::File => Some(store::lock_state_dir(&c.server.state_dir)?),
        StoreConfig::Postgres(_) => None,
    };
    let store = Store::open_without_migrating(&c.store, &c.server.state_dir).await?;
    let now = SystemClock.now();
    let was_paired = store
        .apply_existing(identifier, |r| {
            let was = r.has_trust_to_revoke();
            r.revoke(now);
            was
        })
        .await?;
    let existed = was_paired.is_some();
    let cluster = match &c.cluster {
        Some(cluster) if existed => Some(
            yonexus_host::cluster::link::announce_revoke(
                &cluster.nats,
                &cluster.node,
                identifier,
                "trust revoked by the operator",
            )
            .await,
        ),
        _ => None,
    };
    Ok(OfflineRevoke {
        existed,
        was_paired: was_paired.unwrap_or(false),
        store: store.describe(),
        cluster,
    })
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

async fn serve(config: &Config) -> anyhow::Result<()> {
    // Before the host listens (and tells systemd it is ready): a SIGTERM from then on must find
    // the handler, not the default action that ends the process without a graceful shutdown.
    let mut signals = ShutdownSignals::install();
    let host = Host::start(config, Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot start the host with {}", config.file.display()))?;
    // Host::start returns once the listener is bound: followers can connect from here on.
    let scheme = if config.server.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    let listening = format!(
        "listening on {scheme}://{}{} with {} plugin(s)",
        host.local_addr,
        config.server.path,
        config.plugins.len()
    );
    systemd::ready(&listening);
    let _watchdog = systemd::spawn_watchdog();
    let token = host.shutdown_token();
    tokio::spawn(async move {
        signals.next().await;
        systemd::stopping();
        tracing::info!("shutdown requested: closing connections (a second signal exits at once)");
        token.cancel();
        signals.next().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    let reloader = Arc::clone(&host.reloader);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // The outcome (applied or refused with its reason) is logged, and told to
                    // systemd, by the reloader.
                    let _ = reloader.reload("SIGHUP").await;
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; use `yonexus reload`"),
    }
    host.wait().await;
    Ok(())
}

/// SIGTERM and SIGINT, listened for from [`ShutdownSignals::install`] on.
struct ShutdownSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> ShutdownSignals {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}");
                None
            }
        };
        ShutdownSignals {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The next SIGTERM or SIGINT (never, if neither could be listened for).
    async fn next(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => {}
            _ = recv(&mut self.int) => {}
        }
    }
}

/// `check`'s store line: where trust records live, and for PostgreSQL whether it answers and
/// its schema version (or exactly why it cannot be used, never with the password).
fn check_store(c: &Config) -> anyhow::Result<()> {
    use yonexus_host::config::StoreConfig;
    use yonexus_host::store::{migrations, postgres};
    let StoreConfig::Postgres(url) = &c.store else {
        println!(
            "  store {}",
            c.server.state_dir.join(store::STATE_FILE).display()
        );
        return Ok(());
    };
    match block_on(false, async { Ok(postgres::probe(url).await) })? {
        Ok(p) => {
            let note = match p.version {
                0 => " (empty: the first start or `yonexus migrate` creates the schema)".to_owned(),
                v if v < migrations::LATEST => format!(
                    " (the first start or `yonexus migrate` upgrades it to {})",
                    migrations::LATEST
                ),
                _ => String::new(),
            };
            println!(
                "  PostgreSQL at {}: reachable, schema version {}{note}",
                p.location, p.version
            );
            Ok(())
        }
        Err(e) => {
            println!("  NOT USABLE {e}");
            anyhow::bail!("the trust store cannot be used")
        }
    }
}

/// `yonexus migrate`: bring the PostgreSQL schema up to date and say from which version.
fn migrate(config: &Path) -> anyhow::Result<()> {
    use yonexus_host::config::StoreConfig;
    let c = load(config)?;
    let StoreConfig::Postgres(url) = &c.store else {
        println!(
            "{}: store backend is \"file\": trust.json has nothing to migrate",
            c.file.display()
        );
        return Ok(());
    };
    let (location, before, after) =
        block_on(false, async { Ok(store::postgres::migrate(url).await?) })?;
    let state = if before == after {
        "up to date"
    } else {
        "migrated"
    };
    println!("PostgreSQL at {location}: schema version {before} before, {after} after ({state})");
    Ok(())
}
