//! A starting point for a Yonexus rule-handler plugin: counts messages per sender and answers
//! `<rule>::<greeting>, <sender> (#<n>)`. Replace the logic, keep `export_plugin!`.

use std::collections::HashMap;
use yonexus_plugin_api::{export_plugin, plugin_log, Config, Event, Host, Message, Plugin};

pub struct MyPlugin {
    greeting: String,
    counts: HashMap<String, u64>,
}

impl Plugin for MyPlugin {
    const NAME: &'static str = "my-plugin";

    /// Called once with the `[plugins.config]` table (as JSON).
    fn create(config: &Config, host: &Host) -> Result<Self, String> {
        let greeting = config.get_str("greeting")?.unwrap_or("hello").to_owned();
        host.info(&format!("starting with greeting '{greeting}'"));
        Ok(MyPlugin {
            greeting,
            counts: HashMap::new(),
        })
    }

    /// Called for every `<rule>::<content>` a follower sends on one of this plugin's rules.
    fn on_message(&mut self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        let n = self.counts.entry(msg.sender.to_owned()).or_insert(0);
        *n += 1;
        plugin_log!(host, Debug, "{} said {:?}", msg.sender, msg.content);
        host.reply(msg, &format!("{}, {} (#{n})", self.greeting, msg.sender))
            .map_err(|e| e.to_string())
    }

    /// Optional: follower lifecycle events.
    fn on_event(&mut self, _host: &Host, event: &Event<'_>) -> Result<(), String> {
        if let Event::Disconnected { identifier } = event {
            self.counts.remove(*identifier);
        }
        Ok(())
    }
}

export_plugin!(MyPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use yonexus_plugin_api::testing::{Sent, TestHost};

    #[test]
    fn greets_and_counts() {
        let th = TestHost::new();
        th.connect("alice");
        let config = Config::from_json(r#"{"greeting":"hi"}"#).unwrap();
        let mut p = MyPlugin::create(&config, &th.host()).unwrap();
        let msg = Message {
            rule: "greet",
            sender: "alice",
            content: "anything",
        };
        p.on_message(&th.host(), &msg).unwrap();
        p.on_message(&th.host(), &msg).unwrap();
        assert_eq!(
            th.take_sent(),
            vec![
                Sent::message("alice", "greet", "hi, alice (#1)"),
                Sent::message("alice", "greet", "hi, alice (#2)"),
            ]
        );
    }
}
