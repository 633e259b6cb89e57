//! Micro-benchmarks of the host's per-message and per-connection work that does not need a
//! socket: one rule message through the plugin C ABI (dispatch → the plugin's worker thread →
//! `on_message` in the bundled echo `.so` → reply in the follower's outbound queue), and the
//! full ordered auth check.
//!
//! `cargo bench --manifest-path bench/micro/Cargo.toml --bench plugin_call -- --warm-up-time 1 --measurement-time 3`
//!
//! The echo plugin is built in release mode into `target/bench-plugins` first (a separate
//! target dir: the main one is locked while `cargo bench` runs).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use yonexus_host::auth::{self, AuthOutcome};
use yonexus_host::clock::{ManualClock, SharedClock};
use yonexus_host::outbound::{Peer, QueueLimits};
use yonexus_host::plugins::{self, PluginSpec};
use yonexus_host::registry::Registry;
use yonexus_host::router::{RuleHandler, RuleMessage, Sender};
use yonexus_host::store::{PairingStatus, TrustRecord};
use yonexus_protocol::envelope::AuthRequest;
use yonexus_protocol::signing;

fn repo_root() -> PathBuf {
    // bench/micro → the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn echo_so() -> PathBuf {
    let target = repo_root().join("target").join("bench-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "build",
            "--release",
            "-p",
            "yonexus-plugin-echo",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("running cargo build for the echo plugin");
    assert!(status.success(), "building the echo plugin failed");
    target.join("release/libyonexus_plugin_echo.so")
}

fn plugin_call(c: &mut Criterion) {
    let reg = Arc::new(Registry::new());
    let peer = Arc::new(Peer::new(
        1,
        "127.0.0.1:9".parse().expect("addr"),
        0,
        QueueLimits::UNLIMITED,
    ));
    reg.insert("bench-0".into(), Arc::clone(&peer));
    // Wait for `n` frames in the follower's queue.
    let take = |n: usize| {
        let mut got = 0;
        while got < n {
            got += peer.drain_texts().len();
            std::hint::spin_loop();
        }
    };
    let spec = PluginSpec::new("echo", echo_so(), vec!["echo".into()]);
    let staging = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-staging");
    let lib = plugins::load(&spec, &staging).unwrap_or_else(|e| panic!("{e}"));
    let clock: SharedClock = Arc::new(ManualClock::new(1_700_000_000));
    let h = lib
        .instantiate(&spec, Arc::clone(&reg), clock)
        .unwrap_or_else(|e| panic!("{e}"));
    let content = format!("1:1234567890:{}", "x".repeat(100 - 20));
    let msg = RuleMessage::from_parts(
        "echo",
        &content,
        Sender::new("bench-0".into(), Arc::clone(&peer)),
    );
    let mut g = c.benchmark_group("plugin");
    g.throughput(Throughput::Elements(1));
    g.bench_function("echo round trip (1 in flight)", |b| {
        b.iter(|| {
            h.dispatch(msg.clone()).expect("dispatch");
            take(1);
        })
    });
    const BATCH: usize = 64;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("echo pipelined (64 in flight)", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                h.dispatch(msg.clone()).expect("dispatch");
            }
            take(BATCH);
        })
    });
    g.finish();
}

fn auth_check(c: &mut Criterion) {
    let key = signing::generate_signing_key();
    let now = 1_700_000_000;
    let mut rec = TrustRecord::new("bench-0", now);
    rec.secret = Some("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I".into());
    rec.public_key = Some(signing::encode_base64(&key.verifying_key().to_bytes()));
    rec.pairing_status = PairingStatus::Paired;
    let nonce = "abcdefghijklmnopqrstuvwx";
    let req = AuthRequest {
        identifier: "bench-0".into(),
        nonce: nonce.into(),
        proof_timestamp: now,
        signature: signing::sign(&key, rec.secret.as_deref().unwrap_or_default(), nonce, now),
        public_key: rec.public_key.clone(),
    };
    c.bench_function("auth/check (host, all checks + verify)", |b| {
        b.iter(|| {
            let out = auth::check(true, Some(&rec), true, black_box(&req), now, |_| false);
            assert!(matches!(out, AuthOutcome::Accepted { .. }));
        })
    });
}

criterion_group!(benches, plugin_call, auth_check);
criterion_main!(benches);
