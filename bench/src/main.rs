//! `yonexus-bench`: drives a running Yonexus host with real followers (paired through the real
//! pairing flow, authenticated with Ed25519) and reports throughput, latency, loss, CPU and
//! memory. See `bench/README.md`.
//!
//! Modules: `ident` (identities, pairing codes, the pairing and auth flows), `load` (the
//! message scenarios: writers, readers, credits), `stamped` (sockets whose reads carry arrival
//! time stamps), `procfs` (CPU and memory of processes), `hostcfg` (the host config it writes),
//! `compare` and `table` (the side-by-side tables).

mod compare;
mod hostcfg;
mod ident;
mod load;
mod procfs;
mod stamped;
mod table;

/// How `latency_at_arrival_us` is sampled (recorded with it; `compare` uses only this kind).
pub const ARRIVAL_SAMPLING: &str = "every reply, its read's time stamp (upper bound)";

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use ident::{CodeSource, Codes, Identity, IdentityStore, Ws};
use load::{Ctl, Kind, Shared, DRAIN, MEASURE};
use procfs::{CpuWindow, Proc};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// Load generator for the Yonexus host.
///
/// Every run connects real followers (identifiers `<id-prefix>0`, `<id-prefix>1`, …; the host
/// must allowlist them), pairs those it has no cached secret for through the real pairing flow
/// (codes are read from the file the host's `command` notifier appends to, `--codes-file`, or
/// from the Node peer's `--code-dir`), authenticates all of them (timed: connect + auth rate),
/// then runs the scenario. It prints a human summary and, as the last line on stdout, one JSON
/// object with every number. `compare` turns those lines into a host-vs-Node table.
///
/// Pin it and the host to different cores for fair numbers, e.g.
/// `taskset -c 0 yonexus serve …` and `taskset -c 1 yonexus-bench echo …`.
#[derive(Parser)]
#[command(name = "yonexus-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a ready host config for benchmarking into DIR: yonexus.toml (allowlist
    /// <prefix>0..<prefix>N-1, `command` notifier appending to DIR/codes.txt), notify.sh, and
    /// the echo/relay/broadcast plugins copied to DIR/plugins/ (so a hot-reload run can replace
    /// them without touching the build output).
    Config(hostcfg::ConfigArgs),
    /// Pair (or check the cached secrets of) followers 0..N-1 and authenticate them once; reports
    /// pairing and connect+auth rates.
    Auth {
        #[command(flatten)]
        common: Common,
        /// Followers to pair and authenticate.
        #[arg(short = 'n', long, default_value_t = 50)]
        followers: usize,
    },
    /// Round trips through the echo plugin: N followers, each keeping WINDOW messages in flight.
    Echo(LoadCmd),
    /// Relay between follower pairs: N pairs (2N connections); follower 2k sends
    /// `relay::<2k+1>::…`, its partner receives it, WINDOW in flight per pair.
    Relay(LoadCmd),
    /// Broadcast fan-out: one sender and N receivers; each message counts as delivered once
    /// per receiver; WINDOW broadcasts in flight.
    Broadcast(LoadCmd),
    /// N idle authenticated followers sending heartbeats: host resident memory per follower.
    Idle(IdleCmd),
    /// The echo scenario while the echo plugin file is replaced SWAPS times (hot reload):
    /// reports the longest gap between consecutive replies on any follower and the loss.
    Reload(ReloadCmd),
    /// Read the JSON lines of runs labelled `--label host` and `--label node` and print one
    /// markdown table: per scenario both servers' msgs/s, msgs per server CPU-second, the
    /// host/Node ratio, p50/p99, against the goals of issue 10 (met/missed).
    Compare(compare::CompareArgs),
    /// Read JSON lines of any labels and print one markdown row per label and scenario (median
    /// msgs/s and range, msgs per server CPU-second, CPU, p50/p99, loss), with `--ratio A/B`
    /// rows comparing two labels pair by pair (bench/cores.sh, bench/cluster.sh).
    Table(table::TableArgs),
}

/// Options every scenario takes.
#[derive(Args, Clone)]
struct Common {
    /// The host's WebSocket URL (relay and broadcast: the senders' host, see --recv-url).
    #[arg(long, default_value = "ws://127.0.0.1:8787/")]
    url: String,
    /// File the host's `command` notifier appends `<identifier> <code> <expires>` lines to.
    #[arg(
        long,
        required_unless_present = "code_dir",
        conflicts_with = "code_dir"
    )]
    codes_file: Option<PathBuf>,
    /// Directory where the server writes one `<identifier>.code` file per pairing (the Node
    /// peer's `--code-dir`); instead of --codes-file.
    #[arg(long)]
    code_dir: Option<PathBuf>,
    /// A name for the server under test, copied into the JSON report (`compare` pairs runs
    /// labelled `host` and `node`).
    #[arg(long, default_value = "host")]
    label: String,
    /// The host's pid, for its CPU (/proc/PID/stat) and resident memory (/proc/PID/status).
    /// Without it host CPU and memory are not reported.
    #[arg(long)]
    host_pid: Option<u32>,
    /// Where follower keypairs and secrets are cached so later runs skip pairing
    /// [default: bench-identities/ next to the codes file or code directory]. Use one per
    /// server: a secret issued by one server means nothing to another.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Follower identifiers are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "bench-")]
    id_prefix: String,
    /// Connections opened (connect + hello + auth) at the same time.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Pairings run at the same time (each makes the host run the notifier once).
    #[arg(long, default_value_t = 32)]
    pair_concurrency: usize,
}

#[derive(Args, Clone)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Followers (echo), follower pairs (relay) or receivers (broadcast).
    #[arg(short = 'n', long, default_value_t = 50)]
    followers: usize,
    /// Messages in flight per sender.
    #[arg(short = 'w', long, default_value_t = 1)]
    window: u32,
    /// Size in bytes of each sent text frame (`rule::` header included).
    #[arg(short = 's', long, default_value_t = 100)]
    size: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(short = 'd', long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds to wait, after sending stops, for messages still in flight.
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// Relay and broadcast: connect the receivers to this URL instead of --url (e.g. a second
    /// host of a cluster: senders on host A, receivers on host B). Echo ignores it.
    #[arg(long)]
    recv_url: Option<String>,
    /// The pid of the --recv-url server when it is another process: its CPU is added to the
    /// server CPU (msgs per server CPU-second count both) and reported on its own.
    #[arg(long)]
    recv_host_pid: Option<u32>,
    /// Another server-side process whose CPU counts as server CPU (e.g. the nats-server between
    /// two hosts); repeatable. Reported in `host_cpu_pct_each` after the host(s).
    #[arg(long = "also-pid")]
    also_pids: Vec<u32>,
}

#[derive(Args)]
struct LoadCmd {
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct ReloadCmd {
    #[command(flatten)]
    load: LoadArgs,
    /// The plugin file the host has configured for `echo` (it is replaced in place).
    #[arg(long)]
    plugin_path: PathBuf,
    /// A different build of the echo plugin to install (alternately with the original).
    #[arg(long)]
    replacement: PathBuf,
    /// Replacements, evenly spaced over the measured window (even = ends on the original).
    #[arg(long, default_value_t = 4)]
    swaps: u32,
}

#[derive(Args)]
struct IdleCmd {
    #[command(flatten)]
    common: Common,
    /// Idle followers to hold.
    #[arg(short = 'n', long, default_value_t = 1000)]
    followers: usize,
    /// Seconds between one follower's heartbeats.
    #[arg(long, default_value_t = 2.0)]
    heartbeat_secs: f64,
    /// Seconds to hold the followers after all are connected (memory is sampled at the end).
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Config(args) => return hostcfg::write(args),
        Command::Compare(args) => return compare::run(args),
        Command::Table(args) => return table::run(args),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = rt.block_on(run(cli.command))?;
    println!("{report}");
    Ok(())
}

async fn run(cmd: Command) -> Result<Value> {
    match cmd {
        Command::Config(_) | Command::Compare(_) | Command::Table(_) => Ok(Value::Null),
        Command::Auth { common, followers } => {
            let ctx = Ctx::new(&common, None, &[])?;
            let fleet = ctx.establish(&vec![common.url.clone(); followers]).await?;
            let mut r = base_report("auth", &common, followers, &fleet);
            close_all(fleet.links).await;
            summary(&mut r);
            Ok(r)
        }
        Command::Echo(c) => run_load(Kind::Echo, &c.load, None).await,
        Command::Relay(c) => run_load(Kind::Relay, &c.load, None).await,
        Command::Broadcast(c) => run_load(Kind::Broadcast, &c.load, None).await,
        Command::Reload(c) => {
            if !c.plugin_path.is_file() || !c.replacement.is_file() {
                bail!(
                    "--plugin-path {} and --replacement {} must both be existing files",
                    c.plugin_path.display(),
                    c.replacement.display()
                );
            }
            run_load(
                Kind::Echo,
                &c.load,
                Some((c.plugin_path, c.replacement, c.swaps)),
            )
            .await
        }
        Command::Idle(c) => run_idle(&c).await,
    }
}

/// Per-run context: identity cache, codes watcher, processes to sample.
struct Ctx {
    common: Common,
    store: Arc<IdentityStore>,
    codes: Arc<Codes>,
    /// The server (`--host-pid`): CPU, memory, mapped plugins.
    host: Option<Proc>,
    /// Every server process whose CPU counts (the host, and `--recv-host-pid` if given).
    servers: Vec<Proc>,
    tck: u64,
}

/// CPU of several processes over one window, in percent of one core (summed).
struct ServersCpu(Vec<CpuWindow>);

impl ServersCpu {
    fn start(procs: &[Proc], tck: u64) -> Result<Option<ServersCpu>> {
        if procs.is_empty() {
            return Ok(None);
        }
        let w = procs
            .iter()
            .map(|p| CpuWindow::start(p, tck))
            .collect::<Result<_>>()?;
        Ok(Some(ServersCpu(w)))
    }

    /// (sum, each).
    fn percent(&self, tck: u64) -> Result<(f64, Vec<f64>)> {
        let each = self
            .0
            .iter()
            .map(|w| w.percent(tck))
            .collect::<Result<Vec<_>>>()?;
        Ok((each.iter().sum(), each))
    }
}

/// Followers connected and authenticated, with how long it took.
struct Fleet {
    links: Vec<(String, Ws)>,
    newly_paired: usize,
    pairing_secs: f64,
    paired_during_auth: usize,
    auth_secs: f64,
    auth_host_cpu: Option<f64>,
    auth_bench_cpu: f64,
    auth_others_cpu: f64,
    host_rss_before_kib: Option<u64>,
}

impl Ctx {
    fn new(common: &Common, recv_host_pid: Option<u32>, also: &[u32]) -> Result<Ctx> {
        let source = match (&common.codes_file, &common.code_dir) {
            (Some(f), None) => CodeSource::File(f.clone()),
            (None, Some(d)) => CodeSource::Dir(d.clone()),
            _ => bail!("give exactly one of --codes-file FILE and --code-dir DIR"),
        };
        let state = match &common.state_dir {
            Some(d) => d.clone(),
            None => source
                .parent()
                .map(|p| p.join("bench-identities"))
                .unwrap_or_else(|| PathBuf::from("bench-identities")),
        };
        let also = also.iter().map(|&p| ("--also-pid", Some(p)));
        for (flag, pid) in [
            ("--host-pid", common.host_pid),
            ("--recv-host-pid", recv_host_pid),
        ]
        .into_iter()
        .chain(also.clone())
        {
            if let Some(pid) = pid {
                Proc::pid(pid)
                    .cpu_ticks()
                    .with_context(|| format!("{flag} {pid}: no such process?"))?;
            }
        }
        if common.host_pid.is_none() {
            eprintln!("note: no --host-pid: host CPU and memory will not be reported");
        }
        let servers = common
            .host_pid
            .into_iter()
            .chain(recv_host_pid)
            .chain(also.filter_map(|(_, p)| p))
            .map(Proc::pid)
            .collect();
        Ok(Ctx {
            common: common.clone(),
            store: Arc::new(IdentityStore::open(&state)?),
            codes: Codes::new(source),
            host: common.host_pid.map(Proc::pid),
            servers,
            tck: procfs::clock_ticks(),
        })
    }

    fn id(&self, i: usize) -> String {
        format!("{}{i}", self.common.id_prefix)
    }

    /// Pair what needs pairing, then connect + authenticate followers `0..urls.len()`,
    /// follower `i` on `urls[i]` (timed). Host RSS is sampled between the two phases.
    async fn establish(&self, urls: &[String]) -> Result<Fleet> {
        let count = urls.len();
        let watcher = self.codes.spawn_watcher();
        let idents: Vec<(Identity, String)> = (0..count)
            .map(|i| Ok((self.store.get(&self.id(i))?, urls[i].clone())))
            .collect::<Result<_>>()?;
        let to_pair = idents.iter().filter(|(i, _)| i.secret.is_none()).count();
        let t0 = Instant::now();
        let sem = Arc::new(Semaphore::new(self.common.pair_concurrency.max(1)));
        let paired = join_all(idents.into_iter().map(|(mut ident, url)| {
            let (sem, codes, store) = (
                Arc::clone(&sem),
                Arc::clone(&self.codes),
                Arc::clone(&self.store),
            );
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                ident::ensure_paired(&url, &mut ident, &codes, &store).await?;
                anyhow::Ok((ident, url))
            })
        }))
        .await;
        let mut idents = Vec::with_capacity(count);
        for r in paired {
            idents.push(r.context("pairing task failed")??);
        }
        let pairing_secs = t0.elapsed().as_secs_f64();
        if to_pair > 0 {
            eprintln!("paired {to_pair} followers in {pairing_secs:.2} s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let host_rss_before_kib = self.host.as_ref().and_then(|h| h.rss_kib().ok());

        let host_cpu = ServersCpu::start(&self.servers, self.tck)?;
        let my_cpu = CpuWindow::start(&Proc::me(), self.tck)?;
        let cores0 = procfs::cores();
        let t1 = Instant::now();
        let sem = Arc::new(Semaphore::new(self.common.connect_concurrency.max(1)));
        let logins = join_all(idents.into_iter().map(|(mut ident, url)| {
            let (sem, codes, store) = (
                Arc::clone(&sem),
                Arc::clone(&self.codes),
                Arc::clone(&self.store),
            );
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let (ws, paired) = ident::login(&url, &mut ident, &codes, &store).await?;
                anyhow::Ok((ident.id, ws, paired))
            })
        }))
        .await;
        let auth_secs = t1.elapsed().as_secs_f64();
        let auth_host_cpu = host_cpu.map(|c| c.percent(self.tck)).transpose()?;
        let auth_bench_cpu = my_cpu.percent(self.tck)?;
        let auth_host_cpu = auth_host_cpu.map(|(sum, _)| sum);
        let busy = procfs::cores_busy_since(&cores0).iter().sum::<f64>();
        let auth_others_cpu = (busy - auth_bench_cpu - auth_host_cpu.unwrap_or(0.0)).max(0.0);
        watcher.abort();
        let mut links = Vec::with_capacity(count);
        let mut paired_during_auth = 0;
        for r in logins {
            let (id, ws, paired) = r.context("login task failed")??;
            paired_during_auth += usize::from(paired);
            links.push((id, ws));
        }
        eprintln!(
            "connected and authenticated {count} followers in {auth_secs:.3} s ({:.0}/s)",
            count as f64 / auth_secs.max(1e-9)
        );
        Ok(Fleet {
            links,
            newly_paired: to_pair,
            pairing_secs,
            paired_during_auth,
            auth_secs,
            auth_host_cpu,
            auth_bench_cpu,
            auth_others_cpu,
            host_rss_before_kib,
        })
    }
}

async fn close_all(links: Vec<(String, Ws)>) {
    join_all(links.into_iter().map(|(_, mut ws)| async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }))
    .await;
}

fn base_report(scenario: &str, common: &Common, followers: usize, fleet: &Fleet) -> Value {
    let n = fleet.links.len();
    // Server CPU time per connect + hello + auth, in microseconds.
    let cpu_us = fleet
        .auth_host_cpu
        .filter(|_| n > 0)
        .map(|pct| pct / 100.0 * fleet.auth_secs * 1e6 / n as f64);
    json!({
        "scenario": scenario,
        "label": common.label,
        "url": common.url,
        "followers": followers,
        "connections": n,
        "pairing": {
            "paired": fleet.newly_paired,
            "secs": fleet.pairing_secs,
            "per_sec": (fleet.newly_paired > 0).then(|| fleet.newly_paired as f64 / fleet.pairing_secs.max(1e-9)),
        },
        "connect_auth": {
            "count": n,
            "secs": fleet.auth_secs,
            "per_sec": n as f64 / fleet.auth_secs.max(1e-9),
            "paired_during_auth": fleet.paired_during_auth,
            "host_cpu_pct": fleet.auth_host_cpu,
            "host_cpu_us_per_connect": cpu_us,
            "bench_cpu_pct": fleet.auth_bench_cpu,
            "other_processes_cpu_pct": fleet.auth_others_cpu,
        },
    })
}

fn pct(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A latency histogram (ns) as the report's JSON object, in microseconds.
fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": pct(h, 0.50), "p90": pct(h, 0.90), "p99": pct(h, 0.99),
        "p99_9": pct(h, 0.999), "max": h.max() as f64 / 1000.0,
    })
}

/// A number of a report with one decimal, or `n/a`.
fn one_decimal(v: &Value) -> String {
    v.as_f64().map_or("n/a".into(), |x| format!("{x:.1}"))
}

/// A report's latency object ([`percentiles`]) as one line of the human summary.
fn percentiles_line(l: &Value) -> String {
    let f = one_decimal;
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {}",
        f(&l["p50"]),
        f(&l["p90"]),
        f(&l["p99"]),
        f(&l["p99_9"]),
        f(&l["max"])
    )
}

async fn run_load(
    kind: Kind,
    args: &LoadArgs,
    reload: Option<(PathBuf, PathBuf, u32)>,
) -> Result<Value> {
    let ctx = Ctx::new(&args.common, args.recv_host_pid, &args.also_pids)?;
    let conns = match kind {
        Kind::Echo => args.followers,
        Kind::Relay => 2 * args.followers,
        Kind::Broadcast => args.followers + 1,
    };
    let urls = load::urls(kind, conns, &args.common.url, args.recv_url.as_deref());
    let fleet = ctx.establish(&urls).await?;
    let scenario = if reload.is_some() {
        "reload"
    } else {
        kind.name()
    };
    let mut report = base_report(scenario, &args.common, args.followers, &fleet);
    if let Some(r) = report.as_object_mut() {
        r.insert("recv_url".into(), json!(args.recv_url));
    }
    let links = fleet.links;
    let shared = Shared::new();
    let wired = load::wire(kind, links, args.size, &shared);
    let me = Proc::me();
    let staged_before = ctx
        .host
        .as_ref()
        .and_then(|h| h.staged_plugins("echo-").ok());

    // Warm up with the window full, then measure.
    for &i in &wired.senders {
        let _ = wired.writers[i].send(Ctl::Credit(args.window));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let host_cpu = ServersCpu::start(&ctx.servers, ctx.tck)?;
    let my_cpu = CpuWindow::start(&me, ctx.tck)?;
    let cores0 = procfs::cores();
    let t_measure = Instant::now();
    shared.phase.store(MEASURE, Relaxed);
    let measure = Duration::from_secs_f64(args.duration);
    let swaps = reload.map(|(plugin, replacement, k)| {
        tokio::spawn(load::swapper(plugin, replacement, k, measure))
    });
    tokio::time::sleep(measure).await;
    shared.phase.store(DRAIN, Relaxed);
    let secs = t_measure.elapsed().as_secs_f64();
    let host_pcts = host_cpu.map(|c| c.percent(ctx.tck)).transpose()?;
    let bench_pct = my_cpu.percent(ctx.tck)?;
    let cores_busy = procfs::cores_busy_since(&cores0);
    let host_pct = host_pcts.as_ref().map(|(sum, _)| *sum);
    let host_rss_after = ctx.host.as_ref().and_then(|h| h.rss_kib().ok());
    let host_hwm = ctx.host.as_ref().and_then(|h| h.status_kib("VmHWM").ok());

    // Drain: senders stopped at DRAIN; wait until everything sent has arrived, was answered
    // with an error, or the drain timeout passes (what is still missing then is lost).
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    while Instant::now() < drain_deadline
        && shared.settled.load(Relaxed) < shared.sent.load(Relaxed) * wired.fanout
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in &wired.writers {
        let _ = w.send(Ctl::Stop);
    }
    let all = join_all(wired.tasks);
    let clean = tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .is_ok();
    let swap_times = match swaps {
        Some(h) => Some(h.await.context("swapper task")??),
        None => None,
    };
    let staged_after = ctx
        .host
        .as_ref()
        .and_then(|h| h.staged_plugins("echo-").ok());

    let sent = shared.sent.load(Relaxed);
    let expected = sent * wired.fanout;
    let delivered = shared.delivered.load(Relaxed);
    let measured = shared.measured.load(Relaxed);
    let mismatched = shared.mismatched.load(Relaxed);
    let errors = shared.errors.load(Relaxed);
    let lost = expected.saturating_sub(delivered + mismatched);
    let hist = shared
        .hist
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let hist_arrival = shared
        .hist_arrival
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let rate = measured as f64 / secs;
    let per_host_cpu = host_pct.filter(|p| *p > 0.0).map(|p| rate / (p / 100.0));
    let generator_bound = bench_pct >= 90.0;
    let r = report.as_object_mut().context("report is an object")?;
    r.insert("window".into(), json!(args.window));
    r.insert("size".into(), json!(args.size));
    r.insert("warmup_secs".into(), json!(args.warmup));
    r.insert("measure_secs".into(), json!(secs));
    r.insert("msgs_per_sec".into(), json!(rate));
    r.insert("latency_us".into(), percentiles(&hist));
    // The same round trips, ended at the time stamp of the read that completed each reply
    // (its last packet: at or after the reply's arrival) instead of when the generator read it
    // (see stamped.rs).
    if !hist_arrival.is_empty() {
        let mut arrival = percentiles(&hist_arrival);
        arrival["sampling"] = json!(ARRIVAL_SAMPLING);
        r.insert("latency_at_arrival_us".into(), arrival);
    }
    r.insert("measured".into(), json!(measured));
    r.insert(
        "arrival_unstamped".into(),
        json!(shared.unstamped.load(Relaxed)),
    );
    r.insert("sent".into(), json!(sent));
    r.insert("expected_deliveries".into(), json!(expected));
    r.insert("delivered".into(), json!(delivered));
    r.insert("lost".into(), json!(lost));
    r.insert("mismatched".into(), json!(mismatched));
    r.insert("errors".into(), json!(errors));
    r.insert(
        "error_codes".into(),
        json!(*shared.error_codes.lock().unwrap_or_else(|p| p.into_inner())),
    );
    r.insert(
        "connections_dropped".into(),
        json!(shared.dropped.load(Relaxed)),
    );
    r.insert("clean_shutdown".into(), json!(clean));
    r.insert("host_cpu_pct".into(), json!(host_pct));
    if let Some((_, each)) = host_pcts.filter(|(_, e)| e.len() > 1) {
        r.insert("host_cpu_pct_each".into(), json!(each));
    }
    r.insert("bench_cpu_pct".into(), json!(bench_pct));
    r.insert("msgs_per_host_cpu_sec".into(), json!(per_host_cpu));
    r.insert("generator_bound".into(), json!(generator_bound));
    let others = cores_busy.iter().sum::<f64>() - bench_pct - host_pct.unwrap_or(0.0);
    r.insert("cores_busy_pct".into(), json!(cores_busy));
    r.insert("other_processes_cpu_pct".into(), json!(others.max(0.0)));
    r.insert(
        "host_rss_kib".into(),
        json!({"before_connect": fleet.host_rss_before_kib, "loaded": host_rss_after, "peak": host_hwm}),
    );
    r.insert(
        "longest_gap_ms".into(),
        json!(shared.max_gap_ns.load(Relaxed) as f64 / 1e6),
    );
    if let Some(times) = swap_times {
        r.insert("swaps".into(), json!(times.len()));
        r.insert(
            "staged_echo_libraries".into(),
            json!({"before": staged_before, "after": staged_after}),
        );
    }
    summary(&mut report);
    Ok(report)
}

async fn run_idle(c: &IdleCmd) -> Result<Value> {
    let ctx = Ctx::new(&c.common, None, &[])?;
    let fleet = ctx
        .establish(&vec![c.common.url.clone(); c.followers])
        .await?;
    let mut report = base_report("idle", &c.common, c.followers, &fleet);
    let before = fleet.host_rss_before_kib;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let beats = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let every = Duration::from_secs_f64(c.heartbeat_secs.max(0.05));
    let mut tasks = Vec::with_capacity(fleet.links.len());
    for (k, (id, ws)) in fleet.links.into_iter().enumerate() {
        let (mut stop, acks, beats) = (stop_rx.clone(), Arc::clone(&acks), Arc::clone(&beats));
        // Spread the first heartbeats over one interval.
        let offset = every.mul_f64(k as f64 / c.followers.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
            let hb = format!(
                "builtin::{}",
                json!({"type": "heartbeat", "payload": {"identifier": id, "status": "online"}})
            );
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => {
                        if sink.send(Message::text(hb.clone())).await.is_err() { break; }
                        beats.fetch_add(1, Relaxed);
                    }
                    m = stream.next() => match m {
                        Some(Ok(Message::Text(t))) if t.as_str().contains("\"heartbeat_ack\"") => {
                            acks.fetch_add(1, Relaxed);
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    }
                }
            }
            let _ = sink.close().await;
        }));
    }
    let host_cpu = ServersCpu::start(&ctx.servers, ctx.tck)?;
    let my_cpu = CpuWindow::start(&Proc::me(), ctx.tck)?;
    let cores0 = procfs::cores();
    tokio::time::sleep(Duration::from_secs_f64(c.hold)).await;
    let host_pct = host_cpu.map(|w| w.percent(ctx.tck)).transpose()?;
    let host_pct = host_pct.map(|(sum, _)| sum);
    let bench_pct = my_cpu.percent(ctx.tck)?;
    let cores_busy = procfs::cores_busy_since(&cores0);
    let others = cores_busy.iter().sum::<f64>() - bench_pct - host_pct.unwrap_or(0.0);
    let after = ctx.host.as_ref().and_then(|h| h.rss_kib().ok());
    let my_rss = Proc::me().rss_kib().ok();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), join_all(tasks)).await;
    let per = match (before, after) {
        (Some(b), Some(a)) if c.followers > 0 => Some((a as f64 - b as f64) / c.followers as f64),
        _ => None,
    };
    let r = report.as_object_mut().context("report is an object")?;
    r.insert("hold_secs".into(), json!(c.hold));
    r.insert("heartbeats_sent".into(), json!(beats.load(Relaxed)));
    r.insert("heartbeat_acks".into(), json!(acks.load(Relaxed)));
    r.insert(
        "host_rss_kib".into(),
        json!({"before_connect": before, "connected": after}),
    );
    r.insert("host_rss_per_follower_kib".into(), json!(per));
    r.insert("bench_rss_kib".into(), json!(my_rss));
    r.insert("host_cpu_pct".into(), json!(host_pct));
    r.insert("bench_cpu_pct".into(), json!(bench_pct));
    r.insert("cores_busy_pct".into(), json!(cores_busy));
    r.insert("other_processes_cpu_pct".into(), json!(others.max(0.0)));
    summary(&mut report);
    Ok(report)
}

/// Print the human summary (stdout) for a finished report.
fn summary(r: &mut Value) {
    let f = one_decimal;
    let s = r["scenario"].as_str().unwrap_or("?").to_owned();
    println!("== yonexus-bench {s} ==");
    println!(
        "connect+auth: {} followers in {:.3} s = {:.0}/s (CPU host {}% bench {}%){}",
        r["connect_auth"]["count"],
        r["connect_auth"]["secs"].as_f64().unwrap_or(0.0),
        r["connect_auth"]["per_sec"].as_f64().unwrap_or(0.0),
        f(&r["connect_auth"]["host_cpu_pct"]),
        f(&r["connect_auth"]["bench_cpu_pct"]),
        if r["connect_auth"]["paired_during_auth"]
            .as_u64()
            .unwrap_or(0)
            > 0
        {
            " (some paired during the auth phase: rate includes pairing)"
        } else {
            ""
        }
    );
    if !r["connect_auth"]["host_cpu_us_per_connect"].is_null() {
        println!(
            "server CPU per connect+hello+auth: {} us (other processes {}% of a core)",
            f(&r["connect_auth"]["host_cpu_us_per_connect"]),
            f(&r["connect_auth"]["other_processes_cpu_pct"])
        );
    }
    if let Some(recv) = r["recv_url"].as_str() {
        println!("senders on {}, receivers on {recv}", r["url"]);
    }
    if r["pairing"]["paired"].as_u64().unwrap_or(0) > 0 {
        println!(
            "pairing: {} followers paired in {:.2} s",
            r["pairing"]["paired"],
            r["pairing"]["secs"].as_f64().unwrap_or(0.0)
        );
    }
    if !r["msgs_per_sec"].is_null() {
        let l = &r["latency_us"];
        println!(
            "throughput: {} msgs/s over {:.2} s (window {}, {} B)",
            f(&r["msgs_per_sec"]),
            r["measure_secs"].as_f64().unwrap_or(0.0),
            r["window"],
            r["size"]
        );
        println!("latency us: {}", percentiles_line(l));
        let a = &r["latency_at_arrival_us"];
        if !a.is_null() {
            println!(
                "latency at arrival us (upper bound: the read's last packet reaching this machine): {}",
                percentiles_line(a)
            );
        }
        let unstamped = r["arrival_unstamped"].as_u64().unwrap_or(0);
        if unstamped > 0 {
            println!(
                "latency at arrival: {unstamped} of {} measured replies left out (their read had no time stamp)",
                r["measured"]
            );
        }
        println!(
            "sent {} expected {} delivered {} lost {} mismatched {} errors {} {}",
            r["sent"],
            r["expected_deliveries"],
            r["delivered"],
            r["lost"],
            r["mismatched"],
            r["errors"],
            r["error_codes"]
        );
        println!(
            "longest gap between replies on one follower: {} ms",
            f(&r["longest_gap_ms"])
        );
        println!(
            "msgs per host CPU-second: {}",
            f(&r["msgs_per_host_cpu_sec"])
        );
    }
    if !r["host_rss_per_follower_kib"].is_null() || r["scenario"] == "idle" {
        println!(
            "host RSS: {} KiB before, {} KiB with followers connected = {} KiB per follower; heartbeats {} sent, {} acked",
            r["host_rss_kib"]["before_connect"],
            r["host_rss_kib"]["connected"],
            f(&r["host_rss_per_follower_kib"]),
            r["heartbeats_sent"],
            r["heartbeat_acks"]
        );
    }
    if !r["swaps"].is_null() {
        println!(
            "hot reload: {} swaps; staged echo libraries mapped by the host {} -> {}",
            r["swaps"], r["staged_echo_libraries"]["before"], r["staged_echo_libraries"]["after"]
        );
    }
    if !r["bench_cpu_pct"].is_null() {
        println!(
            "CPU: host {}% bench {}% other processes {}% (cores busy {}){}",
            f(&r["host_cpu_pct"]),
            f(&r["bench_cpu_pct"]),
            f(&r["other_processes_cpu_pct"]),
            r["cores_busy_pct"],
            if r["generator_bound"] == true {
                "  ** GENERATOR-BOUND: the bench used >= 90% of its core; the host may have more headroom **"
            } else {
                ""
            }
        );
    }
}
