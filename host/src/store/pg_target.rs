//! Where the PostgreSQL trust store lives and what must never be shown: the URL (from `url` or
//! the variable `url_env` names) parsed, with this host's timeouts added; the database named
//! `host:port/dbname` for messages; every error text scrubbed of the URL and the password (a
//! URL may hold one); and which driver errors mean "cannot be reached".

use super::migrations;
use super::StoreError;
use crate::config::PostgresUrl;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::NoTls;

/// Longest wait for a new connection (TCP connect, startup and authentication).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one operation's answer (a trust change is a few round trips).
pub const OP_TIMEOUT: Duration = Duration::from_secs(8);
/// Server-side limit for one statement, lock waits included.
pub const STATEMENT_TIMEOUT_MS: u64 = 5_000;

/// Where the database is, for messages, and what must never be shown.
#[derive(Clone)]
pub struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) location: String,
    secrets: Vec<String>,
}

impl Target {
    /// Read the URL (`url`, or the variable `url_env` names) and set the timeouts.
    pub fn from_config(url: &PostgresUrl) -> Result<Target, StoreError> {
        let raw = url.resolve().map_err(StoreError::Config)?;
        if unencoded_at_in_userinfo(&raw) {
            // The driver would take the text after the first `@` for the host: part of the
            // password would end up in every message that names the database.
            return Err(StoreError::Config(
                "the PostgreSQL URL has more than one '@' before the host: an '@' in the user \
                 name or password must be percent-encoded as %40 (the URL is not shown: it \
                 holds the password)"
                    .into(),
            ));
        }
        let mut secrets = secrets_in(&raw);
        let mut config: tokio_postgres::Config = raw.parse().map_err(|e| {
            StoreError::Config(scrub(
                &format!("the PostgreSQL URL cannot be used: {}", with_causes(&e)),
                &secrets,
            ))
        })?;
        if let Some(pw) = config
            .get_password()
            .and_then(|p| std::str::from_utf8(p).ok())
        {
            if !pw.is_empty() {
                secrets.push(pw.to_owned());
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let location = location_of(&config);
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Config(format!(
                "PostgreSQL at {location}: sslmode=require is not supported (this build talks \
                 to PostgreSQL without TLS): connect over a Unix socket, loopback or a private \
                 network with sslmode=disable, or through a TLS tunnel (docs/store.md)"
            )));
        }
        // Without TLS support, "prefer" would fall back to plain text anyway: say so plainly.
        config.ssl_mode(SslMode::Disable);
        config.connect_timeout(CONNECT_TIMEOUT);
        config.tcp_user_timeout(OP_TIMEOUT);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("yonexus");
        }
        let options = format!(
            "{} -c statement_timeout={STATEMENT_TIMEOUT_MS}",
            config.get_options().unwrap_or_default()
        );
        config.options(options.trim());
        Ok(Target {
            config,
            location,
            secrets,
        })
    }

    /// `host:port/dbname`, never the user or password.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub(super) fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    /// The text of a driver error, without anything secret (no DETAIL: it may quote rows).
    pub(super) fn describe(&self, e: &tokio_postgres::Error) -> String {
        let text = match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => with_causes(e),
        };
        self.scrub(&text)
    }

    pub(super) fn unavailable(&self, what: &str, reason: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "PostgreSQL at {}: cannot {what}: {}",
            self.location,
            self.scrub(reason)
        ))
    }

    /// One connection outside any pool (`yonexus check`, `yonexus migrate`).
    pub(super) async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let connecting = tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_secs(1),
            self.config.connect(NoTls),
        )
        .await;
        match connecting {
            Err(_) => Err(self.unavailable(
                "connect",
                &format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            )),
            Ok(Err(e)) => Err(self.unavailable("connect", &self.describe(&e))),
            Ok(Ok((client, connection))) => {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
        }
    }

    pub(super) fn schema_too_new(&self, found: i32) -> StoreError {
        StoreError::Schema {
            location: self.location.clone(),
            found,
            known: migrations::LATEST,
        }
    }
}

/// The secret parts of a URL or `key=value` connection string: the whole text, and the
/// password as written and percent-decoded.
fn secrets_in(raw: &str) -> Vec<String> {
    let mut out = vec![raw.to_owned()];
    if let Some((_, rest)) = raw.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, pw)) = userinfo.split_once(':') {
                if !pw.is_empty() {
                    out.push(pw.to_owned());
                    out.push(percent_decode(pw));
                }
            }
        }
    }
    for part in raw.split_whitespace() {
        if let Some(pw) = part.strip_prefix("password=") {
            let pw = pw.trim_matches('\'');
            if !pw.is_empty() {
                out.push(pw.to_owned());
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Whether a URL's authority (between `://` and the path or query) holds more than one `@`.
fn unencoded_at_in_userinfo(raw: &str) -> bool {
    raw.split_once("://").is_some_and(|(_, rest)| {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        authority.matches('@').count() > 1
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error and its causes (the driver's own text names only the kind of failure).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // A database error's DETAIL may quote a row: only its first line.
        let line = c.to_string();
        text.push_str(": ");
        text.push_str(line.lines().next().unwrap_or_default());
        cause = c.source();
    }
    text
}

/// `text` with every secret replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for s in secrets {
        if !s.is_empty() {
            text = text.replace(s.as_str(), "***");
        }
    }
    text
}

/// `host:port/dbname` (hosts joined with `,`).
fn location_of(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{hosts}/{db}")
}

/// Whether a driver error means the database could not be reached (as opposed to a database
/// that answered and refused).
pub(super) fn unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Connection exceptions, resources, operator intervention (shutdown, cancelled
        // statement), system errors.
        Some(code) => ["08", "53", "57", "58"]
            .iter()
            .any(|class| code.code().starts_with(class)),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> PostgresUrl {
        PostgresUrl {
            url: Some(u.into()),
            url_env: None,
        }
    }

    #[test]
    fn location_names_host_port_and_database_only() {
        let t = Target::from_config(&url("postgres://app:s3cr%40t@db.example:6543/trust")).unwrap();
        assert_eq!(t.location(), "db.example:6543/trust");
        let t = Target::from_config(&url("postgresql://app@10.0.0.1/yonexus")).unwrap();
        assert_eq!(t.location(), "10.0.0.1:5432/yonexus");
        let t = Target::from_config(&url("postgres://app@[::1]:5433")).unwrap();
        assert_eq!(t.location(), "[::1]:5433/app");
    }

    #[test]
    fn secrets_are_scrubbed_as_written_and_decoded() {
        let raw = "postgres://app:s3cr%40tpass@db:5432/trust";
        let t = Target::from_config(&url(raw)).unwrap();
        let msg = t.scrub(&format!("failed for {raw}: s3cr@tpass and s3cr%40tpass"));
        assert!(!msg.contains("s3cr"), "{msg}");
        let e = t.unavailable("connect", "password s3cr@tpass rejected");
        assert!(!e.to_string().contains("s3cr"), "{e}");
        assert!(e.to_string().contains("db:5432/trust"), "{e}");
    }

    #[test]
    fn unusable_urls_are_refused_without_the_password() {
        let Err(e) = Target::from_config(&url("postgres://app:hunter22@db:notaport/x")) else {
            panic!("accepted a bad port");
        };
        assert!(!e.to_string().contains("hunter22"), "{e}");
        let Err(e) = Target::from_config(&url("postgres://app:hunter22@db/x?sslmode=require"))
        else {
            panic!("accepted sslmode=require");
        };
        let text = e.to_string();
        assert!(
            text.contains("sslmode=require") && !text.contains("hunter22"),
            "{text}"
        );
        assert!(Target::from_config(&url("postgres://db/x?sslmode=prefer")).is_ok());
        assert!(Target::from_config(&url("postgres://db/x?sslmode=disable")).is_ok());
        // An '@' left unencoded in the password: the driver would read the rest as the host,
        // and messages naming the database would show that part of the password.
        let Err(e) = Target::from_config(&url(
            "postgres://yonexus:Tr0ub4dor@3xyzSecret@127.0.0.1:55432/yonexus",
        )) else {
            panic!("accepted an unencoded '@' in the password");
        };
        let text = e.to_string();
        assert!(text.contains("%40"), "{text}");
        assert!(
            !text.contains("Tr0ub4dor") && !text.contains("3xyzSecret"),
            "{text}"
        );
        // An '@' elsewhere (the query) is not the user's or password's.
        assert!(Target::from_config(&url("postgres://db/x?application_name=a@b")).is_ok());
    }
}
