//! `--exec PROG [ARGS]`: hand each received rule message to a program instead of stdout.
//!
//! One process per message: `rule_id::content` and a newline on its stdin (then stdin is
//! closed), `YONEXUS_RULE_ID` and `YONEXUS_IDENTIFIER` in its environment, its stdout and stderr
//! shared with the follower's. A process still running after `timeout` is killed. Failures are
//! reported with the rule id and the message size, never the content (it may be sensitive).
//!
//! Messages wait in a queue of their own for a free slot ([`Exec::push`] never waits, so a slow
//! program never holds up the connection or the CLI's other output). At most `concurrency`
//! processes run at once; with one slot (the default) the program gets the messages one at a
//! time, in the order they arrived; with more, processes start in order but may finish in any
//! order. The queue holds at most `queue` messages and [`QUEUE_BYTES`] bytes: when one more
//! arrives, the oldest *waiting* message is dropped. The first drop says so at once, and the
//! next message handed to the program is preceded by the count of messages dropped.

use crate::cli::text::say;
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use yonexus_protocol::frame;

/// Most bytes of messages waiting in the `--exec` queue.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One received rule message.
struct Job {
    rule_id: String,
    content: String,
}

impl Job {
    fn size(&self) -> usize {
        self.rule_id.len() + self.content.len()
    }
}

/// Messages waiting for a slot, and what became of the others.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Job>,
    bytes: usize,
    /// Taken from `waiting` and not finished yet (handed to a process, or about to be).
    in_flight: usize,
    /// Dropped since the last report.
    dropped: u64,
}

/// The `--exec` runner.
#[derive(Clone)]
pub struct Exec {
    inner: Arc<Inner>,
}

struct Inner {
    program: String,
    args: Vec<String>,
    identifier: String,
    slots: Arc<Semaphore>,
    timeout: Duration,
    max_waiting: usize,
    queue: Mutex<Queue>,
    /// Signalled when a message is queued (one consumer: the dispatcher).
    queued: Notify,
}

impl Exec {
    /// `command` is PROG followed by its arguments; `None` when it is empty. Starts the task that
    /// hands queued messages to processes (call inside the tokio runtime).
    pub fn new(
        command: &[String],
        identifier: &str,
        concurrency: u32,
        queue: usize,
        timeout: Duration,
    ) -> Option<Exec> {
        let (program, args) = command.split_first()?;
        let inner = Arc::new(Inner {
            program: program.clone(),
            args: args.to_vec(),
            identifier: identifier.to_string(),
            slots: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            timeout,
            max_waiting: queue.max(1),
            queue: Mutex::new(Queue::default()),
            queued: Notify::new(),
        });
        tokio::spawn(Arc::clone(&inner).dispatch());
        Some(Exec { inner })
    }

    /// Queue a message for the program; never waits. When the queue is full the oldest waiting
    /// message is dropped (and counted).
    pub fn push(&self, rule_id: String, content: String) {
        let inner = &self.inner;
        let job = Job { rule_id, content };
        let mut q = lock(&inner.queue);
        let mut first_drop = None;
        while !q.waiting.is_empty()
            && (q.waiting.len() >= inner.max_waiting
                || q.bytes.saturating_add(job.size()) > QUEUE_BYTES)
        {
            if let Some(old) = q.waiting.pop_front() {
                q.bytes = q.bytes.saturating_sub(old.size());
                if q.dropped == 0 {
                    first_drop = Some(q.waiting.len() + 1);
                }
                q.dropped += 1;
            }
        }
        q.bytes = q.bytes.saturating_add(job.size());
        q.waiting.push_back(job);
        drop(q);
        inner.queued.notify_one();
        if let Some(waiting) = first_drop {
            say(&format!(
                "warning: exec: {} is falling behind ({waiting} messages waiting, the most \
                 --exec-queue allows): dropping the oldest waiting messages until it catches up",
                inner.program
            ));
        }
    }

    /// Wait until every queued message was handled and no process runs (`Ok`), or `grace`
    /// passed (`Err` with the messages still waiting and the processes still running).
    pub async fn wait_idle(&self, grace: Duration) -> Result<(), (usize, usize)> {
        let deadline = Instant::now() + grace;
        loop {
            let (waiting, running) = {
                let q = lock(&self.inner.queue);
                (q.waiting.len(), q.in_flight)
            };
            if waiting == 0 && running == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err((waiting, running));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Inner {
    /// Hand queued messages to processes, in order, as slots free up.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                return;
            };
            let job = self.next().await;
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(why) = this.run(&job.rule_id, &job.content).await {
                    say(&format!(
                        "exec: {} failed for a message on rule '{}' ({} bytes, content not \
                         shown): {why}",
                        this.program,
                        job.rule_id,
                        job.content.len()
                    ));
                }
                let mut q = lock(&this.queue);
                q.in_flight = q.in_flight.saturating_sub(1);
                drop(q);
                drop(slot);
            });
        }
    }

    /// The oldest waiting message (counted as in flight), once there is one; reports drops.
    async fn next(&self) -> Job {
        loop {
            let taken = {
                let mut q = lock(&self.queue);
                let dropped = std::mem::take(&mut q.dropped);
                let job = q.waiting.pop_front();
                if let Some(job) = &job {
                    q.bytes = q.bytes.saturating_sub(job.size());
                    q.in_flight += 1;
                }
                (job, dropped)
            };
            if taken.1 > 0 {
                say(&format!(
                    "warning: exec: {} message(s) dropped because {} fell behind (see \
                     --exec-queue and --exec-concurrency)",
                    taken.1, self.program
                ));
            }
            if let Some(job) = taken.0 {
                return job;
            }
            self.queued.notified().await;
        }
    }

    async fn run(&self, rule_id: &str, content: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let mut child = Command::new(&self.program)
            .args(self.args.iter())
            .env("YONEXUS_RULE_ID", rule_id)
            .env("YONEXUS_IDENTIFIER", &self.identifier)
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start it: {e}"))?;
        let mut message = frame::encode_rule(rule_id, content);
        message.push('\n');
        if let Some(mut stdin) = child.stdin.take() {
            let write = async {
                stdin.write_all(message.as_bytes()).await?;
                stdin.shutdown().await
            };
            match tokio::time::timeout_at(deadline, write).await {
                // A program that does not read its stdin is not a failure.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Ok(Err(e)) => return Err(format!("writing to its stdin failed: {e}")),
                Ok(Ok(())) => {}
                Err(_) => return Err(self.kill(&mut child).await),
            }
        }
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("it exited with {status}")),
            Ok(Err(e)) => Err(format!("waiting for it failed: {e}")),
            Err(_) => Err(self.kill(&mut child).await),
        }
    }

    async fn kill(&self, child: &mut tokio::process::Child) -> String {
        let _ = child.kill().await;
        format!(
            "it ran longer than {} s and was killed",
            self.timeout.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn one_process_per_message_with_the_message_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "{{ printf '%s|%s|' \"$YONEXUS_RULE_ID\" \"$YONEXUS_IDENTIFIER\"; cat; }} >> '{}'",
            out.display()
        );
        let exec = Exec::new(&sh(&script), "alpha", 1, 16, WAIT).unwrap();
        exec.push("echo".into(), "hi::there".into());
        exec.push("relay".into(), "beta::x".into());
        assert!(exec.wait_idle(WAIT).await.is_ok());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "echo|alpha|echo::hi::there\nrelay|alpha|relay::beta::x\n"
        );
    }

    #[tokio::test]
    async fn one_slot_keeps_the_order_whatever_each_process_takes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // Earlier messages take longer: with more slots they would finish last.
        let script = format!(
            "n=$(cat); sleep \"0.$((5 - ${{n#r::}}))\"; echo \"$n\" >> '{}'",
            out.display()
        );
        let exec = Exec::new(&sh(&script), "alpha", 1, 16, WAIT).unwrap();
        for n in 0..6 {
            exec.push("r".into(), n.to_string());
        }
        assert!(exec.wait_idle(WAIT).await.is_ok());
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, "r::0\nr::1\nr::2\nr::3\nr::4\nr::5\n");
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_waiting_messages() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let started = dir.path().join("started");
        let script = format!(
            "cat >> '{}'; touch '{}'; [ \"$YONEXUS_RULE_ID\" = slow ] && sleep 1; true",
            out.display(),
            started.display()
        );
        let exec = Exec::new(&sh(&script), "alpha", 1, 3, WAIT).unwrap();
        exec.push("slow".into(), "first".into());
        let deadline = Instant::now() + WAIT;
        while !started.exists() {
            assert!(Instant::now() < deadline, "the first process did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Pushing never waits, however slow the program is.
        let pushed = Instant::now();
        for n in 0..10 {
            exec.push("r".into(), n.to_string());
        }
        assert!(pushed.elapsed() < Duration::from_millis(500));
        assert_eq!(lock(&exec.inner.queue).waiting.len(), 3);
        assert!(exec.wait_idle(WAIT).await.is_ok());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "slow::first\nr::7\nr::8\nr::9\n"
        );
        assert_eq!(lock(&exec.inner.queue).dropped, 0, "reported");
    }

    #[tokio::test]
    async fn concurrency_is_bounded_and_slow_processes_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // Each process records its start, sleeps, and records its end.
        let script = format!(
            "echo start >> '{0}'; sleep 0.4; echo end >> '{0}'",
            out.display()
        );
        let exec = Exec::new(&sh(&script), "alpha", 2, 16, WAIT).unwrap();
        let started = Instant::now();
        for i in 0..4 {
            exec.push("r".into(), i.to_string());
        }
        assert!(exec.wait_idle(WAIT).await.is_ok());
        // Four processes of 0.4 s, two at a time: at least two rounds.
        assert!(started.elapsed() >= Duration::from_millis(800));
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.matches("end").count(), 4);
        // Never more than two running: the running count never exceeds 2.
        let mut running = 0i32;
        for line in text.lines() {
            running += if line == "start" { 1 } else { -1 };
            assert!(running <= 2, "{text}");
        }

        let exec = Exec::new(&sh("sleep 30"), "alpha", 1, 16, Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        exec.push("r".into(), "x".into());
        exec.push("r".into(), "y".into());
        assert_eq!(
            exec.wait_idle(Duration::from_millis(100)).await,
            Err((1, 1)),
            "one waits, one runs"
        );
        assert!(exec.wait_idle(WAIT).await.is_ok());
        assert!(started.elapsed() < WAIT);
    }

    #[tokio::test]
    async fn failures_and_missing_programs_do_not_stop_the_runner() {
        let exec = Exec::new(
            &["/nonexistent/prog".to_string()],
            "alpha",
            1,
            16,
            Duration::from_secs(5),
        )
        .unwrap();
        let err = exec.inner.run("r", "secret content").await.unwrap_err();
        assert!(err.contains("cannot start"), "{err}");
        assert!(!err.contains("secret content"));
        exec.push("r".into(), "x".into());
        assert!(exec.wait_idle(WAIT).await.is_ok());
        let exec = Exec::new(&sh("exit 3"), "alpha", 1, 16, Duration::from_secs(5)).unwrap();
        let err = exec.inner.run("r", "x").await.unwrap_err();
        assert!(err.contains('3'), "{err}");
        // A program that ignores its stdin is fine.
        let exec = Exec::new(&sh("true"), "alpha", 1, 16, Duration::from_secs(5)).unwrap();
        exec.inner.run("r", &"x".repeat(1 << 20)).await.unwrap();
        assert!(Exec::new(&[], "alpha", 1, 16, Duration::from_secs(1)).is_none());
    }
}
