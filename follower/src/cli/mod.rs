//! The pieces of the `yonexus-follower` binary (see `main.rs`).
//!
//! - `args`: the clap definition (also the source of completions and the man page).
//! - `codes`: where pairing codes come from (flag/environment, code file, stdin).
//! - `stdin`: whether stdin is read, and its lines.
//! - `exec`: `--exec`, one process per received rule message, from a bounded queue of its own.
//! - `output`: one line per event on stderr; rule messages on stdout.
//! - `text`: small helpers for the CLI's own lines (durations, printable host text).
//! - `logging`: the RUST_LOG subscriber, with frame-logging crates silenced.

pub mod args;
pub mod codes;
pub mod exec;
pub mod logging;
pub mod output;
pub mod stdin;
pub mod text;
