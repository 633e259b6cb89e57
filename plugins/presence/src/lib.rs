//! Bundled plugin `presence`: followers send `presence::subscribe` / `presence::unsubscribe`;
//! subscribers get `presence::<identifier>::online|unstable|offline` when another follower comes
//! online, becomes unstable, or goes offline. Repeated identical states are not re-sent.
//!
//! `subscribe` is acknowledged at once with `presence::subscribed`, followed by the current state
//! of every other connected follower (`presence::<identifier>::online|unstable`), so a subscriber
//! does not wait for the next change to learn who is there. `unsubscribe` is acknowledged with
//! `presence::unsubscribed`.

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

    /// The current state of every connected follower except `subscriber`: the last state seen
    /// for it, or `online` when it connected before this instance saw any event (e.g. across a
    /// reload). `connected` is the host's list of authenticated followers.
    pub fn snapshot(&mut self, connected: &[String], subscriber: &str) -> Vec<(String, Liveness)> {
        connected
            .iter()
            .filter(|id| *id != subscriber)
            .map(|id| {
                let state = match self.last.get(id) {
                    Some(Liveness::Unstable) => Liveness::Unstable,
                    // Connected, so at least online whatever an older event said.
                    _ => Liveness::Online,
                };
                self.last.insert(id.clone(), state);
                (id.clone(), state)
            })
            .collect()
    }
}

impl Plugin for Presence {
    const NAME: &'static str = "presence";
    /// Only formats text and queues it through the host (never blocks). A promise only: a
    /// `Plugin` (not thread-safe: it keeps the subscriber set in `&mut self`) is always called on
    /// its own worker thread; the host runs plugins inline on its I/O threads only when they are
    /// non-blocking *and* thread-safe (`SharedPlugin`).
    const NON_BLOCKING: bool = true;

    fn create(_config: &Config, _host: &Host) -> Result<Self, String> {
        Ok(Presence::default())
    }

    fn on_message(&mut self, host: &Host, msg: &Message<'_>) -> Result<(), String> {
        match msg.content {
            "subscribe" => {
                self.subscribers.insert(msg.sender.to_owned());
                // A subscriber that went away meanwhile is removed on its Disconnected event.
                let _ = host.reply(msg, "subscribed");
                for (id, state) in self.snapshot(&host.connected(), msg.sender) {
                    let _ = host.reply(msg, &format!("{id}::{}", state.as_str()));
                }
            }
            "unsubscribe" => {
                self.subscribers.remove(msg.sender);
                let _ = host.reply(msg, "unsubscribed");
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
        assert_eq!(
            th.take_sent(),
            vec![Sent::message("alice", "presence", "subscribed")]
        );
        (th, p)
    }

    #[test]
    fn subscribe_is_acknowledged_with_the_current_state() {
        let th = TestHost::new();
        let h = th.host();
        let mut p = Presence::create(&Config::from_json("{}").unwrap(), &h).unwrap();
        // bob and carol were connected before this instance saw any event (e.g. a reload);
        // carol then became unstable; dave went offline.
        for id in ["alice", "bob", "carol"] {
            th.connect(id);
        }
        p.on_event(
            &h,
            &Event::LivenessChanged {
                identifier: "carol",
                status: Liveness::Unstable,
            },
        )
        .unwrap();
        p.on_event(&h, &Event::Authenticated { identifier: "dave" })
            .unwrap();
        p.on_event(&h, &Event::Disconnected { identifier: "dave" })
            .unwrap();
        let sub = Message {
            rule: "presence",
            sender: "alice",
            content: "subscribe",
        };
        p.on_message(&h, &sub).unwrap();
        assert_eq!(
            th.take_sent(),
            vec![
                Sent::message("alice", "presence", "subscribed"),
                Sent::message("alice", "presence", "bob::online"),
                Sent::message("alice", "presence", "carol::unstable"),
            ]
        );
        // What the snapshot told is not repeated by the next event; a change is sent.
        p.on_event(&h, &Event::Authenticated { identifier: "bob" })
            .unwrap();
        p.on_event(
            &h,
            &Event::Disconnected {
                identifier: "carol",
            },
        )
        .unwrap();
        assert_eq!(
            th.take_sent(),
            vec![Sent::message("alice", "presence", "carol::offline")]
        );
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
        assert_eq!(
            th.take_sent(),
            vec![Sent::message("alice", "presence", "unsubscribed")]
        );
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
