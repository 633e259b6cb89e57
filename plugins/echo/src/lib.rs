//! Bundled plugin `echo`: replies to the sender with the content, prefixed by the config key
//! `prefix` (default `""`).

use yonexus_plugin_api::{export_plugin, Config, Host, Message, SharedPlugin};

/// The echo plugin.
pub struct Echo {
    prefix: String,
}

impl SharedPlugin for Echo {
    const NAME: &'static str = "echo";
    /// Only formats text and queues it through the host (never blocks) and keeps no mutable
    /// state (thread-safe): the host may call it directly on its I/O threads, from several at
    /// once.
    const NON_BLOCKING: bool = true;
    const HANDLES_EVENTS: bool = false;

    fn create(config: &Config, _host: &Host) -> Result<Self, String> {
        Ok(Echo {
            prefix: config.get_str("prefix")?.unwrap_or("").to_owned(),
        })
    }

    fn on_message(&self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        let reply = format!("{}{}", self.prefix, msg.content);
        // The sender may have disconnected meanwhile; an echo to nobody is not an error.
        let _ = host.reply(msg, &reply);
        Ok(())
    }
}

export_plugin!(shared Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use yonexus_plugin_api::testing::{Sent, TestHost};

    fn msg<'a>(content: &'a str) -> Message<'a> {
        Message {
            rule: "echo",
            sender: "alice",
            content,
        }
    }

    #[test]
    fn echoes_with_prefix() {
        let th = TestHost::new();
        th.connect("alice");
        let cfg = Config::from_json(r#"{"prefix":"> "}"#).unwrap();
        let p = Echo::create(&cfg, &th.host()).unwrap();
        p.on_message(&th.host(), &msg("hi::there")).unwrap();
        assert_eq!(
            th.take_sent(),
            vec![Sent::message("alice", "echo", "> hi::there")]
        );
    }

    #[test]
    fn default_prefix_is_empty_and_bad_type_is_refused() {
        let th = TestHost::new();
        th.connect("alice");
        let p = Echo::create(&Config::from_json("{}").unwrap(), &th.host()).unwrap();
        p.on_message(&th.host(), &msg("x")).unwrap();
        assert_eq!(th.take_sent(), vec![Sent::message("alice", "echo", "x")]);
        let bad = Config::from_json(r#"{"prefix":3}"#).unwrap();
        assert!(Echo::create(&bad, &th.host()).is_err());
    }

    #[test]
    fn sender_gone_is_not_an_error() {
        let th = TestHost::new();
        let p = Echo::create(&Config::from_json("{}").unwrap(), &th.host()).unwrap();
        assert!(p.on_message(&th.host(), &msg("x")).is_ok());
        assert!(th.take_sent().is_empty());
    }
}
