//! Any text frame: `frame::parse` never panics, and the host's rewrite round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use yonexus_protocol::{frame, Frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match frame::parse(text) {
        Ok(Frame::Rule { rule_id, content }) => {
            assert!(!rule_id.is_empty() && !rule_id.contains("::"));
            assert_eq!(frame::encode_rule(rule_id, content), text);
            let rewritten = frame::rewrite_with_sender(rule_id, "bench-0", content);
            assert_eq!(
                frame::parse_rewritten(&rewritten),
                Some((rule_id, "bench-0", content))
            );
        }
        Ok(Frame::Builtin(json)) => assert_eq!(format!("builtin::{json}"), text),
        Err(_) => {}
    }
});
