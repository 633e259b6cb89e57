//! Any config text: `Config::parse` returns a config or an error, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = yonexus_host::config::Config::parse(Path::new("/nonexistent/fuzz/yonexus.toml"), text);
});
