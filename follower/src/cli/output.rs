//! What the CLI tells its user: one plain line on stderr per event (received rule messages go
//! to stdout, or to `--exec`). Each event is reported here only (the library logs events at
//! `debug` at most), so nothing is printed twice.

use crate::cli::codes::Codes;
use crate::cli::exec::Exec;
pub use crate::cli::text::{human_duration, printable, say, seconds};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use yonexus_follower::Event;
use yonexus_protocol::envelope::{AdminNotification, PairFailReason};
use yonexus_protocol::frame;

/// Prints events; remembers what later lines need.
pub struct Printer {
    pub identifier: String,
    pub state_file: String,
    pub codes: Arc<Codes>,
    pub exec: Option<Exec>,
    /// When the pending code expires (from the last `pair_request`).
    code_deadline: Option<Instant>,
    /// Where received rule messages go without `--exec`.
    stdout: tokio::io::Stdout,
}

impl Printer {
    pub fn new(
        identifier: String,
        state_file: String,
        codes: Arc<Codes>,
        exec: Option<Exec>,
    ) -> Self {
        Printer {
            identifier,
            state_file,
            codes,
            exec,
            code_deadline: None,
            stdout: tokio::io::stdout(),
        }
    }

    /// Print (or hand to `--exec`) every event until the channel closes.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            self.event(event).await;
        }
    }

    fn code_left(&self) -> Option<Duration> {
        self.code_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Rule { rule_id, content } => match &self.exec {
                Some(exec) => exec.push(rule_id, content),
                None => {
                    let mut line = frame::encode_rule(&rule_id, &content);
                    line.push('\n');
                    // Asynchronous: a blocked stdout holds up this task only (the connection
                    // goes on; see the library's event backlog).
                    if self.stdout.write_all(line.as_bytes()).await.is_ok() {
                        let _ = self.stdout.flush().await;
                    }
                }
            },
            Event::Dropped { rules, other } => {
                let other = if other > 0 {
                    format!(" and {other} other event(s)")
                } else {
                    String::new()
                };
                say(&format!(
                    "warning: {rules} received message(s){other} dropped: they came faster than \
                     they could be printed (is stdout read?)"
                ));
            }
            Event::Connected { url } => say(&format!("connected to {url}")),
            Event::PairingRequired {
                admin_notification,
                ttl_seconds,
                ..
            } => {
                if let Some(ttl) = ttl_seconds {
                    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                    self.code_deadline = Some(Instant::now() + ttl);
                }
                // "pairing required" itself is said with the code prompt (cli::codes), in order.
                if admin_notification == Some(AdminNotification::Failed) {
                    say("warning: the host could not notify the admin of the pairing code");
                }
            }
            Event::Paired => {
                self.code_deadline = None;
                say("paired");
            }
            Event::Authenticated => say("authenticated"),
            Event::HostError { code, message } => say(&format!(
                "host error {}: {}",
                printable(code.as_str()),
                printable(&message)
            )),
            Event::HelloRejected { next_action } => say(&format!(
                "the host rejected this follower (nextAction {}); retrying later",
                printable(next_action.as_str())
            )),
            Event::PairFailed {
                reason,
                attempts_left,
            } => self.pair_failed(reason, attempts_left),
            Event::NoPairingCode => say("no pairing code available; retrying later"),
            Event::SecretNotSaved { error } => say(&format!(
                "error: could not save the pairing secret ({error}); retrying later"
            )),
            Event::AuthFailed { reason } => say(&format!(
                "authentication failed: {}",
                printable(reason.as_str())
            )),
            Event::NoLocalSecret => say(&format!(
                "error: the host expects '{id}' to authenticate, but no secret is stored in {file}; \
                 the host's admin must revoke it (yonexus revoke {id}) so that it can pair again",
                id = self.identifier,
                file = self.state_file
            )),
            Event::RePairRequired { reason } => {
                say(&format!(
                    "re-pairing required: {}",
                    printable(reason.as_str())
                ));
            }
            Event::StatusUpdate { status, reason } => say(&format!(
                "status: {} ({})",
                printable(&status),
                printable(&reason)
            )),
            Event::Disconnected { reason } => {
                say(&format!("disconnected: {}", printable(&reason)));
            }
            Event::Reconnecting { url, delay } => {
                say(&format!("reconnecting to {url} in {}", seconds(delay)));
            }
        }
    }

    fn pair_failed(&mut self, reason: PairFailReason, attempts_left: Option<u32>) {
        let until = self
            .code_left()
            .map(|d| format!(" (in {})", human_duration(d)))
            .unwrap_or_default();
        match reason {
            // No new prompt on this connection: say what happens next. (Otherwise the library
            // asks again at once and the new prompt says the code was refused, in order with
            // it, and marks it refused: see cli::codes.)
            PairFailReason::InvalidCode if attempts_left == Some(0) => {
                // The next prompt comes after a reconnect (not a retry): never resend this code.
                self.codes.mark_refused();
                say(&format!(
                    "pairing code not accepted, and no attempts are left on this connection: the \
                     host closes it. The pending code stays valid until it expires{until}; the \
                     follower reconnects and asks for it again"
                ));
            }
            PairFailReason::InvalidCode => {}
            PairFailReason::Expired => {
                self.codes.mark_refused();
                self.code_deadline = None;
                say(
                    "pairing failed: the code expired, or the pairing was cancelled after too \
                     many wrong codes. Ask the admin for a new code: the host sends one when the \
                     follower reconnects",
                );
            }
            PairFailReason::IdentifierNotAllowed => say(&format!(
                "pairing failed: '{}' is not on the host's allowlist",
                self.identifier
            )),
            PairFailReason::AdminNotificationFailed => {
                say("pairing failed: the host could not send the code to the admin; retrying later")
            }
            PairFailReason::InternalError => {
                say("pairing failed: internal error on the host; retrying later");
            }
            PairFailReason::Unknown(other) => {
                say(&format!(
                    "pairing failed: {}; retrying later",
                    printable(&other)
                ));
            }
        }
    }
}

/// The message for a follower that every host refused (exit status 3).
pub fn not_allowed_message(identifier: &str, hosts: usize) -> String {
    let who = if hosts > 1 { "every host" } else { "the host" };
    format!(
        "error: {who} refused identifier '{identifier}': it is not on the allowlist. This does \
         not fix itself, so the follower stops: ask the host's admin to add '{identifier}' to \
         [followers] allow, then start the follower again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(Duration::from_secs(0)), "0 s");
        assert_eq!(human_duration(Duration::from_millis(59_900)), "59 s");
        assert_eq!(human_duration(Duration::from_secs(60)), "1 min");
        assert_eq!(human_duration(Duration::from_secs(298)), "4 min 58 s");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 h");
        assert_eq!(human_duration(Duration::from_secs(3780)), "1 h 3 min");
        assert_eq!(seconds(Duration::from_millis(3240)), "3.2 s");
        assert_eq!(seconds(Duration::from_millis(250)), "0.2 s");
    }

    #[test]
    fn not_allowed_says_what_to_do() {
        let m = not_allowed_message("alpha", 1);
        assert!(m.contains("'alpha'") && m.contains("allow") && m.contains("the host"));
        assert!(not_allowed_message("alpha", 2).contains("every host"));
    }

    #[test]
    fn host_text_cannot_drive_the_terminal() {
        assert_eq!(printable("plain: ok"), "plain: ok");
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        let long = printable(&"x".repeat(2000));
        assert_eq!(long.chars().count(), 501);
    }
}
