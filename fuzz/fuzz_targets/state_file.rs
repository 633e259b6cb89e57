//! Any state file (truncated, bit-flipped, hostile): `store::load_file` returns the records or
//! an error, never panics. There is no pure parse function, so each input goes through a file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        std::env::temp_dir().join(format!("yonexus-fuzz-state-{}.json", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    if std::fs::write(path(), data).is_ok() {
        if let Ok(records) = yonexus_host::store::load_file(path()) {
            for (key, record) in &records {
                assert_eq!(key, &record.identifier);
            }
        }
    }
});
