//! Bundled plugin `relay`: `relay::<target>::<content>` from `<sender>` delivers
//! `relay::<sender>::<content>` to follower `<target>`. When the target is not connected the
//! sender gets `error TARGET_OFFLINE`; nothing is queued for later.

use yonexus_plugin_api::{
    export_plugin, Config, ErrorCode, Host, Message, SendError, SharedPlugin,
};

/// The relay plugin.
pub struct Relay;

/// Split `<target>::<content>`; `None` when there is no `::` or the target is empty.
pub fn parse(content: &str) -> Option<(&str, &str)> {
    content
        .split_once("::")
        .filter(|(target, _)| !target.is_empty())
}

impl SharedPlugin for Relay {
    const NAME: &'static str = "relay";
    /// Only formats text and queues it through the host (never blocks) and keeps no mutable
    /// state (thread-safe): the host may call it directly on its I/O threads, from several at
    /// once.
    const NON_BLOCKING: bool = true;
    const HANDLES_EVENTS: bool = false;

    fn create(_config: &Config, _host: &Host) -> Result<Self, String> {
        Ok(Relay)
    }

    fn on_message(&self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        let Some((target, content)) = parse(msg.content) else {
            let _ = host.reply_error(
                msg,
                ErrorCode::MalformedMessage,
                "relay expects relay::<target>::<content>",
            );
            return Ok(());
        };
        let relayed = format!("{}::{content}", msg.sender);
        match host.send(target, msg.rule, &relayed) {
            Ok(()) => {}
            Err(SendError::Offline) => {
                let _ = host.reply_error(
                    msg,
                    ErrorCode::TargetOffline,
                    &format!("follower '{target}' is not connected"),
                );
            }
            Err(SendError::Busy) => {
                let _ = host.reply_error(
                    msg,
                    ErrorCode::HandlerBusy,
                    &format!("follower '{target}' is not keeping up; message dropped"),
                );
            }
            Err(e) => return Err(format!("relay to '{target}' failed: {e}")),
        }
        Ok(())
    }
}

export_plugin!(shared Relay);

#[cfg(test)]
mod tests {
    use super::*;
    use yonexus_plugin_api::testing::{Sent, TestHost};

    fn run(th: &TestHost, content: &str) {
        let p = Relay::create(&Config::from_json("{}").unwrap(), &th.host()).unwrap();
        let msg = Message {
            rule: "relay",
            sender: "alice",
            content,
        };
        p.on_message(&th.host(), &msg).unwrap();
    }

    #[test]
    fn parses_target_and_content() {
        assert_eq!(parse("bob::hi::there"), Some(("bob", "hi::there")));
        assert_eq!(parse("bob::"), Some(("bob", "")));
        assert_eq!(parse("::hi"), None);
        assert_eq!(parse("nobody"), None);
    }

    #[test]
    fn delivers_with_the_sender_injected() {
        let th = TestHost::new();
        th.connect("alice");
        th.connect("bob");
        run(&th, "bob::hi::there");
        assert_eq!(
            th.take_sent(),
            vec![Sent::message("bob", "relay", "alice::hi::there")]
        );
    }

    #[test]
    fn offline_target_gets_target_offline_to_the_sender() {
        let th = TestHost::new();
        th.connect("alice");
        run(&th, "carol::hello");
        assert_eq!(
            th.take_sent(),
            vec![Sent::error(
                "alice",
                ErrorCode::TargetOffline,
                "follower 'carol' is not connected"
            )]
        );
    }

    #[test]
    fn malformed_content_is_answered() {
        let th = TestHost::new();
        th.connect("alice");
        run(&th, "no separator");
        assert!(matches!(
            th.take_sent().as_slice(),
            [Sent::Error { target, code, .. }]
                if target == "alice" && *code == ErrorCode::MalformedMessage.to_abi()
        ));
    }
}
