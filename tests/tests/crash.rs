//! Crash safety and soak: the host killed with SIGKILL at random moments during a pairing storm
//! always restarts on a loadable state file that holds every pairing a follower was told about;
//! and a bounded soak of random connects, pairings, messages and drops leaves memory and file
//! descriptors at their baseline.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use yonexus_e2e::*;

fn rand_u64(state: &mut u64) -> u64 {
    // xorshift64*: deterministic per seed, enough to vary kill moments and soak actions.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_pairing_storms_never_loses_an_acknowledged_pairing() {
    let rounds: usize = std::env::var("YONEXUS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    let allow: Vec<&str> = ids.iter().map(String::as_str).collect();
    let text = format!(
        "{}\n[limits]\nmax_unauthenticated_per_ip = 100\n",
        config_text(tmp.path(), 0, &allow, "")
    );
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut port = 0;
    for round in 0..rounds {
        let text = if port == 0 {
            text.clone()
        } else {
            text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        };
        let mut host = HostProc::start(tmp.path(), &text)
            .unwrap_or_else(|e| panic!("round {round}: restart failed: {e}"));
        port = host.addr.port();
        // The state file loads, and every pairing acknowledged so far is in it.
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("state/trust.json"))
                .unwrap_or_else(|_| "{\"followers\":{}}".into()),
        )
        .unwrap_or_else(|e| panic!("round {round}: state file does not parse: {e}"));
        for id in acknowledged.lock().unwrap().iter() {
            assert_eq!(
                state["followers"][id]["pairingStatus"], "paired",
                "round {round}: lost the pairing of {id}"
            );
        }
        // A storm over the not-yet-paired identifiers; kill at a random moment.
        let mut tasks = Vec::new();
        for id in ids
            .iter()
            .filter(|id| !acknowledged.lock().unwrap().contains(*id))
            .cloned()
        {
            let (url, dir, ack) = (host.url(), tmp.path().to_owned(), Arc::clone(&acknowledged));
            tasks.push(tokio::spawn(async move {
                let mut raw = Raw::connect(&url).await.ok()?;
                let mut ident = Identity::new(&id);
                ident.pair(&mut raw, &dir).await.ok()?;
                ack.lock().ok()?.insert(id);
                Some(())
            }));
        }
        tokio::time::sleep(Duration::from_millis(20 + rand_u64(&mut seed) % 600)).await;
        host.kill();
        for t in tasks {
            let _ = t.await;
        }
        if acknowledged.lock().unwrap().len() == ids.len() {
            // Everyone paired: start over with fresh identifiers' records revoked offline.
            let (status, _, err) = cli(&host.config, &["revoke", &ids[round % ids.len()]]);
            assert_eq!(status, 0, "{err}");
            acknowledged.lock().unwrap().remove(&ids[round % ids.len()]);
        }
    }
    let total = acknowledged.lock().unwrap().len();
    println!(
        "{rounds} SIGKILL rounds; {total} pairings acknowledged, all on disk after every restart"
    );
    assert!(
        total > 0,
        "no pairing completed in any round: the kill moments are too early to test anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_random_followers_leave_memory_and_fds_at_baseline() {
    let secs: u64 = std::env::var("YONEXUS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let tmp = tempfile::tempdir().unwrap();
    // 8 workers with 8 identities each, one login per identity every ~1.2 s: below the
    // protocol's 10-attempts-in-10-s limit, which would otherwise (rightly) revoke them.
    let ids: Vec<String> = (0..64).map(|i| format!("s{i}")).collect();
    let allow: Vec<&str> = ids.iter().map(String::as_str).collect();
    let text = format!(
        "{}{}\n[limits]\nmax_unauthenticated_per_ip = 200\n",
        bundled_plugins(&["broadcast"]),
        config_text(tmp.path(), 0, &allow, "")
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    // Pair everyone once, then measure the baseline with nobody connected.
    let mut idents = Vec::new();
    for id in &ids {
        let (raw, ident) = paired_session(&host, id).await.unwrap();
        raw.close().await;
        idents.push(Arc::new(ident));
    }
    // Baseline once the pairing connections have all closed (the count stops falling).
    let mut fd0 = open_fds(host.pid());
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = open_fds(host.pid());
        if now == fd0 {
            break;
        }
        fd0 = now;
    }
    // Two rounds of the same random load: the allocator keeps what the first round's peak
    // needed, so memory is compared after the second round with the first (a leak keeps
    // growing), and descriptors with the idle baseline.
    let first = soak_round(&host, &idents, secs / 2, 1).await;
    let settled = wait_for(Duration::from_secs(15), || {
        (open_fds(host.pid()) <= fd0).then_some(())
    });
    assert!(
        settled.is_some(),
        "file descriptors did not return to baseline after round 1"
    );
    let rss0 = rss_kib(host.pid());
    let second = soak_round(&host, &idents, secs - secs / 2, 2).await;
    let sessions = first + second;
    let settled = wait_for(Duration::from_secs(15), || {
        (open_fds(host.pid()) <= fd0).then_some(())
    });
    let (fd1, rss1) = (open_fds(host.pid()), rss_kib(host.pid()));
    println!("soak {secs}s: {sessions} authenticated sessions; fds {fd0} → {fd1}; RSS after round 1 {rss0} KiB, after round 2 {rss1} KiB");
    assert!(
        settled.is_some(),
        "file descriptors did not return to baseline ({fd0} → {fd1})"
    );
    assert!(
        rss1 < rss0 + 8 * 1024,
        "RSS kept growing: {rss0} KiB → {rss1} KiB"
    );
    assert!(
        sessions > 10,
        "the soak did too little ({sessions} sessions)"
    );
}

/// One round of random followers for `secs`; returns the authenticated sessions it made.
async fn soak_round(host: &HostProc, idents: &[Arc<Identity>], secs: u64, round: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let (url, idents) = (host.url(), idents.to_vec());
        workers.push(tokio::spawn(async move {
            let mut seed = 0xDEAD_BEEF ^ ((w + 1) * 0x1234_5678) ^ round;
            let mut sessions = 0;
            let mut loops = 0usize;
            while Instant::now() < deadline {
                let mine = &idents[(w as usize * 8)..(w as usize * 8 + 8)];
                let ident = &mine[loops % mine.len()];
                loops += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
                let Ok(mut raw) = Raw::connect(&url).await else {
                    continue;
                };
                match rand_u64(&mut seed) % 4 {
                    0 => drop(raw), // connect and vanish
                    1 => {
                        let _ = raw.send_text("builtin::{garbage").await;
                        let _ = raw.recv().await;
                    }
                    _ => {
                        if ident.login(&mut raw).await.is_ok() {
                            for i in 0..(rand_u64(&mut seed) % 50) {
                                let rule = if i % 5 == 0 { "broadcast" } else { "echo" };
                                if raw.send_text(&format!("{rule}::soak {i}")).await.is_err() {
                                    break;
                                }
                            }
                            sessions += 1;
                        }
                        if rand_u64(&mut seed).is_multiple_of(2) {
                            raw.close().await;
                        }
                    }
                }
            }
            sessions
        }));
    }
    let mut sessions = 0;
    for w in workers {
        sessions += w.await.unwrap_or(0);
    }
    sessions
}
