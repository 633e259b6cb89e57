/*
 * yonexus_plugin.h — the Yonexus plugin ABI 1.1 for C, C++, Zig, Go (cgo) and any language with a
 * C FFI.
 *
 * This header mirrors plugin-api/src/abi.rs exactly (same types, field order, sizes, offsets and
 * constants); plugin-api/tests/c_header.rs compiles it and compares every size, offset and
 * constant with the Rust definitions, so the two cannot drift. The contract that goes with these
 * layouts (ownership, threads, versioning) is in the plugin-api crate docs, module `docs`
 * ("For C authors"), and in examples/c-plugin/README.md. In short:
 *
 *  - Export ONE symbol, `yonexus_plugin_header_v1` (a `yonexus_plugin_header`), e.g. with
 *    YONEXUS_EXPORT_PLUGIN below. The host reads it before running any of your code.
 *  - Text is UTF-8 bytes plus a length, never NUL-terminated. A `yonexus_str` you receive is
 *    borrowed for the duration of the call only: copy what you keep.
 *  - A `yonexus_buf` is freed only by the side that allocated it: error messages you write are
 *    freed by the host calling your vtable's `free_buf`; the follower list the host writes is
 *    freed by you calling the host's `free_buf`.
 *  - Never let an exception, longjmp or signal handler unwind out of a function the host calls
 *    (declare YONEXUS_PANIC_NONE; C++: catch everything inside each function).
 *  - Calls into one instance are serialized unless you declare YONEXUS_FLAG_THREAD_SAFE; they
 *    may come from different threads over its life. Host callbacks may be called from any thread.
 *  - A host call after your instance was destroyed is safe and returns YONEXUS_STATUS_GONE.
 */
#ifndef YONEXUS_PLUGIN_H
#define YONEXUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Versions and identity ------------------------------------------------------------- */

/* Host and plugin majors must be equal. */
#define YONEXUS_ABI_MAJOR 1
/* Appended fields/functions and new meanings for reserved fields bump the minor; a host loads
 * every minor of its major. 1.1: header `flags`, YONEXUS_PANIC_NONE, YONEXUS_STATUS_GONE. */
#define YONEXUS_ABI_MINOR 1
/* For the header's informational `plugin_api_version` field. */
#define YONEXUS_ABI_VERSION_STRING "1.1"

/* The first 8 bytes of the header: "YNXPLUG" and a NUL. */
#define YONEXUS_MAGIC_INIT { 'Y', 'N', 'X', 'P', 'L', 'U', 'G', '\0' }
/* The exported symbol's name (what the host looks up with dlsym). */
#define YONEXUS_HEADER_SYMBOL "yonexus_plugin_header_v1"

/* ---- Status codes (yonexus_status) ------------------------------------------------------ */
/* A plain integer: treat any value you do not know as an error. */
typedef uint32_t yonexus_status;
#define YONEXUS_STATUS_OK 0u
/* Failure; a UTF-8 message may be in the error buffer. */
#define YONEXUS_STATUS_ERROR 1u
/* (Rust SDK) a panic was caught; C plugins never return it. */
#define YONEXUS_STATUS_PANIC 2u
/* send_to / send_error: the target follower is not connected. */
#define YONEXUS_STATUS_OFFLINE 3u
/* send_to / send_error: the target's outbound queue is full (it is being disconnected). */
#define YONEXUS_STATUS_BUSY 4u
/* An argument was rejected (bad UTF-8, empty or reserved rule id, NULL out pointer, ...). */
#define YONEXUS_STATUS_INVALID 5u
/* (1.1) The instance this host API was given to has been destroyed or replaced (a reload):
 * nothing was done, and nothing ever will be through this handle. Stop the thread that holds it.
 * broadcast returns 0, now returns 0, log_enabled returns 0 and log does nothing instead. */
#define YONEXUS_STATUS_GONE 6u

/* ---- Header values ---------------------------------------------------------------------- */
/* `panic_unwind`: how a failure inside the plugin travels. */
#define YONEXUS_PANIC_ABORT 0u  /* Rust panic = "abort": refused */
#define YONEXUS_PANIC_UNWIND 1u /* Rust panic = "unwind", every panic caught by the SDK shims */
#define YONEXUS_PANIC_NONE 2u   /* (1.1) never unwinds: C, C++ catching everything, Zig, Go */

/* `flags` (1.1; read only when abi_minor >= 1; unknown bits are ignored by the host). */
/* Every on_message/on_event call is short and never blocks (no sleep, no blocking I/O, no
 * waiting on a lock held for long): the host may call it directly on its I/O threads (this host
 * does so for on_message of plugins that also set YONEXUS_FLAG_THREAD_SAFE, and only then). A call
 * that overruns the host's budget (running or blocked, not merely preempted) demotes the instance to its own worker thread until a reload. */
#define YONEXUS_FLAG_NON_BLOCKING (1u << 0)
/* on_message/on_event may be called concurrently (with themselves and each other) from several
 * threads; one sender's messages still arrive in order. create/destroy never run concurrently
 * with anything. */
#define YONEXUS_FLAG_THREAD_SAFE (1u << 1)
/* Every flag this ABI version defines. */
#define YONEXUS_KNOWN_FLAGS (YONEXUS_FLAG_NON_BLOCKING | YONEXUS_FLAG_THREAD_SAFE)

/* ---- Log levels, error codes, event kinds ----------------------------------------------- */
#define YONEXUS_LOG_ERROR 1u
#define YONEXUS_LOG_WARN 2u
#define YONEXUS_LOG_INFO 3u
#define YONEXUS_LOG_DEBUG 4u
#define YONEXUS_LOG_TRACE 5u

/* Codes for send_error; unknown values become HANDLER_FAILED on the wire. */
#define YONEXUS_ERR_HANDLER_FAILED 1u
#define YONEXUS_ERR_TARGET_OFFLINE 2u
#define YONEXUS_ERR_HANDLER_BUSY 3u
#define YONEXUS_ERR_RULE_NOT_FOUND 4u
#define YONEXUS_ERR_MALFORMED_MESSAGE 5u

/* on_event kinds; ignore kinds you do not know (return YONEXUS_STATUS_OK). */
#define YONEXUS_EVENT_AUTHENTICATED 1u
#define YONEXUS_EVENT_DISCONNECTED 2u
/* `status` is "online", "unstable" or "offline". */
#define YONEXUS_EVENT_LIVENESS_CHANGED 3u

/* ---- Byte strings and buffers ----------------------------------------------------------- */

/* Borrowed UTF-8 bytes (Rust: FfiStr). `ptr` may be NULL when `len` is 0. Not NUL-terminated. */
typedef struct yonexus_str {
    const uint8_t *ptr;
    size_t len;
} yonexus_str;

/* An owned buffer (Rust: FfiBuf), freed only by the side that allocated it, through the
 * `free_buf` that side exports. `ptr` NULL means "no buffer". `cap` is the allocator's business
 * (C plugins may store anything there; the host passes it back unchanged). */
typedef struct yonexus_buf {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} yonexus_buf;

/* A yonexus_str of a string literal, usable in static initialisers: YONEXUS_STR("echo"). */
#define YONEXUS_STR(literal) { (const uint8_t *)(literal), sizeof(literal) - 1 }

/* ---- Function types ---------------------------------------------------------------------- */

struct yonexus_host_api;

/* Build an instance from the JSON config text; set *out_instance on success. On failure you may
 * put a message you allocated into *err (the host frees it with your free_buf). */
typedef yonexus_status (*yonexus_create_fn)(const struct yonexus_host_api *host,
                                            yonexus_str config_json, void **out_instance,
                                            yonexus_buf *err);
/* One rule message: `rule`, the authenticated `sender`, `content` (everything after
 * "<rule>::"). Errors as for create; the sender then gets `error HANDLER_FAILED`. */
typedef yonexus_status (*yonexus_on_message_fn)(void *instance, yonexus_str rule,
                                                yonexus_str sender, yonexus_str content,
                                                yonexus_buf *err);
/* One follower lifecycle event (YONEXUS_EVENT_*). */
typedef yonexus_status (*yonexus_on_event_fn)(void *instance, uint32_t kind,
                                              yonexus_str identifier, yonexus_str status,
                                              yonexus_buf *err);
/* Drop the instance. Never concurrent with another call on it; nothing follows it. */
typedef void (*yonexus_destroy_fn)(void *instance);
/* Free a buffer allocated by the side that exports this function. */
typedef void (*yonexus_free_buf_fn)(yonexus_buf buf);

/* ---- The plugin's tables ----------------------------------------------------------------- */

/* The plugin's functions (Rust: PluginVTable). Append-only; `struct_size` first. */
typedef struct yonexus_plugin_vtable {
    uint32_t struct_size; /* sizeof(yonexus_plugin_vtable) */
    uint16_t abi_minor;   /* YONEXUS_ABI_MINOR */
    uint16_t _reserved;   /* 0 */
    yonexus_create_fn create;
    yonexus_on_message_fn on_message;
    yonexus_destroy_fn destroy;
    yonexus_free_buf_fn free_buf;
    yonexus_on_event_fn on_event; /* NULL: the plugin wants no lifecycle events */
} yonexus_plugin_vtable;

/* The exported header (Rust: PluginHeader), read before any plugin code runs. */
typedef struct yonexus_plugin_header {
    uint8_t magic[8];     /* YONEXUS_MAGIC_INIT */
    uint32_t header_size; /* sizeof(yonexus_plugin_header) */
    uint16_t abi_major;   /* YONEXUS_ABI_MAJOR */
    uint16_t abi_minor;   /* YONEXUS_ABI_MINOR */
    uint16_t ptr_width;   /* sizeof(void *) */
    uint16_t panic_unwind; /* YONEXUS_PANIC_NONE for C */
    uint32_t flags;       /* YONEXUS_FLAG_* (0 in 1.0, where it was reserved) */
    yonexus_str target_triple; /* must equal the host's, e.g. "x86_64-unknown-linux-gnu" */
    yonexus_str plugin_name;
    yonexus_str plugin_version;
    yonexus_str plugin_api_version; /* informational */
    yonexus_str rustc_version;      /* informational: any compiler description */
    const yonexus_plugin_vtable *vtable;
} yonexus_plugin_header;

/* ---- The host's table ------------------------------------------------------------------- */

/* Host callbacks (Rust: HostApi), given to create. Append-only; `struct_size` first. Every
 * callback is synchronous, thread-safe, never blocks on the network (the host only queues) and
 * may be called from any thread, including threads you start. Pass `ctx` back to each. From
 * ABI 1.1 hosts the table is never freed: a call after your instance was destroyed is safe and
 * returns YONEXUS_STATUS_GONE. */
typedef struct yonexus_host_api {
    uint32_t struct_size;
    uint16_t abi_minor;
    uint16_t _reserved;
    const void *ctx;
    /* Queue "<rule>::<content>" for follower `target`: OK, OFFLINE, BUSY, INVALID, GONE. */
    yonexus_status (*send_to)(const void *ctx, yonexus_str target, yonexus_str rule,
                              yonexus_str content);
    /* Queue an error{code, message} frame (YONEXUS_ERR_*) for follower `target`. */
    yonexus_status (*send_error)(const void *ctx, yonexus_str target, uint32_t code,
                                 yonexus_str message);
    /* Queue "<rule>::<content>" for every authenticated follower except `except` (empty: none);
     * returns how many it was queued for. */
    uint64_t (*broadcast)(const void *ctx, yonexus_str rule, yonexus_str content,
                          yonexus_str except);
    /* One log record (YONEXUS_LOG_*), tagged with the plugin's configured name. */
    void (*log)(const void *ctx, uint32_t level, yonexus_str message);
    /* Whether a record at `level` would be recorded (skip formatting when 0). */
    uint32_t (*log_enabled)(const void *ctx, uint32_t level);
    /* The host's clock: UTC unix seconds. */
    int64_t (*now)(const void *ctx);
    /* Identifiers of the authenticated followers, '\n'-separated, into *out (host-owned:
     * release with free_buf below, also when the status is not OK). */
    yonexus_status (*connected_followers)(const void *ctx, yonexus_buf *out);
    /* Free a buffer the host allocated. */
    yonexus_free_buf_fn free_buf;
} yonexus_host_api;

/* sizeof the header in ABI 1.0 and 1.1 (1.1 only gave the reserved word a meaning). */
#define YONEXUS_HEADER_V1_0_SIZE sizeof(yonexus_plugin_header)
/* A host API table has at least the v1.0 fields when struct_size >= this. */
#define YONEXUS_HOST_API_V1_0_SIZE \
    (offsetof(yonexus_host_api, free_buf) + sizeof(yonexus_free_buf_fn))
/* A vtable must have at least the fields up to free_buf. */
#define YONEXUS_VTABLE_V1_0_MIN_SIZE \
    (offsetof(yonexus_plugin_vtable, free_buf) + sizeof(yonexus_free_buf_fn))

/* ---- Exporting the header ---------------------------------------------------------------- */

/* The target triple the host compares with its own. Detected for the common Linux targets;
 * define YONEXUS_TARGET_TRIPLE yourself (e.g. -DYONEXUS_TARGET_TRIPLE='"x86_64-unknown-linux-musl"')
 * for anything else. It must equal the host's exactly (`yonexus check` shows a mismatch). */
#ifndef YONEXUS_TARGET_TRIPLE
#if defined(__linux__) && defined(__x86_64__) && defined(__GLIBC__)
#define YONEXUS_TARGET_TRIPLE "x86_64-unknown-linux-gnu"
#elif defined(__linux__) && defined(__aarch64__) && defined(__GLIBC__)
#define YONEXUS_TARGET_TRIPLE "aarch64-unknown-linux-gnu"
#elif defined(__linux__) && defined(__x86_64__)
#define YONEXUS_TARGET_TRIPLE "x86_64-unknown-linux-musl"
#elif defined(__linux__) && defined(__aarch64__)
#define YONEXUS_TARGET_TRIPLE "aarch64-unknown-linux-musl"
#else
#error "unknown target: define YONEXUS_TARGET_TRIPLE to the host's target triple"
#endif
#endif

/* A description of this compiler, for the header's informational `rustc_version` field. */
#ifndef YONEXUS_COMPILER
#if defined(__clang__)
#define YONEXUS_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define YONEXUS_COMPILER "gcc " __VERSION__
#else
#define YONEXUS_COMPILER "unknown C compiler"
#endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#define YONEXUS_VISIBLE __attribute__((visibility("default")))
#else
#define YONEXUS_VISIBLE
#endif

#ifdef __cplusplus
#define YONEXUS_EXTERN extern "C"
#else
#define YONEXUS_EXTERN
#endif

/*
 * Define the exported header. NAME and VERSION are string literals, VTABLE is your static
 * yonexus_plugin_vtable, FLAGS is 0 or YONEXUS_FLAG_* bits:
 *
 *     static const yonexus_plugin_vtable vtable = { sizeof(yonexus_plugin_vtable),
 *         YONEXUS_ABI_MINOR, 0, my_create, my_on_message, my_destroy, my_free_buf, NULL };
 *     YONEXUS_EXPORT_PLUGIN("my-plugin", "1.0.0", vtable, YONEXUS_FLAG_NON_BLOCKING);
 */
#define YONEXUS_EXPORT_PLUGIN(NAME, VERSION, VTABLE, FLAGS)                                    \
    YONEXUS_EXTERN YONEXUS_VISIBLE const yonexus_plugin_header yonexus_plugin_header_v1 = {     \
        YONEXUS_MAGIC_INIT,                                                                    \
        (uint32_t)sizeof(yonexus_plugin_header),                                               \
        YONEXUS_ABI_MAJOR,                                                                     \
        YONEXUS_ABI_MINOR,                                                                     \
        (uint16_t)sizeof(void *),                                                              \
        YONEXUS_PANIC_NONE,                                                                    \
        (FLAGS),                                                                               \
        YONEXUS_STR(YONEXUS_TARGET_TRIPLE),                                                    \
        YONEXUS_STR(NAME),                                                                     \
        YONEXUS_STR(VERSION),                                                                  \
        YONEXUS_STR("yonexus_plugin.h " YONEXUS_ABI_VERSION_STRING),                           \
        YONEXUS_STR(YONEXUS_COMPILER),                                                         \
        &(VTABLE),                                                                             \
    }

/* ---- Small helpers ---------------------------------------------------------------------- */

/* A yonexus_str of `len` bytes at `ptr` (not copied). */
static inline yonexus_str yonexus_str_of(const void *ptr, size_t len) {
    yonexus_str s;
    s.ptr = (const uint8_t *)ptr;
    s.len = len;
    return s;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* YONEXUS_PLUGIN_H */
