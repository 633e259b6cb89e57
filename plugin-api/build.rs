//! Records the target triple and compiler version the plugin is built with, so the exported
//! header can carry them (`TARGET` is only visible to build scripts).
use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=YONEXUS_PLUGIN_API_TARGET={target}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=YONEXUS_PLUGIN_API_RUSTC={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
