//! `--exec PROG [ARGS]`: hand each received rule message to a program instead of stdout.
//!
//! One process per message: `rule_id::content` and a newline on its stdin (then stdin is
//! closed), `YONEXUS_RULE_ID` and `YONEXUS_IDENTIFIER` in its environment, its stdout and stderr
//! shared with the follower's. At most `concurrency` processes run at once; further messages
//! wait for a slot (and the connection stops reading meanwhile: backpressure, nothing is
//! dropped). A process still running after `timeout` is killed. Failures are reported with the
//! rule id and the message size, never the content (it may be sensitive).

use crate::cli::text::say;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use yonexus_protocol::frame;

/// The `--exec` runner.
#[derive(Clone)]
pub struct Exec {
    program: Arc<str>,
    args: Arc<[String]>,
    identifier: Arc<str>,
    slots: Arc<Semaphore>,
    concurrency: u32,
    timeout: Duration,
}

impl Exec {
    /// `command` is PROG followed by its arguments; `None` when it is empty.
    pub fn new(
        command: &[String],
        identifier: &str,
        concurrency: u32,
        timeout: Duration,
    ) -> Option<Exec> {
        let (program, args) = command.split_first()?;
        let concurrency = concurrency.max(1);
        Some(Exec {
            program: program.as_str().into(),
            args: args.to_vec().into(),
            identifier: identifier.into(),
            slots: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency,
            timeout,
        })
    }

    /// Start a process for one message, once a slot is free.
    pub async fn dispatch(&self, rule_id: String, content: String) {
        let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
            return; // closed: shutting down
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(why) = this.run(&rule_id, &content).await {
                say(&format!(
                    "exec: {} failed for a message on rule '{rule_id}' ({} bytes, content not \
                     shown): {why}",
                    this.program,
                    content.len()
                ));
            }
            drop(slot);
        });
    }

    /// Wait until no process runs (true), or `grace` passed (false).
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.slots.acquire_many(self.concurrency))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn run(&self, rule_id: &str, content: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let mut child = Command::new(&*self.program)
            .args(self.args.iter())
            .env("YONEXUS_RULE_ID", rule_id)
            .env("YONEXUS_IDENTIFIER", &*self.identifier)
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

    #[tokio::test]
    async fn one_process_per_message_with_the_message_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "{{ printf '%s|%s|' \"$YONEXUS_RULE_ID\" \"$YONEXUS_IDENTIFIER\"; cat; }} >> '{}'",
            out.display()
        );
        let exec = Exec::new(&sh(&script), "alpha", 1, Duration::from_secs(10)).unwrap();
        exec.dispatch("echo".into(), "hi::there".into()).await;
        exec.dispatch("relay".into(), "beta::x".into()).await;
        assert!(exec.wait_idle(Duration::from_secs(10)).await);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "echo|alpha|echo::hi::there\nrelay|alpha|relay::beta::x\n"
        );
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
        let exec = Exec::new(&sh(&script), "alpha", 2, Duration::from_secs(10)).unwrap();
        let started = Instant::now();
        for i in 0..4 {
            exec.dispatch("r".into(), i.to_string()).await;
        }
        assert!(exec.wait_idle(Duration::from_secs(10)).await);
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

        let exec = Exec::new(&sh("sleep 30"), "alpha", 1, Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        exec.dispatch("r".into(), "x".into()).await;
        assert!(exec.wait_idle(Duration::from_secs(10)).await);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn failures_and_missing_programs_do_not_stop_the_runner() {
        let exec = Exec::new(
            &["/nonexistent/prog".to_string()],
            "alpha",
            1,
            Duration::from_secs(5),
        )
        .unwrap();
        let err = exec.run("r", "secret content").await.unwrap_err();
        assert!(err.contains("cannot start"), "{err}");
        assert!(!err.contains("secret content"));
        let exec = Exec::new(&sh("exit 3"), "alpha", 1, Duration::from_secs(5)).unwrap();
        let err = exec.run("r", "x").await.unwrap_err();
        assert!(err.contains('3'), "{err}");
        // A program that ignores its stdin is fine.
        let exec = Exec::new(&sh("true"), "alpha", 1, Duration::from_secs(5)).unwrap();
        exec.run("r", &"x".repeat(1 << 20)).await.unwrap();
        assert!(Exec::new(&[], "alpha", 1, Duration::from_secs(1)).is_none());
    }
}
