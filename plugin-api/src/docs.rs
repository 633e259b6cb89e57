//! # The plugin ABI contract (v1.1)
//!
//! This module is documentation only. The types are in [`crate::abi`]; the same ABI for C, C++,
//! Zig or Go is `include/yonexus_plugin.h` in this crate (checked field by field against
//! [`crate::abi`] by `tests/c_header.rs`), with a worked example in `examples/c-plugin/`.
//!
//! ## Loading sequence
//! 1. The host checks the file: a regular, non-empty file that neither its group nor other users
//!    may write and that belongs to root or to the host's own user (checked on the open file, the
//!    same rule the host applies to its config file; a refusal names the file, its owner and mode
//!    and says `chmod go-w` / `chown`); an ELF 64-bit shared object for the host's machine whose
//!    headers and segments all lie inside the file (a truncated copy is refused instead of being
//!    mapped). It copies the bytes it checked to a private path that is never reused, and
//!    `dlopen`s the copy with `RTLD_NOW | RTLD_LOCAL` (unresolved symbols fail at load time).
//! 2. It looks up the static [`ExportedHeader`](crate::abi::ExportedHeader) under the symbol
//!    `yonexus_plugin_header_v1` and reads it **before running any plugin code**: `magic`,
//!    `header_size` (≥ the v1.0 size), `abi_major` (must equal the host's), `ptr_width`,
//!    `target_triple` (must equal the host's), `panic_unwind` (must be
//!    [`PANIC_UNWIND`](crate::abi::PANIC_UNWIND), or [`PANIC_NONE`](crate::abi::PANIC_NONE) from
//!    a plugin declaring minor ≥ 1), and — from minor ≥ 1 — `flags`. Any mismatch refuses the
//!    plugin with one line naming the file and both versions.
//! 3. It reads the [`PluginVTable`](crate::abi::PluginVTable) the header points to, checks its
//!    `struct_size`, and calls `create(host_api, config_json, &mut instance, &mut err)` on a
//!    worker thread.
//! 4. `on_message` / `on_event` are called as the flags allow (see "Threading"); `destroy` when
//!    the instance is retired (shutdown, or replaced by a reload). The library itself is **never
//!    unloaded** (`dlclose` is not called): superseded generations stay mapped for the life of the
//!    process. `yonexus check` runs steps 1–3 (and `destroy`) for every configured plugin.
//!
//! ## Layout rules
//! - Only `#[repr(C)]` structs of fixed-width integers, raw pointers, [`FfiStr`](crate::abi::FfiStr),
//!   [`FfiBuf`](crate::abi::FfiBuf) and `extern "C"` function pointers cross the boundary. No Rust
//!   layout type, trait object, `String`, `Vec`, `Box` or tokio type ever does.
//! - Text is UTF-8 bytes with an explicit length (no NUL terminator). Config is JSON text.
//!   The connected-followers list is identifiers separated by `\n`.
//! - Status codes and enums are plain `u32`s; an unknown value from a newer peer is treated as
//!   an error (or, for event kinds, ignored), never transmuted into a Rust enum.
//!
//! ## Ownership
//! - An [`FfiStr`](crate::abi::FfiStr) argument is borrowed for the duration of the call only;
//!   copy it if you need it later. `ptr` may be null when `len` is 0. Header strings are
//!   `'static`.
//! - An [`FfiBuf`](crate::abi::FfiBuf) is owned by the side that allocated it, and only that side
//!   frees it, through the `free_buf` it exports: error messages written by the plugin are freed
//!   by the host calling [`PluginVTable::free_buf`](crate::abi::PluginVTable::free_buf); the
//!   follower list written by the host is freed by the plugin calling
//!   [`HostApi::free_buf`](crate::abi::HostApi::free_buf) (also when the call's status is not
//!   OK). The SDK does both for you. This keeps working even when host and plugin use different
//!   allocators (a C plugin's `malloc`, a Rust plugin's own global allocator).
//! - The instance pointer is opaque to the host; only `destroy` frees it.
//!
//! ## The host handle and its lifetime
//! - The [`HostApi`](crate::abi::HostApi) table (the SDK's [`Host`](crate::Host), `Copy + Send +
//!   Sync`) may be kept and called from any thread — including threads the plugin starts — from
//!   `create` on. Its callbacks are synchronous, thread-safe and never block on the network:
//!   `send_to`, `send_error` and `broadcast` only queue frames; the host does all I/O.
//! - **Late calls return an error** (ABI 1.1 hosts). The table and its `ctx` are never freed.
//!   Once the instance is destroyed (after `destroy` returns, or when its `create` failed) — for
//!   example because a hot reload replaced it — every callback made through its table does
//!   nothing and reports it: [`STATUS_GONE`](crate::abi::STATUS_GONE) from `send_to`,
//!   `send_error` and `connected_followers` (SDK: [`SendError::Gone`](crate::SendError::Gone)),
//!   0 from `broadcast`, `now` and `log_enabled`, and `log` drops the record. The host logs one
//!   warning per dead instance that is still being called. This is a safety net, not a way of
//!   working: a thread that sees `Gone` should end, and your type's `Drop` should stop its
//!   threads. (A 1.0 host freed the table after `destroy`; with it, a late call was
//!   use-after-free.)
//!
//! ## Threading
//! - `create` and `destroy` run on a worker thread and never concurrently with any other call on
//!   the instance.
//! - Across a reload the old and the new instance overlap: the new one is created while the old
//!   one still drains its queue, receives its first message only once the old one has finished,
//!   and the old one is destroyed after that. An instance that takes an exclusive resource in
//!   `create` (binds a port, locks a file) must expect its predecessor to hold it a moment longer,
//!   or take it lazily on its first call.
//! - By default, calls into one instance (`on_message`, `on_event`) are serialized: the host
//!   runs the instance on its own worker thread fed by a bounded queue. Calls may move to another
//!   thread over the instance's life (hence `Plugin: Send`); never rely on thread-local state
//!   between calls.
//! - Calls must be short. A call that exceeds the host's deadline is logged and counted; while it
//!   runs, that plugin's queue fills and further messages are answered `HANDLER_BUSY`. The host
//!   cannot interrupt a stuck call.
//! - **Flags** (ABI 1.1, [`PluginHeader::flags`](crate::abi::PluginHeader::flags)) are promises
//!   that let the host run a plugin faster. They are optional: a host that does not know a bit
//!   ignores it, and the host reads no flags from a 1.0 plugin.
//!   - [`FLAG_NON_BLOCKING`](crate::abi::FLAG_NON_BLOCKING) (SDK:
//!     [`Plugin::NON_BLOCKING`](crate::Plugin::NON_BLOCKING)): every `on_message` / `on_event`
//!     call returns within microseconds to about a millisecond and never blocks — no sleeping, no
//!     blocking file or network I/O, no waiting for a lock another thread holds across slow work,
//!     no waiting for a follower. Calling host callbacks is fine (they only queue). The host may
//!     then call the plugin directly on its async I/O threads instead of handing each message to
//!     the plugin's worker thread (saving two thread wake-ups per message); this host does so for
//!     `on_message` of a plugin that is also thread-safe (below), and only then. The host times every
//!     such call; a call that overruns its budget makes the host stop calling that instance
//!     directly — it is demoted to its worker thread, with a warning in the log, until it is
//!     reloaded — so a broken promise costs latency once, not forever. Calls on a non-thread-safe
//!     instance stay serialized either way.
//!   - [`FLAG_THREAD_SAFE`](crate::abi::FLAG_THREAD_SAFE) (SDK: a
//!     [`SharedPlugin`](crate::SharedPlugin), exported with `export_plugin!(shared T)`): the
//!     instance may be called concurrently from several threads — `on_message` with itself and
//!     with `on_event`. The host may then shard it over several worker threads by sender: one
//!     sender's messages stay in order (one at a time, on one thread), different senders run in
//!     parallel, so a busy rule can use more than one core. Events may run concurrently with
//!     messages; do not assume an order between different senders. The SDK makes this sound
//!     by construction: a `SharedPlugin` takes `&self` and must be `Sync`; a [`Plugin`](crate::Plugin)
//!     (`&mut self`) never sets the flag.
//!
//! ## Failure model
//! - Every shim generated by [`export_plugin!`](crate::export_plugin) runs the author's code in
//!   `catch_unwind`. A panic returns `STATUS_PANIC` with the panic message and where it happened
//!   (`panicked: … (at src/lib.rs:8:36)`), which the host logs in its own format: the SDK sets a
//!   panic hook in the library (once, at the first call) that prints nothing for a panic inside a
//!   host call and hands any other panic — on a thread the plugin started, say — to the hook
//!   that was there before. The sender gets
//!   `error HANDLER_FAILED`, the host keeps serving, and after repeated panics within a window
//!   the host disables the plugin's rules until it is reloaded (any reload re-creates the
//!   instance, also one that changes nothing else); messages and events already queued for it
//!   then are not handed to it (senders get `HANDLER_FAILED`).
//! - Aborts, segfaults, stack overflows and infinite loops are **not** contained (the plugin runs
//!   in the host process). Rust plugins built with `panic = "abort"` are refused at load time
//!   (the header records `cfg!(panic = "unwind")`).
//! - Code in other languages declares [`PANIC_NONE`](crate::abi::PANIC_NONE): it promises that
//!   nothing ever unwinds out of a function the host calls (C++: catch every exception inside
//!   each `extern "C"` function; no `longjmp` across the boundary; Go: recover in every export).
//!   Failures come back as statuses.
//!
//! ## Versioning
//! - [`ABI_MAJOR`](crate::abi::ABI_MAJOR) changes only for incompatible changes; host and plugin
//!   majors must be equal. A new major also gets a new header symbol.
//! - [`ABI_MINOR`](crate::abi::ABI_MINOR) changes when fields or functions are **appended** to
//!   `PluginHeader`, `PluginVTable` or `HostApi`, or when a reserved field or an unused value
//!   gets a meaning; nothing is ever reordered or removed, and every layout offset stays. Each
//!   side reads the other's `header_size` / `struct_size` before touching a field newer than
//!   v1.0, reads a repurposed reserved field only when the other side declares a minor that
//!   defines it, and treats a missing or null optional entry (such as `on_event`) as absent.
//! - A host loads every minor of its major, older or newer: a newer plugin's unknown flags are
//!   ignored. A plugin that needs something new (a C plugin's `PANIC_NONE`) is refused by older
//!   hosts, with a message.
//! - The `plugin-api` crate version and the compiler version in the header are informational.
//!
//! History:
//! - 1.0 — initial ABI (`on_event` is optional: null or absent means "no events").
//! - 1.1 — the header's reserved `u32` became `flags` (`FLAG_NON_BLOCKING`,
//!   `FLAG_THREAD_SAFE`); `panic_unwind` got the value `PANIC_NONE` (2) for code that never
//!   unwinds; host callbacks may return `STATUS_GONE` (6) after the instance is gone, and the
//!   host API table is never freed. Same sizes and offsets as 1.0; 1.0 plugins keep loading.
//!
//! ## For C (C++, Zig, Go) authors
//! Include `yonexus_plugin.h`, fill a static `yonexus_plugin_vtable` (`create`, `on_message`,
//! `destroy`, `free_buf`, and `on_event` or `NULL`), and export the header with
//! `YONEXUS_EXPORT_PLUGIN(name, version, vtable, flags);` (it sets `PANIC_NONE`, the ABI version,
//! pointer width and the target triple). Build a shared object with `-fPIC -shared
//! -fvisibility=hidden`. Everything above applies unchanged; in particular: copy borrowed
//! strings you keep (they are not NUL-terminated), put error messages you `malloc` into `*err`
//! and free them in your `free_buf`, release the host's follower list with `host->free_buf`,
//! never unwind out of a callback, declare `YONEXUS_FLAG_THREAD_SAFE` only when your instance
//! really tolerates concurrent calls, and expect `YONEXUS_STATUS_GONE` from a host handle used
//! after `destroy`. `examples/c-plugin/README.md` walks through it.
//!
//! ## What plugin authors must not do
//! - Set a `#[global_allocator]` that the host does not also use — cross-boundary frees are
//!   avoided by design, but keep memory ownership on your side anyway: never free a host buffer
//!   yourself, never hand the host memory to free.
//! - Use tokio (or any async runtime) inside calls, or expect the host's runtime: a `cdylib` has
//!   its own copy of the runtime's thread-locals and sees "no reactor running". Ask the host to
//!   send; it does the I/O.
//! - Leave threads running after `destroy`. The library stays mapped and a kept `Host` is now
//!   memory-safe to call, but every call fails with [`SendError::Gone`](crate::SendError::Gone)
//!   (`STATUS_GONE`): stop your threads in your type's `Drop`, and end a thread that sees `Gone`.
//!   (With a 1.0 host a late call touched freed memory.)
//! - Rely on static or thread-local destructors running: the library is never unloaded, so they
//!   normally do not run. Put cleanup in your type's `Drop` (run by `destroy`).
//! - Build with `panic = "abort"`, or let a panic escape a hand-written `extern "C"` function
//!   (always use `export_plugin!`).
//! - Block for long inside a call (sleeping, blocking network I/O): your queue fills up and
//!   followers get `HANDLER_BUSY`. Never block at all in a plugin that declares `NON_BLOCKING`.
//! - Declare `FLAG_THREAD_SAFE` in a hand-written header for an instance that mutates state
//!   without synchronisation.
//! - Ship a plugin file that its group or other users can write: the host refuses it.
