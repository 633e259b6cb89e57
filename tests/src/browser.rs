//! A small Chrome DevTools Protocol client: Debian's headless Chromium, driven over its DevTools
//! WebSocket, for tests that check what a person sees in a real browser.
//!
//! [`Browser::launch`] starts `/usr/bin/chromium` (or `$YONEXUS_CHROMIUM`) headless with a
//! fresh profile in a temporary directory and `--remote-debugging-port=0` ([`Browser::launch_with`]
//! adds switches, e.g. `--host-resolver-rules` to point a name at 127.0.0.1), reads the DevTools
//! URL from its stderr, opens one page and attaches to it (flat session). Then:
//! [`Browser::goto`], [`Browser::eval`] (`Runtime.evaluate` with `awaitPromise` and
//! `returnByValue`), [`Browser::wait_until`], [`Browser::click`], [`Browser::type_text`]
//! (`Input.insertText` into a focused element), [`Browser::screenshot_png`]. Uncaught
//! exceptions and console errors of the page are collected ([`Browser::page_errors`]).
//! Dropping the browser kills its whole process group.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to print its DevTools URL.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The viewport of the page.
pub const VIEWPORT: (u32, u32) = (1280, 900);

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// The Chromium binary: `$YONEXUS_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("YONEXUS_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// A headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    sink: tokio::sync::Mutex<Sink>,
    pending: Pending,
    next_id: AtomicU64,
    session: String,
    errors: Arc<Mutex<Vec<String>>>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Browser {
    /// Start Chromium and open a blank page.
    pub async fn launch() -> Result<Browser> {
        Self::launch_with(&[]).await
    }

    /// [`Browser::launch`] with `extra` command-line switches.
    pub async fn launch_with(extra: &[&str]) -> Result<Browser> {
        let path = chromium_path();
        if !path.exists() {
            bail!(
                "{} not found: install Debian's chromium (`apt-get install -y chromium`) or set YONEXUS_CHROMIUM",
                path.display()
            );
        }
        let profile = tempfile::tempdir().context("profile directory")?;
        let mut child = Command::new(&path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so that dropping the browser ends every helper process.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let tail = Arc::new(Mutex::new(Vec::new()));
        let sink_tail = Arc::clone(&tail);
        std::thread::spawn(move || {
            // Read until Chromium exits (a full pipe would block it).
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = url_tx.send(url.trim().to_owned());
                }
                if let Ok(mut t) = sink_tail.lock() {
                    t.push(line);
                    if t.len() > 50 {
                        t.remove(0);
                    }
                }
            }
        });
        let url = match tokio::task::spawn_blocking(move || url_rx.recv_timeout(START_TIMEOUT))
            .await?
        {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = tail.lock().map(|t| t.join("\n")).unwrap_or_default();
                bail!("chromium printed no DevTools URL within {START_TIMEOUT:?}; stderr:\n{tail}");
            }
        };
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connecting to DevTools at {url}"))?;
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (p, e) = (Arc::clone(&pending), Arc::clone(&errors));
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(id) = v["id"].as_u64() {
                    let waiter = p.lock().ok().and_then(|mut m| m.remove(&id));
                    if let Some(w) = waiter {
                        let answer = match v.get("error") {
                            Some(err) => Err(err.to_string()),
                            None => Ok(v["result"].clone()),
                        };
                        let _ = w.send(answer);
                    }
                } else if let Some(problem) = page_problem(&v) {
                    if let Ok(mut errs) = e.lock() {
                        errs.push(problem);
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            _profile: profile,
            sink: tokio::sync::Mutex::new(sink),
            pending,
            next_id: AtomicU64::new(1),
            session: String::new(),
            errors,
            stderr_tail: tail,
            reader,
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("no targetId in {target}"))?
            .to_owned();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {attached}"))?
            .to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.page(domain, json!({})).await?;
        }
        browser
            .page(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await?;
        Ok(browser)
    }

    /// Send a browser-level command.
    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.send(method, params, None).await
    }

    /// Send a command to the page's session.
    pub async fn page(&self, method: &str, params: Value) -> Result<Value> {
        let session = self.session.clone();
        self.send(method, params, Some(&session)).await
    }

    async fn send(&self, method: &str, params: Value, session: Option<&str>) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| anyhow!("pending map poisoned"))?
            .insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Message::text(msg.to_string()))
            .await
            .with_context(|| format!("sending {method}"))?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => bail!("{method} failed: {e}"),
            Ok(Err(_)) => bail!("{method}: the DevTools connection closed{}", self.tail()),
            Err(_) => bail!("{method}: no answer within {CALL_TIMEOUT:?}{}", self.tail()),
        }
    }

    fn tail(&self) -> String {
        let t = self
            .stderr_tail
            .lock()
            .map(|t| t.join("\n"))
            .unwrap_or_default();
        format!("; chromium stderr:\n{t}")
    }

    /// Navigate and wait for the document to finish loading.
    pub async fn goto(&self, url: &str) -> Result<()> {
        let r = self.page("Page.navigate", json!({ "url": url })).await?;
        if let Some(e) = r["errorText"].as_str().filter(|e| !e.is_empty()) {
            bail!("navigating to {url}: {e}");
        }
        self.wait_until(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )
        .await
        .map(|_| ())
    }

    /// Evaluate `expression` in the page (promises awaited); returns its value as JSON
    /// (`null` for `undefined`). A thrown exception is an error.
    pub async fn eval(&self, expression: &str) -> Result<Value> {
        let r = self
            .page(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await?;
        if let Some(details) = r.get("exceptionDetails") {
            let what = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception");
            bail!("{what} (evaluating `{expression}`)");
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Poll `expression` until its value is truthy; returns that value.
    pub async fn wait_until(&self, expression: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.eval(expression).await {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => v,
                Err(e) => json!(e.to_string()),
            };
            if Instant::now() >= deadline {
                bail!("waited {timeout:?} for `{expression}`; last value: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Click the first element matching the CSS `selector` (an error if there is none).
    pub async fn click(&self, selector: &str) -> Result<()> {
        let sel = serde_json::to_string(selector)?;
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) throw new Error('nothing matches ' + {sel}); e.click(); return true; }})()"
        ))
        .await
        .map(|_| ())
    }

    /// Focus the element matching `selector` and type `text` into it.
    pub async fn type_text(&self, selector: &str, text: &str) -> Result<()> {
        let sel = serde_json::to_string(selector)?;
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) throw new Error('nothing matches ' + {sel}); e.focus(); return true; }})()"
        ))
        .await?;
        self.page("Input.insertText", json!({ "text": text }))
            .await
            .map(|_| ())
    }

    /// A PNG of the whole page (beyond the viewport).
    pub async fn screenshot_png(&self) -> Result<Vec<u8>> {
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .await?
            .as_f64()
            .unwrap_or(f64::from(VIEWPORT.1));
        let r = self
            .page(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": VIEWPORT.0, "height": height, "scale": 1 },
                }),
            )
            .await?;
        let data = r["data"]
            .as_str()
            .ok_or_else(|| anyhow!("no screenshot data"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
    }

    /// Uncaught exceptions and console errors the page reported so far.
    pub fn page_errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
        // The process group Chromium leads (see `process_group(0)` above): it and its helpers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JS value's truthiness.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// An uncaught exception or console/log error from a DevTools event.
fn page_problem(v: &Value) -> Option<String> {
    let p = &v["params"];
    match v["method"].as_str()? {
        "Runtime.exceptionThrown" => Some(format!(
            "exception: {}",
            p["exceptionDetails"]["exception"]["description"]
                .as_str()
                .or_else(|| p["exceptionDetails"]["text"].as_str())
                .unwrap_or("?")
        )),
        "Runtime.consoleAPICalled" if p["type"] == "error" => Some(format!(
            "console.error: {}",
            p["args"]
                .as_array()
                .map(|a| a
                    .iter()
                    .map(|x| x["value"].to_string())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        )),
        "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!(
            "log: {} {}",
            p["entry"]["text"].as_str().unwrap_or("?"),
            p["entry"]["url"].as_str().unwrap_or("")
        )),
        _ => None,
    }
}
