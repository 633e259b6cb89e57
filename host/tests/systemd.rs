//! systemd's notify protocol, end to end: the real `yonexus serve` with `NOTIFY_SOCKET` pointing at
//! a datagram socket this test binds, as systemd would for a `Type=notify` unit with
//! `WatchdogSec=`.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The messages received so far, in order.
struct Listener {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Listener {
    fn bind(path: &Path) -> Listener {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Listener {
            socket,
            seen: Vec::new(),
        }
    }

    /// Wait for a message containing the line `line`; returns it. Every message is kept.
    fn wait_for(&mut self, line: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let start = self.seen.len();
        loop {
            if let Some(m) = self.seen[start..]
                .iter()
                .find(|m| m.lines().any(|l| l == line))
            {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} within {timeout:?}; received: {:?}",
                &self.seen[start..]
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    fn count(&self, line: &str) -> usize {
        self.seen
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({sig})");
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into a valid timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Kills the host if the test fails midway.
struct Reap(Option<Child>);
impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn ready_watchdog_reload_and_stop_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("yonexus.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\
         [followers]\nallow = [\"alpha\"]\n[admin]\nlisten = \"off\"\n[reload]\nwatch = false\n",
    )
    .unwrap();
    let sock = dir.path().join("notify.sock");
    let mut listener = Listener::bind(&sock);
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_yonexus"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock)
        // 300 ms: pings every 150 ms.
        .env("WATCHDOG_USEC", "300000")
        .env("RUST_LOG", "info")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut host = Reap(Some(child));
    let child = host.0.as_ref().unwrap();

    // READY=1 comes once the port listens: connect to the address its status names.
    let ready = listener.wait_for("READY=1", Duration::from_secs(20));
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=listening on ws://"))
        .unwrap_or_else(|| panic!("no listening status in {ready:?}"));
    let addr: SocketAddr = status.split('/').next().unwrap().parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect("the port listens when READY=1 arrives");
    assert_eq!(listener.count("RELOADING=1"), 0);

    // Watchdog pings at half of WATCHDOG_USEC.
    let before = listener.count("WATCHDOG=1");
    let started = Instant::now();
    while listener.count("WATCHDOG=1") < before + 3 {
        listener.wait_for("WATCHDOG=1", Duration::from_secs(5));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "3 pings took {:?}",
        started.elapsed()
    );

    // SIGHUP: RELOADING=1 (with a current MONOTONIC_USEC), then READY=1 again.
    signal(child, libc::SIGHUP);
    let sent_at = monotonic_usec();
    let reloading = listener.wait_for("RELOADING=1", Duration::from_secs(10));
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        usec + 1_000_000 >= sent_at && usec <= monotonic_usec(),
        "MONOTONIC_USEC {usec} is not the system's monotonic clock (sent at {sent_at})"
    );
    let after_reload = listener.wait_for("READY=1", Duration::from_secs(10));
    assert!(after_reload.contains("reload applied"), "{after_reload:?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(child, libc::SIGTERM);
    listener.wait_for("STOPPING=1", Duration::from_secs(10));
    let mut child = host.0.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the host did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    // The log went to a file: no colour codes in it.
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI codes in a non-terminal log:\n{log}"
    );
}

#[test]
fn without_notify_socket_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("yonexus.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n[admin]\nlisten = \"off\"\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_yonexus"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "1000")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut host = Reap(Some(child));
    // The host starts and listens as usual.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("state/admin.sock").exists() {
        assert!(Instant::now() < deadline, "the host did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(host.0.as_ref().unwrap(), libc::SIGTERM);
    let out = host.0.take().unwrap().wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("host stopped"));
}

/// `packaging/yonexus.service` is what the notify support expects, and `systemd-analyze verify`
/// accepts it (with ExecStart pointing at this build; skipped where systemd-analyze is missing).
#[test]
fn the_packaged_unit_verifies() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/yonexus.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=yonexus",
        "User=yonexus",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
    ] {
        assert!(directives.contains(&wanted), "the unit lacks {wanted}");
    }
    assert!(
        directives.iter().any(|d| d.starts_with("WatchdogSec=")),
        "the unit sets no WatchdogSec="
    );

    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped `systemd-analyze verify`: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man/man1");
    std::fs::create_dir_all(&man).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_yonexus"))
        .args(["manpage", "--dir"])
        .arg(&man)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let local = unit.replace("/usr/local/bin/yonexus", env!("CARGO_BIN_EXE_yonexus"));
    let copy = dir.path().join("yonexus.service");
    std::fs::write(&copy, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        !said.contains("yonexus.service:"),
        "systemd-analyze verify:\n{said}"
    );
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
