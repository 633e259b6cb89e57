//! The `command` notifier: runs an admin-provided program with the pairing code in its
//! environment (`YONEXUS_IDENTIFIER`, `YONEXUS_PAIRING_CODE`, `YONEXUS_EXPIRES_AT`).
//!
//! stdin is null; stdout and stderr are read and dropped, never logged (the program may echo the
//! code). The run is bounded by a timeout; on timeout the child is killed (`kill_on_drop`).
//! The child gets no descriptor of the host's beyond stdin, stdout and stderr: every other one
//! is marked close-on-exec before the program starts (not only those the host opened so), so a notifier
//! that outlives a crashed host can never hold its state-directory lock or a listening socket
//! and keep a restarted host from starting.

use super::{NotifyError, PairingNotice};
use std::process::Stdio;
use std::time::Duration;

/// A validated argv plus its deadline.
#[derive(Debug, Clone)]
pub(crate) struct CommandNotifier {
    program: Vec<String>,
    pub(crate) timeout: Duration,
}

impl CommandNotifier {
    /// Refuses an empty argv or an empty executable name.
    pub(crate) fn new(program: Vec<String>, timeout: Duration) -> Result<Self, NotifyError> {
        match program.first() {
            Some(exe) if !exe.is_empty() => Ok(CommandNotifier { program, timeout }),
            _ => Err(NotifyError::EmptyCommand),
        }
    }

    fn exe(&self) -> &str {
        self.program.first().map(String::as_str).unwrap_or("")
    }

    /// Runs the program once; success means it exited 0 within the timeout.
    pub(crate) async fn notify(&self, notice: &PairingNotice) -> Result<(), NotifyError> {
        let exe = self.exe();
        let mut command = tokio::process::Command::new(exe);
        // SAFETY: the closure runs in the forked child before exec and only makes one raw
        // system call (async-signal-safe; no allocation, no locks).
        unsafe {
            command.pre_exec(|| {
                close_inherited_descriptors();
                Ok(())
            });
        }
        let child = command
            .args(self.program.iter().skip(1))
            .env("YONEXUS_IDENTIFIER", &notice.identifier)
            .env("YONEXUS_PAIRING_CODE", &notice.code)
            .env("YONEXUS_EXPIRES_AT", notice.expires_at.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NotifyError::Spawn {
                program: exe.to_owned(),
                source,
            })?;
        // `wait_with_output` drains both pipes (so a chatty program cannot block on a full pipe);
        // the output is dropped unread. Dropping the future on timeout drops the child, which
        // kills it.
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => Err(NotifyError::CommandTimeout {
                program: exe.to_owned(),
                timeout: self.timeout,
            }),
            Ok(Err(source)) => Err(NotifyError::Wait {
                program: exe.to_owned(),
                source,
            }),
            Ok(Ok(output)) if output.status.success() => Ok(()),
            Ok(Ok(output)) => Err(NotifyError::CommandFailed {
                program: exe.to_owned(),
                status: output.status,
            }),
        }
    }
}

/// Mark every descriptor from 3 up close-on-exec (Linux `close_range` with
/// `CLOSE_RANGE_CLOEXEC`, 5.11+; an older kernel answers an error and the flags already set
/// alone apply). Marking rather than closing keeps the pipe through which the standard library
/// reports a failed `exec` to the parent.
fn close_inherited_descriptors() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes plain integers and touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Notifier, NotifierConfig};
    use super::*;
    use std::path::Path;

    const CODE: &str = "PAIR-CODE-8841";

    fn notice() -> PairingNotice {
        PairingNotice {
            identifier: "node-cmd".into(),
            code: CODE.into(),
            expires_at: 1_700_000_123,
        }
    }

    fn write_script(dir: &Path, name: &str, body: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Runs the script through `/bin/sh` (avoids the ETXTBSY race of exec'ing a file just
    /// written while other test threads fork).
    fn notifier(script: &str) -> Notifier {
        Notifier::from_config(&NotifierConfig::Command {
            program: vec!["/bin/sh".into(), script.into()],
        })
        .unwrap()
    }

    #[tokio::test]
    async fn passes_the_notice_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        let script = write_script(
            dir.path(),
            "ok.sh",
            &format!(
                "echo \"$YONEXUS_IDENTIFIER $YONEXUS_PAIRING_CODE $YONEXUS_EXPIRES_AT\" > '{}'\necho \"stdout $YONEXUS_PAIRING_CODE\"\necho \"stderr $YONEXUS_PAIRING_CODE\" >&2",
                out.display()
            ),
        );
        let n = notifier(&script);
        assert_eq!(n.kind(), "command");
        n.notify(&notice()).await.unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got.trim(), format!("node-cmd {CODE} 1700000123"));
    }

    /// A descriptor the host holds without close-on-exec (as an inherited one would be) does
    /// not reach the notifier: a notifier outliving a crashed host must not hold its lock.
    #[tokio::test]
    async fn the_program_inherits_no_descriptor_of_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let held = dir.path().join("held");
        std::fs::write(&held, "").unwrap();
        let c_path = std::ffi::CString::new(held.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_RDONLY) };
        assert!(fd > 2, "open: {fd}");
        let out = dir.path().join("out.txt");
        let script = write_script(
            dir.path(),
            "fds.sh",
            &format!(
                "if [ -e /proc/self/fd/{fd} ]; then echo leaked > '{o}'; else echo closed > '{o}'; fi",
                o = out.display()
            ),
        );
        notifier(&script).notify(&notice()).await.unwrap();
        // SAFETY: our own descriptor, opened above.
        unsafe { libc::close(fd) };
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "closed");
    }

    #[tokio::test]
    async fn executes_program_zero_directly() {
        let n = Notifier::from_config(&NotifierConfig::Command {
            program: vec!["/bin/sh".into(), "-c".into(), "exit 0".into()],
        })
        .unwrap();
        n.notify(&notice()).await.unwrap();
    }

    #[tokio::test]
    async fn non_zero_exit_is_an_error_without_the_code() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(
            dir.path(),
            "fail.sh",
            "echo \"$YONEXUS_PAIRING_CODE\"\nexit 3",
        );
        let err = notifier(&script).notify(&notice()).await.unwrap_err();
        assert!(matches!(err, NotifyError::CommandFailed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains('3'), "{msg}");
        assert!(msg.contains("exit status"), "{msg}");
        assert!(msg.contains("/bin/sh"), "{msg}");
        assert!(!msg.contains(CODE), "{msg}");
        assert!(!format!("{err:?}").contains(CODE));
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let n = Notifier::from_config(&NotifierConfig::Command {
            program: vec!["/nonexistent/yonexus-notify-xyz".into()],
        })
        .unwrap();
        let err = n.notify(&notice()).await.unwrap_err();
        assert!(matches!(err, NotifyError::Spawn { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/yonexus-notify-xyz"));
    }

    #[tokio::test]
    async fn slow_program_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = write_script(
            dir.path(),
            "slow.sh",
            &format!("echo $$ > '{}'\nexec sleep 60", pidfile.display()),
        );
        let n = notifier(&script).with_timeout(Duration::from_millis(800));
        let started = std::time::Instant::now();
        let err = n.notify(&notice()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, NotifyError::CommandTimeout { .. }), "{err:?}");
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(!err.to_string().contains(CODE));
        // The child (sh exec'd into sleep, same pid) is gone shortly after.
        let Ok(pid) = std::fs::read_to_string(&pidfile) else {
            return; // killed before it even wrote its pid: nothing left to check
        };
        let proc_dir = format!("/proc/{}", pid.trim());
        let mut gone = false;
        for _ in 0..50 {
            let status = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
            // Gone, or a zombie awaiting reaping by tokio's orphan reaper.
            if status.is_empty() || status.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "child {pid} still running after timeout");
    }
}
