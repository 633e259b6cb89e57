//! Bundled plugin `presence`: followers send `presence::subscribe` / `presence::unsubscribe`;
//! subscribers get `presence::<identifier>::online|unstable|offline` when another follower comes
//! online, becomes unstable, or goes offline. Repeated identical states are not re-sent.

use std::collections::{BTreeSet, HashMap};
use yonexus_plugin_api::{
    export_plugin, Config, ErrorCode, Event, Host, Liveness, Message, Plugin,
};

/// The presence plugin's state.
#[derive(Default)]
pub struct Presence {
    subscribers: BTreeSet<String>,
    /// Last state announced per follower (bounded by the allowlist of identifiers).
    last: HashMap<String, Liveness>,
}

impl Presence {
    /// The state change an event announces, if it is news.
    pub fn observe(&mut self, event: &Event<'_>) -> Option<(String, Liveness)> {
        let (id, state) = match *event {
            Event::Authenticated { identifier } => (identifier, Liveness::Online),
            Event::Disconnected { identifier } => (identifier, Liveness::Offline),
            Event::LivenessChanged { identifier, status } => (identifier, status),
        };
        if matches!(event, Event::Disconnected { .. }) {
            self.subscribers.remove(id);
        }
        if self.last.get(id) == Some(&state) {
            return None;
        }
        self.last.insert(id.to_owned(), state);
        Some((id.to_owned(), state))
    }
}

impl Plugin for Presence {
    const NAME: &'static str = "presence";
    /// Only formats text and queues it through the host (never blocks): the host may call it
    /// directly on its I/O threads.
    const NON_BLOCKING: bool = true;

    fn create(_config: &Config, _host: &Host) -> Result<Self, String> {
        Ok(Presence::default())
    }

    fn on_message(&mut self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        match msg.content {
            "subscribe" => {
                self.subscribers.insert(msg.sender.to_owned());
            }
            "unsubscribe" => {
                self.subscribers.remove(msg.sender);
            }
            other => {
                let _ = host.reply_error(
                    msg,
                    ErrorCode::MalformedMessage,
                    &format!("presence expects subscribe or unsubscribe, got '{other}'"),
                );
            }
        }
        Ok(())
    }

    fn on_event(&mut self, host: &Host, event: &Event<'_>) -> Result<(), String> {
        if let Some((id, state)) = self.observe(event) {
            let text = format!("{id}::{}", state.as_str());
            for sub in self.subscribers.iter().filter(|s| **s != id) {
                // A subscriber that went away is removed on its Disconnected event.
                let _ = host.send(sub, "presence", &text);
            }
        }
        Ok(())
    }
}

export_plugin!(Presence);

#[cfg(test)]
mod tests {
    use super::*;
    use yonexus_plugin_api::testing::{Sent, TestHost};

    fn setup() -> (TestHost, Presence) {
        let th = TestHost::new();
        th.connect("alice");
        let mut p = Presence::create(&Config::from_json("{}").unwrap(), &th.host()).unwrap();
        let sub = Message {
            rule: "presence",
            sender: "alice",
            content: "subscribe",
        };
        p.on_message(&th.host(), &sub).unwrap();
        (th, p)
    }

    #[test]
    fn subscribers_hear_online_unstable_offline() {
        let (th, mut p) = setup();
        let h = th.host();
        p.on_event(&h, &Event::Authenticated { identifier: "bob" })
            .unwrap();
        p.on_event(
            &h,
            &Event::LivenessChanged {
                identifier: "bob",
                status: Liveness::Unstable,
            },
        )
        .unwrap();
        p.on_event(&h, &Event::Disconnected { identifier: "bob" })
            .unwrap();
        assert_eq!(
            th.take_sent(),
            vec![
                Sent::message("alice", "presence", "bob::online"),
                Sent::message("alice", "presence", "bob::unstable"),
                Sent::message("alice", "presence", "bob::offline"),
            ]
        );
    }

    #[test]
    fn repeated_states_and_own_events_are_not_sent() {
        let (th, mut p) = setup();
        let h = th.host();
        p.on_event(&h, &Event::Authenticated { identifier: "bob" })
            .unwrap();
        p.on_event(
            &h,
            &Event::LivenessChanged {
                identifier: "bob",
                status: Liveness::Online,
            },
        )
        .unwrap();
        p.on_event(
            &h,
            &Event::LivenessChanged {
                identifier: "bob",
                status: Liveness::Offline,
            },
        )
        .unwrap();
        p.on_event(&h, &Event::Disconnected { identifier: "bob" })
            .unwrap();
        // alice's own reconnection is not announced to herself.
        p.on_event(
            &h,
            &Event::Authenticated {
                identifier: "alice",
            },
        )
        .unwrap();
        assert_eq!(
            th.take_sent(),
            vec![
                Sent::message("alice", "presence", "bob::online"),
                Sent::message("alice", "presence", "bob::offline"),
            ]
        );
    }

    #[test]
    fn unsubscribe_and_disconnect_stop_notifications() {
        let (th, mut p) = setup();
        let h = th.host();
        p.on_message(
            &h,
            &Message {
                rule: "presence",
                sender: "alice",
                content: "unsubscribe",
            },
        )
        .unwrap();
        p.on_event(&h, &Event::Authenticated { identifier: "bob" })
            .unwrap();
        assert!(th.take_sent().is_empty());
        let (th, mut p) = setup();
        let h = th.host();
        p.on_event(
            &h,
            &Event::Disconnected {
                identifier: "alice",
            },
        )
        .unwrap();
        p.on_event(&h, &Event::Authenticated { identifier: "bob" })
            .unwrap();
        assert!(th.take_sent().is_empty());
    }

    #[test]
    fn unknown_command_is_answered() {
        let (th, mut p) = setup();
        let msg = Message {
            rule: "presence",
            sender: "alice",
            content: "dance",
        };
        p.on_message(&th.host(), &msg).unwrap();
        assert!(matches!(th.take_sent().as_slice(), [Sent::Error { .. }]));
    }
}
