//! Hot reload of plugins and config against the real host binary, under load.

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use yonexus_e2e::*;

/// Host config with the `versioned` fixture at `dir/plugins/libver.so` on rule `ver`.
fn setup(dir: &Path, allow: &[&str], reload: &str) -> (PathBuf, String) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let so = plugins.join("libver.so");
    std::fs::write(&so, versioned_bytes(0)).unwrap();
    let text = format!(
        "[[plugins]]\nname = \"ver\"\npath = \"plugins/libver.so\"\nrules = [\"ver\"]\n{}[reload]\n{reload}\n",
        config_text(dir, 0, allow, "")
    );
    (so, text)
}

async fn rule(raw: &mut Raw) -> String {
    match raw.recv().await.unwrap() {
        Incoming::Rule(r) => r,
        other => panic!("expected a rule message, got {other:?}"),
    }
}

/// Ask `ver` until it answers with `version`, or time out.
async fn until_version(raw: &mut Raw, version: u32, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let want = format!("@YNXVER-{version:04}");
    while started.elapsed() < within {
        raw.send_text("ver::probe").await.unwrap();
        if rule(raw).await.ends_with(&want) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn version_of(reply: &str) -> u32 {
    reply
        .rsplit("@YNXVER-")
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_lose_nothing_and_keep_order() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = ["f0", "f1", "f2", "f3"];
    let (so, text) = setup(
        tmp.path(),
        &["f0", "f1", "f2", "f3", "probe"],
        "debounce_ms = 100\n[limits]\nrate_per_sec = 1000000\nrate_burst = 1000000\n",
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for id in ids {
        let (raw, _) = paired_session(&host, id).await.unwrap();
        let (mut sink, mut stream) = raw.into_inner().split();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            const WINDOW: u64 = 8;
            let (mut sent, mut received) = (0u64, 0u64);
            let mut last_version = 0u32;
            let mut longest_gap = Duration::ZERO;
            let mut last_reply = Instant::now();
            let mut versions: HashMap<u32, u64> = HashMap::new();
            loop {
                while sent - received < WINDOW && !stop.load(Ordering::Relaxed) {
                    sink.send(Message::text(format!("ver::{id}-{sent}")))
                        .await
                        .unwrap();
                    sent += 1;
                }
                if received == sent {
                    break;
                }
                let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{id}: no reply for 10 s (sent {sent}, received {received})")
                    });
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    other => panic!("{id}: connection dropped or odd frame: {other:?}"),
                };
                let (body, _) = text.rsplit_once('@').unwrap();
                assert_eq!(
                    body,
                    format!("ver::{id}-{received}"),
                    "{id}: reply out of order or duplicated"
                );
                let version = version_of(&text);
                assert!(
                    version >= last_version,
                    "{id}: version went backwards ({last_version} → {version})"
                );
                last_version = version;
                *versions.entry(version).or_default() += 1;
                longest_gap = longest_gap.max(last_reply.elapsed());
                last_reply = Instant::now();
                received += 1;
            }
            (
                id,
                sent,
                longest_gap,
                versions.len(),
                sink.reunite(stream).unwrap(),
            )
        }));
    }
    // Swap the library 20 times; each time wait until the new version answers.
    let (mut probe, _) = paired_session(&host, "probe").await.unwrap();
    let mut switch_times = Vec::new();
    for v in 1..=20u32 {
        let started = Instant::now();
        replace_by_rename(&so, &versioned_bytes(v));
        let took = until_version(&mut probe, v, Duration::from_secs(15)).await;
        assert!(took.is_some(), "version {v} never answered");
        switch_times.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut longest = Duration::ZERO;
    for t in tasks {
        let (id, sent, gap, versions_seen, mut ws) = t.await.unwrap();
        total += sent;
        longest = longest.max(gap);
        assert!(
            versions_seen >= 2,
            "{id} saw only {versions_seen} version(s)"
        );
        // After the last switch only the newest version answers.
        ws.send(Message::text("ver::last")).await.unwrap();
        let last = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("{id}: {other:?}"),
            }
        };
        assert_eq!(last, "ver::last@YNXVER-0020");
    }
    switch_times.sort();
    println!(
        "hot reload: {total} messages, 0 lost; file change → new version answering: median {:?}, max {:?}; longest pause seen by a follower: {longest:?}",
        switch_times[switch_times.len() / 2],
        switch_times[switch_times.len() - 1]
    );
    assert!(total > 100, "the load generator sent too little ({total})");
}

/// `yonexus reload`; after a success, also waits for the host's log of that reload, so the
/// log lines it wrote while reloading are all in `host.logs()` (they are read from its stderr
/// on another thread, and may lag behind the CLI's answer).
fn reload_cli(host: &HostProc) -> (i32, String, String) {
    let ends =
        |h: &HostProc| count_logs(h, "reload applied") + count_logs(h, "reload: nothing changed");
    let before = ends(host);
    let result = cli(&host.config, &["reload"]);
    if result.0 == 0 {
        let logged = wait_for(Duration::from_secs(10), || {
            (ends(host) > before).then_some(())
        });
        assert!(
            logged.is_some(),
            "the host did not log the reload it answered"
        );
    }
    result
}

fn count_logs(host: &HostProc, needle: &str) -> usize {
    host.logs().iter().filter(|l| l.contains(needle)).count()
}

/// Wait until the host has logged more reloads than `before` (a count of "reload applied"):
/// a follower can see a new version before the log lines of that reload are read from the
/// host's stderr, and counts of them taken earlier would be short.
fn await_reload_logged(host: &HostProc, before: usize) {
    let logged = wait_for(Duration::from_secs(10), || {
        (count_logs(host, "reload applied") > before).then_some(())
    });
    assert!(logged.is_some(), "the host did not log the reload");
}

#[tokio::test]
async fn in_place_copy_half_written_file_and_touch() {
    let tmp = tempfile::tempdir().unwrap();
    let (so, text) = setup(tmp.path(), &["alpha"], "debounce_ms = 300\n");
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let (mut raw, _) = paired_session(&host, "alpha").await.unwrap();
    assert!(until_version(&mut raw, 0, Duration::from_secs(2))
        .await
        .is_some());

    // `cp` over the watched file in place (same inode, truncate + write): no crash, the new
    // version is loaded once the file is stable.
    std::fs::write(&so, versioned_bytes(1)).unwrap();
    assert!(until_version(&mut raw, 1, Duration::from_secs(10))
        .await
        .is_some());

    // Written in two parts with a pause shorter than the debounce: never loaded half-written.
    await_reload_logged(&host, 0);
    let created_before = count_logs(&host, "plugin instance created");
    let applied_before = count_logs(&host, "reload applied");
    let bytes = versioned_bytes(2);
    let (first, second) = bytes.split_at(bytes.len() / 2);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&so).unwrap();
        f.write_all(first).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        f.write_all(second).unwrap();
    }
    assert!(until_version(&mut raw, 2, Duration::from_secs(10))
        .await
        .is_some());
    await_reload_logged(&host, applied_before);
    assert_eq!(
        count_logs(&host, "reload refused"),
        0,
        "the half-written file was tried"
    );
    assert_eq!(
        count_logs(&host, "plugin instance created"),
        created_before + 1,
        "exactly one reload"
    );

    // A pause longer than the debounce: the torn file is refused (truncated), the old version
    // keeps answering, and the completed file loads.
    let applied_before = count_logs(&host, "reload applied");
    {
        use std::io::Write;
        let bytes = versioned_bytes(3);
        let (first, second) = bytes.split_at(bytes.len() / 2);
        let mut f = std::fs::File::create(&so).unwrap();
        f.write_all(first).unwrap();
        f.flush().unwrap();
        let refused = wait_for(Duration::from_secs(5), || {
            (count_logs(&host, "reload refused") > 0).then_some(())
        });
        assert!(refused.is_some(), "the truncated file was not refused");
        assert!(
            host.logs().iter().any(|l| l.contains("truncated")),
            "refusal names the reason"
        );
        raw.send_text("ver::meanwhile").await.unwrap();
        assert_eq!(
            rule(&mut raw).await,
            "ver::meanwhile@YNXVER-0002",
            "the old version keeps answering"
        );
        f.write_all(second).unwrap();
    }
    assert!(until_version(&mut raw, 3, Duration::from_secs(10))
        .await
        .is_some());
    await_reload_logged(&host, applied_before);

    // Touching the file (same content) causes no reload.
    let created = count_logs(&host, "plugin instance created");
    let applied = count_logs(&host, "reload applied");
    std::fs::write(&so, versioned_bytes(3)).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(count_logs(&host, "plugin instance created"), created);
    assert_eq!(count_logs(&host, "reload applied"), applied);
    let (status, out, err) = reload_cli(&host);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("nothing changed"), "{out}");
}

#[tokio::test]
async fn bad_replacements_are_refused_while_the_old_version_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (so, text) = setup(tmp.path(), &["alpha"], "debounce_ms = 100\n");
    let fx = fixture("ok");
    let text = format!(
        "{text}\n[[plugins]]\nname = \"fx\"\npath = \"{}\"\nrules = [\"fx\"]\n",
        fx.display()
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let (mut raw, _) = paired_session(&host, "alpha").await.unwrap();
    assert!(until_version(&mut raw, 0, Duration::from_secs(2))
        .await
        .is_some());

    let refusals = |host: &HostProc| count_logs(host, "reload refused");
    // Garbage.
    replace_by_rename(&so, b"\x7fELF but not really, just garbage bytes");
    assert!(wait_for(Duration::from_secs(5), || (refusals(&host) >= 1)
        .then_some(()))
    .is_some());
    raw.send_text("ver::a").await.unwrap();
    assert_eq!(rule(&mut raw).await, "ver::a@YNXVER-0000");
    // A build for another ABI major.
    replace_by_rename(&so, &std::fs::read(fixture("abi2")).unwrap());
    assert!(wait_for(Duration::from_secs(5), || (refusals(&host) >= 2)
        .then_some(()))
    .is_some());
    assert!(
        host.logs()
            .iter()
            .any(|l| l.contains("reload refused") && l.contains("ABI 2")),
        "refusal names both versions"
    );
    raw.send_text("ver::b").await.unwrap();
    assert_eq!(rule(&mut raw).await, "ver::b@YNXVER-0000");
    // Deleted: refused (nothing to load), the loaded version keeps serving.
    std::fs::remove_file(&so).unwrap();
    assert!(wait_for(Duration::from_secs(5), || (refusals(&host) >= 3)
        .then_some(()))
    .is_some());
    raw.send_text("ver::gone").await.unwrap();
    assert_eq!(rule(&mut raw).await, "ver::gone@YNXVER-0000");
    // Restored: loads again.
    replace_by_rename(&so, &versioned_bytes(5));
    assert!(until_version(&mut raw, 5, Duration::from_secs(10))
        .await
        .is_some());

    // A plugin whose creation fails on its new config: `yonexus reload` says why, exits non-zero.
    let config = std::fs::read_to_string(&host.config).unwrap();
    std::fs::write(
        &host.config,
        format!("{config}[plugins.config]\nrefuse = true\n"),
    )
    .unwrap();
    let (status, _, err) = reload_cli(&host);
    assert_ne!(status, 0);
    assert!(
        err.contains("refused by config") && err.contains("fx"),
        "{err}"
    );
    raw.send_text("fx::still").await.unwrap();
    assert_eq!(rule(&mut raw).await, "fx::still");
    raw.send_text("ver::c").await.unwrap();
    assert_eq!(rule(&mut raw).await, "ver::c@YNXVER-0005");
}

/// A config naming a plugin file that is not there yet is refused; the file is watched all the
/// same, so the build landing there loads it without anyone asking for a reload.
#[tokio::test]
async fn a_plugin_refused_for_a_missing_file_loads_when_the_file_lands() {
    let tmp = tempfile::tempdir().unwrap();
    let (_so, text) = setup(tmp.path(), &["alpha"], "debounce_ms = 100\n");
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    let refused = count_logs(&host, "reload refused");
    let original = std::fs::read_to_string(&host.config).unwrap();
    std::fs::write(
        &host.config,
        format!("{original}[[plugins]]\nname = \"late\"\npath = \"plugins/late.so\"\nrules = [\"late\"]\n"),
    )
    .unwrap();
    let seen = wait_for(Duration::from_secs(10), || {
        (count_logs(&host, "reload refused") > refused).then_some(())
    });
    assert!(
        seen.is_some(),
        "the config naming a missing file was not refused"
    );
    let plugins = tmp.path().join("plugins");
    let staged = plugins.join(".late.so.new");
    std::fs::write(&staged, versioned_bytes(7)).unwrap();
    std::fs::rename(&staged, plugins.join("late.so")).unwrap();
    let started = Instant::now();
    let answered = loop {
        alpha.send_text("late::probe").await.unwrap();
        match alpha.recv().await.unwrap() {
            Incoming::Rule(r) if r.ends_with("@YNXVER-0007") => break true,
            Incoming::Rule(r) => panic!("unexpected answer {r}"),
            Incoming::Control(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Incoming::Control(_) => break false,
            Incoming::Closed(c) => panic!("closed: {c:?}"),
        }
    };
    assert!(
        answered,
        "the plugin file landed but the host never loaded it: {:?}",
        host.logs().iter().rev().take(5).collect::<Vec<_>>()
    );
    // `yonexus reload` now finds nothing to do, and says what the watcher's reload applied.
    let (status, out, err) = reload_cli(&host);
    assert_eq!(status, 0, "{err}");
    assert!(
        out.contains("nothing changed since the last reload") && out.contains("file change"),
        "{out}"
    );
    assert!(out.contains("plugin 'late': loaded"), "{out}");
}

#[tokio::test]
async fn config_reloads_are_atomic_and_apply_live() {
    let tmp = tempfile::tempdir().unwrap();
    let (_so, text) = setup(tmp.path(), &["alpha", "beta"], "watch = false\n");
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let (mut alpha, alpha_ident) = paired_session(&host, "alpha").await.unwrap();
    let (beta_raw, beta) = paired_session(&host, "beta").await.unwrap();
    drop(beta_raw);
    let original = std::fs::read_to_string(&host.config).unwrap();

    // Invalid TOML: refused as a whole, the message names the file.
    std::fs::write(&host.config, format!("{original}\n[[[broken")).unwrap();
    let (status, _, err) = reload_cli(&host);
    assert_ne!(status, 0);
    assert!(
        err.contains("yonexus.toml") && err.contains("TOML"),
        "{err}"
    );
    // A plugin pointing at a missing file plus an allowlist change: refused as a whole.
    let bad = original.replace(
        "allow = [\"alpha\", \"beta\"]",
        "allow = [\"alpha\", \"beta\", \"gamma\"]",
    )
        + "[[plugins]]\nname = \"ghost\"\npath = \"plugins/nope.so\"\nrules = [\"ghost\"]\n";
    std::fs::write(&host.config, bad).unwrap();
    let (status, _, err) = reload_cli(&host);
    assert_ne!(status, 0);
    assert!(
        err.contains("plugins[2].path") && err.contains("nope.so"),
        "{err}"
    );
    let mut gamma = Raw::connect(&host.url()).await.unwrap();
    gamma
        .send(
            "hello",
            serde_json::json!({"identifier": "gamma", "protocolVersion": "1"}),
        )
        .await
        .unwrap();
    assert_eq!(
        gamma.error().await.unwrap().0,
        "IDENTIFIER_NOT_ALLOWED",
        "nothing of the refused change applied"
    );

    // Only the echo plugin's config table changes: re-created on the loaded library; the other
    // plugin is untouched.
    let created = count_logs(&host, "plugin instance created");
    let loaded = count_logs(&host, "plugin library loaded");
    let with_prefix = original.replace(
        "rules = [\"echo\"]\n",
        "rules = [\"echo\"]\n[plugins.config]\nprefix = \"> \"\n",
    );
    std::fs::write(&host.config, &with_prefix).unwrap();
    let (status, out, err) = reload_cli(&host);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("plugin 'echo': settings changed"), "{out}");
    assert_eq!(
        count_logs(&host, "plugin instance created"),
        created + 1,
        "only echo re-created"
    );
    assert_eq!(
        count_logs(&host, "plugin library loaded"),
        loaded,
        "no new dlopen"
    );
    alpha.send_text("echo::hi").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "echo::> hi");

    // A routes-only change swaps routes without re-creating anything.
    let rerouted = with_prefix.replace("rules = [\"ver\"]", "rules = [\"ver\", \"v2\"]");
    std::fs::write(&host.config, &rerouted).unwrap();
    let created = count_logs(&host, "plugin instance created");
    let (status, out, err) = reload_cli(&host);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("routes changed"), "{out}");
    assert_eq!(count_logs(&host, "plugin instance created"), created);
    alpha.send_text("v2::x").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "v2::x@YNXVER-0000");

    // Allowlist: removing alpha disconnects it (1008); its trust record is kept.
    let without_alpha = rerouted.replace("allow = [\"alpha\", \"beta\"]", "allow = [\"beta\"]");
    std::fs::write(&host.config, &without_alpha).unwrap();
    let (status, out, err) = reload_cli(&host);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("allowlist"), "{out}");
    assert_eq!(alpha.closed().await.unwrap().0, 1008);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("state/trust.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["followers"]["alpha"]["pairingStatus"], "paired");
    // A limits-only change applies (to new connections).
    std::fs::write(
        &host.config,
        format!("{without_alpha}\n[limits]\nrate_per_sec = 500\n"),
    )
    .unwrap();
    let (status, out, err) = reload_cli(&host);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("limits"), "{out}");
    std::fs::write(&host.config, &without_alpha).unwrap();
    let (status, _, err) = reload_cli(&host);
    assert_eq!(status, 0, "{err}");
    // Settings that cannot change live are reported, and the rest still applies.
    let moved = rerouted.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(&host.config, &moved).unwrap();
    let (status, out, err) = reload_cli(&host);
    assert_eq!(status, 0, "{err}");
    assert!(
        err.contains("needs a restart") && err.contains("server.listen"),
        "{err}"
    );
    assert!(
        out.contains("allowlist"),
        "alpha re-added in the same change: {out}"
    );
    // Re-added: beta and alpha both authenticate with their existing secrets.
    let mut raw = Raw::connect(&host.url()).await.unwrap();
    beta.login(&mut raw).await.unwrap();
    let mut again = Raw::connect(&host.url()).await.unwrap();
    alpha_ident.login(&mut again).await.unwrap();
    again.send_text("echo::back").await.unwrap();
    assert_eq!(rule(&mut again).await, "echo::> back");
}

#[test]
fn sighup_triggers_a_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let (_so, text) = setup(tmp.path(), &["alpha"], "watch = false\n");
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let original = std::fs::read_to_string(&host.config).unwrap();
    std::fs::write(
        &host.config,
        original.replace("allow = [\"alpha\"]", "allow = [\"alpha\", \"zeta\"]"),
    )
    .unwrap();
    std::process::Command::new("kill")
        .arg("-HUP")
        .arg(host.pid().to_string())
        .status()
        .unwrap();
    let applied = wait_for(Duration::from_secs(10), || {
        host.logs()
            .into_iter()
            .find(|l| l.contains("reload applied") && l.contains("SIGHUP"))
    });
    assert!(applied.is_some_and(|l| l.contains("zeta")));
}
