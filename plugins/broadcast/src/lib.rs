//! Bundled plugin `broadcast`: `broadcast::<content>` from `<sender>` delivers
//! `broadcast::<sender>::<content>` to every other authenticated follower.

use yonexus_plugin_api::{export_plugin, plugin_log, Config, Host, Message, SharedPlugin};

/// The broadcast plugin.
pub struct Broadcast;

/// What the other followers receive after `<rule>::`.
pub fn outgoing(sender: &str, content: &str) -> String {
    format!("{sender}::{content}")
}

impl SharedPlugin for Broadcast {
    const NAME: &'static str = "broadcast";
    /// Only formats text and queues it through the host (never blocks) and keeps no mutable
    /// state (thread-safe): the host may call it directly on its I/O threads, from several at
    /// once.
    const NON_BLOCKING: bool = true;
    const HANDLES_EVENTS: bool = false;

    fn create(_config: &Config, _host: &Host) -> Result<Self, String> {
        Ok(Broadcast)
    }

    fn on_message(&self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        let n = host.broadcast(
            msg.rule,
            &outgoing(msg.sender, msg.content),
            Some(msg.sender),
        );
        plugin_log!(
            host,
            Debug,
            "broadcast from {} reached {n} followers",
            msg.sender
        );
        Ok(())
    }
}

export_plugin!(shared Broadcast);

#[cfg(test)]
mod tests {
    use super::*;
    use yonexus_plugin_api::testing::{Sent, TestHost};

    #[test]
    fn reaches_everyone_but_the_sender() {
        let th = TestHost::new();
        for id in ["alice", "bob", "carol"] {
            th.connect(id);
        }
        let p = Broadcast::create(&Config::from_json("{}").unwrap(), &th.host()).unwrap();
        let msg = Message {
            rule: "broadcast",
            sender: "alice",
            content: "hi::all",
        };
        p.on_message(&th.host(), &msg).unwrap();
        assert_eq!(
            th.take_sent(),
            vec![
                Sent::message("bob", "broadcast", "alice::hi::all"),
                Sent::message("carol", "broadcast", "alice::hi::all"),
            ]
        );
        assert!(th.logs()[0].1.contains("reached 2 followers"));
    }

    #[test]
    fn alone_is_fine() {
        let th = TestHost::new();
        th.connect("alice");
        let p = Broadcast::create(&Config::from_json("{}").unwrap(), &th.host()).unwrap();
        let msg = Message {
            rule: "broadcast",
            sender: "alice",
            content: "anyone?",
        };
        p.on_message(&th.host(), &msg).unwrap();
        assert!(th.take_sent().is_empty());
    }
}
