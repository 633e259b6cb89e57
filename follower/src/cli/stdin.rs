//! Stdin: whether to read it at all, and turning its lines into rule messages or pairing codes.

use crate::cli::codes::Codes;
use crate::cli::output::say;
use std::sync::Arc;
use yonexus_follower::line::parse_line;
use yonexus_follower::FollowerHandle;

/// How the CLI uses stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lines are rule messages (or a pairing code when one is asked for); end of input exits.
    Lines,
    /// Not read (unattended: `--no-stdin`, or stdin is `/dev/null` or closed); the follower
    /// runs until a signal.
    Ignore,
}

/// `Ignore` with `--no-stdin` or when stdin is `/dev/null` (systemd's default, `</dev/null`)
/// or closed; `Lines` otherwise (a terminal, a pipe, a file).
pub fn mode(no_stdin: bool) -> Mode {
    if no_stdin || stdin_is_null() {
        Mode::Ignore
    } else {
        Mode::Lines
    }
}

#[cfg(unix)]
fn stdin_is_null() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    // A closed descriptor 0 (the Rust runtime normally reopens it on /dev/null).
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return true;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return true;
    };
    let Ok(null) = std::fs::metadata("/dev/null") else {
        return false;
    };
    meta.file_type().is_char_device() && meta.rdev() == null.rdev()
}

#[cfg(not(unix))]
fn stdin_is_null() -> bool {
    false
}

/// Read stdin on a plain thread (blocking reads), handing raw lines to the async side. The
/// channel closes at end of input.
fn lines() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut buf = Vec::new();
                match std::io::BufRead::read_until(&mut stdin, b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.blocking_send(buf).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        say(&format!("error reading stdin: {e}"));
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        say(&format!("error: cannot start the stdin reader: {e}"));
    }
    rx
}

/// Handle stdin lines until end of input: answer a pending pairing prompt, or send
/// `rule::content`.
pub async fn read(handle: FollowerHandle, codes: Arc<Codes>) {
    let mut lines = lines();
    while let Some(buf) = lines.recv().await {
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        if let Some(tx) = codes.take_pending() {
            let _ = tx.send(line.to_string());
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok((rule_id, content)) => {
                if let Err(e) = handle.send(rule_id, content) {
                    say(&format!("not sent: {e}"));
                }
            }
            Err(why) => say(&format!("skipped line: {why}")),
        }
    }
    // Dropping a pending prompt's sender tells the library no code is coming.
    codes.stdin_closed();
}
