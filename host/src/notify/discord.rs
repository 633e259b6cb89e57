//! The `discord` notifier: DMs the pairing code to the admin through the Discord REST API.
//!
//! Two requests, each bounded by the timeout: `POST {api_base}/users/@me/channels` with
//! `{"recipient_id": admin}` opens (or returns) the DM channel, then
//! `POST {api_base}/channels/{id}/messages` with `{"content": ...}` sends the notice. ureq is
//! blocking, so the exchange runs in `tokio::task::spawn_blocking`. Redirects are not followed
//! (the `Authorization` header must not travel anywhere else). Errors carry the HTTP status or a
//! transport description and at most ~200 characters of the response body, with the token and the
//! code scrubbed; never the request body.

use super::{redact, NotifyError, PairingNotice};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Sent as `User-Agent` (Discord requires the `DiscordBot (url, version)` form).
const USER_AGENT: &str = "DiscordBot (https://example.invalid/yonexus, 0.1)";
/// Most response-body characters quoted in an error.
const BODY_EXCERPT: usize = 200;

const STEP_OPEN: &str = "opening the DM channel";
const STEP_SEND: &str = "sending the DM";

struct Inner {
    token: String,
    admin_user_id: String,
    api_base: String,
    timeout: Duration,
    agent: ureq::Agent,
}

/// A configured Discord DM sender. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DiscordNotifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for DiscordNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordNotifier")
            .field("token", &"<redacted>")
            .field("admin_user_id", &self.inner.admin_user_id)
            .field("api_base", &self.inner.api_base)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .user_agent(USER_AGENT)
        .build()
}

impl DiscordNotifier {
    /// `token` is the bot token itself (already read from the environment).
    pub(crate) fn new(
        token: String,
        admin_user_id: &str,
        api_base: &str,
        timeout: Duration,
    ) -> Result<Self, NotifyError> {
        let admin_user_id = admin_user_id.trim();
        if admin_user_id.is_empty() {
            return Err(NotifyError::InvalidDiscordConfig(
                "admin_user_id is empty".to_owned(),
            ));
        }
        let api_base = api_base.trim().trim_end_matches('/');
        if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            return Err(NotifyError::InvalidDiscordConfig(format!(
                "api_base {api_base:?} is not an http(s) URL"
            )));
        }
        Ok(DiscordNotifier {
            inner: Arc::new(Inner {
                token,
                admin_user_id: admin_user_id.to_owned(),
                api_base: api_base.to_owned(),
                timeout,
                agent: agent(timeout),
            }),
        })
    }

    /// Replaces the per-request timeout (tests).
    #[cfg(test)]
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        let old = &self.inner;
        self.inner = Arc::new(Inner {
            token: old.token.clone(),
            admin_user_id: old.admin_user_id.clone(),
            api_base: old.api_base.clone(),
            timeout,
            agent: agent(timeout),
        });
    }

    /// Opens the DM channel and sends the notice.
    pub(crate) async fn notify(&self, notice: &PairingNotice) -> Result<(), NotifyError> {
        let inner = Arc::clone(&self.inner);
        let notice = notice.clone();
        tokio::task::spawn_blocking(move || inner.deliver(&notice))
            .await
            .map_err(|e| {
                NotifyError::Task(if e.is_panic() {
                    "discord delivery task panicked".to_owned()
                } else {
                    "discord delivery task was cancelled".to_owned()
                })
            })?
    }
}

/// The DM text.
fn message(notice: &PairingNotice) -> String {
    format!(
        "Yonexus pairing code for follower `{}`: **{}**\nExpires <t:{}:R> (unix {}). \
         Enter it on the follower; do not share it.",
        notice.identifier, notice.code, notice.expires_at, notice.expires_at
    )
}

impl Inner {
    fn deliver(&self, notice: &PairingNotice) -> Result<(), NotifyError> {
        let secrets = [self.token.as_str(), notice.code.as_str()];

        let open = serde_json::json!({ "recipient_id": self.admin_user_id }).to_string();
        let url = format!("{}/users/@me/channels", self.api_base);
        let body = self.post(&url, &open, STEP_OPEN, &secrets)?;
        let channel_id = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            .ok_or_else(|| NotifyError::DiscordResponse {
                step: STEP_OPEN,
                detail: format!(
                    "no string \"id\" in {:?}",
                    redact(&body, &secrets, BODY_EXCERPT)
                ),
            })?;
        if channel_id.is_empty() || !channel_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(NotifyError::DiscordResponse {
                step: STEP_OPEN,
                detail: format!(
                    "channel id {:?} is not a snowflake",
                    redact(&channel_id, &secrets, 40)
                ),
            });
        }

        let send = serde_json::json!({ "content": message(notice) }).to_string();
        let url = format!("{}/channels/{channel_id}/messages", self.api_base);
        self.post(&url, &send, STEP_SEND, &secrets)?;
        Ok(())
    }

    /// POSTs `json` and returns the 2xx response body.
    fn post(
        &self,
        url: &str,
        json: &str,
        step: &'static str,
        secrets: &[&str],
    ) -> Result<String, NotifyError> {
        let result = self
            .agent
            .post(url)
            .set("Authorization", &format!("Bot {}", self.token))
            .set("Content-Type", "application/json")
            .set("User-Agent", USER_AGENT)
            .send_string(json);
        match result {
            Ok(resp) => resp
                .into_string()
                .map_err(|e| NotifyError::DiscordTransport {
                    step,
                    detail: redact(&format!("reading the response: {e}"), secrets, 300),
                }),
            Err(ureq::Error::Status(status, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                Err(NotifyError::DiscordStatus {
                    step,
                    status,
                    body: redact(&body, secrets, BODY_EXCERPT),
                })
            }
            Err(ureq::Error::Transport(t)) => Err(NotifyError::DiscordTransport {
                step,
                detail: redact(&t.to_string(), secrets, 300),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Notifier, NotifierConfig};
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    const CODE: &str = "DISCORD-CODE-5521";

    #[derive(Debug)]
    struct Request {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Request {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A one-request-per-connection HTTP/1.1 server answering the canned `(status, body)`
    /// replies in order; returns the base URL and a handle yielding the requests it saw.
    fn server(replies: Vec<(u16, String)>) -> (String, JoinHandle<Vec<Request>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/api/v10/", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, reply) in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                seen.push(Request {
                    method,
                    path,
                    headers,
                    body: String::from_utf8(body).unwrap(),
                });
                let reason = if status < 300 { "OK" } else { "Error" };
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                )
                .unwrap();
                stream.flush().unwrap();
            }
            seen
        });
        (base, handle)
    }

    fn notifier(token_env: &str, token: &str, api_base: &str) -> Notifier {
        Notifier::from_config_with_env(
            &NotifierConfig::Discord {
                token_env: token_env.into(),
                admin_user_id: "112233445566".into(),
                api_base: api_base.into(),
            },
            |v| (v == token_env).then(|| token.to_owned()),
        )
        .unwrap()
    }

    fn notice() -> PairingNotice {
        PairingNotice {
            identifier: "node-discord".into(),
            code: CODE.into(),
            expires_at: 1_700_000_456,
        }
    }

    #[tokio::test]
    async fn opens_a_dm_channel_then_sends_the_code() {
        let token = "bot-token-AAA.bbb.CCC";
        let (base, server) = server(vec![
            (200, r#"{"id":"987654321","type":1}"#.into()),
            (200, r#"{"id":"1","content":"whatever"}"#.into()),
        ]);
        let n = notifier("YONEXUS_TEST_DISCORD_TOKEN_OK_3b1e", token, &base);
        assert_eq!(n.kind(), "discord");
        n.notify(&notice()).await.unwrap();
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 2);

        let open = &seen[0];
        assert_eq!(open.method, "POST");
        assert_eq!(open.path, "/api/v10/users/@me/channels");
        assert_eq!(open.header("authorization"), Some(&*format!("Bot {token}")));
        assert_eq!(open.header("content-type"), Some("application/json"));
        assert_eq!(
            open.header("user-agent"),
            Some("DiscordBot (https://example.invalid/yonexus, 0.1)")
        );
        let body: serde_json::Value = serde_json::from_str(&open.body).unwrap();
        assert_eq!(body["recipient_id"], "112233445566");

        let send = &seen[1];
        assert_eq!(send.method, "POST");
        assert_eq!(send.path, "/api/v10/channels/987654321/messages");
        assert_eq!(send.header("authorization"), Some(&*format!("Bot {token}")));
        let body: serde_json::Value = serde_json::from_str(&send.body).unwrap();
        let content = body["content"].as_str().unwrap();
        assert!(content.contains("node-discord"), "{content}");
        assert!(content.contains(CODE), "{content}");
        assert!(content.contains("1700000456"), "{content}");
    }

    #[tokio::test]
    async fn server_error_does_not_leak_token_or_code() {
        let token = "bot-token-LEAKCHECK.xyz";
        // A hostile/echoing server: the error body repeats both secrets.
        let (base, server) = server(vec![(
            500,
            format!(r#"{{"message":"boom {token} {CODE}","code":0}}"#),
        )]);
        let n = notifier("YONEXUS_TEST_DISCORD_TOKEN_500_8c4d", token, &base);
        let err = n.notify(&notice()).await.unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, NotifyError::DiscordStatus { status: 500, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("500"), "{msg}");
        assert!(!msg.contains(token), "{msg}");
        assert!(!msg.contains(CODE), "{msg}");
        assert!(!format!("{err:?}").contains(token));
        assert!(!format!("{err:?}").contains(CODE));
    }

    #[tokio::test]
    async fn failure_on_the_second_request_is_reported() {
        let token = "bot-token-SECOND.req";
        let (base, server) = server(vec![
            (200, r#"{"id":"42"}"#.into()),
            (
                403,
                r#"{"message":"Cannot send messages to this user","code":50007}"#.into(),
            ),
        ]);
        let n = notifier("YONEXUS_TEST_DISCORD_TOKEN_403_f19a", token, &base);
        let err = n.notify(&notice()).await.unwrap_err();
        server.join().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("403") && msg.contains(STEP_SEND), "{msg}");
        assert!(msg.contains("Cannot send messages"), "{msg}");
        assert!(!msg.contains(token) && !msg.contains(CODE), "{msg}");
    }

    #[tokio::test]
    async fn connection_refused_is_a_transport_error() {
        // Bind then drop to get a port with (very likely) nothing listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let token = "bot-token-REFUSED";
        let n = notifier(
            "YONEXUS_TEST_DISCORD_TOKEN_REFUSED_a07c",
            token,
            &format!("http://127.0.0.1:{port}"),
        );
        let err = n.notify(&notice()).await.unwrap_err();
        assert!(
            matches!(err, NotifyError::DiscordTransport { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(!msg.contains(token) && !msg.contains(CODE), "{msg}");
    }

    #[tokio::test]
    async fn missing_channel_id_is_an_unexpected_response() {
        let (base, server) = server(vec![(200, r#"{"nope":true}"#.into())]);
        let n = notifier("YONEXUS_TEST_DISCORD_TOKEN_NOID_6e2b", "tok", &base);
        let err = n.notify(&notice()).await.unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, NotifyError::DiscordResponse { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_bad_config() {
        assert!(
            DiscordNotifier::new("t".into(), " ", "https://x", Duration::from_secs(1)).is_err()
        );
        assert!(DiscordNotifier::new("t".into(), "1", "ftp://x", Duration::from_secs(1)).is_err());
        let ok =
            DiscordNotifier::new("t".into(), " 1 ", "https://x//", Duration::from_secs(1)).unwrap();
        assert_eq!(ok.inner.api_base, "https://x");
    }
}
