//! `include/yonexus_plugin.h` against the Rust ABI in `src/abi.rs`, so the two cannot drift:
//!
//! - every `#[repr(C)]` struct: size, alignment, and every field's offset and size, compiled by
//!   `cc` and compared with `size_of` / `offset_of!`; the fields must tile each struct exactly
//!   (a field missing on both sides would leave a gap);
//! - every top-level `pub const` and `pub type` in `src/abi.rs` has its C counterpart with the
//!   same value (the source is scanned, so a new Rust constant without a C one fails here);
//! - the header compiles as strict C99 and as C++ (whose export keeps the C symbol name);
//! - a C plugin built against it (`tests/c/roundtrip.c`) is loaded and called through the Rust
//!   function types with the SDK's in-memory host: every callback, both buffer directions.
//!
//! Needs a C compiler (`$CC`, else `cc`) and a C++ compiler (`$CXX`, else `c++`); a missing one
//! fails the test with the Debian package to install (`.ci/run` installs both). The workspace
//! needs `cc` to build anyway, and the suite's tests are not optional.

use core::mem::{align_of, offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;
use yonexus_plugin_api::abi::*;
use yonexus_plugin_api::testing::{Sent, TestHost};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("c-header")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The compiler named by `$var`, else `default`; fails the test when it does not run, naming
/// the Debian `package` that provides it. (tests/src/tools.rs of the end-to-end crate has the
/// same check; this crate's tests cannot depend on that crate.)
fn compiler(var: &str, default: &str, package: &str) -> String {
    let cc = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => cc,
        Ok(o) => panic!(
            "`{cc} --version` failed ({}): these tests need a working compiler; install the \
             Debian package `{package}` (`apt-get install {package}`) or set {var}",
            o.status
        ),
        Err(e) => panic!(
            "cannot run `{cc}` ({e}): these tests need it; install the Debian package \
             `{package}` (`apt-get install {package}`) or set {var} to another compiler"
        ),
    }
}

fn c_compiler() -> String {
    compiler("CC", "cc", "gcc")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Strict flags for every compile: the header must be warning-free.
const STRICT: &[&str] = &["-Wall", "-Wextra", "-Werror", "-pedantic"];

struct Field {
    name: &'static str,
    offset: usize,
    size: usize,
    align: usize,
}

struct Struct {
    rust: &'static str,
    c: &'static str,
    size: usize,
    align: usize,
    fields: Vec<Field>,
}

fn field_layout<T, F>(_: fn(&T) -> &F) -> (usize, usize) {
    (size_of::<F>(), align_of::<F>())
}

macro_rules! layout {
    ($rust:ident => $c:literal { $($f:ident),* $(,)? }) => {
        Struct {
            rust: stringify!($rust),
            c: $c,
            size: size_of::<$rust>(),
            align: align_of::<$rust>(),
            fields: vec![$({
                let (size, align) = field_layout::<$rust, _>(|s| &s.$f);
                Field { name: stringify!($f), offset: offset_of!($rust, $f), size, align }
            }),*],
        }
    };
}

fn structs() -> Vec<Struct> {
    vec![
        layout!(FfiStr => "yonexus_str" { ptr, len }),
        layout!(FfiBuf => "yonexus_buf" { ptr, len, cap }),
        layout!(PluginHeader => "yonexus_plugin_header" {
            magic, header_size, abi_major, abi_minor, ptr_width, panic_unwind, flags,
            target_triple, plugin_name, plugin_version, plugin_api_version, rustc_version, vtable,
        }),
        layout!(PluginVTable => "yonexus_plugin_vtable" {
            struct_size, abi_minor, _reserved, create, on_message, destroy, free_buf, on_event,
        }),
        layout!(HostApi => "yonexus_host_api" {
            struct_size, abi_minor, _reserved, ctx, send_to, send_error, broadcast, log,
            log_enabled, now, connected_followers, free_buf,
        }),
    ]
}

/// Numeric constants: (Rust name, value). The C name is `YONEXUS_<name>`.
fn numeric_constants() -> Vec<(&'static str, u64)> {
    macro_rules! c {
        ($($n:ident),* $(,)?) => { vec![$((stringify!($n), $n as u64)),*] };
    }
    c![
        ABI_MAJOR,
        ABI_MINOR,
        STATUS_OK,
        STATUS_ERROR,
        STATUS_PANIC,
        STATUS_OFFLINE,
        STATUS_BUSY,
        STATUS_INVALID,
        STATUS_GONE,
        PANIC_ABORT,
        PANIC_UNWIND,
        PANIC_NONE,
        FLAG_NON_BLOCKING,
        FLAG_THREAD_SAFE,
        KNOWN_FLAGS,
        LOG_ERROR,
        LOG_WARN,
        LOG_INFO,
        LOG_DEBUG,
        LOG_TRACE,
        ERR_HANDLER_FAILED,
        ERR_TARGET_OFFLINE,
        ERR_HANDLER_BUSY,
        ERR_RULE_NOT_FOUND,
        ERR_MALFORMED_MESSAGE,
        EVENT_AUTHENTICATED,
        EVENT_DISCONNECTED,
        EVENT_LIVENESS_CHANGED,
        HEADER_V1_0_SIZE,
        VTABLE_V1_0_MIN_SIZE,
        HOST_API_V1_0_SIZE,
    ]
}

/// Rust type alias → C typedef, with its size.
fn type_aliases() -> Vec<(&'static str, &'static str, usize)> {
    vec![
        ("Status", "yonexus_status", size_of::<Status>()),
        ("CreateFn", "yonexus_create_fn", size_of::<CreateFn>()),
        (
            "OnMessageFn",
            "yonexus_on_message_fn",
            size_of::<OnMessageFn>(),
        ),
        ("OnEventFn", "yonexus_on_event_fn", size_of::<OnEventFn>()),
        ("DestroyFn", "yonexus_destroy_fn", size_of::<DestroyFn>()),
        ("FreeBufFn", "yonexus_free_buf_fn", size_of::<FreeBufFn>()),
    ]
}

/// Rust constants with a C counterpart of another shape (checked separately below).
const SPECIAL: &[&str] = &["MAGIC", "HEADER_SYMBOL", "HEADER_SYMBOL_NAME"];

/// What the C side prints, and what the Rust side expects, in the same line format.
fn expected_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for s in structs() {
        lines.push(format!("struct {} {} {}", s.c, s.size, s.align));
        for f in &s.fields {
            lines.push(format!("field {}.{} {} {}", s.c, f.name, f.offset, f.size));
        }
    }
    for (name, value) in numeric_constants() {
        lines.push(format!("const YONEXUS_{name} {value}"));
    }
    for (_, c, size) in type_aliases() {
        lines.push(format!("type {c} {size}"));
    }
    lines.push(format!("string YONEXUS_HEADER_SYMBOL {HEADER_SYMBOL_NAME}"));
    lines.push(format!(
        "string YONEXUS_ABI_VERSION_STRING {ABI_MAJOR}.{ABI_MINOR}"
    ));
    let magic: Vec<String> = MAGIC.iter().map(|b| format!("{b:02x}")).collect();
    lines.push(format!("magic {}", magic.join("")));
    lines
}

fn c_program() -> String {
    let mut body = String::new();
    for s in structs() {
        body += &format!(
            "    printf(\"struct {c} %zu %zu\\n\", sizeof({c}), _Alignof({c}));\n",
            c = s.c
        );
        for f in &s.fields {
            body += &format!(
                "    printf(\"field {c}.{f} %zu %zu\\n\", offsetof({c}, {f}), sizeof((({c} *)0)->{f}));\n",
                c = s.c,
                f = f.name
            );
        }
    }
    for (name, _) in numeric_constants() {
        body += &format!(
            "    printf(\"const YONEXUS_{name} %llu\\n\", (unsigned long long)(YONEXUS_{name}));\n"
        );
    }
    for (_, c, _) in type_aliases() {
        body += &format!("    printf(\"type {c} %zu\\n\", sizeof({c}));\n");
    }
    body += "    printf(\"string YONEXUS_HEADER_SYMBOL %s\\n\", YONEXUS_HEADER_SYMBOL);\n";
    body +=
        "    printf(\"string YONEXUS_ABI_VERSION_STRING %s\\n\", YONEXUS_ABI_VERSION_STRING);\n";
    body += "    {\n        static const uint8_t m[8] = YONEXUS_MAGIC_INIT;\n        int i;\n        printf(\"magic \");\n        for (i = 0; i < 8; i++) {\n            printf(\"%02x\", m[i]);\n        }\n        printf(\"\\n\");\n    }\n";
    format!(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"yonexus_plugin.h\"\n\nint main(void) {{\n{body}    return 0;\n}}\n"
    )
}

#[test]
fn every_size_offset_and_constant_matches_the_rust_definitions() {
    let cc = c_compiler();
    let dir = work_dir("layout");
    let src = dir.join("layout.c");
    std::fs::write(&src, c_program()).unwrap();
    let exe = dir.join("layout");
    run(Command::new(&cc)
        .args(["-std=c11"])
        .args(STRICT)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe));
    let printed = run(&mut Command::new(&exe));
    let got: Vec<&str> = printed.lines().collect();
    let want = expected_lines();
    let mismatches: Vec<String> = want
        .iter()
        .zip(got.iter().copied().chain(std::iter::repeat("<missing>")))
        .filter(|(w, g)| w.as_str() != *g)
        .map(|(w, g)| format!("  rust: {w}\n     c: {g}"))
        .collect();
    assert!(
        mismatches.is_empty() && got.len() == want.len(),
        "the C header and src/abi.rs disagree:\n{}",
        mismatches.join("\n")
    );
    println!("{} layout facts and constants agree", want.len());
}

#[test]
fn the_fields_tile_every_struct_so_none_is_missing() {
    let round = |n: usize, a: usize| n.div_ceil(a) * a;
    for s in structs() {
        let mut end = 0;
        for f in &s.fields {
            assert_eq!(
                f.offset,
                round(end, f.align),
                "{}: a gap before `{}` (a field missing from the table?)",
                s.rust,
                f.name
            );
            end = f.offset + f.size;
        }
        assert_eq!(
            s.size,
            round(end, s.align),
            "{}: bytes after the last listed field",
            s.rust
        );
    }
}

/// Top-level `pub const NAME` / `pub type NAME` / `pub struct NAME` items of `src/abi.rs`.
fn rust_items(kind: &str) -> Vec<String> {
    let text = std::fs::read_to_string(crate_dir().join("src/abi.rs")).unwrap();
    let prefix = format!("pub {kind} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        // `pub const fn` is a function, not a constant.
        .filter(|rest| !rest.starts_with("fn "))
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

#[test]
fn every_rust_constant_type_and_struct_has_a_c_counterpart_in_the_checks() {
    let consts: Vec<&str> = numeric_constants().iter().map(|(n, _)| *n).collect();
    for name in rust_items("const") {
        assert!(
            consts.contains(&name.as_str()) || SPECIAL.contains(&name.as_str()),
            "src/abi.rs has `pub const {name}` but the C header check does not: add \
             YONEXUS_{name} to include/yonexus_plugin.h and to numeric_constants()"
        );
    }
    let types: Vec<&str> = type_aliases().iter().map(|(r, _, _)| *r).collect();
    for name in rust_items("type") {
        assert!(
            types.contains(&name.as_str()),
            "src/abi.rs has `pub type {name}` without a C typedef in the checks"
        );
    }
    let structs: Vec<&str> = structs().iter().map(|s| s.rust).collect();
    for name in rust_items("struct") {
        assert!(
            structs.contains(&name.as_str()) || name == "ExportedHeader",
            "src/abi.rs has `pub struct {name}` without a C struct in the checks"
        );
    }
    // ExportedHeader is a transparent wrapper: the C side exports the header struct itself.
    assert_eq!(size_of::<ExportedHeader>(), size_of::<PluginHeader>());
}

#[test]
fn the_header_compiles_as_strict_c99_and_as_cpp_keeping_the_c_symbol_name() {
    let include = crate_dir().join("include");
    run(Command::new(c_compiler())
        .args(["-std=c99", "-fsyntax-only"])
        .args(STRICT)
        .arg("-I")
        .arg(&include)
        .arg(crate_dir().join("tests/c/roundtrip.c")));
    let cxx = compiler("CXX", "c++", "g++");
    let dir = work_dir("cpp");
    let src = dir.join("plugin.cpp");
    std::fs::write(
        &src,
        r#"#include "yonexus_plugin.h"
#include <stdexcept>

static yonexus_status create(const yonexus_host_api *, yonexus_str, void **out, yonexus_buf *) noexcept {
    try { *out = new int(1); return YONEXUS_STATUS_OK; } catch (...) { return YONEXUS_STATUS_ERROR; }
}
static yonexus_status on_message(void *, yonexus_str, yonexus_str, yonexus_str, yonexus_buf *) noexcept {
    return YONEXUS_STATUS_OK;
}
static void destroy(void *p) noexcept { delete static_cast<int *>(p); }
static void free_buf(yonexus_buf b) noexcept { delete[] b.ptr; }

static const yonexus_plugin_vtable vtable = {
    sizeof(yonexus_plugin_vtable), YONEXUS_ABI_MINOR, 0, create, on_message, destroy, free_buf, nullptr,
};
YONEXUS_EXPORT_PLUGIN("cpp", "1.0.0", vtable, YONEXUS_FLAG_THREAD_SAFE);
"#,
    )
    .unwrap();
    let so = dir.join("libcpp.so");
    run(Command::new(&cxx)
        .args(["-std=c++11", "-shared", "-fPIC", "-fvisibility=hidden"])
        .args(STRICT)
        .arg("-I")
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&so));
    // SAFETY: a library we just built; its initializers are the C++ runtime's.
    let lib = unsafe { libloading::Library::new(&so) }.unwrap();
    // SAFETY: only the address is taken.
    let sym = unsafe { lib.get::<*const PluginHeader>(HEADER_SYMBOL) }
        .expect("the C++ build exports the unmangled header symbol");
    // SAFETY: the symbol is a yonexus_plugin_header, static in a library that stays loaded.
    let h = unsafe { &**sym };
    assert_eq!(h.magic, MAGIC);
    assert_eq!((h.abi_major, h.abi_minor), (ABI_MAJOR, ABI_MINOR));
    assert_eq!(h.flags, FLAG_THREAD_SAFE);
    assert_eq!(h.panic_unwind, PANIC_NONE);
    std::mem::forget(lib);
}

fn build_roundtrip() -> PathBuf {
    let cc = c_compiler();
    let dir = work_dir("roundtrip");
    let so = dir.join("libroundtrip.so");
    run(Command::new(&cc)
        .args(["-std=c99", "-shared", "-fPIC", "-fvisibility=hidden"])
        .args(STRICT)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c/roundtrip.c"))
        .arg("-o")
        .arg(&so));
    so
}

fn take_err(free: FreeBufFn, buf: &mut FfiBuf) -> String {
    let b = std::mem::replace(buf, FfiBuf::empty());
    // SAFETY: the plugin wrote a buffer of `len` bytes.
    let text = String::from_utf8(unsafe { b.to_vec() }).unwrap();
    // SAFETY: plugin-allocated; handed back to the plugin once.
    unsafe { free(b) };
    text
}

fn header_of(lib: &libloading::Library) -> &PluginHeader {
    // SAFETY: only the address is taken.
    let sym = unsafe { lib.get::<*const PluginHeader>(HEADER_SYMBOL) }.unwrap();
    // SAFETY: a static yonexus_plugin_header in a library kept loaded while `lib` lives.
    unsafe { &**sym }
}

#[test]
fn a_c_plugin_round_trips_through_the_rust_types_and_the_sdk_test_host() {
    let so = build_roundtrip();
    // SAFETY: a library we just built from tests/c/roundtrip.c (no initializers).
    let lib = unsafe { libloading::Library::new(&so) }.unwrap();
    let h = header_of(&lib);
    assert_eq!(h.magic, MAGIC);
    assert_eq!(h.header_size as usize, size_of::<PluginHeader>());
    assert_eq!((h.abi_major, h.abi_minor), (ABI_MAJOR, ABI_MINOR));
    assert_eq!(h.ptr_width as usize, size_of::<usize>());
    assert_eq!(h.panic_unwind, PANIC_NONE);
    assert_eq!(h.flags, FLAG_NON_BLOCKING);
    // SAFETY: header strings are static in the loaded library.
    unsafe {
        assert_eq!(h.plugin_name.as_str(), Some("roundtrip"));
        assert_eq!(h.plugin_version.as_str(), Some("0.0.1"));
        assert_eq!(h.target_triple.as_str(), Some(yonexus_plugin_api::TARGET));
        assert_eq!(
            h.plugin_api_version.as_str().map(str::to_owned),
            Some(format!("yonexus_plugin.h {ABI_MAJOR}.{ABI_MINOR}"))
        );
        let compiler = h.rustc_version.as_str().unwrap_or_default();
        assert!(
            compiler.starts_with("gcc ") || compiler.starts_with("clang "),
            "{compiler}"
        );
    }
    // SAFETY: the header's vtable pointer points at the plugin's static vtable.
    let vt: PluginVTable = unsafe { *h.vtable };
    assert_eq!(vt.struct_size as usize, size_of::<PluginVTable>());
    let on_event = vt.on_event.expect("the C plugin handles events");

    let th = TestHost::new();
    th.set_now(1_700_000_123);
    for id in ["alice", "bob", "carol"] {
        th.connect(id);
    }
    let mut inst = std::ptr::null_mut();
    let mut err = FfiBuf::empty();
    // SAFETY: valid host API, config string and out pointers, per the ABI.
    unsafe {
        assert_eq!(
            (vt.create)(th.api(), FfiStr::new("fail"), &mut inst, &mut err),
            STATUS_ERROR
        );
        assert_eq!(take_err(vt.free_buf, &mut err), "create refused");
        assert_eq!(
            (vt.create)(th.api(), FfiStr::new("> "), &mut inst, &mut err),
            STATUS_OK
        );
    }
    assert!(!inst.is_null());
    assert_eq!(th.logs(), vec![(LOG_INFO, "created".to_owned())]);
    let call = |content: &str, err: &mut FfiBuf| {
        // SAFETY: live instance, calls serialized, strings valid across the call.
        unsafe {
            (vt.on_message)(
                inst,
                FfiStr::new("rt"),
                FfiStr::new("alice"),
                FfiStr::new(content),
                err,
            )
        }
    };
    assert_eq!(call("hi::there", &mut err), STATUS_OK);
    assert_eq!(call("", &mut err), STATUS_OK);
    assert_eq!(call("now", &mut err), STATUS_OK);
    assert_eq!(call("who", &mut err), STATUS_OK);
    assert_eq!(call("all", &mut err), STATUS_OK);
    assert_eq!(call("level", &mut err), STATUS_OK);
    assert_eq!(call("error", &mut err), STATUS_OK);
    assert_eq!(
        th.take_sent(),
        vec![
            Sent::message("alice", "rt", "> hi::there"),
            Sent::message("alice", "rt", "> "),
            Sent::message("alice", "rt", "> 1700000123"),
            Sent::message("alice", "rt", "> alice,bob,carol"),
            Sent::message("bob", "rt", "everyone"),
            Sent::message("carol", "rt", "everyone"),
            Sent::message("alice", "rt", "> broadcast:2"),
            Sent::message("alice", "rt", "> 1"),
            Sent::error(
                "alice",
                yonexus_plugin_api::ErrorCode::MalformedMessage,
                "bad"
            ),
        ]
    );
    assert_eq!(call("fail", &mut err), STATUS_ERROR);
    assert_eq!(take_err(vt.free_buf, &mut err), "failed on purpose");

    // Events, including a kind this ABI does not define (ignored, still OK).
    for (kind, id, status) in [
        (EVENT_AUTHENTICATED, "bob", ""),
        (EVENT_LIVENESS_CHANGED, "bob", "unstable"),
        (EVENT_DISCONNECTED, "bob", ""),
        (99, "bob", ""),
    ] {
        // SAFETY: as above.
        let st = unsafe { on_event(inst, kind, FfiStr::new(id), FfiStr::new(status), &mut err) };
        assert_eq!(st, STATUS_OK);
    }
    assert_eq!(call("events", &mut err), STATUS_OK);
    assert_eq!(
        th.take_sent(),
        vec![
            Sent::message("bob", "ev", "unstable"),
            Sent::message("alice", "rt", "> 4"),
        ]
    );

    // After the instance is gone, the host answers STATUS_GONE; the C plugin passes it on.
    th.retire();
    assert_eq!(call("x", &mut err), STATUS_GONE);
    assert_eq!(call("who", &mut err), STATUS_GONE);
    // SAFETY: no call running; destroyed once.
    unsafe { (vt.destroy)(inst) };
    drop(lib);
}
