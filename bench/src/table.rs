//! `yonexus-bench table`: one row per label and scenario, for runs that are not a host-vs-Node
//! comparison — `bench/cores.sh` (the host allowed 1 or 2 cores) and `bench/cluster.sh` (two
//! hosts and NATS against one host and the Node peer). Per row the median run by msgs/s, the
//! range over the runs, server CPU, latency of the median run, and loss; `--ratio A/B` adds,
//! case by case, label A's msgs/s over label B's for each pair of runs (the k-th of each, which
//! the scripts measure back to back).

use crate::compare::{caveats, ms, num, others, pct, rate, spread, Case, Spread};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args)]
pub struct TableArgs {
    /// JSON lines written by the runs (one or more files, pooled).
    #[arg(required = true)]
    pub jsonl: Vec<PathBuf>,
    /// Add ratio rows `A/B`: label A's msgs/s (and msgs per server CPU-second) over label B's,
    /// per pair of runs of the same scenario; repeatable.
    #[arg(long)]
    pub ratio: Vec<String>,
    /// Also write the table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep only runs during which other processes used at most this many % of a core (and,
    /// for ratios, pairs where both runs did): on a shared machine, what was measured while it
    /// was quiet.
    #[arg(long)]
    pub max_others: Option<f64>,
}

pub fn run(args: &TableArgs) -> Result<()> {
    let mut runs = Vec::new();
    for path in &args.jsonl {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a JSON object", path.display(), n + 1))?;
            runs.push(v);
        }
    }
    let mut ratios = Vec::with_capacity(args.ratio.len());
    for r in &args.ratio {
        match r.split_once('/') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => ratios.push((a, b)),
            _ => bail!("--ratio {r:?}: expected LABEL_A/LABEL_B"),
        }
    }
    let mut table = render(&runs, &ratios, args.max_others);
    if let Some(max) = args.max_others {
        table.insert_str(
            0,
            &format!("Only runs during which other processes used ≤ {max}% of a core.\n\n"),
        );
    }
    print!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn label(v: &Value) -> &str {
    v["label"].as_str().unwrap_or("host")
}

fn msgs(v: &Value) -> Option<f64> {
    num(v, &["msgs_per_sec"])
}

fn per_cpu(v: &Value) -> Option<f64> {
    num(v, &["msgs_per_host_cpu_sec"])
}

/// Runs of one label and case, in file order.
struct Row {
    case: Case,
    label: String,
    runs: Vec<Value>,
}

fn rows(runs: &[Value]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for v in runs.iter().filter(|v| msgs(v).is_some()) {
        let Some(case) = Case::of(v) else { continue };
        match rows
            .iter_mut()
            .find(|r| r.case == case && r.label == label(v))
        {
            Some(r) => r.runs.push(v.clone()),
            None => rows.push(Row {
                case,
                label: label(v).to_owned(),
                runs: vec![v.clone()],
            }),
        }
    }
    rows
}

fn cell(s: Option<Spread>, fmt: &dyn Fn(Option<f64>) -> String) -> String {
    match s {
        None => "—".into(),
        Some(s) if s.min < s.max => {
            format!(
                "{} ({}–{})",
                fmt(Some(s.median)),
                fmt(Some(s.min)),
                fmt(Some(s.max))
            )
        }
        Some(s) => fmt(Some(s.median)),
    }
}

fn times(x: Option<f64>) -> String {
    x.map_or("—".into(), |x| format!("{x:.2}×"))
}

/// The run whose msgs/s is the median (lower middle for an even count).
fn median_run(runs: &[Value]) -> Option<&Value> {
    let mut with: Vec<(f64, &Value)> = runs.iter().filter_map(|r| Some((msgs(r)?, r))).collect();
    with.sort_by(|a, b| a.0.total_cmp(&b.0));
    with.get(with.len().checked_sub(1)? / 2).map(|(_, r)| *r)
}

/// The whole report (markdown).
pub fn render(runs: &[Value], ratios: &[(&str, &str)], max_others: Option<f64>) -> String {
    let quiet = |v: &Value| max_others.is_none_or(|max| others(v).is_some_and(|o| o <= max));
    let mut out = String::new();
    for m in runs.iter().filter(|r| r["scenario"] == "machine") {
        let _ = writeln!(
            out,
            "- machine {}: {} load average {}, host commit {}",
            m["when"].as_str().unwrap_or("?"),
            m["date"].as_str().unwrap_or("?"),
            m["loadavg"].as_str().unwrap_or("?"),
            m["host_commit"].as_str().unwrap_or("?"),
        );
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let rows = rows(runs);
    out.push_str(
        "| scenario | label | msgs/s: median (range) | msgs per server CPU-s | server CPU % (each) | \
         p50 / p99 ms | bench CPU % | other processes % | runs | lost, errors |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let kept: Vec<Value> = r.runs.iter().filter(|v| quiet(v)).cloned().collect();
        if kept.is_empty() {
            let _ = writeln!(
                out,
                "| {} | {} | no quiet run | | | | | | 0 | |",
                r.case.title(),
                r.label
            );
            continue;
        }
        let r = Row {
            case: r.case.clone(),
            label: r.label.clone(),
            runs: kept,
        };
        let med = median_run(&r.runs);
        let each = med
            .and_then(|m| m["host_cpu_pct_each"].as_array())
            .map(|a| {
                let parts: Vec<String> = a.iter().map(|x| pct(x.as_f64())).collect();
                format!(" ({})", parts.join(" + "))
            })
            .unwrap_or_default();
        let refs: Vec<&Value> = r.runs.iter().collect();
        let warn = caveats(&refs);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {}{each} | {} / {} | {} | {} | {} | {} |",
            r.case.title(),
            r.label,
            cell(spread(r.runs.iter().filter_map(msgs).collect()), &rate),
            cell(spread(r.runs.iter().filter_map(per_cpu).collect()), &rate),
            pct(med.and_then(|m| num(m, &["host_cpu_pct"]))),
            ms(med.and_then(|m| num(m, &["latency_us", "p50"]))),
            ms(med.and_then(|m| num(m, &["latency_us", "p99"]))),
            pct(med.and_then(|m| num(m, &["bench_cpu_pct"]))),
            cell(spread(r.runs.iter().filter_map(others).collect()), &pct),
            r.runs.len(),
            if warn.is_empty() {
                "0".to_owned()
            } else {
                format!("⚠ {}", warn.join(", "))
            },
        );
    }
    if !ratios.is_empty() {
        out.push_str(
            "\n| scenario | ratio | msgs/s: median of pairs (range) | per server CPU-s | pairs |\n\
             |---|---|---|---|---|\n",
        );
        for &(a, b) in ratios {
            for ra in rows.iter().filter(|r| r.label == a) {
                let Some(rb) = rows.iter().find(|r| r.label == b && r.case == ra.case) else {
                    continue;
                };
                let pairs = |f: &dyn Fn(&Value) -> Option<f64>| {
                    ra.runs
                        .iter()
                        .zip(&rb.runs)
                        .filter(|(x, y)| quiet(x) && quiet(y))
                        .filter_map(|(x, y)| Some(f(x)? / f(y)?))
                        .filter(|r| r.is_finite())
                        .collect::<Vec<f64>>()
                };
                let _ = writeln!(
                    out,
                    "| {} | {a} / {b} | **{}** | {} | {} |",
                    ra.case.title(),
                    cell(spread(pairs(&msgs)), &times),
                    cell(spread(pairs(&per_cpu)), &times),
                    ra.runs
                        .iter()
                        .zip(&rb.runs)
                        .filter(|(x, y)| quiet(x) && quiet(y))
                        .count(),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(label: &str, rate: f64, cpu: f64) -> Value {
        json!({"scenario": "echo", "label": label, "followers": 50, "window": 16, "size": 100,
               "msgs_per_sec": rate, "msgs_per_host_cpu_sec": rate / (cpu / 100.0),
               "host_cpu_pct": cpu, "bench_cpu_pct": 10.0, "other_processes_cpu_pct": 5.0,
               "latency_us": {"p50": 1000.0, "p99": 4000.0}, "lost": 0, "errors": 0})
    }

    #[test]
    fn rows_per_label_and_ratios_per_pair() {
        let runs = vec![
            run("one", 100.0, 100.0),
            run("two", 190.0, 190.0),
            run("one", 110.0, 100.0),
            run("two", 200.0, 195.0),
            json!({"scenario": "machine", "when": "start", "date": "d", "loadavg": "1 2 3", "host_commit": "abc"}),
        ];
        let t = render(&runs, &[("two", "one")], None);
        assert!(
            t.contains("- machine start: d load average 1 2 3, host commit abc"),
            "{t}"
        );
        assert!(
            t.contains("| echo 50×16, 100 B | one | 105 (100–110) |"),
            "{t}"
        );
        assert!(
            t.contains("| echo 50×16, 100 B | two | 195 (190–200) |"),
            "{t}"
        );
        // Pairs: 190/100 = 1.90, 200/110 = 1.82.
        assert!(t.contains("| two / one | **1.86× (1.82×–1.90×)** |"), "{t}");
        assert!(t.contains("| 2 |"), "{t}");
    }

    #[test]
    fn loss_is_flagged() {
        let mut r = run("one", 100.0, 100.0);
        r["lost"] = json!(3);
        let t = render(&[r], &[], None);
        assert!(t.contains("⚠ 3 lost"), "{t}");
    }

    #[test]
    fn max_others_keeps_quiet_runs_and_pairs() {
        let mut busy = run("two", 50.0, 100.0);
        busy["other_processes_cpu_pct"] = json!(150.0);
        let runs = vec![
            run("one", 100.0, 100.0),
            busy,
            run("one", 110.0, 100.0),
            run("two", 220.0, 195.0),
        ];
        let t = render(&runs, &[("two", "one")], Some(30.0));
        assert!(t.contains("| two | 220 |"), "{t}");
        // Only the second pair is quiet: 220/110.
        assert!(t.contains("| two / one | **2.00×** |"), "{t}");
        assert!(t.contains("| 1 |\n"), "{t}");
    }
}
