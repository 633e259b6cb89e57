//! Where the CLI's pairing codes come from, in this order:
//! 1. `--pairing-code` / `YONEXUS_PAIRING_CODE`, until the host refuses it;
//! 2. `--pairing-code-file`, read whenever a code is needed: the follower waits (polling) until
//!    the file holds a code the host has not refused, so an admin can drop the code in later;
//! 3. otherwise the next line typed on stdin (when stdin is read).
//!
//! A code is never printed or logged.

use crate::cli::text::{human_duration, say};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use yonexus_follower::PairingPrompt;
use yonexus_protocol::validate::normalize_pairing_code;

/// How often the code file is read while waiting for a code.
const FILE_POLL: Duration = Duration::from_millis(500);
/// Most bytes read from the code file (a code is 8 characters).
const FILE_MAX: u64 = 1024;
/// Most refused codes remembered.
const REFUSED_MAX: usize = 32;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pairing-code sources of the CLI.
pub struct Codes {
    preset: Mutex<Option<String>>,
    file: Option<PathBuf>,
    /// The prompt waiting for a stdin line, if any.
    pending: Mutex<Option<oneshot::Sender<String>>>,
    /// Whether stdin can still supply codes.
    stdin_open: AtomicBool,
    /// The code handed to the library last (not yet known to be refused).
    given: Mutex<Option<String>>,
    /// Codes the host refused (invalid or expired): never sent again.
    refused: Mutex<Vec<String>>,
}

/// What reading the code file found.
#[derive(Debug, PartialEq, Eq)]
enum FileCode {
    Code(String),
    Missing,
    Empty,
}

/// Read and normalise the code in `path` (at most [`FILE_MAX`] bytes).
fn read_code_file(path: &Path) -> std::io::Result<FileCode> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileCode::Missing),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(FILE_MAX).read_to_end(&mut bytes)?;
    let code = normalize_pairing_code(&String::from_utf8_lossy(&bytes));
    Ok(if code.is_empty() {
        FileCode::Empty
    } else {
        FileCode::Code(code)
    })
}

impl Codes {
    pub fn new(preset: Option<String>, file: Option<PathBuf>, stdin_open: bool) -> Self {
        Codes {
            preset: Mutex::new(
                preset
                    .map(|c| normalize_pairing_code(&c))
                    .filter(|c| !c.is_empty()),
            ),
            file,
            pending: Mutex::new(None),
            stdin_open: AtomicBool::new(stdin_open),
            given: Mutex::new(None),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// The host refused the code handed out last (wrong or expired): do not send it again.
    pub fn mark_refused(&self) {
        if let Some(code) = lock(&self.given).take() {
            let mut refused = lock(&self.refused);
            if refused.len() >= REFUSED_MAX {
                refused.remove(0);
            }
            refused.push(code);
        }
    }

    fn is_refused(&self, code: &str) -> bool {
        lock(&self.refused).iter().any(|c| c == code)
    }

    fn give(&self, code: String) -> Option<String> {
        *lock(&self.given) = Some(code.clone());
        Some(code)
    }

    /// The prompt still waiting for a stdin line, if any (one the library stopped waiting for,
    /// e.g. because the connection dropped, does not swallow a line).
    pub fn take_pending(&self) -> Option<oneshot::Sender<String>> {
        lock(&self.pending).take().filter(|tx| !tx.is_closed())
    }

    /// Stdin ended: no more codes from it (a prompt waiting for one gets none).
    pub fn stdin_closed(&self) {
        self.stdin_open.store(false, Ordering::SeqCst);
        drop(self.take_pending());
    }

    /// A code for `prompt`, or `None` when no source can supply one.
    ///
    /// The lines printed here are the only report of "pairing required" and of a refused code
    /// that is asked again (the event printer stays quiet about those), so they come out in
    /// order with the prompt.
    pub async fn code(&self, prompt: PairingPrompt) -> Option<String> {
        if prompt.retry {
            // The library asks again because the last code was refused.
            self.mark_refused();
        }
        let preset = lock(&self.preset).clone();
        if let Some(code) = preset {
            if !self.is_refused(&code) {
                say(&format!(
                    "{}; using the pairing code given with --pairing-code or \
                     YONEXUS_PAIRING_CODE",
                    situation(&prompt)
                ));
                return self.give(code);
            }
            *lock(&self.preset) = None;
        }
        if let Some(path) = &self.file {
            return self.wait_for_file(path, &prompt).await;
        }
        if !self.stdin_open.load(Ordering::SeqCst) {
            say(&format!(
                "{}, but stdin is closed: give the code with --pairing-code-file, \
                 --pairing-code or YONEXUS_PAIRING_CODE",
                situation(&prompt)
            ));
            return None;
        }
        let (tx, rx) = oneshot::channel();
        *lock(&self.pending) = Some(tx);
        say(&situation(&prompt));
        say(&format!(
            "Enter the pairing code the admin received for '{}':",
            prompt.identifier
        ));
        match rx.await {
            Ok(line) => {
                let code = normalize_pairing_code(&line);
                self.give(code)
            }
            Err(_) => None,
        }
    }

    /// Wait until the code file holds a code that was not refused.
    async fn wait_for_file(&self, path: &Path, prompt: &PairingPrompt) -> Option<String> {
        let shown = path.display();
        let mut last_said = String::new();
        let mut say_once = |text: String| {
            if text != last_said {
                say(&text);
                last_said = text;
            }
        };
        loop {
            // Off the async threads: the path could be anything (a FIFO blocks on open).
            let owned = path.to_path_buf();
            let read = tokio::task::spawn_blocking(move || read_code_file(&owned))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match read {
                Ok(FileCode::Code(code)) if !self.is_refused(&code) => {
                    say(&format!(
                        "{}; using the pairing code in {shown}",
                        situation(prompt)
                    ));
                    return self.give(code);
                }
                Ok(FileCode::Code(_)) => say_once(format!(
                    "{}; the code in {shown} was refused: waiting for the admin to write the \
                     new code there",
                    situation(prompt)
                )),
                Ok(FileCode::Missing | FileCode::Empty) => say_once(format!(
                    "{}; waiting for the pairing code for '{}' in {shown}",
                    situation(prompt),
                    prompt.identifier
                )),
                Err(e) => say_once(format!(
                    "{}; cannot read {shown} ({e}), still waiting for it",
                    situation(prompt)
                )),
            }
            tokio::time::sleep(FILE_POLL).await;
        }
    }
}

/// "pairing required (the code expires in 4 min 58 s)", or for a retry "that pairing code was
/// not accepted (2 attempts left on this connection; the code expires in 4 min 12 s)". The
/// time left is counted down from the host's `ttlSeconds`, never the stale ttl itself.
fn situation(prompt: &PairingPrompt) -> String {
    let mut notes = Vec::new();
    if prompt.retry {
        match prompt.attempts_left {
            Some(1) => notes.push("1 attempt left on this connection".to_string()),
            Some(n) => notes.push(format!("{n} attempts left on this connection")),
            None => {}
        }
    }
    if let Some(left) = prompt.expires_in {
        notes.push(format!("the code expires in {}", human_duration(left)));
    }
    let head = if prompt.retry {
        "that pairing code was not accepted"
    } else {
        "pairing required"
    };
    if notes.is_empty() {
        head.to_string()
    } else {
        format!("{head} ({})", notes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(retry: bool) -> PairingPrompt {
        PairingPrompt {
            identifier: "alpha".into(),
            expires_at: None,
            ttl_seconds: None,
            expires_in: Some(Duration::from_secs(100)),
            admin_notification: None,
            retry,
            attempts_left: None,
        }
    }

    #[tokio::test]
    async fn preset_is_used_until_refused() {
        let codes = Codes::new(Some(" abcd-2345 ".into()), None, false);
        assert_eq!(codes.code(prompt(false)).await.as_deref(), Some("ABCD2345"));
        // Connection dropped before an answer: the same code again.
        assert_eq!(codes.code(prompt(false)).await.as_deref(), Some("ABCD2345"));
        // Refused: no other source, stdin closed.
        assert_eq!(codes.code(prompt(true)).await, None);
        assert_eq!(codes.code(prompt(false)).await, None);
    }

    #[tokio::test]
    async fn file_is_read_when_needed_and_a_refused_code_waits_for_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("code");
        let codes = std::sync::Arc::new(Codes::new(None, Some(path.clone()), false));
        // Not there yet: the request waits.
        let c = codes.clone();
        let waiting = tokio::spawn(async move { c.code(prompt(false)).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!waiting.is_finished());
        std::fs::write(&path, "wxyz-2345\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.as_deref(), Some("WXYZ2345"));
        // Refused (e.g. expired, reported by an event): the same file content is not sent again.
        codes.mark_refused();
        let c = codes.clone();
        let waiting = tokio::spawn(async move { c.code(prompt(false)).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!waiting.is_finished());
        std::fs::write(&path, "NEWC2345").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.as_deref(), Some("NEWC2345"));
    }

    #[test]
    fn the_situation_line_counts_down_and_says_what_is_left() {
        let mut p = prompt(false);
        assert_eq!(
            situation(&p),
            "pairing required (the code expires in 1 min 40 s)"
        );
        p.retry = true;
        p.attempts_left = Some(2);
        p.expires_in = Some(Duration::from_secs(61));
        assert_eq!(
            situation(&p),
            "that pairing code was not accepted (2 attempts left on this connection; the code \
             expires in 1 min 1 s)"
        );
        p.attempts_left = Some(1);
        p.expires_in = None;
        assert_eq!(
            situation(&p),
            "that pairing code was not accepted (1 attempt left on this connection)"
        );
        p.retry = false;
        assert_eq!(situation(&p), "pairing required");
    }

    #[test]
    fn code_file_reading_is_bounded_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("code");
        assert_eq!(read_code_file(&path).unwrap(), FileCode::Missing);
        std::fs::write(&path, " \n").unwrap();
        assert_eq!(read_code_file(&path).unwrap(), FileCode::Empty);
        std::fs::write(&path, "ab cd-23 45\r\n").unwrap();
        assert_eq!(
            read_code_file(&path).unwrap(),
            FileCode::Code("ABCD2345".into())
        );
        std::fs::write(&path, "x".repeat(10_000)).unwrap();
        let FileCode::Code(c) = read_code_file(&path).unwrap() else {
            panic!("expected a code")
        };
        assert_eq!(c.len(), FILE_MAX as usize);
    }
}
