//! Arbitrary sequences of frames from several connections into the session state machine
//! (in-memory store, injected clock), checking that nothing panics and that trust changes only
//! with the right code or a valid proof. See `yonexus_host::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    yonexus_host::fuzzing::session_sequence(data);
});
