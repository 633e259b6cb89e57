//! Micro-benchmarks of the wire codec and auth verification (no I/O).
//!
//! `cargo bench --manifest-path bench/micro/Cargo.toml --bench codec -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use yonexus_protocol::envelope::{AuthRequest, Heartbeat, HelloAck, Message, NextAction};
use yonexus_protocol::{frame, signing, Envelope, Frame};

fn rule_text(size: usize) -> String {
    let head = "echo::";
    let mut s = String::from(head);
    s.push_str("42:1234567890:");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// What the host does with every inbound rule message: split at the first `::`, then build the
/// `rule::sender::content` rewrite handed to the plugin.
fn frame_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for size in [100usize, 1024] {
        let text = rule_text(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("parse", size), &text, |b, t| {
            b.iter(|| frame::parse(black_box(t)))
        });
        g.bench_with_input(BenchmarkId::new("parse+rewrite", size), &text, |b, t| {
            b.iter(|| match frame::parse(black_box(t)) {
                Ok(Frame::Rule { rule_id, content }) => {
                    frame::rewrite_with_sender(rule_id, "bench-17", content)
                }
                _ => String::new(),
            })
        });
    }
    g.finish();
}

fn envelope_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope");
    let ack = Envelope::new(
        Message::HelloAck(HelloAck {
            identifier: "bench-17".into(),
            next_action: NextAction::AuthRequired,
        }),
        1_700_000_000,
    );
    g.bench_function("encode hello_ack", |b| {
        b.iter(|| black_box(&ack).to_frame())
    });
    let hb = Envelope::new(
        Message::Heartbeat(Heartbeat {
            identifier: "bench-17".into(),
            status: Some("online".into()),
        }),
        1_700_000_000,
    )
    .to_json();
    g.bench_function("decode heartbeat", |b| {
        b.iter(|| Envelope::decode(black_box(&hb)))
    });
    let key = signing::generate_signing_key();
    let nonce = "abcdefghijklmnopqrstuvwx";
    let auth = Envelope::new(
        Message::AuthRequest(AuthRequest {
            identifier: "bench-17".into(),
            nonce: nonce.into(),
            proof_timestamp: 1_700_000_000,
            signature: signing::sign(&key, "secret", nonce, 1_700_000_000),
            public_key: Some(signing::encode_base64(&key.verifying_key().to_bytes())),
        }),
        1_700_000_000,
    )
    .to_json();
    g.bench_function("decode auth_request", |b| {
        b.iter(|| Envelope::decode(black_box(&auth)))
    });
    g.finish();
}

/// Ed25519 verification of the auth proof, as the host does it: decode key and signature,
/// rebuild the signing input, `verify_strict`.
fn auth_verify(c: &mut Criterion) {
    let key = signing::generate_signing_key();
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I";
    let nonce = "abcdefghijklmnopqrstuvwx";
    let ts = 1_700_000_000;
    let pk = signing::encode_base64(&key.verifying_key().to_bytes());
    let sig = signing::sign(&key, secret, nonce, ts);
    c.bench_function("auth/verify (decode + verify_strict)", |b| {
        b.iter(|| {
            let k = signing::decode_public_key(black_box(&pk)).ok()?;
            let s = signing::decode_signature(black_box(&sig)).ok()?;
            Some(signing::verify(&k, secret, nonce, ts, &s))
        })
    });
    // What the host does for a paired key it has seen before (auth.rs keeps it decompressed).
    let raw = signing::decode_public_key(&pk).expect("own key");
    let kept = signing::verifying_key(&raw).expect("own key is a point");
    c.bench_function("auth/verify (kept key: decode signature + verify_strict)", |b| {
        b.iter(|| {
            let s = signing::decode_signature(black_box(&sig)).ok()?;
            Some(signing::verify_with(black_box(&kept), secret, nonce, ts, &s))
        })
    });
    c.bench_function("auth/sign (follower side)", |b| {
        b.iter(|| signing::sign(&key, black_box(secret), nonce, ts))
    });
}

criterion_group!(benches, frame_codec, envelope_codec, auth_verify);
criterion_main!(benches);
