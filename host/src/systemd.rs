//! systemd's notify protocol (`sd_notify(3)`): tell the service manager when the host is ready,
//! reloading or stopping, what it is doing, and that it is alive (watchdog).
//!
//! Messages are `KEY=value` lines in one datagram to the unix socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract socket when it starts with `@`). [`init_from_env`] reads and removes
//! `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` once at start (so child processes, such as
//! a `pairing.command` notifier, do not inherit them); without `NOTIFY_SOCKET` every function
//! here is a no-op. Nothing here panics or fails the host: a message that cannot be sent is
//! logged at debug level and dropped.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Where notifications go, and the watchdog interval systemd asked for.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
    watchdog: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// The name after the `@`.
    Abstract(Vec<u8>),
}

/// One line of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Startup finished (or a reload finished): `READY=1`.
    Ready,
    /// A reload started: `RELOADING=1` plus `MONOTONIC_USEC` (systemd ≥ 253 requires both).
    Reloading,
    /// Shutdown started: `STOPPING=1`.
    Stopping,
    /// Free-form status shown by `systemctl status` (one line).
    Status(&'a str),
    /// Watchdog keep-alive: `WATCHDOG=1`.
    Watchdog,
}

static GLOBAL: OnceLock<Option<Notifier>> = OnceLock::new();

/// Read (and remove) `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. Call once, early in
/// `main`, before other threads start (removing environment variables is not thread-safe).
/// Later calls do nothing.
pub fn init_from_env() {
    GLOBAL.get_or_init(|| {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
        let watchdog = watchdog_from(usec.as_deref(), pid.as_deref(), std::process::id());
        Notifier::new(&socket?.to_string_lossy(), watchdog)
    });
}

/// `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must be ours when set) → the timeout.
fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

impl Notifier {
    /// A notifier for `socket` (`/path` or `@abstract`) with an optional watchdog timeout.
    /// None when the socket name is empty or no datagram socket can be created.
    pub fn new(socket: &str, watchdog: Option<Duration>) -> Option<Notifier> {
        let target = match socket.strip_prefix('@') {
            Some(name) if !name.is_empty() => Target::Abstract(name.as_bytes().to_vec()),
            Some(_) => return None,
            None if socket.is_empty() => return None,
            None => Target::Path(PathBuf::from(socket)),
        };
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "systemd notify: cannot create a datagram socket");
                return None;
            }
        };
        // A full receive queue must not stall the caller for long.
        let _ = socket.set_write_timeout(Some(Duration::from_secs(1)));
        Some(Notifier {
            socket,
            target,
            watchdog,
        })
    }

    /// The watchdog timeout systemd set (`WatchdogSec=`), if it applies to this process.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send `states` as one datagram. Returns whether it was sent.
    pub fn notify(&self, states: &[State<'_>]) -> bool {
        let message = encode(states, monotonic_usec);
        let sent = match &self.target {
            Target::Path(p) => self.socket.send_to(message.as_bytes(), p),
            Target::Abstract(name) => send_abstract(&self.socket, name, message.as_bytes()),
        };
        match sent {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "systemd notify: cannot send");
                false
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> std::io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract unix sockets exist on Linux only",
    ))
}

/// The datagram text for `states` (`now_usec` supplies `MONOTONIC_USEC`).
fn encode(states: &[State<'_>], now_usec: fn() -> u64) -> String {
    let mut out = String::new();
    for state in states {
        match state {
            State::Ready => out.push_str("READY=1\n"),
            State::Reloading => {
                out.push_str("RELOADING=1\n");
                out.push_str(&format!("MONOTONIC_USEC={}\n", now_usec()));
            }
            State::Stopping => out.push_str("STOPPING=1\n"),
            State::Status(text) => {
                let line: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                out.push_str("STATUS=");
                out.push_str(&line);
                out.push('\n');
            }
            State::Watchdog => out.push_str("WATCHDOG=1\n"),
        }
    }
    out
}

/// `CLOCK_MONOTONIC` in microseconds (the clock systemd compares `MONOTONIC_USEC` with).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec as u64 / 1_000)
}

fn global() -> Option<&'static Notifier> {
    GLOBAL.get().and_then(Option::as_ref)
}

/// Send `states` through the notifier from the environment (no-op without one).
pub fn notify(states: &[State<'_>]) -> bool {
    global().is_some_and(|n| n.notify(states))
}

/// `READY=1` with a status line: the host is listening (or a reload finished).
pub fn ready(status: &str) {
    notify(&[State::Ready, State::Status(status)]);
}

/// `RELOADING=1` (with `MONOTONIC_USEC`): a reload started. Follow with [`ready`].
pub fn reloading() {
    notify(&[
        State::Reloading,
        State::Status("reloading the configuration"),
    ]);
}

/// `STOPPING=1`: shutdown started.
pub fn stopping() {
    notify(&[State::Stopping, State::Status("shutting down")]);
}

/// `STATUS=…`: what the host is doing, for `systemctl status`.
pub fn status(text: &str) {
    notify(&[State::Status(text)]);
}

/// Whether a service manager is listening (`NOTIFY_SOCKET` was set).
pub fn enabled() -> bool {
    global().is_some()
}

/// Start the watchdog task if systemd asked for one (`WatchdogSec=`): `WATCHDOG=1` every half
/// timeout, from the async runtime (so a runtime that stops making progress stops the pings and
/// systemd restarts the host). Runs until the runtime shuts down. Needs a Tokio runtime.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let notifier = global()?;
    let every = notifier.watchdog_timeout()? / 2;
    Some(tokio::spawn(watchdog_loop(notifier, every)))
}

async fn watchdog_loop(notifier: &'static Notifier, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        notifier.notify(&[State::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn encodes_states_as_lines() {
        let text = encode(
            &[
                State::Reloading,
                State::Status("two\nlines"),
                State::Ready,
                State::Stopping,
                State::Watchdog,
            ],
            || 42,
        );
        assert_eq!(
            text,
            "RELOADING=1\nMONOTONIC_USEC=42\nSTATUS=two lines\nREADY=1\nSTOPPING=1\nWATCHDOG=1\n"
        );
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(a > 0 && b >= a + 1_000, "{a} {b}");
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(path.to_str().unwrap(), None).unwrap();
        assert!(n.notify(&[State::Ready, State::Status("listening")]));
        assert_eq!(recv(&server), "READY=1\nSTATUS=listening\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "yonexus-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(&format!("@{name}"), None).unwrap();
        assert!(n.notify(&[State::Watchdog]));
        assert_eq!(recv(&server), "WATCHDOG=1\n");
    }

    #[test]
    fn unusable_sockets_are_quiet_failures() {
        assert!(Notifier::new("", None).is_none());
        assert!(Notifier::new("@", None).is_none());
        let n = Notifier::new("/nonexistent/dir/notify.sock", None).unwrap();
        assert!(!n.notify(&[State::Ready]));
    }

    #[test]
    fn watchdog_applies_to_our_pid_only() {
        let d = Duration::from_micros(200_000);
        assert_eq!(watchdog_from(Some("200000"), None, 7), Some(d));
        assert_eq!(watchdog_from(Some("200000"), Some("7"), 7), Some(d));
        assert_eq!(watchdog_from(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, None, 7), None);
    }
}
