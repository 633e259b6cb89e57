//! Test harness for the end-to-end tests in `tests/tests/e2e/` (one test binary, a module per
//! area).
//!
//! - [`artifacts`]: the `yonexus` and `yonexus-follower` binaries and the bundled plugins that
//!   cargo built for this test run ([`bin`], [`plugin`]); a missing or stale one is an error
//!   naming the command that builds it. [`fixture`] builds the fixture plugins in their own
//!   workspace outside this one.
//! - [`HostProc`]: the real `yonexus` binary on an ephemeral loopback port, with a `command`
//!   notifier that appends `<identifier> <code>` to `codes.txt` in the test directory.
//! - [`Raw`]: a raw WebSocket follower that speaks frames directly, for protocol tests.
//! - [`Identity`]: a follower's keypair and secret, with pairing and auth helpers.
//! - [`services`]: a private PostgreSQL and a `nats-server`, on ephemeral loopback ports.
//! - [`tools`]: the system build tools some tests run (a C compiler, `make`).

pub mod artifacts;
pub mod services;
pub mod tools;

pub use artifacts::{bin, plugin, profile_dir, try_bin, try_plugin, workspace_root};

pub mod browser;
use anyhow::{anyhow, bail, Context, Result};
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yonexus_protocol::envelope::Message as Msg;
use yonexus_protocol::{signing, validate, Envelope, Frame};

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `[[plugins]]` entries routing each bundled plugin's own rule to it.
pub fn bundled_plugins(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "[[plugins]]\nname = \"{n}\"\npath = \"{}\"\nrules = [\"{n}\"]\n",
                plugin(n).display()
            )
        })
        .collect()
}

/// A config for tests: ephemeral port (or `port`), state in `dir/state`, a `command` notifier
/// writing codes to `dir/codes.txt`, the bundled `echo` plugin, then `extra` TOML appended to
/// the `[pairing]` table verbatim (start a new table in `extra` to set others).
pub fn config_text(dir: &Path, port: u16, allow: &[&str], extra: &str) -> String {
    let script = dir.join("notify.sh");
    let codes = dir.join("codes.txt");
    let body = format!("#!/bin/sh\necho \"$YONEXUS_IDENTIFIER $YONEXUS_PAIRING_CODE $YONEXUS_EXPIRES_AT\" >> '{}'\n", codes.display());
    std::fs::write(&script, body).ok();
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n\n[followers]\nallow = [{}]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[pairing]\nnotify = \"command\"\ncommand = [\"/bin/sh\", \"{}\"]\n{extra}\n",
        bundled_plugins(&["echo"]),
        allow.join(", "),
        script.display()
    )
}

/// The codes the `command` notifier delivered for `identifier`, oldest first.
pub fn codes_for(dir: &Path, identifier: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join("codes.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(identifier))
                .then(|| parts.next().map(str::to_owned))
                .flatten()
        })
        .collect()
}

/// Wait until `f` returns Some, polling.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Let the kernel kill the child (SIGKILL) when the thread that starts it ends — with the test
/// that owns it, or with the whole test binary when that is killed (a CI timeout, Ctrl-C), which
/// runs no `Drop`: the hosts of the tests then running no longer outlive it. A test's own
/// thread lives as long as its host, which it drops (and so stops) first.
pub fn die_with_this_thread(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: it would never fire (an OS error, no allocation).
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Start `command` from a thread that lives as long as the test process, with
/// [`die_with_this_thread`]: for a service shared by many tests (PostgreSQL, nats-server), which
/// must outlive the test that first needed it, but not the test binary.
pub fn spawn_for_the_process(command: Command) -> std::io::Result<Child> {
    type Job = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<std::io::Result<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("process-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    die_with_this_thread(&mut command);
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| tx)
    });
    let gone = || std::io::Error::other("the process-keeper thread is gone");
    let keeper = keeper
        .as_ref()
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    keeper.send((command, tx)).map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

/// The real host binary, running.
pub struct HostProc {
    child: Child,
    pub addr: SocketAddr,
    /// The admin HTTP address (`/metrics`, `/healthz`, `/readyz`), when enabled.
    pub admin: Option<SocketAddr>,
    pub dir: PathBuf,
    pub config: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    /// The thread reading the host's stderr into `logs` (it ends when the pipe closes).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl HostProc {
    /// Write `config` to `dir/yonexus.toml` and start `yonexus serve` on it.
    pub fn start(dir: &Path, config: &str) -> Result<HostProc> {
        Self::start_logging(dir, config, "debug")
    }

    /// [`HostProc::start`] for a restart on the port an earlier host had (for followers that
    /// reconnect to the URL they know). Another process may hold that port for a moment while no
    /// host listens on it (an outgoing connection's ephemeral port): retried for up to 10 s.
    pub fn start_again(dir: &Path, config: &str) -> Result<HostProc> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::start(dir, config) {
                Err(e)
                    if format!("{e:#}").contains("Address already in use")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// [`HostProc::start`] with `RUST_LOG` set to `rust_log`.
    pub fn start_logging(dir: &Path, config: &str, rust_log: &str) -> Result<HostProc> {
        Self::spawn(dir, config, rust_log, &[])
    }

    /// [`HostProc::start`] with extra environment variables for the host (e.g. the variable
    /// its config names for a token): set on the child only, never on the test process, whose
    /// other tests run concurrently.
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Result<HostProc> {
        Self::spawn(dir, config, "debug", env)
    }

    fn spawn(dir: &Path, config: &str, rust_log: &str, env: &[(&str, &str)]) -> Result<HostProc> {
        let path = dir.join("yonexus.toml");
        std::fs::write(&path, config)?;
        let mut command = Command::new(bin("yonexus"));
        die_with_this_thread(&mut command);
        let mut child = command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning yonexus")?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("YONEXUS_TEST_ECHO_LOGS").is_some() {
                    eprintln!("host: {line}");
                }
                sink.lock().map(|mut l| l.push(line)).ok();
            }
        });
        let mut host = HostProc {
            child,
            addr: "127.0.0.1:0".parse()?,
            admin: None,
            dir: dir.to_owned(),
            config: path,
            logs,
            reader: None,
        };
        // Until the host says where it listens, or exits (a refused start: stop waiting at
        // once, after its last stderr line is in).
        let mut exited = false;
        let addr = wait_for(Duration::from_secs(20), || {
            let found = host.logs().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "listening")
                    .then(|| v["fields"]["address"].as_str()?.parse().ok())
                    .flatten()
            });
            exited = found.is_none() && matches!(host.child.try_wait(), Ok(Some(_)));
            found.map(Some).or(exited.then_some(None))
        })
        .flatten();
        if exited {
            // The pipe closes with the host (a notifier child could hold it: then do not wait).
            let _ = wait_for(Duration::from_secs(2), || {
                reader.is_finished().then_some(())
            });
        }
        let wants_admin = !config.contains("listen = \"off\"");
        let admin_line = || {
            host.logs().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                let message = v["fields"]["message"].as_str()?;
                message
                    .starts_with("admin HTTP listening")
                    .then(|| v["fields"]["address"].as_str()?.parse::<SocketAddr>().ok())
                    .flatten()
            })
        };
        let admin = if wants_admin && addr.is_some() {
            wait_for(Duration::from_secs(5), admin_line)
        } else {
            None
        };
        host.admin = admin;
        host.reader = Some(reader);
        match addr {
            Some(a) => host.addr = a,
            None => {
                let status = host.child.try_wait().ok().flatten();
                bail!(
                    "host did not start (exit {status:?}); stderr:\n{}",
                    host.logs().join("\n")
                );
            }
        }
        Ok(host)
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every line the host wrote, all of it: stops the host, then waits (up to 5 s) for the
    /// reader to take in the rest of its stderr. For checks that something never appears in
    /// the log (a secret), which [`HostProc::logs`] could pass while lines are still in flight.
    pub fn all_logs(&mut self) -> Vec<String> {
        self.stop();
        if let Some(reader) = self.reader.take() {
            let _ = wait_for(Duration::from_secs(5), || {
                reader.is_finished().then_some(())
            });
        }
        self.logs()
    }

    /// Send SIGTERM and wait for exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from the host's admin HTTP endpoint; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http(addr, "GET", path, &[], "")
}

/// One HTTP/1.1 request to `addr` (addressed to it by `Host`, a loopback name for a loopback
/// admin port), `Connection: close`; returns (status code, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of one sample in Prometheus text (`name{labels}` exactly as written), or 0.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Run the `yonexus` CLI with `args` (and `--config <host config>`); returns (status, stdout, stderr).
pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("yonexus"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output();
    match out {
        Ok(o) => (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (-1, String::new(), e.to_string()),
    }
}

/// Something received from the host.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Control(Envelope),
    Rule(String),
    Closed(Option<(u16, String)>),
}

/// A raw WebSocket follower.
pub struct Raw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

impl Raw {
    pub async fn connect(url: &str) -> Result<Raw> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Raw { ws })
    }

    /// Like [`Raw::connect`] (a `ws://` URL), over a socket whose receive buffer is `bytes`,
    /// set before connecting so the kernel does not grow it: a follower that stops reading
    /// backs the host up quickly.
    pub async fn connect_with_receive_buffer(url: &str, bytes: u32) -> Result<Raw> {
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| anyhow!("not a ws:// URL: {url}"))?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(bytes)?;
        let stream = socket.connect(authority.parse()?).await?;
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await?;
        Ok(Raw { ws })
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// Send a control envelope with `type` and `payload`.
    pub async fn send(&mut self, type_name: &str, payload: Value) -> Result<()> {
        let text = format!(
            "builtin::{}",
            json!({"type": type_name, "timestamp": now(), "payload": payload})
        );
        self.send_text(&text).await
    }

    /// Next frame (control, rule, or the close), within [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Result<Incoming> {
        self.recv_within(RECV_TIMEOUT).await
    }

    pub async fn recv_within(&mut self, timeout: Duration) -> Result<Incoming> {
        loop {
            let next = tokio::time::timeout(timeout, self.ws.next())
                .await
                .map_err(|_| anyhow!("timed out waiting for a frame"))?;
            match next {
                None => return Ok(Incoming::Closed(None)),
                Some(Err(_)) => return Ok(Incoming::Closed(None)),
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Incoming::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ))
                }
                Some(Ok(Message::Text(t))) => {
                    return Ok(match yonexus_protocol::frame::parse(t.as_str()) {
                        Ok(Frame::Builtin(json)) => Incoming::Control(Envelope::decode(json)?),
                        _ => Incoming::Rule(t.to_string()),
                    })
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Next frame must be a control message; returns it.
    pub async fn control(&mut self) -> Result<Msg> {
        match self.recv().await? {
            Incoming::Control(env) => Ok(env.message),
            other => bail!("expected a control frame, got {other:?}"),
        }
    }

    /// Next frame must be the close frame; returns (code, reason).
    pub async fn closed(&mut self) -> Result<(u16, String)> {
        loop {
            match self.recv().await? {
                Incoming::Closed(Some(c)) => return Ok(c),
                Incoming::Closed(None) => bail!("connection ended without a close frame"),
                _ => continue,
            }
        }
    }

    /// Next frame must be an `error`; returns (code as wire string, message).
    pub async fn error(&mut self) -> Result<(String, String)> {
        match self.control().await? {
            Msg::Error(e) => Ok((
                serde_json::to_value(e.code)?
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e.message,
            )),
            other => bail!("expected error, got {other:?}"),
        }
    }

    /// The underlying WebSocket (to split it for concurrent sending and receiving).
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A follower identity for raw tests.
pub struct Identity {
    pub id: String,
    pub key: SigningKey,
    pub secret: Option<String>,
}

impl Identity {
    pub fn new(id: &str) -> Identity {
        Identity {
            id: id.into(),
            key: signing::generate_signing_key(),
            secret: None,
        }
    }

    pub fn public_key(&self) -> String {
        signing::encode_base64(&self.key.verifying_key().to_bytes())
    }

    /// Send `hello`; returns the `hello_ack.nextAction` as its wire string.
    pub async fn hello(&self, raw: &mut Raw) -> Result<String> {
        raw.send("hello", json!({"identifier": self.id, "protocolVersion": "1", "publicKey": self.public_key(), "hasSecret": self.secret.is_some(), "hasKeyPair": true})).await?;
        match raw.control().await? {
            Msg::HelloAck(ack) => Ok(serde_json::to_value(ack.next_action)?
                .as_str()
                .unwrap_or_default()
                .to_owned()),
            other => bail!("expected hello_ack, got {other:?}"),
        }
    }

    /// Pair on `raw` through the whole flow, reading the code the notifier delivered to `dir`.
    pub async fn pair(&mut self, raw: &mut Raw, dir: &Path) -> Result<()> {
        let action = self.hello(raw).await?;
        if action != "pair_required" {
            bail!("expected pair_required, got {action}");
        }
        match raw.control().await? {
            Msg::PairRequest(req) => {
                if req.code_delivery != "out_of_band" {
                    bail!("code delivery {}", req.code_delivery);
                }
            }
            other => bail!("expected pair_request, got {other:?}"),
        }
        let code = codes_for(dir, &self.id)
            .pop()
            .ok_or_else(|| anyhow!("no code delivered for {}", self.id))?;
        raw.send(
            "pair_confirm",
            json!({"identifier": self.id, "pairingCode": code}),
        )
        .await?;
        match raw.control().await? {
            Msg::PairSuccess(s) => {
                self.secret = Some(s.secret);
                Ok(())
            }
            other => bail!("expected pair_success, got {other:?}"),
        }
    }

    /// An `auth_request` payload with a fresh nonce at `ts`.
    pub fn auth_payload(&self, nonce: &str, ts: i64) -> Value {
        let secret = self.secret.clone().unwrap_or_default();
        json!({
            "identifier": self.id,
            "nonce": nonce,
            "proofTimestamp": ts,
            "signature": signing::sign(&self.key, &secret, nonce, ts),
            "publicKey": self.public_key(),
        })
    }

    /// Authenticate with a fresh nonce; returns the reply.
    pub async fn auth(&self, raw: &mut Raw) -> Result<Msg> {
        raw.send(
            "auth_request",
            self.auth_payload(&validate::generate_nonce(), now()),
        )
        .await?;
        raw.control().await
    }

    /// hello + auth, expecting success.
    pub async fn login(&self, raw: &mut Raw) -> Result<()> {
        let action = self.hello(raw).await?;
        if action != "auth_required" {
            bail!("expected auth_required, got {action}");
        }
        match self.auth(raw).await? {
            Msg::AuthSuccess(_) => Ok(()),
            other => bail!("expected auth_success, got {other:?}"),
        }
    }
}

/// A follower-library pairing-code source that reads the codes the `command` notifier wrote
/// to `dir` (as an admin relaying the code would).
pub fn code_provider(dir: &Path) -> yonexus_follower::CodeProvider {
    let dir = dir.to_owned();
    Arc::new(move |prompt| {
        let dir = dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                wait_for(Duration::from_secs(10), || {
                    codes_for(&dir, &prompt.identifier).pop()
                })
            })
            .await
            .ok()
            .flatten()
        })
    })
}

/// Connect, pair and authenticate a fresh identity.
pub async fn paired_session(host: &HostProc, id: &str) -> Result<(Raw, Identity)> {
    let mut raw = Raw::connect(&host.url()).await?;
    let mut ident = Identity::new(id);
    ident.pair(&mut raw, &host.dir).await?;
    match ident.auth(&mut raw).await? {
        Msg::AuthSuccess(_) => Ok((raw, ident)),
        other => bail!("expected auth_success, got {other:?}"),
    }
}

/// Fixture plugins built once in their own cargo workspace outside this one (path dependency
/// on `plugin-api` only), returned by name:
/// - `ok`: `host/tests/fixtures/plugins/ok.rs` (content `panic`, `sleep:<ms>`, `log:<text>`,
///   `err`, else echo; config key `refuse` makes creation fail);
/// - `versioned`: `tests/fixtures/versioned.rs` (replies `<content>@YNXVER-0000`; see
///   [`versioned_copy`]);
/// - `abi2`: a real plugin whose header claims the next ABI major.
pub fn fixture(name: &str) -> PathBuf {
    static WS: OnceLock<PathBuf> = OnceLock::new();
    let ws = WS.get_or_init(|| {
        let root = workspace_root();
        let ws = root.join("target").join("e2e-fixture");
        let api = root.join("plugin-api").display().to_string();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
        let hacked = format!(
            "macro_rules! HACK {{ ($h:ident) => {{ $h.0.abi_major = yonexus_plugin_api::abi::ABI_MAJOR + 1; }}; }}\n\
             macro_rules! VT_HACK {{ ($v:ident) => {{}}; }}\n{}",
            read("host/tests/fixtures/plugins/hacked_header.rs")
        );
        let crates = [
            ("ok", read("host/tests/fixtures/plugins/ok.rs")),
            ("versioned", read("tests/fixtures/versioned.rs")),
            ("abi2", hacked),
        ];
        let mut files = vec![(
            ws.join("Cargo.toml"),
            "[workspace]\nresolver = \"2\"\nmembers = [\"ok\", \"versioned\", \"abi2\"]\n".to_owned(),
        )];
        for (name, src) in crates {
            files.push((
                ws.join(name).join("Cargo.toml"),
                format!(
                    "[package]\nname = \"e2e-{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nyonexus-plugin-api = {{ path = {api:?} }}\n"
                ),
            ));
            files.push((ws.join(name).join("src/lib.rs"), src));
        }
        for (path, text) in files {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).ok();
            }
            // Only when changed (cargo's fingerprints are mtimes), and by rename, so a test
            // process running beside this one (nextest) never reads half a file.
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                replace_by_rename(&path, text.as_bytes());
            }
        }
        // Its own target dir (target/e2e-fixture/target), so it never waits for the outer
        // cargo's lock; output captured, shown only on failure.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--offline", "--workspace", "--quiet"])
            .env_remove("CARGO_TARGET_DIR")
            .current_dir(&ws)
            .output();
        match out {
            Ok(o) if o.status.success() => ws,
            Ok(o) => panic!(
                "building the fixture plugins in {} failed ({}):\n{}",
                ws.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("building the fixture plugins: cannot run cargo: {e}"),
        }
    });
    ws.join(format!("target/debug/libe2e_{name}.so"))
}

/// The bytes of the `versioned` fixture with its tag rewritten to `YNXVER-<version:04>`.
pub fn versioned_bytes(version: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(fixture("versioned")).unwrap_or_default();
    let marker = b"YNXVER-0000";
    let new = format!("YNXVER-{version:04}");
    let mut found = 0;
    let mut i = 0;
    while i + marker.len() <= bytes.len() {
        if &bytes[i..i + marker.len()] == marker {
            bytes[i..i + marker.len()].copy_from_slice(new.as_bytes());
            found += 1;
            i += marker.len();
        } else {
            i += 1;
        }
    }
    assert!(
        found >= 1,
        "version marker not found in the fixture library"
    );
    bytes
}

/// Replace `path` the way cargo and editors do: write a temp file next to it, then rename.
pub fn replace_by_rename(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).ok();
    std::fs::rename(&tmp, path).ok();
}
