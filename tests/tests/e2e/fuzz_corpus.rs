//! Replays the cargo-fuzz seed corpora (`fuzz/corpus/<target>/`) through the same functions the
//! fuzz targets call, plus every truncation and a sweep of bit flips of each seed, so the
//! regular test suite checks the "never panics on hostile input" property without nightly.

use std::path::Path;
use yonexus_e2e::workspace_root;
use yonexus_protocol::{frame, Envelope, Frame};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = workspace_root().join("fuzz/corpus").join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    assert!(!seeds.is_empty(), "empty corpus {}", dir.display());
    let mut variants = Vec::new();
    for seed in &seeds {
        for cut in 0..seed.len() {
            variants.push(seed[..cut].to_vec());
        }
        for bit in (0..seed.len() * 8).step_by(7) {
            let mut v = seed.clone();
            v[bit / 8] ^= 1 << (bit % 8);
            variants.push(v);
        }
    }
    seeds.extend(variants);
    seeds
}

#[test]
fn frame_codec_corpus() {
    for data in corpus("frame_codec") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Ok(Frame::Rule { rule_id, content }) = frame::parse(text) {
            assert_eq!(frame::encode_rule(rule_id, content), text);
            let rewritten = frame::rewrite_with_sender(rule_id, "x", content);
            assert_eq!(
                frame::parse_rewritten(&rewritten),
                Some((rule_id, "x", content))
            );
        }
    }
}

#[test]
fn envelope_decode_corpus() {
    for data in corpus("envelope_decode") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Ok(env) = Envelope::decode(text) {
            // Whatever decodes re-encodes to something that decodes to the same envelope.
            let again = Envelope::decode(&env.to_json()).expect("re-decode");
            assert_eq!(again, env);
        }
    }
}

#[test]
fn config_parse_corpus() {
    for data in corpus("config_parse") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let _ = yonexus_host::config::Config::parse(Path::new("/nonexistent/yonexus.toml"), text);
    }
}

#[test]
fn state_file_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.json");
    for data in corpus("state_file") {
        std::fs::write(&path, &data).unwrap();
        if let Ok(records) = yonexus_host::store::load_file(&path) {
            for (key, record) in &records {
                assert_eq!(key, &record.identifier);
            }
        }
        // A file that fails to load is never modified.
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}

#[test]
fn session_corpus() {
    for data in corpus("session") {
        yonexus_host::fuzzing::session_sequence(&data);
    }
}
