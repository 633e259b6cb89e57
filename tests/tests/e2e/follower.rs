//! The follower (CLI and library) against the real host binary: the README walkthrough, restarts
//! on either side, and re-pairing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use yonexus_e2e::*;
use yonexus_follower::{Config, Event};

struct FollowerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line read so far (also those `stderr_until` skipped).
    seen: Vec<String>,
}

fn lines(read: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(read).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl FollowerProc {
    fn start(url: &str, id: &str, state: &std::path::Path) -> FollowerProc {
        FollowerProc::start_with(&["--url", url], id, state, Stdio::piped(), &[])
    }

    /// The CLI with `args` (besides `--id`, `--state` and a 1 s heartbeat), `stdin`, and extra
    /// environment variables (RUST_LOG is unset unless given).
    fn start_with(
        args: &[&str],
        id: &str,
        state: &std::path::Path,
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> FollowerProc {
        let mut command = Command::new(bin("yonexus-follower"));
        die_with_this_thread(&mut command);
        let mut child = command
            .args(["--id", id, "--heartbeat-secs", "1", "--state"])
            .arg(state)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        FollowerProc {
            child,
            stdin,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Wait for a stderr line containing `needle` (compared in lower case).
    fn stderr_until(&mut self, needle: &str) -> bool {
        self.stderr_line(needle).is_some()
    }

    /// The next stderr line containing `needle` (compared in lower case), within 20 s.
    fn stderr_line(&mut self, needle: &str) -> Option<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.to_lowercase().contains(needle) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// SIGTERM, then the exit status and every remaining stderr line.
    fn terminate(&mut self) -> (Option<i32>, Vec<String>) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child, not yet
            // reaped (only wait_exit and Drop reap it), so it names no other process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let status = self.wait_exit(Duration::from_secs(15));
        (status, self.rest_of_stderr())
    }

    /// Wait for the process to exit on its own; its exit code (None: still running, or killed
    /// by a signal).
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_for(timeout, || self.child.try_wait().ok().flatten()).and_then(|s| s.code())
    }

    /// Every stderr line, once the process has exited (its pipe is closed).
    fn rest_of_stderr(&mut self) -> Vec<String> {
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        self.seen.clone()
    }

    fn next_stdout(&self) -> Option<String> {
        self.stdout.recv_timeout(Duration::from_secs(20)).ok()
    }
}

impl Drop for FollowerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn walkthrough_pair_with_prompt_echo_and_restart_follower() {
    let tmp = tempfile::tempdir().unwrap();
    let host = HostProc::start(tmp.path(), &config_text(tmp.path(), 0, &["alpha"], "")).unwrap();
    let state = tmp.path().join("follower");

    let mut f = FollowerProc::start(&host.url(), "alpha", &state);
    assert!(
        f.stderr_until("pairing code"),
        "follower prompts for the code"
    );
    let code = wait_for(Duration::from_secs(10), || {
        codes_for(tmp.path(), "alpha").pop()
    })
    .unwrap();
    f.send_line(&code.to_lowercase());
    assert!(f.stderr_until("authenticated"));
    f.send_line("echo::hello");
    assert_eq!(f.next_stdout().as_deref(), Some("echo::hello"));
    drop(f);

    // A restarted follower re-authenticates from its state file without pairing.
    let mut f = FollowerProc::start(&host.url(), "alpha", &state);
    assert!(f.stderr_until("authenticated"));
    f.send_line("echo::again");
    assert_eq!(f.next_stdout().as_deref(), Some("echo::again"));
    assert_eq!(codes_for(tmp.path(), "alpha").len(), 1);
}

#[tokio::test]
async fn library_follower_survives_host_restart_and_re_pairs_after_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let mut host =
        HostProc::start(tmp.path(), &config_text(tmp.path(), 0, &["alpha"], "")).unwrap();
    let port = host.addr.port();
    let codes = code_provider(tmp.path());
    let mut config = Config::new(host.url(), "alpha", tmp.path().join("lib-follower"));
    config.backoff_initial = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(500);
    let (handle, mut events) = yonexus_follower::spawn(config, codes).unwrap();

    async fn until(
        events: &mut tokio::sync::mpsc::Receiver<Event>,
        pred: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
                Ok(Some(ev)) => {
                    let done = pred(&ev);
                    seen.push(ev);
                    if done {
                        return seen;
                    }
                }
                other => panic!("event stream ended or timed out ({other:?}); seen {seen:?}"),
            }
        }
    }

    until(&mut events, |e| matches!(e, Event::Authenticated)).await;
    handle.send("echo", "one").unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Rule { .. })).await;
    assert!(
        matches!(seen.last(), Some(Event::Rule { rule_id, content }) if rule_id == "echo" && content == "one")
    );

    // Restart the host on the same port: the follower reconnects and re-authenticates.
    host.stop();
    drop(host);
    let mut host =
        HostProc::start_again(tmp.path(), &config_text(tmp.path(), port, &["alpha"], "")).unwrap();
    until(&mut events, |e| matches!(e, Event::Authenticated)).await;
    handle.send("echo", "two").unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Rule { .. })).await;
    assert!(matches!(seen.last(), Some(Event::Rule { content, .. }) if content == "two"));
    assert_eq!(
        codes_for(tmp.path(), "alpha").len(),
        1,
        "no re-pairing after a host restart"
    );

    // Revoked by the operator: the follower pairs again with a new code and keeps working.
    let (status, _, err) = cli(&host.config, &["revoke", "alpha"]);
    assert_eq!(status, 0, "{err}");
    until(&mut events, |e| matches!(e, Event::Authenticated)).await;
    assert_eq!(codes_for(tmp.path(), "alpha").len(), 2, "paired again");
    handle.send("echo", "three").unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Rule { .. })).await;
    assert!(matches!(seen.last(), Some(Event::Rule { content, .. }) if content == "three"));
    handle.shutdown().await;
    host.stop();
}

#[tokio::test]
async fn unattended_follower_pairs_from_a_code_file_and_hands_messages_to_exec() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{}",
        bundled_plugins(&["relay"]),
        config_text(tmp.path(), 0, &["alpha", "beta"], "")
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let code_file = tmp.path().join("alpha.code");
    let out = tmp.path().join("received.txt");
    let script = format!("cat >> '{}'", out.display());
    let url = host.url();
    // stdin is /dev/null, as under systemd: the follower must not exit at end of input.
    let mut f = FollowerProc::start_with(
        &[
            "--url",
            &url,
            "--pairing-code-file",
            code_file.to_str().unwrap(),
            "--exec",
            "/bin/sh",
            "-c",
            &script,
        ],
        "alpha",
        &tmp.path().join("follower"),
        Stdio::null(),
        &[],
    );
    let waiting = f.stderr_line("waiting for the pairing code").unwrap();
    assert!(
        waiting.contains(&code_file.display().to_string()),
        "{waiting}"
    );
    // The admin drops the code in later.
    let code = wait_for(Duration::from_secs(10), || {
        codes_for(tmp.path(), "alpha").pop()
    })
    .unwrap();
    // Atomically, as an admin's editor or `install` would.
    replace_by_rename(&code_file, format!("{}\n", code.to_lowercase()).as_bytes());
    assert!(f.stderr_until("authenticated"), "{:?}", f.seen);

    // Another follower relays a message to alpha; alpha hands it to the program.
    let (mut beta, _) = paired_session(&host, "beta").await.unwrap();
    beta.send_text("relay::alpha::hello from beta")
        .await
        .unwrap();
    let got = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(got.as_deref(), Some("relay::beta::hello from beta\n"));
    assert!(
        f.stdout.try_recv().is_err(),
        "with --exec nothing goes to stdout"
    );

    // It stays up (heartbeats every second) with stdin closed...
    std::thread::sleep(Duration::from_millis(2500));
    assert!(f.child.try_wait().unwrap().is_none(), "{:?}", f.seen);
    beta.send_text("relay::alpha::second").await.unwrap();
    let got = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|t| t.contains("second\n"))
    });
    assert_eq!(
        got.as_deref(),
        Some("relay::beta::hello from beta\nrelay::beta::second\n")
    );
    // ...until SIGTERM, and then exits cleanly.
    let (status, stderr) = f.terminate();
    assert_eq!(status, Some(0), "{stderr:?}");
    let all = stderr.join("\n");
    assert!(!all.contains(&code), "the code must not be printed: {all}");
    assert!(
        !all.contains("disconnected"),
        "stayed connected throughout: {all}"
    );
}

#[tokio::test]
async fn trace_logs_never_show_the_pairing_code_or_the_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let mut host = HostProc::start_logging(
        tmp.path(),
        &config_text(tmp.path(), 0, &["alpha"], ""),
        "trace",
    )
    .unwrap();
    let state = tmp.path().join("follower");
    let url = host.url();
    let mut f = FollowerProc::start_with(
        &["--url", &url],
        "alpha",
        &state,
        Stdio::piped(),
        &[(
            "RUST_LOG",
            "trace,tungstenite=trace,tokio_tungstenite=trace",
        )],
    );
    assert!(f.stderr_until("enter the pairing code"), "{:?}", f.seen);
    let code = wait_for(Duration::from_secs(10), || {
        codes_for(tmp.path(), "alpha").pop()
    })
    .unwrap();
    f.send_line(&code);
    assert!(f.stderr_until("authenticated"), "{:?}", f.seen);
    f.send_line("echo::through the socket");
    assert_eq!(f.next_stdout().as_deref(), Some("echo::through the socket"));
    // Let a heartbeat or two pass, then end (stdin closed: flush, close, exit).
    std::thread::sleep(Duration::from_millis(1500));
    drop(f.stdin.take());
    assert_eq!(f.wait_exit(Duration::from_secs(15)), Some(0));
    let stderr = f.rest_of_stderr().join("\n");
    let stdout: Vec<String> = f.stdout.try_iter().collect();
    let stdout = stdout.join("\n");

    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("alpha.json")).unwrap()).unwrap();
    let secret = saved["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32);
    // Trace logging was really on (the follower's own trace lines are there)...
    assert!(stderr.contains("TRACE"), "{stderr}");
    assert!(stderr.contains("sending heartbeat"), "{stderr}");
    // ...and neither the code nor the secret is anywhere, nor any frame logger.
    for (what, value) in [("pairing code", &code), ("secret", &secret)] {
        assert!(
            !stderr.contains(value.as_str()),
            "{what} in stderr:\n{stderr}"
        );
        assert!(
            !stdout.contains(value.as_str()),
            "{what} in stdout:\n{stdout}"
        );
    }
    assert!(!stderr.contains("tungstenite"), "{stderr}");
    assert!(!stderr.contains("pair_confirm"), "{stderr}");
    // The host, at trace level too, through pairing and auth.
    let host_logs = host.all_logs().join("\n");
    assert!(host_logs.contains("TRACE"), "the host logged at trace");
    for (what, value) in [("pairing code", &code), ("secret", &secret)] {
        assert!(
            !host_logs.contains(value.as_str()),
            "{what} in the host's output"
        );
    }
}

#[test]
fn an_identifier_not_on_the_allowlist_stops_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let host = HostProc::start(tmp.path(), &config_text(tmp.path(), 0, &["alpha"], "")).unwrap();
    let url = host.url();
    let mut f = FollowerProc::start_with(
        &["--url", &url],
        "stranger",
        &tmp.path().join("follower"),
        Stdio::null(),
        &[],
    );
    let status = f.wait_exit(Duration::from_secs(20));
    let stderr = f.rest_of_stderr();
    assert_eq!(status, Some(3), "{stderr:?}");
    let last = stderr.last().cloned().unwrap_or_default();
    assert!(
        last.contains("'stranger'") && last.contains("allowlist") && last.contains("stops"),
        "{stderr:?}"
    );
    // The host error is printed once, and the follower did not keep retrying.
    assert_eq!(
        stderr
            .iter()
            .filter(|l| l.starts_with("host error IDENTIFIER_NOT_ALLOWED"))
            .count(),
        1,
        "{stderr:?}"
    );
    assert!(
        !stderr.iter().any(|l| l.contains("reconnecting")),
        "{stderr:?}"
    );
}

#[test]
fn follower_fails_over_to_a_second_host_when_the_first_dies() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut host_a =
        HostProc::start(dir_a.path(), &config_text(dir_a.path(), 0, &["alpha"], "")).unwrap();
    let url_a = host_a.url();
    let state = dir_a.path().join("follower");

    // Pair on A; the follower's identity and secret stay in its state directory.
    let mut f = FollowerProc::start(&url_a, "alpha", &state);
    assert!(f.stderr_until("enter the pairing code"), "{:?}", f.seen);
    let code = wait_for(Duration::from_secs(10), || {
        codes_for(dir_a.path(), "alpha").pop()
    })
    .unwrap();
    f.send_line(&code);
    assert!(f.stderr_until("authenticated"), "{:?}", f.seen);
    drop(f);

    // B shares A's trust (a copy of its store here; a shared PostgreSQL store in production),
    // on a port of its own choosing.
    std::fs::create_dir_all(dir_b.path().join("state")).unwrap();
    std::fs::copy(
        dir_a.path().join("state").join("trust.json"),
        dir_b.path().join("state").join("trust.json"),
    )
    .unwrap();
    let host_b =
        HostProc::start(dir_b.path(), &config_text(dir_b.path(), 0, &["alpha"], "")).unwrap();
    let url_b = host_b.url();

    // A follower given both hosts authenticates on the first, from its state file.
    let mut f = FollowerProc::start_with(
        &["--url", &url_a, "--url", &url_b],
        "alpha",
        &state,
        Stdio::piped(),
        &[],
    );
    let connected = f.stderr_line("connected to").unwrap();
    assert!(connected.contains(&url_a), "{connected}");
    assert!(f.stderr_until("authenticated"), "{:?}", f.seen);
    f.send_line("echo::on a");
    assert_eq!(f.next_stdout().as_deref(), Some("echo::on a"));

    // A dies without a goodbye: the follower moves to B and authenticates without pairing.
    host_a.kill();
    let before = f.seen.len();
    let next = f.stderr_line("reconnecting to").unwrap();
    assert!(next.contains(&url_b), "{next}");
    assert!(next.ends_with(" s"), "says when: {next}");
    let connected = f.stderr_line("connected to").unwrap();
    assert!(connected.contains(&url_b), "{connected}");
    assert!(f.stderr_until("authenticated"), "{:?}", f.seen);
    f.send_line("echo::on b");
    assert_eq!(f.next_stdout().as_deref(), Some("echo::on b"));
    assert!(
        codes_for(dir_b.path(), "alpha").is_empty(),
        "no pairing on B"
    );
    assert_eq!(codes_for(dir_a.path(), "alpha").len(), 1, "paired once");
    assert!(
        !f.seen[before..].iter().any(|l| l.contains("pairing")),
        "{:?}",
        &f.seen[before..]
    );
}
