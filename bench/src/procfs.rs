//! What the bench reads about processes: CPU time (from the process's CPU-time clock, else
//! `/proc/<pid>/stat`) and resident memory of the host process and of itself, and which plugin
//! libraries the host has mapped.

use anyhow::{anyhow, Context, Result};
use std::collections::BTreeSet;
use std::time::Instant;

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux
/// unless the kernel was built otherwise).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// `"self"` or a pid.
#[derive(Debug, Clone)]
pub struct Proc(pub String);

impl Proc {
    pub fn me() -> Proc {
        Proc("self".into())
    }

    pub fn pid(pid: u32) -> Proc {
        Proc(pid.to_string())
    }

    /// utime + stime in clock ticks, including threads that have exited.
    pub fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.0);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name (field 2) may contain spaces; fields after it start past the last ')'.
        let rest = text
            .rfind(')')
            .and_then(|i| text.get(i + 1..))
            .ok_or_else(|| anyhow!("{path}: no ')' in stat line"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); utime is field 14, stime 15 → indices 11, 12.
        let get = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| anyhow!("{path}: field {} unreadable", i + 3))
        };
        Ok(get(11)? + get(12)?)
    }

    /// [`Proc::cpu_ticks`] in nanoseconds (whole clock ticks of 10 ms: over the 0.2 s of an
    /// auth run, ±5 % from rounding alone).
    fn cpu_nanos_from_ticks(&self, tck: u64) -> Result<u64> {
        Ok(self.cpu_ticks()? * 1_000_000_000 / tck.max(1))
    }

    /// CPU time (user + system) in nanoseconds, every thread including exited ones, from the
    /// process's CPU-time clock: exact. `None` where that clock cannot be read.
    fn cpu_clock_nanos(&self) -> Option<u64> {
        let clock = if self.0 == "self" {
            libc::CLOCK_PROCESS_CPUTIME_ID
        } else {
            let pid: libc::pid_t = self.0.parse().ok()?;
            let mut id: libc::clockid_t = 0;
            // SAFETY: `id` is a valid place for the call to write the clock id to.
            if unsafe { libc::clock_getcpuclockid(pid, &mut id) } != 0 {
                return None;
            }
            id
        };
        // SAFETY: all-zero bytes are a valid `timespec` (plain integers, padding on some targets).
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: `ts` is a valid place for the call to write the time to.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return None;
        }
        let secs = u64::try_from(ts.tv_sec).ok()?;
        let nanos = u64::try_from(ts.tv_nsec).ok()?;
        Some(secs * 1_000_000_000 + nanos)
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …) in KiB.
    pub fn status_kib(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.0);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(field)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .ok_or_else(|| anyhow!("{path}: no {field}"))
    }

    pub fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS")
    }

    /// Distinct staged plugin libraries mapped (paths under `plugins-staging/`), e.g.
    /// `echo-<pid>-<n>-<nanos>.so`. The host never unloads a library, so a reload adds one.
    pub fn staged_plugins(&self, name_prefix: &str) -> Result<usize> {
        let path = format!("/proc/{}/maps", self.0);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let set: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| {
                p.contains("/plugins-staging/")
                    && p.rsplit('/')
                        .next()
                        .is_some_and(|f| f.starts_with(name_prefix))
            })
            .collect();
        Ok(set.len())
    }
}

/// Busy and total jiffies of each CPU (`/proc/stat` lines `cpuN`).
pub fn cores() -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = v.iter().sum();
            // idle + iowait are not busy.
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle.min(total), total)
        })
        .collect()
}

/// Busy percent of each CPU since `start` (a [`cores`] sample).
pub fn cores_busy_since(start: &[(u64, u64)]) -> Vec<f64> {
    cores()
        .iter()
        .zip(start)
        .map(|((b1, t1), (b0, t0))| {
            let t = t1.saturating_sub(*t0);
            if t == 0 {
                0.0
            } else {
                b1.saturating_sub(*b0) as f64 / t as f64 * 100.0
            }
        })
        .collect()
}

/// CPU of one process over a window: from its CPU-time clock, or where that cannot be read,
/// from its clock ticks.
#[derive(Debug, Clone)]
pub struct CpuWindow {
    proc_: Proc,
    nanos: u64,
    /// Read from the CPU-time clock at the start, so also at the end (never one of each).
    exact: bool,
    at: Instant,
}

impl CpuWindow {
    pub fn start(p: &Proc, tck: u64) -> Result<CpuWindow> {
        let exact = p.cpu_clock_nanos();
        Ok(CpuWindow {
            proc_: p.clone(),
            nanos: match exact {
                Some(ns) => ns,
                None => p.cpu_nanos_from_ticks(tck)?,
            },
            exact: exact.is_some(),
            at: Instant::now(),
        })
    }

    /// Percent of one core used since `start` (100 = one core busy the whole time).
    pub fn percent(&self, tck: u64) -> Result<f64> {
        let now = if self.exact {
            self.proc_
                .cpu_clock_nanos()
                .ok_or_else(|| anyhow!("process {}: CPU-time clock unreadable", self.proc_.0))?
        } else {
            self.proc_.cpu_nanos_from_ticks(tck)?
        };
        let nanos = now.saturating_sub(self.nanos);
        let secs = self.at.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return Ok(0.0);
        }
        Ok(nanos as f64 / 1e9 / secs * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat_and_status() {
        let me = Proc::me();
        assert!(me.cpu_ticks().is_ok());
        // The exact clock advances while this thread spins, and agrees with the ticks to within
        // a few of them.
        let start = me.cpu_clock_nanos().unwrap();
        let spin = Instant::now();
        while me.cpu_clock_nanos().unwrap() < start + 50_000_000 {
            assert!(
                spin.elapsed().as_secs() < 30,
                "no CPU time in 30 s of spinning"
            );
        }
        let (ns, ticks) = (me.cpu_clock_nanos().unwrap(), me.cpu_ticks().unwrap());
        let from_ticks = ticks * 1_000_000_000 / clock_ticks();
        assert!(
            ns.abs_diff(from_ticks) < 100_000_000,
            "{ns} vs {from_ticks}"
        );
        let other = Proc::pid(std::process::id());
        assert!(other.cpu_clock_nanos().unwrap() >= ns);
        assert!(me.rss_kib().unwrap() > 0);
        assert!(me.status_kib("NoSuchField").is_err());
        assert_eq!(me.staged_plugins("echo-").unwrap(), 0);
        assert!(clock_ticks() > 0);
        let c = cores();
        assert!(!c.is_empty());
        assert_eq!(cores_busy_since(&c).len(), c.len());
    }
}
