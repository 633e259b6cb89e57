//! The operator dashboard in a real browser (headless Chromium over the DevTools protocol)
//! against the real `yonexus` binary with real followers: it lists who connected, shows a
//! follower going offline without a reload, revokes from the page (the follower's socket gets
//! the close), reveals a pending code only after the token is typed in, is read-only without a
//! token, refuses cross-site actions, refuses to serve a page loaded under another name (DNS
//! rebinding), and a public admin port without a token does not start.
//!
//! `YONEXUS_DASHBOARD_SCREENSHOT=<path>` also writes the populated dashboard's screenshot there
//! (the README's `docs/dashboard.png` is made that way).

use anyhow::{bail, Result};
use serde_json::Value;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yonexus_e2e::browser::Browser;
use yonexus_e2e::*;
use yonexus_protocol::envelope::Message as Msg;

/// The environment variable the tests' hosts read their admin token from.
const TOKEN_ENV: &str = "YONEXUS_E2E_DASHBOARD_TOKEN";
const TOKEN: &str = "e2e-dashboard-token-5f1c9a0b7d3e";
/// A variable no one sets: a host naming it has no token (read-only).
const UNSET_ENV: &str = "YONEXUS_E2E_DASHBOARD_TOKEN_UNSET";
const WAIT: Duration = Duration::from_secs(15);

fn admin_section(token_env: &str, listen: &str) -> String {
    format!("[admin]\nlisten = \"{listen}\"\ntoken_env = \"{token_env}\"\n")
}

fn config(dir: &Path, allow: &[&str], token_env: &str, listen: &str) -> String {
    let text = config_text(dir, 0, allow, "");
    let default = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    assert!(text.contains(default), "the harness config changed: {text}");
    text.replace(default, &admin_section(token_env, listen))
}

fn start(dir: &Path, allow: &[&str], token_env: &str) -> HostProc {
    let config = config(dir, allow, token_env, "127.0.0.1:0");
    let host = HostProc::start_with_env(dir, &config, &[(TOKEN_ENV, TOKEN)]).unwrap();
    assert!(host.admin.is_some(), "admin port not announced");
    host
}

/// `GET path` addressed to `addr` (a loopback `Host`, as the admin port requires).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, &[], "").unwrap()
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

async fn echo_ok(raw: &mut Raw, text: &str) {
    raw.send_text(&format!("echo::{text}")).await.unwrap();
    assert_eq!(
        raw.recv().await.unwrap(),
        Incoming::Rule(format!("echo::{text}"))
    );
}

/// A follower that asked to pair and is waiting for the code (delivered to `codes.txt`).
async fn pending_pairing(host: &HostProc, id: &str) -> Raw {
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    let ident = Identity::new(id);
    assert_eq!(ident.hello(&mut raw).await.unwrap(), "pair_required");
    match raw.control().await.unwrap() {
        Msg::PairRequest(_) => {}
        other => panic!("expected pair_request, got {other:?}"),
    }
    wait_for(WAIT, || codes_for(&host.dir, id).pop()).expect("code delivered");
    raw
}

fn row(id: &str, field: &str) -> String {
    format!("document.querySelector('#followers tr[data-identifier=\"{id}\"] [data-field=\"{field}\"]')?.textContent")
}

async fn open_dashboard(admin: SocketAddr) -> Browser {
    let browser = Browser::launch().await.unwrap();
    browser.goto(&format!("http://{admin}/")).await.unwrap();
    browser
        .wait_until("document.body.dataset.loaded === 'true'", WAIT)
        .await
        .unwrap();
    browser
}

fn is_visible(selector: &str) -> String {
    format!("(() => {{ const e = document.querySelector('{selector}'); return !!e && e.offsetParent !== null; }})()")
}

#[tokio::test]
async fn the_page_follows_followers_live_and_acts_with_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let mut host = start(tmp.path(), &["alpha", "beta", "gamma"], TOKEN_ENV);
    let admin = host.admin.unwrap();
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    let (mut beta, _) = paired_session(&host, "beta").await.unwrap();
    let _gamma = pending_pairing(&host, "gamma").await;

    let browser = open_dashboard(admin).await;
    // Both connected followers are listed, online, with their remote address.
    for id in ["alpha", "beta"] {
        browser
            .wait_until(&format!("{} === 'online'", row(id, "liveness")), WAIT)
            .await
            .unwrap();
        let remote = browser.eval(&row(id, "remote")).await.unwrap();
        assert!(
            remote.as_str().is_some_and(|r| r.starts_with("127.0.0.1:")),
            "{remote}"
        );
    }
    assert_eq!(
        browser.eval(&row("gamma", "pairing")).await.unwrap(),
        "pending"
    );
    // `/api/followers` rows are exactly `yonexus clients --json` rows (nothing moves meanwhile).
    let (code, out, err) = cli(&host.config, &["clients", "--json"]);
    assert_eq!(code, 0, "{err}");
    let cli_rows: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(get_json(admin, "/api/followers"), cli_rows);
    assert!(cli_rows[0].get("host").is_none(), "{cli_rows}");
    // The pending pairing is listed with its code hidden, and no action is offered yet.
    browser
        .wait_until(
            "document.querySelector('#pairings tr[data-identifier=\"gamma\"] [data-field=\"code\"]')?.textContent.startsWith('hidden')",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        browser
            .eval("document.querySelectorAll('button.revoke, button.reveal').length")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        browser.eval(&is_visible("#token-form")).await.unwrap(),
        true
    );
    assert_eq!(browser.eval(&is_visible("#readonly")).await.unwrap(), false);
    // The store answers: no outage notice. (An outage's notice, as the stream's `store` event
    // would set it: shown over the kept lists, then gone again.)
    assert_eq!(
        browser.eval(&is_visible("#store-notice")).await.unwrap(),
        false
    );
    let notice = browser
        .eval("setStore({available: false, error: 'the trust store is unavailable: timeout', since: 1795842000, listsAt: 1795841990}); document.getElementById('store-notice').textContent")
        .await
        .unwrap();
    let notice = notice.as_str().unwrap_or_default();
    assert!(
        notice.starts_with("Trust store unavailable") && notice.contains("may be stale"),
        "{notice}"
    );
    assert_eq!(
        browser.eval(&is_visible("#store-notice")).await.unwrap(),
        true
    );
    assert!(browser
        .eval(&format!("{} === 'online'", row("alpha", "liveness")))
        .await
        .unwrap()
        .as_bool()
        .unwrap_or(false));
    browser.eval("setStore({available: true})").await.unwrap();
    assert_eq!(
        browser.eval(&is_visible("#store-notice")).await.unwrap(),
        false
    );
    // The API never carries codes outside the reveal action.
    let pairings = get_json(admin, "/api/pairings");
    assert_eq!(pairings[0]["identifier"], "gamma");
    assert!(pairings[0].get("code").is_none(), "{pairings}");
    let gamma_code = codes_for(&host.dir, "gamma").pop().unwrap();
    for path in ["/api/pairings", "/api/followers", "/api/events", "/"] {
        assert!(!get(admin, path).1.contains(&gamma_code), "{path}");
    }

    // Traffic: the chart and the plugin's counters move.
    for i in 0..40 {
        echo_ok(&mut beta, &format!("m{i}")).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    browser
        .wait_until(
            "document.querySelectorAll('#chart polyline.series.in').length === 1 && state.rates.some(r => r.inPerSec > 0)",
            WAIT,
        )
        .await
        .unwrap();
    browser
        .wait_until(
            "Number(document.querySelector('#plugins tr[data-plugin=\"echo\"] td:nth-child(8)')?.textContent) >= 40",
            WAIT,
        )
        .await
        .unwrap();

    let screenshot = std::env::var_os("YONEXUS_DASHBOARD_SCREENSHOT");
    if screenshot.is_some() {
        // For the README: half a minute of traffic that rises and falls, then heartbeats.
        for sec in 0..30u32 {
            let started = Instant::now();
            let per_sec = 20 + (15.0 * (f64::from(sec) / 4.0).sin()) as i32;
            for i in 0..per_sec {
                let raw = if i % 3 == 0 { &mut alpha } else { &mut beta };
                echo_ok(raw, &format!("s{sec}-{i}")).await;
            }
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
        }
        for (raw, id) in [(&mut alpha, "alpha"), (&mut beta, "beta")] {
            raw.send("heartbeat", serde_json::json!({ "identifier": id }))
                .await
                .unwrap();
            assert!(matches!(raw.control().await.unwrap(), Msg::HeartbeatAck(_)));
        }
        browser
            .wait_until(
                &format!("/^[0-2] s ago$/.test({})", row("beta", "heartbeat")),
                WAIT,
            )
            .await
            .unwrap();
    }

    // Unlock the actions with the token typed into the page.
    browser.type_text("#token", TOKEN).await.unwrap();
    browser.click("#unlock").await.unwrap();
    browser
        .wait_until(
            "document.querySelector('button.revoke[data-identifier=\"alpha\"]') !== null",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(browser.eval(&is_visible("#reload")).await.unwrap(), true);
    let png = browser.screenshot_png().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    if let Some(path) = screenshot {
        browser
            .eval("document.getElementById('notice').hidden = true")
            .await
            .unwrap();
        std::fs::write(path, browser.screenshot_png().await.unwrap()).unwrap();
    }

    // Reveal the pending code: the page shows exactly the delivered one.
    browser
        .click("button.reveal[data-identifier=\"gamma\"]")
        .await
        .unwrap();
    let shown = browser
        .wait_until(
            "document.querySelector('#pairings tr[data-identifier=\"gamma\"] code')?.textContent",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(shown, gamma_code.as_str());

    // A follower goes offline: the row changes without a reload.
    browser.eval("window.__sameDocument = true").await.unwrap();
    beta.close().await;
    browser
        .wait_until(&format!("{} === 'offline'", row("beta", "liveness")), WAIT)
        .await
        .unwrap();
    browser
        .wait_until(
            "[...document.querySelectorAll('#events li.disconnected .ident')].some(e => e.textContent === 'beta')",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(browser.eval("window.__sameDocument").await.unwrap(), true);

    // Revoke alpha from the page (two clicks: arm, confirm): its socket gets the close.
    browser
        .click("button.revoke[data-identifier=\"alpha\"]")
        .await
        .unwrap();
    browser
        .wait_until(
            "document.querySelector('button.revoke[data-identifier=\"alpha\"]').textContent === 'Confirm revoke'",
            WAIT,
        )
        .await
        .unwrap();
    browser
        .click("button.revoke[data-identifier=\"alpha\"]")
        .await
        .unwrap();
    let (code, reason) = alpha.closed().await.unwrap();
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    browser
        .wait_until(&format!("{} === 'revoked'", row("alpha", "pairing")), WAIT)
        .await
        .unwrap();
    browser
        .wait_until(&format!("{} === 'offline'", row("alpha", "liveness")), WAIT)
        .await
        .unwrap();
    let followers = get_json(admin, "/api/followers");
    let alpha_row = followers
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["identifier"] == "alpha")
        .unwrap();
    assert_eq!(alpha_row["pairingStatus"], "revoked");
    assert!(alpha_row["remote"].is_null());

    // Reload from the page (two clicks as well).
    browser.click("#reload").await.unwrap();
    browser.click("#reload").await.unwrap();
    browser
        .wait_until(
            "document.getElementById('notice').textContent.startsWith('Reloaded')",
            WAIT,
        )
        .await
        .unwrap();
    let events = get_json(admin, "/api/events");
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"revoked") && kinds.contains(&"reload"),
        "{kinds:?}"
    );
    assert!(
        browser.eval("window.__sameDocument").await.unwrap() == true,
        "the page reloaded"
    );
    assert_eq!(browser.page_errors(), Vec::<String>::new());
    // The token never reaches the logs.
    assert!(!host.all_logs().iter().any(|l| l.contains(TOKEN)));
}

#[tokio::test]
async fn without_a_token_the_page_is_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let host = start(tmp.path(), &["alpha", "gamma"], UNSET_ENV);
    let admin = host.admin.unwrap();
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    let _gamma = pending_pairing(&host, "gamma").await;
    let status = get_json(admin, "/api/status");
    assert_eq!(status["actions"], false);

    let browser = open_dashboard(admin).await;
    browser
        .wait_until(&format!("{} === 'online'", row("alpha", "liveness")), WAIT)
        .await
        .unwrap();
    browser
        .wait_until(
            "document.querySelector('#pairings tr[data-identifier=\"gamma\"]') !== null",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(browser.eval(&is_visible("#readonly")).await.unwrap(), true);
    for hidden in ["#token-form", "#reload"] {
        assert_eq!(
            browser.eval(&is_visible(hidden)).await.unwrap(),
            false,
            "{hidden}"
        );
    }
    assert_eq!(
        browser
            .eval("document.querySelectorAll('button.revoke, button.reveal').length")
            .await
            .unwrap(),
        0
    );
    assert_eq!(browser.page_errors(), Vec::<String>::new());

    // Actions answer 403 with a message that names the variable to set.
    let bearer = format!("Bearer {TOKEN}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    for path in [
        "/api/followers/alpha/revoke",
        "/api/pairings/gamma/reveal",
        "/api/reload",
    ] {
        let (status, body) = http(admin, "POST", path, &headers, "{}").unwrap();
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body.contains("read-only") && body.contains(UNSET_ENV),
            "{body}"
        );
    }
    echo_ok(&mut alpha, "still here").await;
}

#[tokio::test]
async fn cross_site_actions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let host = start(tmp.path(), &["alpha"], TOKEN_ENV);
    let admin = host.admin.unwrap();
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    let path = "/api/followers/alpha/revoke";
    let bearer = format!("Bearer {TOKEN}");
    let same_origin = format!("http://{admin}");
    let base = vec![
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut h = base.clone();
        h.extend_from_slice(extra);
        h
    };
    // Even with the right token: another origin, another site, no JSON, no or a wrong token.
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (with(&[("Origin", "http://evil.example")]), 403),
        (with(&[("Origin", "null")]), 403),
        (with(&[("Sec-Fetch-Site", "cross-site")]), 403),
        (with(&[("Sec-Fetch-Site", "same-site")]), 403),
        (
            vec![
                ("Content-Type", "text/plain"),
                ("Authorization", bearer.as_str()),
            ],
            415,
        ),
        (vec![("Content-Type", "application/json")], 401),
        (
            vec![
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer not-the-token-at-all"),
            ],
            401,
        ),
    ];
    for (headers, want) in cases {
        let (status, body) = http(admin, "POST", path, &headers, "{}").unwrap();
        assert_eq!(status, want, "{headers:?}: {body}");
    }
    assert_eq!(http(admin, "GET", path, &base, "").unwrap().0, 405);
    echo_ok(&mut alpha, "not revoked").await;

    // A real cross-site attack: a page on another port of this machine auto-submits a form
    // to the revoke action. The browser marks it same-site/cross-origin: refused.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_addr = evil.local_addr().unwrap();
    let page = format!(
        "<!doctype html><form id=f method=POST enctype=text/plain action=\"http://{admin}{path}\"><input name=x value=y></form><script>document.getElementById('f').submit()</script>"
    );
    let server = tokio::spawn(async move {
        // Serve the page to each request (bounded: the test ends it).
        while let Ok((mut s, _)) = evil.accept().await {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let browser = Browser::launch().await.unwrap();
    browser.goto(&format!("http://{evil_addr}/")).await.unwrap();
    let refused = wait_for(WAIT, || {
        host.logs()
            .iter()
            .any(|l| l.contains("action refused") && l.contains("403"))
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the browser's cross-site POST was not refused as such"
    );
    server.abort();
    echo_ok(&mut alpha, "still not revoked").await;

    // The same request from the dashboard's own origin, with the token, goes through.
    let mut ok = base.clone();
    ok.push(("Origin", same_origin.as_str()));
    ok.push(("Sec-Fetch-Site", "same-origin"));
    let (status, body) = http(admin, "POST", path, &ok, "{}").unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["revoked"], true);
    assert_eq!(alpha.closed().await.unwrap().0, 1008);
}

#[tokio::test]
async fn a_page_loaded_under_another_name_reads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let host = start(tmp.path(), &["alpha"], TOKEN_ENV);
    let admin = host.admin.unwrap();
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    // DNS rebinding: a name the attacker controls, answered with 127.0.0.1 (here by the
    // browser's own resolver rules), so that its page is "same-origin" with the admin port.
    let browser = Browser::launch_with(&["--host-resolver-rules=MAP rebind.test 127.0.0.1"])
        .await
        .unwrap();
    browser
        .goto(&format!("http://rebind.test:{}/", admin.port()))
        .await
        .unwrap();
    let text = browser.eval("document.body.innerText").await.unwrap();
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("DNS rebinding") && !text.contains("Followers"),
        "{text}"
    );
    let api = browser
        .eval("fetch('/api/followers').then(async r => `${r.status} ${await r.text()}`)")
        .await
        .unwrap();
    let api = api.as_str().unwrap_or_default();
    assert!(api.starts_with("421 ") && !api.contains("alpha"), "{api}");
    // The same browser under a loopback name gets the dashboard.
    browser
        .goto(&format!("http://localhost:{}/", admin.port()))
        .await
        .unwrap();
    browser
        .wait_until(&format!("{} === 'online'", row("alpha", "liveness")), WAIT)
        .await
        .unwrap();
    echo_ok(&mut alpha, "still here").await;
}

#[test]
fn a_public_admin_port_without_a_token_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("yonexus.toml");
    std::fs::write(
        &path,
        config(tmp.path(), &["alpha"], UNSET_ENV, "0.0.0.0:0"),
    )
    .unwrap();
    let mut child = Command::new(bin("yonexus"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove(UNSET_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the host started with a public admin port and no token");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("[admin] listen") && stderr.contains(UNSET_ENV),
        "{stderr}"
    );
}

/// Fail fast with a clear message when Chromium is missing (CI installs it).
#[test]
fn chromium_is_installed() -> Result<()> {
    let path = yonexus_e2e::browser::chromium_path();
    if !path.exists() {
        bail!(
            "{} is missing: `apt-get install -y chromium`",
            path.display()
        );
    }
    Ok(())
}
