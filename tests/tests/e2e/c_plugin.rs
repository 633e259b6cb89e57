//! The example C plugin (`examples/c-plugin/`) behind the real host binary: built by its own
//! Makefile (`make -C examples/c-plugin OUT=<temp dir> …`, as its README says) into a temp dir,
//! loaded, routed to by a real follower, hot-reloaded by replacing the `.so` (rename) with a
//! build that reports another version, and refused by `yonexus check` when its header is wrong
//! or its file may be written by others.
//!
//! Needs `make` and a C compiler (`$CC`, else `cc`); a missing one fails the test with the Debian
//! package to install.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use yonexus_e2e::tools::{c_compiler, make};
use yonexus_e2e::*;

fn example_dir() -> PathBuf {
    workspace_root().join("examples/c-plugin")
}

/// Every file in the example's folder with its size and modification time.
fn example_files() -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    std::fs::read_dir(example_dir())
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let m = e.metadata().ok()?;
            Some((e.path(), (m.len(), m.modified().ok())))
        })
        .collect()
}

/// `make -C examples/c-plugin <args> OUT=<out> CC=<cc> CFLAGS='-O2 -g -Werror'`: the Makefile
/// as shipped, warnings as errors (the last assignment of a variable wins). Returns
/// `<out>/libc_echo.so`; checks that nothing was written into the example's folder.
fn make_example(out: &Path, args: &[String]) -> PathBuf {
    let before = example_files();
    let result = Command::new(make())
        .arg("-C")
        .arg(example_dir())
        .args(args)
        .arg(format!("OUT={}", out.display()))
        .arg(format!("CC={}", c_compiler()))
        .arg("CFLAGS=-O2 -g -Werror")
        // Not part of a parent make's job server (when the tests run under make).
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("running make");
    assert!(
        result.status.success(),
        "building {} with its Makefile into {} failed ({}):\n{}{}",
        example_dir().display(),
        out.display(),
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        example_files(),
        before,
        "`make OUT={}` wrote into the example's own folder",
        out.display()
    );
    let so = out.join("libc_echo.so");
    assert!(so.is_file(), "make did not produce {}", so.display());
    so
}

/// The example as shipped, reporting `version` (`make VERSION=<version>`), in `dir/<version>/`.
fn build_example(dir: &Path, version: &str) -> PathBuf {
    make_example(&dir.join(version), &[format!("VERSION={version}")])
}

/// The example rebuilt with the arguments of the README's hot-reload command (`make … 2.0.0`),
/// in `dir/readme/`, so the README cannot drift from the Makefile.
fn build_as_the_readme_says(dir: &Path) -> PathBuf {
    let readme = std::fs::read_to_string(example_dir().join("README.md")).unwrap();
    let line = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("make ") && l.contains("2.0.0"))
        .unwrap_or_else(|| panic!("examples/c-plugin/README.md shows no `make … 2.0.0` command"));
    let args: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .take_while(|a| !a.starts_with('#'))
        .map(str::to_owned)
        .collect();
    println!("the README's rebuild: {line}");
    let so = make_example(&dir.join("readme"), &args);
    let bytes = std::fs::read(&so).unwrap();
    assert!(
        bytes.windows(12).any(|w| w == b"c-echo 2.0.0"),
        "the README's `{line}` did not build a plugin reporting 2.0.0: README and Makefile disagree"
    );
    so
}

/// The example with a sabotaged header, built in `dir/<name>/`: `redefine` is force-included
/// after the header and before the example's code (`CPPFLAGS=-include yonexus_plugin.h -include
/// <redefine>`; the header's include guard makes the example's own `#include` a no-op).
fn build_broken(dir: &Path, name: &str, redefine: &str) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let sabotage = out.join("sabotage.h");
    std::fs::write(&sabotage, format!("{redefine}\n")).unwrap();
    let header = workspace_root().join("plugin-api/include/yonexus_plugin.h");
    make_example(
        &out,
        &[format!(
            "CPPFLAGS=-include {} -include {}",
            header.display(),
            sabotage.display()
        )],
    )
}

/// `[[plugins]]` for the C plugin at `path` on rule `c`, with a visible prefix.
fn c_plugin_config(path: &Path) -> String {
    format!(
        "[[plugins]]\nname = \"c-echo\"\npath = {:?}\nrules = [\"c\"]\n[plugins.config]\nprefix = \"C> \"\n",
        path.display().to_string()
    )
}

async fn rule(raw: &mut Raw) -> String {
    match raw.recv().await.unwrap() {
        Incoming::Rule(r) => r,
        other => panic!("expected a rule message, got {other:?}"),
    }
}

#[tokio::test]
async fn the_c_plugin_answers_logs_events_and_hot_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let so = plugins.join("libc_echo.so");
    std::fs::write(&so, std::fs::read(build_example(&build, "1.0.0")).unwrap()).unwrap();
    let text = format!(
        "{}{}[reload]\ndebounce_ms = 100\n",
        c_plugin_config(&so),
        config_text(tmp.path(), 0, &["alpha", "beta"], "")
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();

    // `check` describes it: its version, the C header and the flags it declares.
    let (code, stdout, stderr) = cli(&host.config, &["check"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("plugin 'c-echo'"))
        .unwrap_or_else(|| panic!("no c-echo line in:\n{stdout}"));
    assert!(
        line.contains("c-echo 1.0.0 (ABI 1.1, plugin-api yonexus_plugin.h 1.1"),
        "{line}"
    );
    assert!(
        line.contains("[non-blocking, thread-safe, never unwinds]"),
        "{line}"
    );

    // Routed: a follower gets the prefixed reply; content keeps its '::'.
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    alpha.send_text("c::hello::world").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "c::C> hello::world");
    alpha.send_text("c::version").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "c::c-echo 1.0.0");
    // The bundled echo plugin beside it is unaffected.
    alpha.send_text("echo::plain").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "echo::plain");

    // Its event handler logs through the host's logger, tagged with its name.
    let (beta, _) = paired_session(&host, "beta").await.unwrap();
    let logged = wait_for(Duration::from_secs(5), || {
        host.logs()
            .into_iter()
            .find(|l| l.contains("follower beta authenticated"))
    })
    .expect("the C plugin's event log line");
    assert!(logged.contains("c-echo"), "{logged}");
    beta.close().await;
    assert!(
        wait_for(Duration::from_secs(5), || {
            host.logs()
                .into_iter()
                .find(|l| l.contains("follower beta disconnected"))
        })
        .is_some(),
        "disconnect event"
    );

    // Hot reload: a rebuilt library replaces the file by rename; the new version answers.
    let v2 = std::fs::read(build_as_the_readme_says(&build)).unwrap();
    let started = Instant::now();
    replace_by_rename(&so, &v2);
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(15) {
        alpha.send_text("c::version").await.unwrap();
        let reply = rule(&mut alpha).await;
        if reply == "c::c-echo 2.0.0" {
            answered = Some(started.elapsed());
            break;
        }
        assert_eq!(
            reply, "c::c-echo 1.0.0",
            "only the old or the new version answers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = answered.expect("the rebuilt C plugin never answered");
    println!("C plugin hot reload: new version answering after {took:?}");
    alpha.send_text("c::after reload").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "c::C> after reload");
}

#[test]
fn a_c_plugin_with_a_wrong_header_a_missing_symbol_or_loose_permissions_is_refused_by_check() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases = [
        (
            build_broken(
                dir,
                "abi2",
                "#undef YONEXUS_ABI_MAJOR\n#define YONEXUS_ABI_MAJOR 2",
            ),
            "built for plugin ABI 2.1 (plugin-api yonexus_plugin.h 1.1), host supports ABI 1.x",
        ),
        (
            build_broken(
                dir,
                "badmagic",
                "#undef YONEXUS_MAGIC_INIT\n#define YONEXUS_MAGIC_INIT { 'N', 'O', 'T', 'P', 'L', 'U', 'G', '\\0' }",
            ),
            "not a Yonexus plugin: header magic is \"NOTPLUG\\x00\"",
        ),
        (
            build_broken(
                dir,
                "othertarget",
                "#undef YONEXUS_TARGET_TRIPLE\n#define YONEXUS_TARGET_TRIPLE \"riscv64gc-unknown-linux-gnu\"",
            ),
            "built for target riscv64gc-unknown-linux-gnu, host is ",
        ),
        (
            build_broken(
                dir,
                "undefined",
                "extern void yonexus_no_such_function(void);\n__attribute__((constructor)) static void uses_it(void) { yonexus_no_such_function(); }",
            ),
            "the dynamic loader refused it: undefined symbol: yonexus_no_such_function",
        ),
        (
            {
                let so = build_example(&dir.join("loose"), "1.0.0");
                std::fs::set_permissions(&so, std::fs::Permissions::from_mode(0o666)).unwrap();
                so
            },
            "writable by its group and by every user (mode 0666",
        ),
    ];
    for (so, reason) in cases {
        let config = dir.join("yonexus.toml");
        std::fs::write(&config, c_plugin_config(&so)).unwrap();
        let (code, stdout, stderr) = cli(&config, &["check"]);
        assert_ne!(code, 0, "{} was accepted:\n{stdout}{stderr}", so.display());
        let line = stdout
            .lines()
            .find(|l| l.contains("REFUSED"))
            .unwrap_or_else(|| panic!("no REFUSED line for {}:\n{stdout}{stderr}", so.display()));
        println!("{line}");
        assert!(
            line.contains(&format!("REFUSED plugin 'c-echo' ({}): ", so.display())),
            "{line}"
        );
        assert!(line.contains(reason), "expected {reason:?} in:\n{line}");
    }
}
