//! Follower identities (keypair + secret, cached in `--state-dir`), where pairing codes are
//! delivered (the file the host's `command` notifier appends to, or the Node peer's directory of
//! `<identifier>.code` files), and the real pairing and authentication flows.

use crate::stamped::StampedTcp;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use yonexus_protocol::envelope::{Message as Msg, NextAction};
use yonexus_protocol::{signing, validate, Envelope, Frame};

/// A follower's socket: plain `ws://` over a TCP stream whose reads are time-stamped.
pub type Ws = WebSocketStream<StampedTcp>;

/// How long to wait for any single reply during pairing and authentication.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The client's WebSocket limits: an 8 KiB read buffer (the default 128 KiB per connection
/// would dominate the generator's memory at thousands of followers).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Open a WebSocket to `url` (`ws://` only) with Nagle disabled and arrival time stamps on.
pub async fn connect(url: &str) -> Result<Ws> {
    let uri: Uri = url.parse().with_context(|| format!("{url}: not a URL"))?;
    if uri.scheme_str() != Some("ws") {
        bail!("{url}: the bench speaks plain ws:// only");
    }
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("{url}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tcp.set_nodelay(true)?;
    let io = StampedTcp::new(tcp).context("turning on SO_TIMESTAMPNS")?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, io, Some(ws_config()))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

/// One follower identity.
#[derive(Clone)]
pub struct Identity {
    pub id: String,
    pub key: SigningKey,
    pub secret: Option<String>,
}

impl Identity {
    pub fn public_key(&self) -> String {
        signing::encode_base64(&self.key.verifying_key().to_bytes())
    }
}

/// The identity cache: `<dir>/<identifier>.json` = `{"identifier","key","secret"}` (mode 0600
/// is not enforced: these are throwaway bench identities).
pub struct IdentityStore {
    dir: PathBuf,
}

impl IdentityStore {
    pub fn open(dir: &Path) -> Result<IdentityStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))?;
        Ok(IdentityStore {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The cached identity, or a fresh keypair without a secret.
    pub fn get(&self, id: &str) -> Result<Identity> {
        let path = self.path(id);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Identity {
                    id: id.to_owned(),
                    key: signing::generate_signing_key(),
                    secret: None,
                })
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let key = v["key"]
            .as_str()
            .and_then(|k| STANDARD.decode(k).ok())
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| anyhow!("{}: field 'key' is not 32 bytes of base64", path.display()))?;
        Ok(Identity {
            id: id.to_owned(),
            key: SigningKey::from_bytes(&key),
            secret: v["secret"].as_str().map(str::to_owned),
        })
    }

    pub fn save(&self, ident: &Identity) -> Result<()> {
        let path = self.path(&ident.id);
        let doc = json!({
            "identifier": ident.id,
            "key": STANDARD.encode(ident.key.to_bytes()),
            "secret": ident.secret,
        });
        let tmp = self.dir.join(format!(".{}.tmp", ident.id));
        std::fs::write(&tmp, doc.to_string())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))
    }
}

type CodeMap = HashMap<String, Vec<(String, i64)>>;

/// Where pairing codes arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    /// A file of `<identifier> <code> <expires>` lines, appended to by the host's `command`
    /// notifier (`yonexus-bench config` writes one); codes are matched to a `pair_request` by
    /// its `expiresAt`.
    File(PathBuf),
    /// A directory holding one `<identifier>.code` file per pending pairing, written atomically
    /// before the `pair_request` is sent and overwritten by the next pairing (the Node peer's
    /// `--code-dir`). The identifier is percent-encoded like JavaScript's `encodeURIComponent`.
    Dir(PathBuf),
}

impl CodeSource {
    /// The directory the identity cache defaults to being next to.
    pub fn parent(&self) -> Option<&Path> {
        match self {
            CodeSource::File(p) | CodeSource::Dir(p) => p.parent(),
        }
    }

    fn describe(&self) -> String {
        match self {
            CodeSource::File(p) => format!(
                "in {} (is the host's pairing.notify = \"command\" appending to this file?)",
                p.display()
            ),
            CodeSource::Dir(p) => format!("in {} (is this the peer's --code-dir?)", p.display()),
        }
    }
}

/// `encodeURIComponent`: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )` as `%XX` of its UTF-8.
pub fn uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Hands pairing codes to waiting pairings. For a codes file it tails the file (see
/// [`Codes::spawn_watcher`]); for a code directory it reads `<identifier>.code` when asked.
pub struct Codes {
    source: CodeSource,
    /// Bytes read so far, and identifier → [(code, expires_at)] in file order (file source).
    seen: Mutex<(u64, CodeMap)>,
    changed: Notify,
}

impl Codes {
    pub fn new(source: CodeSource) -> Arc<Codes> {
        Arc::new(Codes {
            source,
            seen: Mutex::new((0, HashMap::new())),
            changed: Notify::new(),
        })
    }

    /// Read what was appended to the codes file since the last call.
    fn poll(&self) {
        use std::io::{Read, Seek, SeekFrom};
        let CodeSource::File(path) = &self.source else {
            return;
        };
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < seen.0 {
            seen.0 = 0; // truncated: start over
        }
        if len == seen.0 || f.seek(SeekFrom::Start(seen.0)).is_err() {
            return;
        }
        let mut buf = String::new();
        if f.read_to_string(&mut buf).is_err() {
            return;
        }
        // Only whole lines; a line being written is picked up next time.
        let complete = buf.rfind('\n').map(|i| i + 1).unwrap_or(0);
        for line in buf[..complete].lines() {
            let mut parts = line.split_whitespace();
            if let (Some(id), Some(code)) = (parts.next(), parts.next()) {
                let exp = parts.next().and_then(|e| e.parse().ok()).unwrap_or(0);
                seen.1
                    .entry(id.to_owned())
                    .or_default()
                    .push((code.to_owned(), exp));
            }
        }
        seen.0 += complete as u64;
        drop(seen);
        if complete > 0 {
            self.changed.notify_waiters();
        }
    }

    /// Poll the codes file every 10 ms until the returned handle is aborted (a code directory
    /// needs no watcher: the task ends at once).
    pub fn spawn_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if matches!(me.source, CodeSource::Dir(_)) {
                return;
            }
            loop {
                me.poll();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    /// The code for `id`. From a codes file: the one whose expiry is `expires` (or, with
    /// `None`, the latest one). From a code directory: the content of `<id>.code` (the peer
    /// writes it before it sends `pair_request`, so it is the current pairing's code).
    pub async fn wait(&self, id: &str, expires: Option<i64>, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        if let CodeSource::Dir(dir) = &self.source {
            let path = dir.join(format!("{}.code", uri_component(id)));
            loop {
                match std::fs::read_to_string(&path) {
                    Ok(code) if !code.trim().is_empty() => return Ok(code.trim().to_owned()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "no pairing code for '{id}' appeared {} within {timeout:?}",
                        self.source.describe()
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        loop {
            let notified = self.changed.notified();
            {
                let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let found = seen.1.get(id).and_then(|codes| {
                    codes
                        .iter()
                        .rev()
                        .find(|(_, e)| expires.is_none_or(|x| *e == x))
                        .map(|(c, _)| c.clone())
                });
                if let Some(code) = found {
                    return Ok(code);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "no pairing code for '{id}' appeared {} within {timeout:?}",
                    self.source.describe()
                );
            }
        }
    }
}

async fn send_control(ws: &mut Ws, type_name: &str, payload: Value) -> Result<()> {
    let text = format!(
        "builtin::{}",
        json!({"type": type_name, "timestamp": unix_now(), "payload": payload})
    );
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// The next control message (rule messages and pings are skipped).
async fn recv_control(ws: &mut Ws) -> Result<Msg> {
    loop {
        let next = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for the host's reply"))?;
        match next {
            None => bail!("host closed the connection"),
            Some(Err(e)) => bail!("connection error: {e}"),
            Some(Ok(Message::Close(f))) => bail!("host closed the connection: {f:?}"),
            Some(Ok(Message::Text(t))) => {
                if let Ok(Frame::Builtin(json)) = yonexus_protocol::frame::parse(t.as_str()) {
                    let env = Envelope::decode(json).map_err(|e| anyhow!("bad envelope: {e}"))?;
                    return Ok(env.message);
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn hello(ws: &mut Ws, ident: &Identity) -> Result<NextAction> {
    send_control(
        ws,
        "hello",
        json!({"identifier": ident.id, "protocolVersion": "1", "publicKey": ident.public_key(),
               "hasSecret": ident.secret.is_some(), "hasKeyPair": true}),
    )
    .await?;
    match recv_control(ws).await? {
        Msg::HelloAck(ack) => Ok(ack.next_action),
        Msg::Error(e) => bail!(
            "hello refused for '{}': {:?} {}",
            ident.id,
            e.code,
            e.message
        ),
        other => bail!("expected hello_ack, got {}", other.type_name()),
    }
}

async fn confirm(ws: &mut Ws, ident: &mut Identity, code: &str) -> Result<()> {
    send_control(
        ws,
        "pair_confirm",
        json!({"identifier": ident.id, "pairingCode": code}),
    )
    .await?;
    match recv_control(ws).await? {
        Msg::PairSuccess(s) => {
            ident.secret = Some(s.secret);
            Ok(())
        }
        Msg::PairFailed(f) => bail!("pairing '{}' failed: {:?}", ident.id, f.reason),
        other => bail!("expected pair_success, got {}", other.type_name()),
    }
}

async fn auth(ws: &mut Ws, ident: &Identity) -> Result<()> {
    let secret = ident.secret.as_deref().unwrap_or_default();
    let nonce = validate::generate_nonce();
    let ts = unix_now();
    send_control(
        ws,
        "auth_request",
        json!({"identifier": ident.id, "nonce": nonce, "proofTimestamp": ts,
               "signature": signing::sign(&ident.key, secret, &nonce, ts),
               "publicKey": ident.public_key()}),
    )
    .await?;
    match recv_control(ws).await? {
        Msg::AuthSuccess(_) => Ok(()),
        Msg::AuthFailed(f) => bail!("auth of '{}' failed: {:?}", ident.id, f.reason),
        Msg::RePairRequired(r) => bail!(
            "auth of '{}': host revoked trust ({:?}); run again to pair anew",
            ident.id,
            r.reason
        ),
        other => bail!("expected auth_success, got {}", other.type_name()),
    }
}

/// Pair `ident` through the real flow on `ws` (after `hello` answered `action`).
async fn pair_on(
    ws: &mut Ws,
    ident: &mut Identity,
    action: NextAction,
    codes: &Codes,
    store: &IdentityStore,
) -> Result<()> {
    let code = match action {
        NextAction::PairRequired => {
            let expires = match recv_control(ws).await? {
                Msg::PairRequest(req) => req.expires_at,
                other => bail!("expected pair_request, got {}", other.type_name()),
            };
            codes.wait(&ident.id, Some(expires), REPLY_TIMEOUT).await?
        }
        NextAction::WaitingPairConfirm => codes.wait(&ident.id, None, REPLY_TIMEOUT).await?,
        other => bail!("cannot pair '{}': hello_ack said {other:?}", ident.id),
    };
    confirm(ws, ident, &code).await?;
    store.save(ident)
}

/// Make sure `ident` is paired (a cached secret is trusted as is; the login checks it).
pub async fn ensure_paired(
    url: &str,
    ident: &mut Identity,
    codes: &Codes,
    store: &IdentityStore,
) -> Result<bool> {
    if ident.secret.is_some() {
        return Ok(false);
    }
    let mut ws = connect(url).await?;
    let action = hello(&mut ws, ident).await?;
    match action {
        NextAction::AuthRequired => bail!(
            "'{}' is already paired on the host but its secret is not in the bench state dir; \
             use a fresh host state dir or another --id-prefix",
            ident.id
        ),
        NextAction::Rejected => bail!("host rejected '{}' (not on its allowlist?)", ident.id),
        a => pair_on(&mut ws, ident, a, codes, store).await?,
    }
    let _ = ws.close(None).await;
    Ok(true)
}

/// Connect, say hello and authenticate. If the host has forgotten the pairing (its state was
/// reset), pair again on the same connection first; returns whether that happened.
pub async fn login(
    url: &str,
    ident: &mut Identity,
    codes: &Codes,
    store: &IdentityStore,
) -> Result<(Ws, bool)> {
    let mut ws = connect(url).await?;
    let mut paired = false;
    match hello(&mut ws, ident).await? {
        NextAction::AuthRequired if ident.secret.is_some() => {}
        NextAction::AuthRequired => bail!(
            "'{}' is paired on the host but its secret is not cached; use a fresh host state dir",
            ident.id
        ),
        NextAction::Rejected => bail!("host rejected '{}' (not on its allowlist?)", ident.id),
        a => {
            pair_on(&mut ws, ident, a, codes, store).await?;
            paired = true;
        }
    }
    auth(&mut ws, ident).await?;
    Ok((ws, paired))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_the_store() {
        let dir = std::env::temp_dir().join(format!("yb-ident-{}", std::process::id()));
        let store = IdentityStore::open(&dir).unwrap();
        let mut a = store.get("bench-0").unwrap();
        assert!(a.secret.is_none());
        a.secret = Some("s3cret".into());
        store.save(&a).unwrap();
        let b = store.get("bench-0").unwrap();
        assert_eq!(b.key.to_bytes(), a.key.to_bytes());
        assert_eq!(b.secret.as_deref(), Some("s3cret"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn codes_are_matched_by_expiry() {
        let dir = std::env::temp_dir().join(format!("yb-codes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("codes.txt");
        std::fs::write(&path, "a OLD 10\nb X 11\na NEW 20\npartial").unwrap();
        let codes = Codes::new(CodeSource::File(path));
        codes.poll();
        let t = Duration::from_millis(50);
        assert_eq!(codes.wait("a", Some(10), t).await.unwrap(), "OLD");
        assert_eq!(codes.wait("a", None, t).await.unwrap(), "NEW");
        assert!(codes.wait("a", Some(30), t).await.is_err());
        assert!(codes.wait("partial", None, t).await.is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn identifiers_are_encoded_like_encode_uri_component() {
        assert_eq!(uri_component("bench-12"), "bench-12");
        assert_eq!(uri_component("a_b.c~d*e'(f)!"), "a_b.c~d*e'(f)!");
        assert_eq!(uri_component("a b/c"), "a%20b%2Fc");
        assert_eq!(uri_component("é"), "%C3%A9");
    }

    #[tokio::test]
    async fn codes_are_read_from_a_code_directory() {
        let dir = std::env::temp_dir().join(format!("yb-codedir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bench-3.code"), "ABCD2345").unwrap();
        std::fs::write(dir.join("x%20y.code"), "EFGH6789\n").unwrap();
        std::fs::write(dir.join("empty.code"), "").unwrap();
        let codes = Codes::new(CodeSource::Dir(dir.clone()));
        let t = Duration::from_millis(50);
        assert_eq!(codes.wait("bench-3", Some(1), t).await.unwrap(), "ABCD2345");
        assert_eq!(codes.wait("x y", None, t).await.unwrap(), "EFGH6789");
        let err = codes
            .wait("bench-4", None, t)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("--code-dir"), "{err}");
        assert!(codes.wait("empty", None, t).await.is_err());
        // A code that appears while waiting is picked up.
        let late = dir.join("late.code");
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            std::fs::write(late, "LATE2345").unwrap();
        });
        let got = codes
            .wait("late", None, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(got, "LATE2345");
        writer.await.unwrap();
        std::fs::remove_dir_all(dir).ok();
    }
}
