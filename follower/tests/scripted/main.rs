//! The follower against a small scripted host that plays the host side of the protocol over a
//! real WebSocket on an ephemeral loopback port: one test binary (cargo runs binaries one after
//! another; in one, these tests wait side by side).
//!
//! - `client`: the library's client — handshake, reconnects, failover, liveness, back-pressure.
//! - `cli`: the `yonexus-follower` binary — codes from a prompt or a file, lines in and out,
//!   `--exec`, exit codes.
//! - `common`: the scripted host and frame helpers both use.

mod cli;
mod client;
mod common;
