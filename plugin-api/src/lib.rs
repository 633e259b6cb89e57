//! # yonexus-plugin-api
//!
//! The only crate a Yonexus rule-handler plugin depends on: a hand-written C ABI plus a safe Rust
//! SDK on top of it. It depends on nothing (not even `serde`), so a plugin can be built in its
//! own cargo project, with its own profile and compiler release, and still load into the hub.
//!
//! Layout:
//! - [`abi`]: the `#[repr(C)]` structs, `extern "C"` function types and constants that cross
//!   the boundary (header, plugin vtable, host API, byte buffers, status codes).
//! - [`sdk`]: the safe side — the [`Plugin`] trait (calls serialized) and the [`SharedPlugin`]
//!   trait (thread-safe, `&self`), the [`Host`] handle, [`Message`], [`Event`], [`Config`].
//!   Re-exported at the crate root.
//! - [`export_plugin!`]: the one macro that generates the exported header and every shim
//!   (implemented in `export`, each shim wrapped in `catch_unwind`); `export_plugin!(T)` for a
//!   `Plugin`, `export_plugin!(shared T)` for a `SharedPlugin`.
//! - `include/yonexus_plugin.h` (beside `src/`): the same ABI for C, C++, Zig or Go authors;
//!   `tests/c_header.rs` compiles it and checks every size, offset and constant against [`abi`].
//! - [`json`]: a small JSON reader for config tables.
//! - [`testing`]: an in-memory host for unit-testing plugin logic.
//! - [`docs`]: the ABI contract — layout, ownership, threading, versioning, what not to do.
//!
//! A complete plugin:
//!
//! ```ignore
//! use yonexus_plugin_api::{export_plugin, Config, Host, Message, Plugin};
//!
//! struct Echo;
//! impl Plugin for Echo {
//!     const NAME: &'static str = "echo";
//!     fn create(_config: &Config, _host: &Host) -> Result<Self, String> { Ok(Echo) }
//!     fn on_message(&mut self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
//!         host.reply(msg, msg.content).map_err(|e| e.to_string())
//!     }
//! }
//! export_plugin!(Echo);
//! ```

pub mod abi;
pub mod docs;
mod export;
pub mod json;
pub mod sdk;
pub mod testing;

pub use sdk::{
    Config, ErrorCode, Event, Host, Level, Liveness, Message, Plugin, SendError, SharedPlugin,
};

/// Version of this crate, recorded in every plugin header.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Target triple this crate (and so the plugin) is compiled for.
pub const TARGET: &str = env!("YONEXUS_PLUGIN_API_TARGET");
/// `rustc -V` of the compiler building this crate.
pub const RUSTC_VERSION: &str = env!("YONEXUS_PLUGIN_API_RUSTC");

/// Implementation details of [`export_plugin!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::{
        create, destroy, free_buf, header, on_event, on_message, panic_message, vtable, Adapter,
        Exclusive, Shared,
    };
}
