//! Who may act: the admin token (from the environment variable named by `[admin] token_env`,
//! read once at start, compared in constant time, never logged) and the cross-site request
//! checks every action passes before the token is even looked at.
//!
//! An action is a `POST` that must: not come from another site (`Sec-Fetch-Site` is
//! `same-origin` or `none` when present; `Origin`, when present, names the `Host` it was sent
//! to), carry `Content-Type: application/json` (which a cross-site form cannot send without a
//! CORS preflight, and this server answers no preflight), and carry
//! `Authorization: Bearer <token>`. Without a configured token every action is refused (the
//! dashboard is read-only).
//!
//! Reads have no token, so on a loopback `listen` the page and the API also check `Host`
//! ([`check_loopback_host`]): a web page can point a DNS name it controls at 127.0.0.1 ("DNS
//! rebinding") and read same-origin from this port under that name, but its requests then
//! carry that name in `Host`.

use axum::http::{header, HeaderMap, StatusCode, Uri};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use subtle::ConstantTimeEq;

/// Shortest admin token accepted at start.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Why the admin HTTP port cannot start with this token setup.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("[admin] listen = \"{addr}\" is not a loopback address and no admin token is set: set the environment variable {env} ([admin] token_env) to a long random secret (e.g. `openssl rand -hex 32`) before starting the host, or listen on 127.0.0.1")]
    Required { addr: SocketAddr, env: String },
    #[error("the admin token in the environment variable {env} ([admin] token_env) is shorter than {MIN_TOKEN_CHARS} characters: use a long random secret, e.g. `openssl rand -hex 32`")]
    TooShort { env: String },
    #[error("the admin token in the environment variable {env} ([admin] token_env) must be printable ASCII without spaces (it travels in an HTTP header)")]
    BadCharacters { env: String },
}

/// The admin token. `Debug` never shows it.
pub struct AdminToken(Vec<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Check `value` (the environment variable `env`'s content) as a token. `None` for unset or
    /// empty.
    pub fn parse(env: &str, value: Option<std::ffi::OsString>) -> Result<Option<Self>, TokenError> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let bad = || TokenError::BadCharacters {
            env: env.to_owned(),
        };
        let text = value.into_string().map_err(|_| bad())?;
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        if text.len() < MIN_TOKEN_CHARS {
            return Err(TokenError::TooShort {
                env: env.to_owned(),
            });
        }
        Ok(Some(AdminToken(text.into_bytes())))
    }

    /// Read the token from the environment variable `env`, and refuse a non-loopback `listen`
    /// without one.
    pub fn from_env(env: &str, listen: SocketAddr) -> Result<Option<Self>, TokenError> {
        let token = Self::parse(env, std::env::var_os(env))?;
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(TokenError::Required {
                addr: listen,
                env: env.to_owned(),
            });
        }
        Ok(token)
    }

    /// Constant-time comparison with `candidate`.
    fn matches(&self, candidate: &[u8]) -> bool {
        // `ct_eq` on slices of different lengths returns false (length is not secret).
        self.0.as_slice().ct_eq(candidate).into()
    }
}

/// Why an action was refused: the status and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// Whether the request in `headers` may perform an action, with `token` the configured admin
/// token (`None`: read-only) named by `token_env`.
pub fn authorize(
    headers: &HeaderMap,
    token: Option<&AdminToken>,
    token_env: &str,
) -> Result<(), Refusal> {
    check_same_origin(headers)?;
    let Some(token) = token else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("the dashboard is read-only: no admin token is configured (set the environment variable {token_env}, named by [admin] token_env, before starting the host)"),
        ));
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "actions require Content-Type: application/json",
        ));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match presented {
        Some(candidate) if token.matches(candidate.as_bytes()) => Ok(()),
        Some(_) => Err(Refusal::new(StatusCode::UNAUTHORIZED, "wrong admin token")),
        None => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "this action needs the admin token (Authorization: Bearer <token>)",
        )),
    }
}

/// Refuse requests a browser marks as coming from another site (or origin).
fn check_same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let refuse = || {
        Refusal::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused: actions are only accepted from the dashboard itself",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        match site.to_str().map(str::trim) {
            Ok("same-origin") | Ok("none") => {}
            _ => return Err(refuse()),
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| refuse())?.trim();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .ok_or_else(refuse)?;
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::trim)
            .ok_or_else(refuse)?;
        if !authority.eq_ignore_ascii_case(host) {
            return Err(refuse());
        }
    }
    Ok(())
}

/// On a loopback `listen`: refuse a request addressed (by `Host`, or an absolute request URI)
/// to anything but a loopback name — `localhost`, `127.x.y.z`, `[::1]`, with any port. A request
/// without `Host` (HTTP/1.0 tools; browsers always send it) passes.
pub fn check_loopback_host(headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
    let refuse = || {
        Refusal::new(
            StatusCode::MISDIRECTED_REQUEST,
            "refused: this admin port listens on a loopback address and answers only requests addressed to localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding); behind a reverse proxy, pass a loopback Host header, or listen on a non-loopback address with an admin token",
        )
    };
    let mut hosts = headers.get_all(header::HOST).iter();
    if let Some(host) = hosts.next() {
        let host = host.to_str().map_err(|_| refuse())?;
        if hosts.next().is_some() || !is_loopback_authority(host) {
            return Err(refuse());
        }
    }
    if let Some(authority) = uri.authority() {
        if !is_loopback_authority(authority.as_str()) {
            return Err(refuse());
        }
    }
    Ok(())
}

/// Whether `authority` (`host[:port]`, as in `Host`) names this machine's loopback interface:
/// `localhost`, an IPv4 address in 127.0.0.0/8 or `[::1]`, with an optional numeric port.
pub fn is_loopback_authority(authority: &str) -> bool {
    let authority = authority.trim();
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) => (
                ip.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
                port,
            ),
            None => return false,
        },
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            let ok = host.eq_ignore_ascii_case("localhost")
                || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
            (ok, port)
        }
    };
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            (1..=5).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        }
    };
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef0123";

    fn token() -> AdminToken {
        AdminToken::parse("T", Some(TOKEN.into()))
            .ok()
            .flatten()
            .expect("a valid token")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn good() -> Vec<(&'static str, String)> {
        vec![
            ("host", "127.0.0.1:9787".into()),
            ("origin", "http://127.0.0.1:9787".into()),
            ("sec-fetch-site", "same-origin".into()),
            ("content-type", "application/json".into()),
            ("authorization", format!("Bearer {TOKEN}")),
        ]
    }

    fn with(overrides: &[(&'static str, Option<&str>)]) -> HeaderMap {
        let mut pairs = good();
        for (k, v) in overrides {
            pairs.retain(|(n, _)| n != k);
            if let Some(v) = v {
                pairs.push((k, (*v).to_owned()));
            }
        }
        let refs: Vec<(&'static str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers(&refs)
    }

    fn status(h: &HeaderMap, t: Option<&AdminToken>) -> Option<StatusCode> {
        authorize(h, t, "T").err().map(|r| r.status)
    }

    #[test]
    fn a_same_origin_json_request_with_the_token_passes() {
        let t = token();
        assert_eq!(status(&with(&[]), Some(&t)), None);
        // Non-browser clients send neither Origin nor Sec-Fetch-Site.
        assert_eq!(
            status(
                &with(&[("origin", None), ("sec-fetch-site", None)]),
                Some(&t)
            ),
            None
        );
        assert_eq!(
            status(&with(&[("sec-fetch-site", Some("none"))]), Some(&t)),
            None
        );
        assert_eq!(
            status(
                &with(&[("content-type", Some("application/json; charset=utf-8"))]),
                Some(&t)
            ),
            None
        );
    }

    #[test]
    fn cross_site_requests_are_refused_before_the_token_is_checked() {
        let t = token();
        for h in [
            with(&[("sec-fetch-site", Some("cross-site"))]),
            with(&[("sec-fetch-site", Some("same-site"))]),
            with(&[("origin", Some("http://evil.example"))]),
            with(&[("origin", Some("http://127.0.0.1:8080"))]),
            with(&[("origin", Some("null"))]),
            with(&[("origin", Some("http://127.0.0.1:9787")), ("host", None)]),
        ] {
            assert_eq!(status(&h, Some(&t)), Some(StatusCode::FORBIDDEN), "{h:?}");
        }
    }

    #[test]
    fn token_and_content_type_are_required() {
        let t = token();
        assert_eq!(
            status(&with(&[("content-type", Some("text/plain"))]), Some(&t)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(&with(&[("content-type", None)]), Some(&t)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(&with(&[("authorization", None)]), Some(&t)),
            Some(StatusCode::UNAUTHORIZED)
        );
        for wrong in [
            "Bearer nope",
            "Bearer 0123456789abcdef012",
            "Basic abc",
            "Bearer",
        ] {
            assert_eq!(
                status(&with(&[("authorization", Some(wrong))]), Some(&t)),
                Some(StatusCode::UNAUTHORIZED),
                "{wrong}"
            );
        }
        // Read-only: refused whatever is presented, and the message names the variable.
        let r = authorize(&with(&[]), None, "MY_TOKEN_VAR").expect_err("read-only");
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.message.contains("MY_TOKEN_VAR"), "{}", r.message);
    }

    #[test]
    fn only_loopback_names_pass_the_host_check() {
        for ok in [
            "localhost",
            "LocalHost:9787",
            "127.0.0.1",
            "127.0.0.1:9787",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:9787",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:9787",
            "localhost.evil.example",
            "evil.localhost.example:9787",
            "127.0.0.1.evil.example",
            "10.0.0.1:9787",
            "0.0.0.0:9787",
            "[::2]:9787",
            "[::1",
            "[::1]x",
            "[::ffff:7f00:1]:9787",
            "localhost:",
            "localhost:port",
            "localhost:9787:1",
            "localhost:123456",
            "::1",
            "user@localhost",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
        let uri = Uri::from_static("/api/followers");
        let host = |h: &str| headers(&[("host", h)]);
        assert_eq!(check_loopback_host(&host("localhost:9787"), &uri), Ok(()));
        assert_eq!(check_loopback_host(&HeaderMap::new(), &uri), Ok(()));
        let refused =
            check_loopback_host(&host("rebind.example:9787"), &uri).expect_err("a foreign name");
        assert_eq!(refused.status, StatusCode::MISDIRECTED_REQUEST);
        assert!(
            refused.message.contains("DNS rebinding"),
            "{}",
            refused.message
        );
        // An absolute request URI naming another host is refused too.
        let absolute = Uri::from_static("http://rebind.example/api/followers");
        assert!(check_loopback_host(&host("localhost"), &absolute).is_err());
        // Two Host headers: refused.
        let mut two = host("localhost");
        two.append(header::HOST, HeaderValue::from_static("evil.example"));
        assert!(check_loopback_host(&two, &uri).is_err());
    }

    #[test]
    fn tokens_are_checked_at_start_and_never_shown() {
        let loopback: SocketAddr = "127.0.0.1:9787".parse().expect("addr");
        let public: SocketAddr = "0.0.0.0:9787".parse().expect("addr");
        assert!(AdminToken::parse("T", None).expect("unset").is_none());
        assert!(AdminToken::parse("T", Some("".into()))
            .expect("empty")
            .is_none());
        assert!(matches!(
            AdminToken::parse("T", Some("short".into())),
            Err(TokenError::TooShort { .. })
        ));
        assert!(matches!(
            AdminToken::parse("T", Some("with space in the token".into())),
            Err(TokenError::BadCharacters { .. })
        ));
        let t = token();
        assert!(!format!("{t:?}").contains(TOKEN));
        let unset = "YONEXUS_TEST_SURELY_UNSET_TOKEN_VARIABLE";
        assert!(AdminToken::from_env(unset, loopback)
            .expect("loopback")
            .is_none());
        let e = AdminToken::from_env(unset, public).expect_err("public without token");
        let text = e.to_string();
        assert!(
            text.contains(unset) && text.contains("[admin] listen"),
            "{text}"
        );
    }
}
