//! Criterion micro-benchmarks (no library code: the benchmarks are in `benches/`).
//!
//! - `benches/codec.rs`: the wire codec and auth verification, no I/O.
//! - `benches/plugin_call.rs`: one rule message through the plugin C ABI into the bundled echo
//!   `.so` and back into a follower's outbound queue; the full ordered auth check.
//!
//! `cargo bench --manifest-path bench/micro/Cargo.toml -- --warm-up-time 1 --measurement-time 3`
