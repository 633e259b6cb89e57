//! `yonexus init` as a newcomer uses it: the starter config passes `yonexus check` with the real
//! bundled plugins (printing its summary without log lines), and a host serving it pairs a
//! follower and answers through the bundled plugins.

use std::process::{Command, Output, Stdio};
use std::time::Duration;
use yonexus_e2e::{bin, config_text, paired_session, plugin, HostProc, Incoming, Raw};

fn yonexus(args: &[&str], rust_log: Option<&str>) -> Output {
    let mut cmd = Command::new(bin("yonexus"));
    cmd.args(args).env_remove("NO_COLOR").stdin(Stdio::null());
    match rust_log {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn rule(raw: &mut Raw) -> String {
    match raw.recv().await.unwrap() {
        Incoming::Rule(r) => r,
        other => panic!("expected a rule message, got {other:?}"),
    }
}

#[tokio::test]
async fn the_starter_config_checks_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("yonexus.toml");
    let cfg = config.to_str().unwrap();
    let plugin_dir = plugin("echo").parent().unwrap().to_owned();

    let out = yonexus(
        &[
            "init",
            "--config",
            cfg,
            "--plugin-dir",
            plugin_dir.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "plugins not found? {}",
        text(&out.stderr)
    );

    // `check` loads the four real plugins and prints only its summary.
    let out = yonexus(&["check", "--config", cfg], None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("config OK"), "{stdout}");
    for name in ["echo", "relay", "broadcast", "presence"] {
        assert!(
            stdout.contains(&format!("plugin '{name}': {name} ")),
            "{stdout}"
        );
    }
    assert!(
        stderr.is_empty(),
        "log lines around check's summary:\n{stderr}"
    );
    // The same with RUST_LOG: the host's log lines are there on request, without colour codes
    // (stderr is a pipe).
    let out = yonexus(&["check", "--config", cfg], Some("debug"));
    let stderr = text(&out.stderr);
    assert!(out.status.success() && stderr.contains("DEBUG"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe:\n{stderr}"
    );

    // Found by itself when the plugins sit beside the binary (a build tree).
    if bin("yonexus").parent() == Some(plugin_dir.as_path()) {
        let auto = tmp.path().join("auto.toml");
        let out = yonexus(&["init", "--config", auto.to_str().unwrap()], None);
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(&auto).unwrap(),
            std::fs::read_to_string(&config).unwrap()
        );
    }

    // Serve it, with test ports and the test harness's code-collecting notifier instead of "log".
    let _ = config_text(tmp.path(), 0, &[], ""); // writes notify.sh
    let script = tmp.path().join("notify.sh");
    let starter = std::fs::read_to_string(&config).unwrap();
    let served = starter
        .replace("listen = \"127.0.0.1:8787\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:9787\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "notify = \"log\"",
            &format!(
                "notify = \"command\"\ncommand = [\"/bin/sh\", {:?}]",
                script.to_str().unwrap()
            ),
        );
    assert_ne!(served, starter);
    let host = HostProc::start(tmp.path(), &served).unwrap();
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    alpha.send_text("echo::hello").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "echo::echo: hello");
    let (_beta, _) = paired_session(&host, "beta").await.unwrap();
    alpha.send_text("presence::subscribe").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        vec![rule(&mut alpha).await, rule(&mut alpha).await]
    })
    .await
    .unwrap();
    assert_eq!(got, ["presence::subscribed", "presence::beta::online"]);
}
