//! The end-to-end suite: one test binary, one module per area. Every test starts its own real
//! processes (`yonexus`, followers, PostgreSQL, nats-server, Chromium) on ephemeral loopback
//! ports and private temporary directories, so any of them may run beside any other.
//!
//! One binary rather than one per file: cargo runs test binaries one after another, and these
//! tests mostly wait on their processes, so in one binary they wait side by side (the number
//! at once: `RUST_TEST_THREADS`, set in `.cargo/config.toml`). One area alone:
//! `cargo test -p yonexus-e2e --test e2e hub::`.
//!
//! | module | what it covers |
//! |---|---|
//! | `hub` | the protocol end to end: pairing, auth, heartbeat, routing, restarts |
//! | `attacks` | a stranger who knows every identifier (SECURITY.md) |
//! | `hardening` | hostile and slow peers, limits, metrics, TLS, graceful shutdown |
//! | `clocked` | time-driven rules (liveness, pairing TTL) on a manual clock |
//! | `plugins` | the bundled plugins behind the real host, with real followers |
//! | `reload` | hot reload of plugins and config, under load |
//! | `c_plugin` | the example C plugin: built, loaded, routed to, reloaded, refused |
//! | `follower` | the follower CLI and library against the real host |
//! | `store` | the trust store's contract on both backends (file, PostgreSQL) |
//! | `cluster` | several hosts as one hub on PostgreSQL and NATS |
//! | `crash` | SIGKILL during pairing storms; a soak at baseline memory and descriptors |
//! | `dashboard` | the operator dashboard in headless Chromium |
//! | `init` | `yonexus init` as a newcomer uses it |
//! | `fuzz_corpus` | the fuzz seed corpora replayed |
//! | `infra` | the harness itself: fresh artifacts, private services |

mod attacks;
mod c_plugin;
mod clocked;
mod cluster;
mod crash;
mod dashboard;
mod follower;
mod fuzz_corpus;
mod hardening;
mod hub;
mod infra;
mod init;
mod plugins;
mod reload;
mod store;
