//! Any `builtin::` JSON: `Envelope::decode` never panics, and what it accepts re-encodes to an
//! envelope that decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use yonexus_protocol::Envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = Envelope::decode(text) {
        let again = Envelope::decode(&env.to_json()).expect("re-encoded envelope decodes");
        assert_eq!(again, env);
    }
});
