//! The HTTP/1.1 upgrade that starts a WebSocket connection (RFC 6455 §4.2), read with a size
//! bound, and the short HTTP answers that refuse one.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers accepted in the request head.
const MAX_HEADERS: usize = 32;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// An acceptable upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The request path without its query string.
    pub path: String,
    /// `Sec-WebSocket-Key`.
    pub key: String,
}

/// Why an upgrade is refused; each is answered with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The peer closed, or sent nothing usable before closing.
    Closed,
    /// Not an HTTP request, or not a WebSocket upgrade (400).
    BadRequest(&'static str),
    /// The request head is larger than [`MAX_HEAD`] (431).
    TooLarge,
    /// A WebSocket version other than 13 (426).
    Version,
    /// No WebSocket endpoint at this path (404).
    NotFound,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Closed => f.write_str("connection closed during the upgrade"),
            Refusal::BadRequest(why) => write!(f, "bad upgrade request: {why}"),
            Refusal::TooLarge => f.write_str("request head too large"),
            Refusal::Version => f.write_str("unsupported WebSocket version"),
            Refusal::NotFound => f.write_str("no WebSocket endpoint at this path"),
        }
    }
}

impl Refusal {
    /// The HTTP answer, or `None` when there is nobody to answer.
    pub fn response(&self) -> Option<Vec<u8>> {
        match self {
            Refusal::Closed => None,
            Refusal::BadRequest(why) => Some(response(400, "Bad Request", &[], why)),
            Refusal::TooLarge => Some(response(
                431,
                "Request Header Fields Too Large",
                &[],
                "request head too large",
            )),
            Refusal::Version => Some(response(
                426,
                "Upgrade Required",
                &[("Sec-WebSocket-Version", "13")],
                "only WebSocket version 13 is supported",
            )),
            Refusal::NotFound => Some(response(
                404,
                "Not Found",
                &[],
                "no WebSocket endpoint at this path",
            )),
        }
    }
}

/// A complete HTTP response with a plain-text body and `Connection: close`.
pub fn response(status: u16, reason: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len() + 1
    );
    for (k, v) in headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.push('\n');
    out.into_bytes()
}

/// The 503 sent, without reading anything, to a connection over the admission caps.
pub fn unavailable() -> Vec<u8> {
    response(
        503,
        "Service Unavailable",
        &[("Retry-After", "5")],
        "too many unauthenticated connections; retry later",
    )
}

/// The `101 Switching Protocols` answer to an accepted upgrade.
pub fn accept(key: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(key.len() + GUID.len());
    input.extend_from_slice(key.as_bytes());
    input.extend_from_slice(GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        STANDARD.encode(digest.as_ref())
    )
    .into_bytes()
}

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Check a complete request head against the WebSocket upgrade rules and `path`.
pub fn check(head: &[u8], path: &str) -> Result<Upgrade, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::BadRequest("incomplete request")),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadRequest("not an HTTP/1.1 request")),
    }
    if req.method != Some("GET") {
        return Err(Refusal::BadRequest("the upgrade must be a GET request"));
    }
    if req.version != Some(1) {
        return Err(Refusal::BadRequest("the upgrade needs HTTP/1.1"));
    }
    let target = req.path.unwrap_or("");
    let request_path = target.split('?').next().unwrap_or("");
    if request_path != path {
        return Err(Refusal::NotFound);
    }
    if !has_token(header(&req, "upgrade"), "websocket") {
        return Err(Refusal::BadRequest("missing 'Upgrade: websocket'"));
    }
    if !has_token(header(&req, "connection"), "upgrade") {
        return Err(Refusal::BadRequest("missing 'Connection: Upgrade'"));
    }
    if header(&req, "sec-websocket-version") != Some("13") {
        return Err(Refusal::Version);
    }
    let key = match header(&req, "sec-websocket-key") {
        Some(k) if !k.is_empty() && k.len() <= 64 => k.to_owned(),
        _ => return Err(Refusal::BadRequest("missing Sec-WebSocket-Key")),
    };
    Ok(Upgrade {
        path: request_path.to_owned(),
        key,
    })
}

/// Read a request head from `io` (bounded by [`MAX_HEAD`]) and check it. Returns the upgrade
/// and any bytes the client sent after the head (the start of its first frames).
pub async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    path: &str,
) -> Result<(Upgrade, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = find_head_end(&buf) {
            let upgrade = check(&buf[..end], path)?;
            let rest = buf.split_off(end);
            return Ok((upgrade, rest));
        }
        if buf.len() >= MAX_HEAD {
            return Err(Refusal::TooLarge);
        }
        // Read into the buffer's spare room (no stack buffer held across the await).
        buf.reserve(1024.min(MAX_HEAD + 4 - buf.len()));
        let n = io.read_buf(&mut buf).await.map_err(|_| Refusal::Closed)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Refusal::Closed
            } else {
                Refusal::BadRequest("connection closed before the request head ended")
            });
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn accepts_and_derives_the_rfc_key() {
        let up = check(REQ.as_bytes(), "/ws").unwrap();
        assert_eq!(up.path, "/ws");
        let resp = String::from_utf8(accept(&up.key)).unwrap();
        // RFC 6455 §1.3's example.
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn refusals() {
        assert_eq!(check(REQ.as_bytes(), "/"), Err(Refusal::NotFound));
        let v12 = REQ.replace("Version: 13", "Version: 12");
        assert_eq!(check(v12.as_bytes(), "/ws"), Err(Refusal::Version));
        let post = REQ.replace("GET", "POST");
        assert!(matches!(
            check(post.as_bytes(), "/ws"),
            Err(Refusal::BadRequest(_))
        ));
        let plain = REQ.replace("Upgrade: WebSocket\r\n", "");
        assert!(matches!(
            check(plain.as_bytes(), "/ws"),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            check(b"\x16\x03\x01garbage\r\n\r\n", "/"),
            Err(Refusal::BadRequest(_))
        ));
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let big = REQ.replace("Host: h\r\n", &format!("Host: h\r\n{many}"));
        assert_eq!(check(big.as_bytes(), "/ws"), Err(Refusal::TooLarge));
        let r = String::from_utf8(Refusal::Version.response().unwrap()).unwrap();
        assert!(r.starts_with("HTTP/1.1 426 ") && r.contains("Sec-WebSocket-Version: 13"));
    }

    #[tokio::test]
    async fn reads_the_head_and_keeps_early_frames() {
        let mut input = REQ.as_bytes().to_vec();
        input.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let mut io = &input[..];
        let (up, rest) = read(&mut io, "/ws").await.unwrap();
        assert_eq!(up.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(rest, vec![0x81, 0x80, 1, 2, 3, 4]);
        let endless = vec![b'a'; 20_000];
        let mut io = &endless[..];
        assert_eq!(read(&mut io, "/").await, Err(Refusal::TooLarge));
        let mut io = &b""[..];
        assert_eq!(read(&mut io, "/").await, Err(Refusal::Closed));
    }
}
