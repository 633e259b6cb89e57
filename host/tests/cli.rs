//! The `yonexus` CLI as a newcomer meets it: `init`, `check`, completions and man pages, run as
//! the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use yonexus_host::config::Config;
use yonexus_host::init::{plugin_file, BUNDLED};

fn yonexus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_yonexus"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fake_plugins(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in BUNDLED {
        std::fs::write(dir.join(plugin_file(name)), b"stand-in").unwrap();
    }
}

#[test]
fn init_writes_a_valid_config_once() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("lib/yonexus/plugins");
    fake_plugins(&plugins);
    let config = tmp.path().join("etc/yonexus/yonexus.toml");
    let cfg = config.to_str().unwrap();
    let dir = plugins.to_str().unwrap();

    let out = yonexus(&["init", "--config", cfg, "--plugin-dir", dir]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("wrote {cfg}")), "{stdout}");
    assert!(stdout.contains("yonexus check --config"), "{stdout}");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // The written file is a valid config naming the bundled plugins in that folder.
    let c = Config::load(&config).unwrap();
    let names: Vec<_> = c.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, BUNDLED);
    assert!(c.plugins.iter().all(|p| p.path.starts_with(&plugins)));
    assert_eq!(
        c.server.state_dir,
        tmp.path().join("etc/yonexus/yonexus-state")
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("notify = \"log\""));
    assert!(written.contains("\"command\"") && written.contains("\"discord\""));

    // Never over an existing file without --force; the old content stays.
    std::fs::write(&config, "# mine\n").unwrap();
    let out = yonexus(&["init", "--config", cfg, "--plugin-dir", dir]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");

    // --force replaces it; --state-dir is written as given.
    let out = yonexus(&[
        "init",
        "--config",
        cfg,
        "--plugin-dir",
        dir,
        "--state-dir",
        "/var/lib/yonexus",
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
    let c = Config::load(&config).unwrap();
    assert_eq!(c.server.state_dir, Path::new("/var/lib/yonexus"));
}

#[test]
fn init_warns_when_the_plugins_are_not_there() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("yonexus.toml");
    let empty = tmp.path().join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    let out = yonexus(&[
        "init",
        "--config",
        config.to_str().unwrap(),
        "--plugin-dir",
        empty.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("echo, relay, broadcast, presence") && err.contains("--plugin-dir"),
        "{err}"
    );
    // `check` then says which file is missing, for which plugin, and where it looked.
    let out = yonexus(&["check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("plugins[0].path: plugin 'echo': plugin file")
            && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn check_prints_a_clean_summary_without_log_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("sub/./yonexus.toml");
    std::fs::create_dir_all(tmp.path().join("sub")).unwrap();
    std::fs::write(
        &config,
        "[server]\nstate_dir = \"./state\"\n[followers]\nallow = [\"alpha\"]\n",
    )
    .unwrap();
    let out = yonexus(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(stdout.contains("1 allowlisted follower(s)"), "{stdout}");
    // Normalised: no "./" inside the shown state_dir.
    let state = tmp.path().join("sub/state");
    assert!(
        stdout.contains(&format!("state_dir {}", state.display())),
        "{stdout}"
    );
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
}

/// `check` refuses what `serve` would refuse at start (unusable TLS files, a Discord notifier
/// without its token), and a pairing command that is not there to run; it passes a good one.
#[test]
fn check_refuses_what_serve_would_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |name: &str, extra: &str| {
        let config = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nstate_dir = \"state-{name}\"\n[followers]\nallow = [\"alpha\"]\n{extra}"
            ),
        )
        .unwrap();
        let out = yonexus(&["check", "--config", config.to_str().unwrap()]);
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    std::fs::write(tmp.path().join("cert.pem"), "not a certificate\n").unwrap();
    std::fs::write(tmp.path().join("key.pem"), "not a key\n").unwrap();
    let (ok, stdout, stderr) = check(
        "tls",
        "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    );
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("tls NOT USABLE"), "{stdout}");
    assert!(stderr.contains("server.tls.cert"), "{stderr}");

    let var = "YONEXUS_CHECK_TEST_TOKEN_THAT_IS_NOT_SET";
    let (ok, stdout, stderr) = check(
        "discord",
        &format!("[pairing]\nnotify = \"discord\"\ndiscord_admin_user_id = \"123456789012345678\"\ndiscord_bot_token_env = \"{var}\"\n"),
    );
    assert!(!ok, "{stdout}");
    assert!(stderr.contains(var), "{stderr}");

    let (ok, stdout, stderr) = check(
        "missing-command",
        "[pairing]\nnotify = \"command\"\ncommand = [\"yonexus-no-such-notifier\", \"--x\"]\n",
    );
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("yonexus-no-such-notifier NOT FOUND"),
        "{stdout}"
    );
    assert!(
        stderr.contains("not an executable file on PATH"),
        "{stderr}"
    );

    let (ok, stdout, stderr) = check(
        "command",
        "[pairing]\nnotify = \"command\"\ncommand = [\"sh\", \"-c\", \"true\"]\n",
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("pairing notifier command: /"), "{stdout}");
}

#[test]
fn completions_for_each_shell_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = yonexus(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = text(&out.stdout);
        for sub in [
            "serve", "check", "clients", "pairing", "reload", "revoke", "init",
        ] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(script.contains("config"), "{shell}");
        if shell == "bash" {
            // The script is valid bash.
            let tmp = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(tmp.path(), &script).unwrap();
            let syntax = Command::new("bash")
                .arg("-n")
                .arg(tmp.path())
                .output()
                .unwrap();
            assert!(syntax.status.success(), "{}", text(&syntax.stderr));
        }
    }
    let out = yonexus(&["completions", "tcsh"]);
    assert!(!out.status.success());
}

#[test]
fn man_pages_to_stdout_and_one_per_subcommand() {
    let out = yonexus(&["manpage"]);
    assert!(out.status.success(), "{out:?}");
    let page = text(&out.stdout);
    assert!(page.contains(".TH yonexus 1"), "{page}");
    assert!(
        page.contains("yonexus\\-init") || page.contains("init"),
        "{page}"
    );
    assert!(
        page.contains("NO_COLOR"),
        "the after-help text is in the page"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let out = yonexus(&["manpage", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    for name in [
        "yonexus.1",
        "yonexus-serve.1",
        "yonexus-check.1",
        "yonexus-init.1",
        "yonexus-revoke.1",
        "yonexus-completions.1",
    ] {
        let page =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.contains(".TH "), "{name}");
        // Valid roff, where groff is installed: no warnings at the strictest level.
        if let Ok(g) = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join(name))
            .output()
        {
            assert!(
                g.status.success() && g.stderr.is_empty(),
                "{name}: {}",
                text(&g.stderr)
            );
        }
    }
    let revoke = std::fs::read_to_string(dir.join("yonexus-revoke.1")).unwrap();
    assert!(revoke.contains("allowlist"), "{revoke}");
}

/// "Port in use" comes first — before any plugin is loaded — and its OS error is said once.
#[test]
fn port_in_use_is_reported_first_and_once() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // A plugin file that would be refused if it were ever loaded (it is not an ELF file).
    std::fs::write(tmp.path().join("broken.so"), b"not a library").unwrap();
    let config = tmp.path().join("yonexus.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"off\"\n[[plugins]]\nname = \"broken\"\npath = \"broken.so\"\nrules = [\"x\"]\n"
        ),
    )
    .unwrap();
    let out = yonexus(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(!err.contains("broken"), "no plugin was loaded first: {err}");
    drop(taken);
}
