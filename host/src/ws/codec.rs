//! WebSocket frames: decoding what a client sends (masked, possibly fragmented) under a size
//! limit checked at each frame header, and encoding what the server sends (unmasked, unfragmented)
//! as `Bytes` that can be shared by any number of connections.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Longest control-frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;
/// Longest frame header a client sends: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER: usize = 14;

/// A complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    /// A binary message (its bytes are not kept: protocol v1 refuses binary frames).
    Binary(usize),
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame: code and reason, if it sent any.
    Close(Option<(u16, String)>),
}

/// Why the byte stream is not acceptable; each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A violation of RFC 6455 framing (close 1002).
    Protocol(&'static str),
    /// A message larger than the connection's current limit (close 1009). Detected from the
    /// frame header, before the payload is read.
    TooBig { size: u64, limit: usize },
    /// A text message that is not UTF-8 (close 1007).
    Utf8,
}

impl Error {
    pub fn close_code(&self) -> u16 {
        match self {
            Error::Protocol(_) => 1002,
            Error::TooBig { .. } => 1009,
            Error::Utf8 => 1007,
        }
    }

    pub fn close_reason(&self) -> &'static str {
        match self {
            Error::Protocol(_) => "protocol error",
            Error::TooBig { .. } => "message too big",
            Error::Utf8 => "invalid UTF-8",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Protocol(why) => write!(f, "WebSocket protocol error: {why}"),
            Error::TooBig { size, limit } => {
                write!(f, "message of {size} bytes exceeds the limit of {limit}")
            }
            Error::Utf8 => f.write_str("text message is not valid UTF-8"),
        }
    }
}

impl std::error::Error for Error {}

/// What [`Decoder::decode`] found at the start of the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The frame is incomplete: it needs this many bytes in total (header included), or at
    /// least this many to read its header.
    Need(usize),
    /// One frame consumed; a fragment of an unfinished message yields no message.
    Frame {
        consumed: usize,
        message: Option<Message>,
    },
}

/// A message being reassembled from fragments.
#[derive(Debug)]
enum Partial {
    Text(Vec<u8>),
    Binary(u64),
}

impl Partial {
    fn len(&self) -> u64 {
        match self {
            Partial::Text(v) => v.len() as u64,
            Partial::Binary(n) => *n,
        }
    }
}

/// Decodes client frames. Holds only the message being reassembled, if any.
#[derive(Debug, Default)]
pub struct Decoder {
    partial: Option<Partial>,
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: u64,
}

fn parse_header(buf: &[u8]) -> Result<Option<Header>, Error> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(Error::Protocol(
            "reserved bits set (no extension was negotiated)",
        ));
    }
    if b1 & 0x80 == 0 {
        return Err(Error::Protocol("unmasked frame from a client"));
    }
    let (payload_len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let n = u64::from_be_bytes(a);
                if n >> 63 != 0 {
                    return Err(Error::Protocol("frame length has its high bit set"));
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [m[0], m[1], m[2], m[3]];
    at += 4;
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        mask,
        header_len: at,
        payload_len,
    }))
}

/// XOR `data` with the 4-byte mask, eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let key = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ key).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl Decoder {
    /// Whether a fragmented message is being reassembled.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Decode the frame at the start of `buf` (unmasking it in place). `limit` is the largest
    /// message accepted right now; a frame that would exceed it is refused from its header.
    pub fn decode(&mut self, buf: &mut [u8], limit: usize) -> Result<Decoded, Error> {
        let Some(h) = parse_header(buf)? else {
            return Ok(Decoded::Need(buf.len().max(2) + 1));
        };
        let control = h.opcode >= 0x8;
        match h.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !h.fin {
                    return Err(Error::Protocol("fragmented control frame"));
                }
                if h.payload_len > MAX_CONTROL as u64 {
                    return Err(Error::Protocol("control frame longer than 125 bytes"));
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(Error::Protocol("new message before the previous one ended"));
                }
            }
            OP_CONTINUATION => {
                if self.partial.is_none() {
                    return Err(Error::Protocol("continuation frame without a message"));
                }
            }
            _ => return Err(Error::Protocol("unknown opcode")),
        }
        if !control {
            let so_far = self.partial.as_ref().map_or(0, Partial::len);
            let total = so_far.saturating_add(h.payload_len);
            if total > limit as u64 {
                return Err(Error::TooBig { size: total, limit });
            }
        }
        // Fits in usize: bounded by `limit` (data) or 125 (control).
        let payload_len = h.payload_len as usize;
        let frame_len = h.header_len + payload_len;
        let Some(frame) = buf.get_mut(..frame_len) else {
            return Ok(Decoded::Need(frame_len));
        };
        let payload = &mut frame[h.header_len..];
        let message = match h.opcode {
            OP_PING => {
                unmask(payload, h.mask);
                Some(Message::Ping(payload.to_vec()))
            }
            OP_PONG => Some(Message::Pong),
            OP_CLOSE => {
                unmask(payload, h.mask);
                Some(Message::Close(parse_close(payload)?))
            }
            OP_BINARY => {
                if h.fin {
                    Some(Message::Binary(payload_len))
                } else {
                    self.partial = Some(Partial::Binary(payload_len as u64));
                    None
                }
            }
            OP_TEXT => {
                unmask(payload, h.mask);
                if h.fin {
                    let text = std::str::from_utf8(payload).map_err(|_| Error::Utf8)?;
                    Some(Message::Text(text.to_owned()))
                } else {
                    self.partial = Some(Partial::Text(payload.to_vec()));
                    None
                }
            }
            _ => {
                // OP_CONTINUATION (checked above).
                match self.partial.as_mut() {
                    Some(Partial::Binary(n)) => *n += payload_len as u64,
                    Some(Partial::Text(v)) => {
                        unmask(payload, h.mask);
                        v.extend_from_slice(payload);
                    }
                    None => return Err(Error::Protocol("continuation frame without a message")),
                }
                if h.fin {
                    match self.partial.take() {
                        Some(Partial::Text(v)) => Some(Message::Text(
                            String::from_utf8(v).map_err(|_| Error::Utf8)?,
                        )),
                        Some(Partial::Binary(n)) => Some(Message::Binary(n as usize)),
                        None => None,
                    }
                } else {
                    None
                }
            }
        };
        Ok(Decoded::Frame {
            consumed: frame_len,
            message,
        })
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(Error::Protocol("close frame with a one-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(Error::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Error::Utf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

fn put_header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// A server text frame whose payload is the concatenation of `parts` (so `rule::content` is
/// written once, straight into the frame).
pub fn text_parts(parts: &[&str]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(header_len(len) + len);
    put_header(&mut out, OP_TEXT, len);
    for p in parts {
        out.put_slice(p.as_bytes());
    }
    out.freeze()
}

/// A server text frame.
pub fn text(payload: &str) -> Bytes {
    text_parts(&[payload])
}

/// A close frame; the reason is cut to fit the 125-byte control payload.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let mut out = BytesMut::with_capacity(4 + reason.len());
    put_header(&mut out, OP_CLOSE, 2 + reason.len());
    out.put_u16(code);
    out.put_slice(reason);
    out.freeze()
}

/// A pong answering a ping with `payload` (at most 125 bytes, as the ping was).
pub fn pong(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    let mut out = BytesMut::with_capacity(2 + payload.len());
    put_header(&mut out, OP_PONG, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// An empty ping.
pub fn ping() -> Bytes {
    Bytes::from_static(&[0x80 | OP_PING, 0])
}

/// The payload of a server text frame made by this module (tests and tools).
pub fn server_text(frame: &[u8]) -> Option<&str> {
    let (&b0, &b1) = (frame.first()?, frame.get(1)?);
    if b0 != 0x80 | OP_TEXT {
        return None;
    }
    let (len, at) = match b1 {
        126 => (
            usize::from(u16::from_be_bytes([*frame.get(2)?, *frame.get(3)?])),
            4,
        ),
        127 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(frame.get(2..10)?);
            (usize::try_from(u64::from_be_bytes(a)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    std::str::from_utf8(frame.get(at..at + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser would send it.
    fn client(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 65535 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        unmask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    fn one(d: &mut Decoder, bytes: &[u8], limit: usize) -> Result<Decoded, Error> {
        d.decode(&mut bytes.to_vec(), limit)
    }

    #[test]
    fn text_binary_control_and_fragments() {
        let mut d = Decoder::default();
        let f = client(true, OP_TEXT, "héllo::wörld".as_bytes(), [1, 2, 3, 4]);
        assert_eq!(
            one(&mut d, &f, 1024).unwrap(),
            Decoded::Frame {
                consumed: f.len(),
                message: Some(Message::Text("héllo::wörld".into()))
            }
        );
        // Incomplete: every prefix asks for more.
        for cut in 0..f.len() {
            assert!(matches!(one(&mut d, &f[..cut], 1024), Ok(Decoded::Need(n)) if n > cut));
        }
        let mut frames = client(false, OP_TEXT, b"ab", [9, 9, 9, 9]);
        let ping = client(true, OP_PING, b"p", [7, 7, 7, 7]);
        let last = client(true, OP_CONTINUATION, b"cd", [5, 6, 7, 8]);
        let mut buf = frames.clone();
        buf.extend_from_slice(&ping);
        buf.extend_from_slice(&last);
        let mut at = 0;
        let mut got = Vec::new();
        while at < buf.len() {
            match d.decode(&mut buf[at..], 1024).unwrap() {
                Decoded::Frame { consumed, message } => {
                    at += consumed;
                    got.extend(message);
                }
                Decoded::Need(_) => panic!("complete input"),
            }
        }
        assert_eq!(
            got,
            vec![Message::Ping(b"p".to_vec()), Message::Text("abcd".into())]
        );
        frames = client(true, OP_BINARY, &[0xff; 300], [1, 1, 1, 1]);
        assert!(matches!(
            one(&mut d, &frames, 1024).unwrap(),
            Decoded::Frame {
                message: Some(Message::Binary(300)),
                ..
            }
        ));
        let close = client(
            true,
            OP_CLOSE,
            &[0x03, 0xe8, b'b', b'y', b'e'],
            [3, 3, 3, 3],
        );
        assert!(matches!(
            one(&mut d, &close, 1024).unwrap(),
            Decoded::Frame { message: Some(Message::Close(Some((1000, ref r)))), .. } if r == "bye"
        ));
    }

    #[test]
    fn limits_apply_at_the_header() {
        let mut d = Decoder::default();
        // Only the header of a 1 MiB frame: refused without its payload.
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 20).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            one(&mut d, &header, 65536),
            Err(Error::TooBig {
                size: 1 << 20,
                limit: 65536
            })
        );
        // Fragments add up.
        let mut d = Decoder::default();
        let a = client(false, OP_TEXT, &[b'a'; 600], [1, 2, 3, 4]);
        assert!(one(&mut d, &a, 1000).is_ok());
        let b = client(true, OP_CONTINUATION, &[b'a'; 600], [1, 2, 3, 4]);
        assert!(matches!(
            one(&mut d, &b[..14], 1000),
            Err(Error::TooBig { size: 1200, .. })
        ));
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x81, 0x00], "unmasked"),
            (vec![0xC1, 0x80, 0, 0, 0, 0], "reserved"),
            (vec![0x83, 0x80, 0, 0, 0, 0], "opcode"),
            (client(false, OP_PING, b"", [0; 4]), "fragmented control"),
            (client(true, OP_PING, &[0; 126], [0; 4]), "125"),
            (client(true, OP_CONTINUATION, b"x", [0; 4]), "continuation"),
            (client(true, OP_CLOSE, &[3], [0; 4]), "one-byte"),
            (client(true, OP_CLOSE, &[0, 5], [0; 4]), "close code"),
        ];
        for (bytes, needle) in cases {
            let err = one(&mut Decoder::default(), &bytes, 1024).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
            assert_eq!(err.close_code(), 1002);
        }
        let bad = client(true, OP_TEXT, &[0xff, 0xfe], [1, 2, 3, 4]);
        assert_eq!(one(&mut Decoder::default(), &bad, 1024), Err(Error::Utf8));
        let mut d = Decoder::default();
        one(&mut d, &client(false, OP_TEXT, b"a", [0; 4]), 1024).unwrap();
        assert!(one(&mut d, &client(true, OP_TEXT, b"b", [0; 4]), 1024).is_err());
    }

    #[test]
    fn server_frames() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = "x".repeat(len);
            let f = text(&payload);
            assert_eq!(server_text(&f), Some(payload.as_str()));
        }
        assert_eq!(
            server_text(&text_parts(&["echo", "::", "hi"])),
            Some("echo::hi")
        );
        let c = close(1008, &"é".repeat(100));
        assert!(c.len() <= 127);
        assert_eq!(&c[..4], &[0x88, (c.len() - 2) as u8, 0x03, 0xf0]);
        assert_eq!(&pong(b"abc")[..], &[0x8A, 3, b'a', b'b', b'c']);
        assert_eq!(&ping()[..], &[0x89, 0]);
    }

    #[test]
    fn unmask_matches_the_bytewise_rule() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 1000] {
            let mut fast = data[..len].to_vec();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data[..len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }
}
