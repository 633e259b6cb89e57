//! The Yonexus v1 wire protocol, shared by the host and the follower.
//!
//! No I/O and no async runtime lives here: only the shapes of what travels on the socket and the
//! rules for checking it.
//!
//! Layout:
//! - [`frame`]: splitting a text frame into `builtin::<json>` or `<rule_id>::<content>`, and the
//!   host's `rule::sender::content` rewrite.
//! - [`envelope`]: the control envelope (`type`, `requestId`, `timestamp`, `payload`) and a typed
//!   [`envelope::Message`] for every control message type, with decode errors worded for the wire.
//! - [`json`]: parsing a peer's JSON with repeated object keys refused (no "last one wins").
//! - [`signing`]: the exact bytes a follower signs, key and signature encodings, and verification.
//! - [`validate`]: identifiers, rule ids, nonces, pairing codes and secrets (format and
//!   generation) — each rule written once, used by the host, the follower and the tools.
//! - [`wire`]: [`wire_enum!`], the one way an enumeration maps to and from its wire string
//!   (`as_str`, `Display`, serde, and an `Unknown` catch-all where a newer peer may send more).
//!
//! The protocol facts themselves are documented in the repository README and in
//! `PROTOCOL.md` of the project's shared notes.

pub mod envelope;
pub mod frame;
pub mod json;
pub mod signing;
pub mod validate;
pub mod wire;

pub use envelope::{DecodeError, Envelope, Message};
pub use frame::{Frame, FrameError};

/// The protocol version this crate speaks (sent as the string `"1"`).
pub const PROTOCOL_VERSION: &str = "1";

/// The rule id reserved for control messages.
pub const BUILTIN_RULE: &str = "builtin";

/// Separator between rule id, sender and content.
pub const SEPARATOR: &str = "::";
