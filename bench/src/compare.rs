//! `yonexus-bench compare`: the side-by-side table. Reads the JSON lines of runs labelled
//! `host` and `node` (`--label`), takes per scenario the median run of each server (by the
//! per-CPU figure), and prints one markdown table with the host/Node ratio per server
//! CPU-second, p50/p99, and the goals of issue 10 marked met or missed. The goals live here,
//! in the bench, not in timed tests.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args)]
pub struct CompareArgs {
    /// The JSON lines written by the runs (bench.sh: OUT/results.jsonl), one or more files
    /// (several runs of bench.sh pool their pairs). Lines with `"scenario": "machine"` describe
    /// the machine and are printed above the table.
    #[arg(required = true)]
    pub jsonl: Vec<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Label of the server under test.
    #[arg(long, default_value = "host")]
    pub host_label: String,
    /// Label of the baseline.
    #[arg(long, default_value = "node")]
    pub base_label: String,
    /// Keep only the pairs of runs (the k-th of each server, run back to back) in which other
    /// processes used at most this many % of a core during both runs: on a shared machine,
    /// the pairs measured while it was quiet.
    #[arg(long)]
    pub max_others: Option<f64>,
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let mut runs = Vec::new();
    for path in &args.jsonl {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut file = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).with_context(|| {
                format!(
                    "{} line {}: not a JSON object (a run that failed half-way?)",
                    path.display(),
                    n + 1
                )
            })?;
            file.push(v);
        }
        let dropped = balance(&mut file, &args.host_label, &args.base_label);
        if dropped > 0 {
            eprintln!(
                "note: {}: {dropped} run(s) without a counterpart of the other server left out",
                path.display()
            );
        }
        runs.extend(file);
    }
    let mut table = render(&runs, &args.host_label, &args.base_label, args.max_others);
    if let Some(max) = args.max_others {
        table.insert_str(
            0,
            &format!(
                "Only pairs of runs during which other processes used ≤ {max}% of a core.\n\n"
            ),
        );
    }
    print!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// One scenario's shape; runs with equal cases are repeats of each other.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Case {
    scenario: String,
    followers: u64,
    window: u64,
    size: u64,
}

impl Case {
    pub(crate) fn of(v: &Value) -> Option<Case> {
        let scenario = v["scenario"].as_str()?.to_owned();
        let followers = v["followers"].as_u64().unwrap_or(0);
        Some(Case {
            scenario,
            followers,
            window: v["window"].as_u64().unwrap_or(0),
            size: v["size"].as_u64().unwrap_or(0),
        })
    }

    fn kind(&self) -> Section {
        match self.scenario.as_str() {
            "auth" => Section::Connect,
            "idle" => Section::Idle,
            "machine" => Section::Machine,
            _ => Section::Messages,
        }
    }

    pub(crate) fn title(&self) -> String {
        let (n, w, s) = (self.followers, self.window, self.size);
        match self.scenario.as_str() {
            "echo" => format!("echo {n}×{w}, {s} B"),
            "relay" => format!("relay {n} pairs×{w}, {s} B"),
            "broadcast" => format!("broadcast 1→{n} ×{w}, {s} B (deliveries)"),
            "reload" => format!("echo {n}×{w} during hot reloads, {s} B"),
            "auth" => format!("connect + hello + auth, {n} followers"),
            "idle" => format!("idle authenticated followers, {n}"),
            other => format!("{other} {n}×{w}, {s} B"),
        }
    }

    /// The issue-10 goal for this case, if it has one.
    fn goal(&self) -> Option<Goal> {
        let (n, w, s) = (self.followers, self.window, self.size);
        match (self.scenario.as_str(), n, w, s) {
            ("echo", 50, 16, 100) => Some(Goal::Ratio {
                min: 4.0,
                p99_max_frac: None,
            }),
            ("echo", 50, 1, 100) => Some(Goal::Ratio {
                min: 1.5,
                p99_max_frac: Some(1.0),
            }),
            ("echo", 500, 2, 100) => Some(Goal::Ratio {
                min: 1.5,
                p99_max_frac: Some(0.5),
            }),
            ("auth", _, _, _) => Some(Goal::Ratio {
                min: 3.0,
                p99_max_frac: None,
            }),
            ("idle", _, _, _) => Some(Goal::HostKibMax(6.0)),
            _ => None,
        }
    }
}

#[derive(PartialEq)]
enum Section {
    Messages,
    Connect,
    Idle,
    Machine,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    /// host/Node per server CPU-second ≥ `min`; with `p99_max_frac`, host p99 ≤ that × Node's.
    Ratio { min: f64, p99_max_frac: Option<f64> },
    /// Host RSS per idle follower ≤ this many KiB.
    HostKibMax(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::Ratio {
                min,
                p99_max_frac: None,
            } => format!("≥ {min}×"),
            Goal::Ratio {
                min,
                p99_max_frac: Some(f),
            } if f >= 1.0 => format!("≥ {min}×, p99 ≤ Node's"),
            Goal::Ratio {
                min,
                p99_max_frac: Some(f),
            } if (f - 0.5).abs() < 1e-9 => format!("≥ {min}×, p99 ≤ half of Node's"),
            Goal::Ratio {
                min,
                p99_max_frac: Some(f),
            } => format!("≥ {min}×, p99 ≤ {f}× Node's"),
            Goal::HostKibMax(k) => format!("≤ {k} KiB"),
        }
    }
}

/// Runs of one case: (host runs, baseline runs), in file order.
struct Group {
    case: Case,
    host: Vec<Value>,
    base: Vec<Value>,
}

/// Within one file, keep for each case as many runs of each server as the other has (the
/// first ones), so that pooling files still pairs the k-th host run with the k-th baseline run
/// of the same file. Cases measured on one server only are kept as they are. Returns how many
/// runs were left out.
fn balance(runs: &mut Vec<Value>, host: &str, base: &str) -> usize {
    let before = runs.len();
    let label = |v: &Value| v["label"].as_str().unwrap_or("host").to_owned();
    let count = |case: &Case, l: &str, upto: &[Value]| {
        upto.iter()
            .filter(|v| Case::of(v).as_ref() == Some(case) && label(v) == l)
            .count()
    };
    let all = runs.clone();
    let mut kept = Vec::with_capacity(runs.len());
    for (i, v) in all.iter().enumerate() {
        let Some(case) = Case::of(v).filter(|c| c.kind() != Section::Machine) else {
            kept.push(v.clone());
            continue;
        };
        let l = label(v);
        let other = if l == host {
            base
        } else if l == base {
            host
        } else {
            ""
        };
        let (mine, theirs) = (count(&case, &l, &all), count(&case, other, &all));
        // Keep this run if it is among the first min(mine, theirs), or the other server has none.
        if other.is_empty() || theirs == 0 || count(&case, &l, &all[..i]) < mine.min(theirs) {
            kept.push(v.clone());
        }
    }
    *runs = kept;
    before - runs.len()
}

/// CPU used by other processes during a run's measured window (% of a core).
pub(crate) fn others(v: &Value) -> Option<f64> {
    num(v, &["other_processes_cpu_pct"])
        .or_else(|| num(v, &["connect_auth", "other_processes_cpu_pct"]))
}

/// Keep the pairs (k-th host run, k-th baseline run) where both runs saw at most `max`% of a
/// core used by other processes.
fn quiet_pairs(g: &mut Group, max: f64) {
    let quiet = |v: &Value| others(v).is_some_and(|o| o <= max);
    let (host, base): (Vec<Value>, Vec<Value>) = g
        .host
        .drain(..)
        .zip(g.base.drain(..))
        .filter(|(h, b)| quiet(h) && quiet(b))
        .unzip();
    g.host = host;
    g.base = base;
}

fn group(runs: &[Value], host: &str, base: &str) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for v in runs {
        let Some(case) = Case::of(v) else { continue };
        let label = v["label"].as_str().unwrap_or("host");
        let idx = match groups.iter().position(|g| g.case == case) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    case,
                    host: Vec::new(),
                    base: Vec::new(),
                });
                groups.len() - 1
            }
        };
        if label == host {
            groups[idx].host.push(v.clone());
        } else if label == base {
            groups[idx].base.push(v.clone());
        }
    }
    groups
}

pub(crate) fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// The median run by `metric` (lower middle for an even count); runs without it are skipped.
fn median<'a>(runs: &'a [Value], metric: &dyn Fn(&Value) -> Option<f64>) -> Option<&'a Value> {
    let mut with: Vec<(f64, &Value)> = runs.iter().filter_map(|r| Some((metric(r)?, r))).collect();
    with.sort_by(|a, b| a.0.total_cmp(&b.0));
    with.get(with.len().checked_sub(1)? / 2).map(|(_, r)| *r)
}

/// Host/baseline ratio of `metric` for each pair of runs (the k-th of each: bench.sh runs them
/// back to back, so a pair saw the same machine); `invert` for metrics where lower is better.
fn pair_ratios(g: &Group, metric: &dyn Fn(&Value) -> Option<f64>, invert: bool) -> Vec<f64> {
    g.host
        .iter()
        .zip(&g.base)
        .filter_map(|(h, b)| {
            let (h, b) = (metric(h)?, metric(b)?);
            let r = if invert { b / h } else { h / b };
            r.is_finite().then_some(r)
        })
        .collect()
}

/// Median, min and max (the median of an even count is the mean of the middle two).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

pub(crate) fn spread(mut v: Vec<f64>) -> Option<Spread> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

pub(crate) fn rate(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(x) if x >= 1e6 => format!("{:.2} M", x / 1e6),
        Some(x) if x >= 1e4 => format!("{:.0} k", x / 1e3),
        Some(x) if x >= 1e3 => format!("{:.1} k", x / 1e3),
        Some(x) => format!("{x:.0}"),
    }
}

pub(crate) fn ms(us: Option<f64>) -> String {
    match us.map(|u| u / 1000.0) {
        None => "—".into(),
        Some(m) if m >= 100.0 => format!("{m:.0}"),
        Some(m) if m >= 10.0 => format!("{m:.1}"),
        Some(m) => format!("{m:.2}"),
    }
}

pub(crate) fn pct(x: Option<f64>) -> String {
    x.map_or("—".into(), |x| format!("{x:.0}"))
}

fn pair(h: String, b: String) -> String {
    format!("{h} / {b}")
}

fn ratio_cell(r: Option<Spread>) -> String {
    match r {
        None => "—".into(),
        Some(s) if s.min < s.max => {
            format!("**{:.2}×** ({:.2}–{:.2})", s.median, s.min, s.max)
        }
        Some(s) => format!("**{:.2}×**", s.median),
    }
}

/// Problems that make a run's numbers doubtful, for the verdict column.
pub(crate) fn caveats(runs: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    if runs.iter().any(|r| r["generator_bound"] == true) {
        out.push("generator-bound".to_owned());
    }
    let lost: u64 = runs.iter().filter_map(|r| r["lost"].as_u64()).sum();
    if lost > 0 {
        out.push(format!("{lost} lost"));
    }
    let bad: u64 = runs.iter().filter_map(|r| r["mismatched"].as_u64()).sum();
    if bad > 0 {
        out.push(format!("{bad} mismatched"));
    }
    let errors: u64 = runs.iter().filter_map(|r| r["errors"].as_u64()).sum();
    if errors > 0 {
        out.push(format!("{errors} error frames"));
    }
    out
}

fn verdict(met: Option<bool>, why: &str, caveats: Vec<String>) -> String {
    let mut s = match met {
        None => "—".to_owned(),
        Some(true) => "met".to_owned(),
        Some(false) if why.is_empty() => "**missed**".to_owned(),
        Some(false) => format!("**missed** ({why})"),
    };
    if !caveats.is_empty() {
        let _ = write!(s, "; ⚠ {}", caveats.join(", "));
    }
    s
}

/// The whole report (markdown).
pub fn render(runs: &[Value], host: &str, base: &str, max_others: Option<f64>) -> String {
    let mut groups = group(runs, host, base);
    let mut note = String::new();
    if let Some(max) = max_others {
        groups.iter_mut().for_each(|g| quiet_pairs(g, max));
        let none: Vec<String> = groups
            .iter()
            .filter(|g| g.host.is_empty() && g.base.is_empty())
            .map(|g| g.case.title())
            .collect();
        groups.retain(|g| !(g.host.is_empty() && g.base.is_empty()));
        if !none.is_empty() {
            note = format!("No quiet pair of runs for: {}.\n\n", none.join("; "));
        }
    }
    let mut out = String::new();
    let machines: Vec<&Value> = runs.iter().filter(|r| r["scenario"] == "machine").collect();
    for m in &machines {
        let at = m["when"].as_str().unwrap_or("?");
        let obj = m.as_object().into_iter().flatten();
        let fields: Vec<String> = obj
            .filter(|(k, _)| !matches!(k.as_str(), "scenario" | "when"))
            .map(|(k, v)| match v.as_str() {
                Some(s) => format!("{k} {s}"),
                None => format!("{k} {v}"),
            })
            .collect();
        let _ = writeln!(out, "- machine at {at}: {}", fields.join("; "));
    }
    if !machines.is_empty() {
        out.push('\n');
    }
    out.push_str(&note);
    let msg_rate = |r: &Value| num(r, &["msgs_per_host_cpu_sec"]);
    let _ = writeln!(
        out,
        "| scenario | msgs/s {host} / {base} | msgs per server CPU-s {host} / {base} | {host}/{base} per CPU-s: median of pairs (range) | goal | p50 ms {host} / {base} | p99 ms {host} / {base} ({host}/{base}: median of pairs) | server CPU % {host} / {base} | bench CPU % | other processes % | runs | verdict |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for g in groups.iter().filter(|g| g.case.kind() == Section::Messages) {
        let (h, b) = (median(&g.host, &msg_rate), median(&g.base, &msg_rate));
        let get = |r: Option<&Value>, p: &[&str]| r.and_then(|r| num(r, p));
        let ratio = spread(pair_ratios(g, &msg_rate, false));
        let (hp99, bp99) = (
            get(h, &["latency_us", "p99"]),
            get(b, &["latency_us", "p99"]),
        );
        let p99_ratio = spread(pair_ratios(g, &|r| num(r, &["latency_us", "p99"]), false));
        let goal = g.case.goal();
        let (met, why) = match (goal, ratio) {
            (Some(Goal::Ratio { min, p99_max_frac }), Some(r)) => {
                let mut why = Vec::new();
                if r.median < min {
                    why.push(format!("ratio {:.2} < {min}", r.median));
                }
                if let Some(f) = p99_max_frac {
                    match p99_ratio {
                        Some(p) if p.median > f => why.push(format!(
                            "p99 {host}/{base} {:.2} > {f} (pairs {:.2}–{:.2})",
                            p.median, p.min, p.max
                        )),
                        Some(_) => {}
                        None => why.push("no p99".into()),
                    }
                }
                (Some(why.is_empty()), why.join(", "))
            }
            (Some(_), None) => (Some(false), "not measured on both".into()),
            _ => (None, String::new()),
        };
        let both: Vec<&Value> = g.host.iter().chain(&g.base).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}+{} | {} |",
            g.case.title(),
            pair(
                rate(get(h, &["msgs_per_sec"])),
                rate(get(b, &["msgs_per_sec"]))
            ),
            pair(
                rate(get(h, &["msgs_per_host_cpu_sec"])),
                rate(get(b, &["msgs_per_host_cpu_sec"]))
            ),
            ratio_cell(ratio),
            goal.map_or("—".into(), Goal::text),
            pair(
                ms(get(h, &["latency_us", "p50"])),
                ms(get(b, &["latency_us", "p50"]))
            ),
            match p99_ratio {
                Some(p) => format!("{} ({:.2})", pair(ms(hp99), ms(bp99)), p.median),
                None => pair(ms(hp99), ms(bp99)),
            },
            pair(
                pct(get(h, &["host_cpu_pct"])),
                pct(get(b, &["host_cpu_pct"]))
            ),
            pair(
                pct(get(h, &["bench_cpu_pct"])),
                pct(get(b, &["bench_cpu_pct"]))
            ),
            pair(
                pct(get(h, &["other_processes_cpu_pct"])),
                pct(get(b, &["other_processes_cpu_pct"]))
            ),
            g.host.len(),
            g.base.len(),
            verdict(met, &why, caveats(&both)),
        );
    }

    // The same latencies ended at the replies' arrival in the generator's kernel (no verdict:
    // the goals are on the round trip as the generator sees it). Only runs sampled the current
    // way count; pairs need both sides.
    let arrival_runs = |runs: &[Value]| -> Vec<Value> {
        runs.iter()
            .filter(|r| r["latency_at_arrival_us"]["sampling"] == crate::ARRIVAL_SAMPLING)
            .cloned()
            .collect()
    };
    let arrival: Vec<Group> = groups
        .iter()
        .filter(|g| g.case.kind() == Section::Messages)
        .map(|g| Group {
            case: g.case.clone(),
            host: arrival_runs(&g.host),
            base: arrival_runs(&g.base),
        })
        .filter(|g| !g.host.is_empty() && !g.base.is_empty())
        .collect();
    if !arrival.is_empty() {
        let _ = writeln!(
            out,
            "\nLatency at arrival (an upper bound): the same round trips, each ended at the `SO_TIMESTAMPNS` time stamp of the read that completed its reply (the read's last packet reaching the generator's kernel, at or after the reply) instead of when the generator read it. It leaves out the generator's wait to read the reply, not its time to build and send the request. Runs that recorded it: {} per side at most.\n\n| scenario | p50 ms {host} / {base} | p99 ms {host} / {base} | p99 {host}/{base}: median of pairs (range) | p99 as read, same runs, {host}/{base} |\n|---|---|---|---|---|",
            arrival.iter().map(|g| g.host.len().max(g.base.len())).max().unwrap_or(0)
        );
        for g in &arrival {
            let msg_rate = |r: &Value| num(r, &["msgs_per_host_cpu_sec"]);
            let (h, b) = (median(&g.host, &msg_rate), median(&g.base, &msg_rate));
            let get = |r: Option<&Value>, p: &[&str]| r.and_then(|r| num(r, p));
            let at = |r: &Value| num(r, &["latency_at_arrival_us", "p99"]);
            let read = |r: &Value| num(r, &["latency_us", "p99"]);
            let median_of =
                |s: Option<Spread>| s.map_or("—".into(), |s| format!("{:.2}", s.median));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                g.case.title(),
                pair(
                    ms(get(h, &["latency_at_arrival_us", "p50"])),
                    ms(get(b, &["latency_at_arrival_us", "p50"]))
                ),
                pair(
                    ms(get(h, &["latency_at_arrival_us", "p99"])),
                    ms(get(b, &["latency_at_arrival_us", "p99"]))
                ),
                spread(pair_ratios(g, &at, false)).map_or("—".into(), |s| format!(
                    "{:.2} ({:.2}–{:.2})",
                    s.median, s.min, s.max
                )),
                median_of(spread(pair_ratios(g, &read, false))),
            );
        }
    }

    let cpu_us = |r: &Value| num(r, &["connect_auth", "host_cpu_us_per_connect"]);
    let connect: Vec<&Group> = groups
        .iter()
        .filter(|g| g.case.kind() == Section::Connect)
        .collect();
    if !connect.is_empty() {
        let _ = writeln!(
            out,
            "\n| scenario | connects/s {host} / {base} | server CPU µs per connect {host} / {base} | {host}/{base} per CPU-s: median of pairs (range) | goal | server CPU % {host} / {base} | bench CPU % | other processes % | runs | verdict |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    }
    for g in connect {
        // Lower CPU per connect is better: the median by it, and the ratio inverted.
        let (h, b) = (median(&g.host, &cpu_us), median(&g.base, &cpu_us));
        let get = |r: Option<&Value>, p: &[&str]| r.and_then(|r| num(r, &["connect_auth", p[0]]));
        let ratio = spread(pair_ratios(g, &cpu_us, true));
        let (met, why) = match (g.case.goal(), ratio) {
            (Some(Goal::Ratio { min, .. }), Some(r)) => (
                Some(r.median >= min),
                if r.median >= min {
                    String::new()
                } else {
                    format!("ratio {:.2} < {min}", r.median)
                },
            ),
            (Some(_), None) => (Some(false), "not measured on both".into()),
            _ => (None, String::new()),
        };
        let us = |x: Option<f64>| x.map_or("—".into(), |x| format!("{x:.0}"));
        let both: Vec<&Value> = g.host.iter().chain(&g.base).collect();
        let bound = both
            .iter()
            .any(|r| num(r, &["connect_auth", "bench_cpu_pct"]).is_some_and(|p| p >= 90.0));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}+{} | {} |",
            g.case.title(),
            pair(rate(get(h, &["per_sec"])), rate(get(b, &["per_sec"]))),
            pair(
                us(get(h, &["host_cpu_us_per_connect"])),
                us(get(b, &["host_cpu_us_per_connect"]))
            ),
            ratio_cell(ratio),
            g.case.goal().map_or("—".into(), Goal::text),
            pair(
                pct(get(h, &["host_cpu_pct"])),
                pct(get(b, &["host_cpu_pct"]))
            ),
            pair(
                pct(get(h, &["bench_cpu_pct"])),
                pct(get(b, &["bench_cpu_pct"]))
            ),
            pair(
                pct(get(h, &["other_processes_cpu_pct"])),
                pct(get(b, &["other_processes_cpu_pct"]))
            ),
            g.host.len(),
            g.base.len(),
            verdict(
                met,
                &why,
                if bound {
                    vec!["generator-bound".into()]
                } else {
                    vec![]
                }
            ),
        );
    }

    let kib = |r: &Value| num(r, &["host_rss_per_follower_kib"]);
    let idle: Vec<&Group> = groups
        .iter()
        .filter(|g| g.case.kind() == Section::Idle)
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(
            out,
            "\n| scenario | RSS KiB per follower {host} / {base} | server RSS KiB before → connected, {host} | … {base} | goal ({host}) | heartbeats acked of sent, {host} / {base} | other processes % | runs | verdict |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    }
    for g in idle {
        let (h, b) = (median(&g.host, &kib), median(&g.base, &kib));
        let hk = h.and_then(kib);
        let (met, why) = match (g.case.goal(), hk) {
            (Some(Goal::HostKibMax(max)), Some(k)) => (
                Some(k <= max),
                if k <= max {
                    String::new()
                } else {
                    format!("{k:.1} > {max}")
                },
            ),
            (Some(_), None) => (Some(false), "not measured".into()),
            _ => (None, String::new()),
        };
        let rss = |r: Option<&Value>| {
            r.map_or("—".into(), |r| {
                format!(
                    "{} → {}",
                    r["host_rss_kib"]["before_connect"], r["host_rss_kib"]["connected"]
                )
            })
        };
        let beats = |r: Option<&Value>| {
            r.map_or("—".into(), |r| {
                format!("{} of {}", r["heartbeat_acks"], r["heartbeats_sent"])
            })
        };
        let k = |x: Option<f64>| x.map_or("—".into(), |x| format!("{x:.1}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {}+{} | {} |",
            g.case.title(),
            pair(k(hk), k(b.and_then(kib))),
            rss(h),
            rss(b),
            g.case.goal().map_or("—".into(), Goal::text),
            pair(beats(h), beats(b)),
            pair(
                pct(h.and_then(|r| num(r, &["other_processes_cpu_pct"]))),
                pct(b.and_then(|r| num(r, &["other_processes_cpu_pct"])))
            ),
            g.host.len(),
            g.base.len(),
            verdict(met, &why, vec![]),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(label: &str, n: u64, w: u64, per_cpu: f64, p99_us: f64) -> Value {
        json!({"scenario": "echo", "label": label, "followers": n, "window": w, "size": 100,
               "msgs_per_sec": per_cpu * 0.9, "msgs_per_host_cpu_sec": per_cpu,
               "latency_us": {"p50": p99_us / 3.0, "p99": p99_us},
               "host_cpu_pct": 90.0, "bench_cpu_pct": 50.0, "other_processes_cpu_pct": 3.0,
               "lost": 0, "mismatched": 0, "errors": 0, "generator_bound": false})
    }

    fn row<'a>(table: &'a str, start: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {start}")))
            .unwrap_or_else(|| panic!("no row {start} in\n{table}"))
    }

    #[test]
    fn latency_at_arrival_gets_its_own_table_without_a_verdict() {
        let s = crate::ARRIVAL_SAMPLING;
        let mut h = load("host", 500, 2, 200e3, 12e3);
        h["latency_at_arrival_us"] = json!({"sampling": s, "p50": 3e3, "p99": 6e3});
        let mut n = load("node", 500, 2, 100e3, 20e3);
        n["latency_at_arrival_us"] = json!({"sampling": s, "p50": 10e3, "p99": 16e3});
        // A run sampled another way (an earlier bench) is left out of the arrival table.
        let mut old = load("host", 500, 2, 300e3, 12e3);
        old["latency_at_arrival_us"] = json!({"p50": 1.0, "p99": 1.0});
        let t = render(&[h, n, old], "host", "node", None);
        assert!(t.contains("Latency at arrival"), "{t}");
        let rows: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("| echo 500×2"))
            .collect();
        assert_eq!(rows.len(), 2, "{t}");
        // The goal's verdict stays on the round trip as read: 12 / 20 = 0.6 > 0.5.
        assert!(rows[0].contains("**missed**"), "{}", rows[0]);
        assert_eq!(
            rows[1],
            "| echo 500×2, 100 B | 3.00 / 10.0 | 6.00 / 16.0 | 0.38 (0.38–0.38) | 0.60 |"
        );
        // Runs without time stamps: no such table.
        let t = render(
            &[load("host", 50, 1, 1e5, 1e3), load("node", 50, 1, 1e5, 2e3)],
            "host",
            "node",
            None,
        );
        assert!(!t.contains("Latency at arrival"), "{t}");
    }

    #[test]
    fn ratios_goals_and_verdicts() {
        let runs = vec![
            json!({"scenario": "machine", "when": "start", "nproc": 2, "loadavg": "0.5 0.4 0.3"}),
            // 50×16: 3 host runs (median 300 k), 3 node runs (median 100 k) → 3× < 4×.
            load("host", 50, 16, 280e3, 12e3),
            load("node", 50, 16, 90e3, 27e3),
            load("host", 50, 16, 300e3, 12e3),
            load("node", 50, 16, 100e3, 27e3),
            load("host", 50, 16, 320e3, 12e3),
            load("node", 50, 16, 110e3, 27e3),
            // 50×1: ratio 2 and p99 below Node's → met.
            load("host", 50, 1, 200e3, 3e3),
            load("node", 50, 1, 100e3, 8e3),
            // 500×2: ratio 2 but p99 81 ms / 48 ms = 1.69 > 0.5 → missed.
            load("host", 500, 2, 200e3, 81e3),
            load("node", 500, 2, 100e3, 48e3),
            json!({"scenario": "auth", "label": "host", "followers": 2000,
                   "connect_auth": {"per_sec": 5000.0, "host_cpu_us_per_connect": 100.0, "host_cpu_pct": 50.0, "bench_cpu_pct": 40.0}}),
            json!({"scenario": "auth", "label": "node", "followers": 2000,
                   "connect_auth": {"per_sec": 3000.0, "host_cpu_us_per_connect": 350.0, "host_cpu_pct": 90.0, "bench_cpu_pct": 40.0}}),
            json!({"scenario": "idle", "label": "host", "followers": 5000, "host_rss_per_follower_kib": 12.0,
                   "host_rss_kib": {"before_connect": 10000, "connected": 70000}, "heartbeats_sent": 10, "heartbeat_acks": 10}),
            json!({"scenario": "idle", "label": "node", "followers": 5000, "host_rss_per_follower_kib": 8.8,
                   "host_rss_kib": {"before_connect": 50000, "connected": 94000}, "heartbeats_sent": 10, "heartbeat_acks": 10}),
        ];
        let t = render(&runs, "host", "node", None);
        assert!(
            t.contains("- machine at start: loadavg 0.5 0.4 0.3; nproc 2"),
            "{t}"
        );
        let r = row(&t, "echo 50×16");
        assert!(r.contains("**3.00×** (2.91–3.11)"), "{r}");
        assert!(r.contains("≥ 4×"), "{r}");
        assert!(r.contains("**missed** (ratio 3.00 < 4)"), "{r}");
        assert!(r.contains("300 k / 100 k"), "{r}");
        assert!(r.contains("12.0 / 27.0"), "{r}");
        assert!(r.contains("| 3+3 |"), "{r}");
        let r = row(&t, "echo 50×1,");
        assert!(r.contains("**2.00×**") && r.ends_with("| met |"), "{r}");
        let r = row(&t, "echo 500×2");
        assert!(
            r.contains("**missed** (p99 host/node 1.69 > 0.5 (pairs 1.69–1.69))"),
            "{r}"
        );
        assert!(r.contains("81.0 / 48.0 (1.69)"), "{r}");
        assert!(r.contains("p99 ≤ half of Node's"), "{r}");
        let r = row(&t, "connect + hello + auth");
        assert!(
            r.contains("100 / 350") && r.contains("**3.50×**") && r.ends_with("| met |"),
            "{r}"
        );
        let r = row(&t, "idle");
        assert!(
            r.contains("12.0 / 8.8") && r.contains("**missed** (12.0 > 6)"),
            "{r}"
        );
    }

    #[test]
    fn caveats_and_missing_baseline() {
        let mut h = load("host", 50, 16, 500e3, 5e3);
        h["generator_bound"] = json!(true);
        h["lost"] = json!(3);
        let t = render(&[h], "host", "node", None);
        let r = row(&t, "echo 50×16");
        assert!(r.contains("**missed** (not measured on both)"), "{r}");
        assert!(r.contains("⚠ generator-bound, 3 lost"), "{r}");
        assert!(r.contains("500 k / —"), "{r}");
    }

    #[test]
    fn p99_is_judged_per_pair_of_runs_side_by_side_in_time() {
        // A quiet pair and a loaded pair: per server, the p99s of different pairs would be
        // compared; per pair, host/node is 0.40 and 0.45 → median 0.425 ≤ 0.5 → met.
        let runs = [
            load("host", 500, 2, 200e3, 8e3),
            load("node", 500, 2, 100e3, 20e3),
            load("host", 500, 2, 190e3, 90e3),
            load("node", 500, 2, 95e3, 200e3),
        ];
        let t = render(&runs, "host", "node", None);
        let r = row(&t, "echo 500×2");
        assert!(r.ends_with("| met |"), "{r}");
        assert!(r.contains("(0.43)"), "{r}");
        assert!(r.contains("**2.00×**"), "{r}");
    }

    #[test]
    fn max_others_keeps_the_quiet_pairs() {
        let mut busy_host = load("host", 50, 16, 100e3, 1e3);
        busy_host["other_processes_cpu_pct"] = json!(150.0);
        let runs = [
            busy_host,
            load("node", 50, 16, 100e3, 1e3),
            load("host", 50, 16, 400e3, 1e3),
            load("node", 50, 16, 100e3, 1e3),
        ];
        let all = render(&runs, "host", "node", None);
        assert!(row(&all, "echo 50×16").contains("| 2+2 |"), "{all}");
        let mut runs = runs.to_vec();
        runs.push(load("host", 50, 1, 1.0, 1.0));
        runs[4]["other_processes_cpu_pct"] = json!(99.0);
        runs.push(load("node", 50, 1, 1.0, 1.0));
        let quiet = render(&runs, "host", "node", Some(30.0));
        assert!(
            quiet.contains("No quiet pair of runs for: echo 50×1, 100 B."),
            "{quiet}"
        );
        assert!(!quiet.contains("| echo 50×1,"), "{quiet}");
        let r = row(&quiet, "echo 50×16");
        assert!(r.contains("| 1+1 |") && r.contains("**4.00×**"), "{r}");
        assert!(r.contains("| met |"), "{r}");
    }

    #[test]
    fn balance_drops_unpaired_runs_of_a_file() {
        let mut runs = vec![
            json!({"scenario": "machine", "when": "start"}),
            load("host", 50, 16, 1.0, 1.0),
            load("node", 50, 16, 2.0, 1.0),
            load("host", 50, 16, 3.0, 1.0), // its node counterpart failed
            load("host", 50, 1, 4.0, 1.0),  // measured on the host only
        ];
        assert_eq!(balance(&mut runs, "host", "node"), 1);
        let kept: Vec<f64> = runs
            .iter()
            .filter_map(|r| r["msgs_per_host_cpu_sec"].as_f64())
            .collect();
        assert_eq!(kept, [1.0, 2.0, 4.0]);
        assert_eq!(runs[0]["scenario"], "machine");
    }

    #[test]
    fn spread_of_ratios() {
        assert_eq!(spread(vec![]), None);
        let s = spread(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(spread(vec![4.0, 1.0]).unwrap().median, 2.5);
    }

    #[test]
    fn relay_has_no_goal_and_median_is_the_lower_middle() {
        let mut a = load("host", 50, 1, 10.0, 1e3);
        a["scenario"] = json!("relay");
        let mut b = a.clone();
        b["msgs_per_host_cpu_sec"] = json!(20.0);
        let runs = [a, b];
        let m = median(&runs, &|r| num(r, &["msgs_per_host_cpu_sec"])).unwrap();
        assert_eq!(m["msgs_per_host_cpu_sec"], 10.0);
        let t = render(&runs, "host", "node", None);
        let r = row(&t, "relay 50 pairs×1");
        assert!(r.ends_with("| — |"), "{r}");
    }
}
