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
    stdin: ChildStdin,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
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
        let mut child = Command::new(bin("yonexus-follower"))
            .args(["--url", url, "--id", id, "--heartbeat-secs", "1", "--state"])
            .arg(state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        FollowerProc {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    fn send_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Wait for a stderr line containing `needle`.
    fn stderr_until(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(l) if l.to_lowercase().contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
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
        HostProc::start(tmp.path(), &config_text(tmp.path(), port, &["alpha"], "")).unwrap();
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
