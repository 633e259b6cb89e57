//! Out-of-band delivery of pairing codes to a human admin (PROTOCOL.md §4, step 3).
//!
//! The pairing code never travels over the follower socket; a [`Notifier`] hands it to the admin:
//! - [`NotifierConfig::Log`]: prints it to stderr (development only; `log.rs`);
//! - [`NotifierConfig::Command`]: runs an admin-provided program with the code in its
//!   environment (`command.rs`);
//! - [`NotifierConfig::Discord`]: DMs the admin through the Discord REST API (`discord.rs`).
//!
//! Redaction rules, enforced everywhere in this module: the code and the Discord bot token never
//! appear in a tracing event, in a [`NotifyError`] message or in a `Debug` rendering.

mod command;
mod discord;
mod log;

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

/// How pairing codes reach the admin (the host config maps onto this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifierConfig {
    /// Print to stderr. Development only.
    Log,
    /// Run `program[0]` with arguments `program[1..]`; the notice is passed in the environment
    /// (`YONEXUS_IDENTIFIER`, `YONEXUS_PAIRING_CODE`, `YONEXUS_EXPIRES_AT`).
    Command { program: Vec<String> },
    /// DM the Discord user `admin_user_id` with the bot whose token is in env var `token_env`.
    /// `api_base` is e.g. `https://discord.com/api/v10`.
    Discord {
        token_env: String,
        admin_user_id: String,
        api_base: String,
    },
}

/// One pairing code to deliver.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingNotice {
    /// The follower identifier the code pairs.
    pub identifier: String,
    /// The pairing code itself (secret: redacted from `Debug`).
    pub code: String,
    /// Expiry, UTC unix seconds.
    pub expires_at: i64,
}

impl fmt::Debug for PairingNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingNotice")
            .field("identifier", &self.identifier)
            .field("code", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a notifier could not be built or could not deliver a notice.
///
/// No variant's message ever contains the pairing code or the bot token.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The Discord token environment variable is unset, empty or not UTF-8.
    #[error("discord notifier: environment variable {var} (the bot token) is not set or is empty")]
    MissingToken { var: String },
    /// A Discord notifier setting is unusable.
    #[error("discord notifier: invalid config: {0}")]
    InvalidDiscordConfig(String),
    /// The command notifier was configured with an empty argv.
    #[error("command notifier: `program` is empty (expected [executable, args...])")]
    EmptyCommand,
    /// The notify command could not be started.
    #[error("notify command `{program}` could not be started: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the notify command failed.
    #[error("notify command `{program}` could not be waited on: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The notify command ran but did not succeed.
    #[error("notify command `{program}` failed: {status}")]
    CommandFailed { program: String, status: ExitStatus },
    /// The notify command ran past its deadline and was killed.
    #[error("notify command `{program}` timed out after {}s and was killed", timeout.as_secs_f64())]
    CommandTimeout { program: String, timeout: Duration },
    /// Discord answered with a non-2xx status.
    #[error("discord notifier: {step} failed with HTTP status {status}: {body}")]
    DiscordStatus {
        step: &'static str,
        status: u16,
        /// Redacted and truncated response body.
        body: String,
    },
    /// The request to Discord did not complete (connect, TLS, timeout, I/O...).
    #[error("discord notifier: {step} failed: {detail}")]
    DiscordTransport { step: &'static str, detail: String },
    /// Discord answered 2xx with something we cannot use.
    #[error("discord notifier: {step}: unexpected response: {detail}")]
    DiscordResponse { step: &'static str, detail: String },
    /// The blocking delivery task panicked or was cancelled.
    #[error("notifier task failed: {0}")]
    Task(String),
}

/// Default deadline for one delivery step (the whole command run; each Discord request).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum Kind {
    Log,
    Command(command::CommandNotifier),
    Discord(discord::DiscordNotifier),
    /// Keeps the notices in memory (tests and the fuzzer).
    Memory(std::sync::Arc<std::sync::Mutex<Vec<PairingNotice>>>),
}

/// A configured notifier. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Notifier {
    kind: Kind,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Log => f.write_str("Notifier::Log"),
            Kind::Memory(_) => f.write_str("Notifier::Memory"),
            Kind::Command(c) => f.debug_tuple("Notifier::Command").field(c).finish(),
            Kind::Discord(d) => f.debug_tuple("Notifier::Discord").field(d).finish(),
        }
    }
}

impl Notifier {
    /// Builds a notifier. The Discord token is read from its environment variable now, so a
    /// missing token fails at startup rather than at the first pairing.
    pub fn from_config(cfg: &NotifierConfig) -> Result<Notifier, NotifyError> {
        Notifier::from_config_with_env(cfg, |var| std::env::var(var).ok())
    }

    /// [`Notifier::from_config`] reading environment variables through `env` (tests give it
    /// their own values instead of changing the process's environment under other threads).
    pub(crate) fn from_config_with_env(
        cfg: &NotifierConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Notifier, NotifyError> {
        let kind = match cfg {
            NotifierConfig::Log => Kind::Log,
            NotifierConfig::Command { program } => Kind::Command(command::CommandNotifier::new(
                program.clone(),
                DEFAULT_TIMEOUT,
            )?),
            NotifierConfig::Discord {
                token_env,
                admin_user_id,
                api_base,
            } => {
                let token = match env(token_env) {
                    Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
                    _ => {
                        return Err(NotifyError::MissingToken {
                            var: token_env.clone(),
                        })
                    }
                };
                Kind::Discord(discord::DiscordNotifier::new(
                    token,
                    admin_user_id,
                    api_base,
                    DEFAULT_TIMEOUT,
                )?)
            }
        };
        Ok(Notifier { kind })
    }

    /// Same notifier with a different per-step timeout (tests).
    #[cfg(test)]
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Notifier {
        match &mut self.kind {
            Kind::Log | Kind::Memory(_) => {}
            Kind::Command(c) => c.timeout = timeout,
            Kind::Discord(d) => d.set_timeout(timeout),
        }
        self
    }

    /// A notifier that keeps every notice in `sink` (tests and the fuzzer; not configurable).
    #[doc(hidden)]
    pub fn memory(sink: std::sync::Arc<std::sync::Mutex<Vec<PairingNotice>>>) -> Notifier {
        Notifier {
            kind: Kind::Memory(sink),
        }
    }

    /// `"log"`, `"command"` or `"discord"`.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Log => "log",
            Kind::Memory(_) => "memory",
            Kind::Command(_) => "command",
            Kind::Discord(_) => "discord",
        }
    }

    /// Delivers one pairing code to the admin.
    pub async fn notify(&self, notice: &PairingNotice) -> Result<(), NotifyError> {
        match &self.kind {
            Kind::Log => log::notify(notice),
            Kind::Memory(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(notice.clone()),
            Kind::Command(c) => c.notify(notice).await?,
            Kind::Discord(d) => d.notify(notice).await?,
        }
        tracing::debug!(
            identifier = %notice.identifier,
            notifier = self.kind(),
            expires_at = notice.expires_at,
            "pairing code delivered"
        );
        Ok(())
    }
}

/// Replaces every (non-empty) secret in `text` with `<redacted>`, flattens control characters
/// and truncates to about `max` characters: safe to put in an error message.
pub(crate) fn redact(text: &str, secrets: &[&str], max: usize) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s, "<redacted>");
    }
    let mut flat: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if out.chars().count() > max {
        flat.push('…');
    }
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_and_its_future_are_send_and_sync() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let n = Notifier::from_config(&NotifierConfig::Log).unwrap();
        send_sync(&n);
        let notice = PairingNotice {
            identifier: "x".into(),
            code: "y".into(),
            expires_at: 0,
        };
        send(&n.notify(&notice));
    }

    #[test]
    fn notice_debug_redacts_code() {
        let n = PairingNotice {
            identifier: "node-a".into(),
            code: "SECRET-CODE-123".into(),
            expires_at: 42,
        };
        let d = format!("{n:?}");
        assert!(d.contains("node-a"));
        assert!(!d.contains("SECRET-CODE-123"));
    }

    #[test]
    fn from_config_missing_token_names_the_variable() {
        let var = "YONEXUS_TEST_NOTIFY_MISSING_TOKEN_7f3a";
        let err = Notifier::from_config_with_env(
            &NotifierConfig::Discord {
                token_env: var.into(),
                admin_user_id: "1".into(),
                api_base: "http://127.0.0.1:1".into(),
            },
            |_| None,
        )
        .unwrap_err();
        assert!(matches!(err, NotifyError::MissingToken { .. }));
        assert!(err.to_string().contains(var), "{err}");
    }

    #[test]
    fn from_config_empty_token_is_an_error() {
        let var = "YONEXUS_TEST_NOTIFY_EMPTY_TOKEN_91c2";
        let err = Notifier::from_config_with_env(
            &NotifierConfig::Discord {
                token_env: var.into(),
                admin_user_id: "1".into(),
                api_base: "http://127.0.0.1:1".into(),
            },
            |v| (v == var).then(|| "  ".to_owned()),
        )
        .unwrap_err();
        assert!(err.to_string().contains(var), "{err}");
    }

    #[test]
    fn from_config_empty_command_is_an_error() {
        let err = Notifier::from_config(&NotifierConfig::Command { program: vec![] }).unwrap_err();
        assert!(matches!(err, NotifyError::EmptyCommand));
        let err = Notifier::from_config(&NotifierConfig::Command {
            program: vec![String::new()],
        })
        .unwrap_err();
        assert!(matches!(err, NotifyError::EmptyCommand));
    }

    #[test]
    fn kinds_and_debug_do_not_leak_the_token() {
        assert_eq!(
            Notifier::from_config(&NotifierConfig::Log).unwrap().kind(),
            "log"
        );
        let c = Notifier::from_config(&NotifierConfig::Command {
            program: vec!["/bin/true".into()],
        })
        .unwrap();
        assert_eq!(c.kind(), "command");
        let var = "YONEXUS_TEST_NOTIFY_KIND_TOKEN_55d0";
        let d = Notifier::from_config_with_env(
            &NotifierConfig::Discord {
                token_env: var.into(),
                admin_user_id: "1".into(),
                api_base: "http://127.0.0.1:1/".into(),
            },
            |v| (v == var).then(|| "tok-SUPERSECRET".to_owned()),
        )
        .unwrap();
        assert_eq!(d.kind(), "discord");
        assert!(!format!("{d:?}").contains("SUPERSECRET"));
    }

    #[tokio::test]
    async fn log_notifier_succeeds() {
        let n = Notifier::from_config(&NotifierConfig::Log).unwrap();
        n.notify(&PairingNotice {
            identifier: "node-log".into(),
            code: "LOG-CODE".into(),
            expires_at: 0,
        })
        .await
        .unwrap();
    }

    #[test]
    fn redact_replaces_and_truncates() {
        let r = redact("a TOKEN b CODE\nc", &["TOKEN", "CODE", ""], 200);
        assert_eq!(r, "a <redacted> b <redacted> c");
        let long = "x".repeat(500);
        assert!(redact(&long, &[], 200).chars().count() <= 201);
    }
}
