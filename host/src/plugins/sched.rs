//! Where a thread's time goes: its CPU clock (`clock_gettime` on the thread's CPU-time clock,
//! exact to the nanosecond, also while it runs) and its scheduler state (`/proc`). The inline
//! watchdog uses them to tell a call that spins or blocks — the plugin broke its promise — from
//! one that is merely preempted by other busy threads on a loaded machine, which is not the
//! plugin's fault and must not demote it.

/// A thread the watchdog can look at from another thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadProbe {
    tid: i32,
    clock: libc::clockid_t,
}

/// What a thread did between two looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ran on a CPU for most of the time (spinning, or heavy work).
    Ran,
    /// Not running and not runnable: sleeping or blocked (on I/O, a lock, a timer).
    Blocked,
    /// Runnable, waiting for a CPU: preempted by other threads.
    Preempted,
}

impl ThreadProbe {
    /// The calling thread; `None` where the kernel offers no per-thread CPU clock.
    pub fn current() -> Option<ThreadProbe> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid for the calling thread; the out-pointer is ours.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        let probe = (rc == 0).then_some(ThreadProbe { tid, clock })?;
        // Both must answer for this thread, or the watchdog falls back to wall-clock time.
        probe.cpu_ns()?;
        probe.runnable()?;
        Some(probe)
    }

    /// The thread's CPU time so far.
    pub fn cpu_ns(&self) -> Option<u64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id (or the call fails) and an out-pointer of ours.
        let rc = unsafe { libc::clock_gettime(self.clock, &mut ts) };
        if rc != 0 {
            return None;
        }
        let secs = u64::try_from(ts.tv_sec).ok()?;
        let nanos = u64::try_from(ts.tv_nsec).ok()?;
        Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// Whether the thread is running or waiting for a CPU (state `R`) right now.
    pub fn runnable(&self) -> Option<bool> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{}/stat", self.tid)).ok()?;
        state_of(&stat).map(|s| s == 'R')
    }
}

/// The state letter of a `/proc/<pid>/task/<tid>/stat` line (after the command name, which may
/// itself hold spaces and parentheses).
fn state_of(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// What a thread did over `elapsed_ns`, in which it ran `cpu_ns`, and is `runnable` at the end.
pub fn judge(cpu_ns: u64, elapsed_ns: u64, runnable: bool) -> Verdict {
    if cpu_ns.saturating_mul(2) >= elapsed_ns {
        Verdict::Ran
    } else if runnable {
        Verdict::Preempted
    } else {
        Verdict::Blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn reads_the_state_after_the_command_name() {
        assert_eq!(state_of("42 (tokio-rt (w) 1) R 1 2 3"), Some('R'));
        assert_eq!(state_of("42 (cat) S 1"), Some('S'));
        assert_eq!(state_of("42 (cat"), None);
        assert_eq!(state_of("42 (cat)"), None);
    }

    #[test]
    fn watches_another_thread_spinning_then_sleeping() {
        let (probe_tx, probe_rx) = std::sync::mpsc::channel();
        let (spun_tx, spun_rx) = std::sync::mpsc::channel();
        let (start_tx, start_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let me = ThreadProbe::current();
            probe_tx.send(me).unwrap();
            let _ = start_rx.recv();
            // Spin until 20 ms of this thread's own CPU time (however busy the machine is).
            if let Some(me) = me {
                let from = me.cpu_ns().unwrap();
                while me.cpu_ns().unwrap() - from < 20_000_000 {
                    std::hint::spin_loop();
                }
            }
            spun_tx.send(()).unwrap();
            let _ = go_rx.recv();
        });
        let probe = probe_rx
            .recv()
            .unwrap()
            .expect("this kernel has per-thread CPU clocks");
        let before = probe.cpu_ns().unwrap();
        start_tx.send(()).unwrap();
        spun_rx.recv().unwrap();
        let spun = probe.cpu_ns().unwrap() - before;
        assert!(spun >= 20_000_000, "seen from here, it spun {spun} ns");
        // Then it blocks on the channel: asleep, not runnable (within a moment).
        let deadline = Instant::now() + Duration::from_secs(5);
        while probe.runnable() != Some(false) {
            assert!(Instant::now() < deadline, "never seen asleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        go_tx.send(()).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn judges_ran_blocked_and_preempted() {
        assert_eq!(judge(900_000, 1_000_000, true), Verdict::Ran);
        assert_eq!(judge(10_000, 1_000_000, false), Verdict::Blocked);
        assert_eq!(judge(10_000, 1_000_000, true), Verdict::Preempted);
    }
}
