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
        "debounce_ms = 100\n",
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
