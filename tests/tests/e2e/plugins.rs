//! Plugins behind the real host binary, with real followers over WebSocket: the bundled relay,
//! broadcast and presence plugins, and a fixture plugin that panics or stalls on demand.

use std::time::{Duration, Instant};
use yonexus_e2e::*;

async fn rule(raw: &mut Raw) -> String {
    match raw.recv().await.unwrap() {
        Incoming::Rule(r) => r,
        other => panic!("expected a rule message, got {other:?}"),
    }
}

#[tokio::test]
async fn relay_broadcast_and_presence_between_real_followers() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = bundled_plugins(&["relay", "broadcast", "presence"]);
    let text = format!(
        "{extra}{}",
        config_text(tmp.path(), 0, &["alpha", "beta", "gamma", "delta"], "")
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    alpha.send_text("presence::subscribe").await.unwrap();
    // Acknowledged at once (nobody else is connected yet, so no state lines follow).
    assert_eq!(rule(&mut alpha).await, "presence::subscribed");
    let (mut beta, _) = paired_session(&host, "beta").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "presence::beta::online");
    let (mut gamma, _) = paired_session(&host, "gamma").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "presence::gamma::online");

    // relay: the target gets the sender injected by the host; content keeps its '::'.
    beta.send_text("relay::gamma::hi::there").await.unwrap();
    assert_eq!(rule(&mut gamma).await, "relay::beta::hi::there");
    // relay to a follower that is allowed but not connected: TARGET_OFFLINE, nothing queued.
    beta.send_text("relay::delta::anyone?").await.unwrap();
    assert_eq!(beta.error().await.unwrap().0, "TARGET_OFFLINE");

    // broadcast: everyone else, not the sender.
    gamma.send_text("broadcast::hello all").await.unwrap();
    assert_eq!(rule(&mut beta).await, "broadcast::gamma::hello all");
    assert_eq!(rule(&mut alpha).await, "broadcast::gamma::hello all");
    gamma.send_text("echo::only me").await.unwrap();
    assert_eq!(
        rule(&mut gamma).await,
        "echo::only me",
        "the broadcaster does not get its own broadcast"
    );

    // presence: offline when a follower leaves.
    beta.close().await;
    assert_eq!(rule(&mut alpha).await, "presence::beta::offline");
    let (delta, _) = paired_session(&host, "delta").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "presence::delta::online");
    drop(delta);
}

#[tokio::test]
async fn panicking_slow_and_busy_plugins_do_not_hurt_the_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = fixture("ok");
    let extra = format!(
        "[[plugins]]\nname = \"fx\"\npath = \"{}\"\nrules = [\"fx\"]\nqueue_capacity = 2\npanic_limit = 3\npanic_window_secs = 60\n",
        fixture.display()
    );
    let text = format!(
        "{extra}{}",
        config_text(tmp.path(), 0, &["alpha", "beta"], "")
    );
    let host = HostProc::start(tmp.path(), &text).unwrap();
    let (mut alpha, _) = paired_session(&host, "alpha").await.unwrap();
    let (mut beta, _) = paired_session(&host, "beta").await.unwrap();

    // The fixture also takes lifecycle events through the same small queue (capacity 2): let
    // the four events from these two logins drain before testing message handling.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A panic answers HANDLER_FAILED to the sender; the plugin and the hub keep serving.
    alpha.send_text("fx::panic").await.unwrap();
    let (code, _) = alpha.error().await.unwrap();
    assert_eq!(code, "HANDLER_FAILED");
    alpha.send_text("fx::still alive").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "fx::still alive");
    // The panic is in the host's log, in its format (JSON here), with where it happened; the
    // plugin's own panic hook printed nothing of its own to the host's stderr.
    let logged = wait_for(Duration::from_secs(5), || {
        host.logs()
            .into_iter()
            .find(|l| l.contains("plugin panicked") && l.contains("(at "))
    });
    assert!(logged.is_some(), "{:?}", host.logs());
    let stray: Vec<String> = host
        .logs()
        .into_iter()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect();
    assert!(stray.is_empty(), "lines that are not JSON: {stray:?}");

    // Plugin logging reaches the host log with the plugin's name.
    alpha
        .send_text("fx::log:hello from the plugin")
        .await
        .unwrap();
    assert_eq!(rule(&mut alpha).await, "fx::logged");
    let logged = wait_for(Duration::from_secs(5), || {
        host.logs()
            .into_iter()
            .find(|l| l.contains("hello from the plugin"))
    })
    .expect("plugin log line in the host log");
    assert!(logged.contains("fx"), "{logged}");

    // A slow call does not delay another plugin's replies.
    alpha.send_text("fx::sleep:1500").await.unwrap();
    let started = Instant::now();
    beta.send_text("echo::quick").await.unwrap();
    assert_eq!(rule(&mut beta).await, "echo::quick");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "echo waited for the slow plugin"
    );
    // While it sleeps, its queue (capacity 2) fills: the excess is answered HANDLER_BUSY.
    for _ in 0..4 {
        beta.send_text("fx::sleep:10").await.unwrap();
    }
    let mut busy = 0;
    let mut slept = 0;
    while busy + slept < 4 {
        match beta.recv().await.unwrap() {
            Incoming::Control(env) => {
                let yonexus_protocol::envelope::Message::Error(e) = env.message else {
                    panic!("{env:?}")
                };
                assert_eq!(serde_json::to_value(e.code).unwrap(), "HANDLER_BUSY");
                busy += 1;
            }
            Incoming::Rule(r) => {
                assert_eq!(r, "fx::slept");
                slept += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(busy >= 1, "a full queue answers HANDLER_BUSY");
    assert!(slept >= 1);
    assert_eq!(rule(&mut alpha).await, "fx::slept");

    // Repeated panics disable the plugin's rules; other rules keep working.
    for _ in 0..3 {
        alpha.send_text("fx::panic").await.unwrap();
        assert_eq!(alpha.error().await.unwrap().0, "HANDLER_FAILED");
    }
    alpha.send_text("fx::are you there").await.unwrap();
    assert_eq!(alpha.error().await.unwrap().0, "HANDLER_FAILED");
    alpha.send_text("echo::fine").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "echo::fine");

    // A reload re-creates the disabled instance, though nothing else changed.
    let (status, out, err) = cli(&host.config, &["reload"]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(
        out.contains("plugin 'fx': instance re-created on the loaded library (it was disabled after repeated panics)"),
        "{out}"
    );
    alpha.send_text("fx::back again").await.unwrap();
    assert_eq!(rule(&mut alpha).await, "fx::back again");
}

#[test]
fn the_plugin_template_builds_outside_the_workspace_and_passes_check() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("my-plugin");
    let template = workspace_root().join("examples/plugin-template");
    std::fs::create_dir_all(copy.join("src")).unwrap();
    let manifest = std::fs::read_to_string(template.join("Cargo.toml"))
        .unwrap()
        .replace(
            "path = \"../../plugin-api\"",
            &format!(
                "path = {:?}",
                workspace_root().join("plugin-api").display().to_string()
            ),
        );
    std::fs::write(copy.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(template.join("src/lib.rs"), copy.join("src/lib.rs")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--offline", "--target-dir"])
        .arg(tmp.path().join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let so = tmp.path().join("target/debug/libmy_yonexus_plugin.so");
    let config = tmp.path().join("yonexus.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugins]]\nname = \"mine\"\npath = {:?}\nrules = [\"mine\"]\n",
            so.display().to_string()
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = cli(&config, &["check"]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("plugin 'mine'") && stdout.contains("ABI 1."),
        "{stdout}"
    );

    // A file that is not a plugin is refused by `check` with the reason.
    std::fs::write(&so, b"definitely not an ELF file").unwrap();
    let (status, stdout, _) = cli(&config, &["check"]);
    assert_ne!(status, 0);
    assert!(stdout.contains("REFUSED plugin 'mine'"), "{stdout}");
}
