//! The example C plugin (`examples/c-plugin/`) behind the real host binary: compiled with `cc`
//! into a temp dir, loaded, routed to by a real follower, hot-reloaded by replacing the `.so`
//! (rename) with a build that reports another version, and refused by `yonexus check` when its
//! header is wrong or its file may be written by others.
//!
//! Needs a C compiler (`$CC`, else `cc`); without one these tests print SKIPPED and pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use yonexus_e2e::*;

fn example_dir() -> PathBuf {
    workspace_root().join("examples/c-plugin")
}

fn include_dir() -> PathBuf {
    workspace_root().join("plugin-api/include")
}

fn compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => Some(cc),
        _ => {
            println!("SKIPPED: no C compiler `{cc}` (install gcc or set CC)");
            None
        }
    }
}

/// Compile `source` into `out` with the Makefile's flags (plus `-Werror`) and `defines`.
fn compile(cc: &str, source: &Path, out: &Path, defines: &[&str]) {
    let result = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"])
        .args(["-O2", "-fPIC", "-fvisibility=hidden", "-shared"])
        .arg("-I")
        .arg(include_dir())
        .arg("-I")
        .arg(example_dir())
        .args(defines)
        .arg("-o")
        .arg(out)
        .arg(source)
        .output()
        .expect("running the C compiler");
    assert!(
        result.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// The example as shipped, reporting `version`.
fn build_example(cc: &str, dir: &Path, version: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join(format!("libc_echo-{version}.so"));
    compile(
        cc,
        &example_dir().join("c_echo.c"),
        &out,
        &[&format!("-DC_ECHO_VERSION=\"{version}\"")],
    );
    out
}

/// The example with a sabotaged header: `redefine` is inserted after the header and before the
/// example's code (the header's include guard makes the example's own `#include` a no-op).
fn build_broken(cc: &str, dir: &Path, name: &str, redefine: &str) -> PathBuf {
    let wrapper = dir.join(format!("{name}.c"));
    std::fs::write(
        &wrapper,
        format!("#include \"yonexus_plugin.h\"\n{redefine}\n#include \"c_echo.c\"\n"),
    )
    .unwrap();
    let out = dir.join(format!("lib{name}.so"));
    compile(cc, &wrapper, &out, &[]);
    out
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
    let Some(cc) = compiler() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let so = plugins.join("libc_echo.so");
    std::fs::write(
        &so,
        std::fs::read(build_example(&cc, &build, "1.0.0")).unwrap(),
    )
    .unwrap();
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
    let v2 = std::fs::read(build_example(&cc, &build, "2.0.0")).unwrap();
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
fn a_c_plugin_with_a_wrong_header_or_loose_permissions_is_refused_by_check() {
    use std::os::unix::fs::PermissionsExt;
    let Some(cc) = compiler() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases = [
        (
            build_broken(
                &cc,
                dir,
                "abi2",
                "#undef YONEXUS_ABI_MAJOR\n#define YONEXUS_ABI_MAJOR 2",
            ),
            "built for plugin ABI 2.1 (plugin-api yonexus_plugin.h 1.1), host supports ABI 1.x",
        ),
        (
            build_broken(
                &cc,
                dir,
                "badmagic",
                "#undef YONEXUS_MAGIC_INIT\n#define YONEXUS_MAGIC_INIT { 'N', 'O', 'T', 'P', 'L', 'U', 'G', '\\0' }",
            ),
            "not a Yonexus plugin: header magic is \"NOTPLUG\\x00\"",
        ),
        (
            build_broken(
                &cc,
                dir,
                "othertarget",
                "#undef YONEXUS_TARGET_TRIPLE\n#define YONEXUS_TARGET_TRIPLE \"riscv64gc-unknown-linux-gnu\"",
            ),
            "built for target riscv64gc-unknown-linux-gnu, host is ",
        ),
        (
            {
                let so = build_example(&cc, &dir.join("loose"), "1.0.0");
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
