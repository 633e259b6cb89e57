//! Rule routing: rule id → handler (a plugin instance). The one way a rule message leaves the
//! session, and the way lifecycle events reach plugins.
//!
//! The table is swapped as a whole ([`arc_swap`]): a dispatch sees either the old table or the
//! new one, never a mix, and reading it takes no lock.

use crate::events::FollowerEvent;
use crate::outbound::Peer;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

/// Who sent a rule message: its identifier and its connection's outbound side, so a reply goes
/// straight to it without a lookup by name.
#[derive(Debug, Clone)]
pub struct Sender {
    pub id: Arc<str>,
    pub peer: Arc<Peer>,
    /// [`shard_key`] of `id`, computed once per session.
    shard: u64,
}

impl Sender {
    pub fn new(id: Arc<str>, peer: Arc<Peer>) -> Sender {
        let shard = shard_key(&id);
        Sender { id, peer, shard }
    }

    /// The number that picks this follower's worker in a multi-worker plugin: see
    /// [`shard_key`].
    pub fn shard_key(&self) -> u64 {
        self.shard
    }
}

/// The number that spreads followers over a plugin's workers, derived from the follower's
/// identifier alone. Its messages ([`Sender::shard_key`]) and its lifecycle events
/// ([`FollowerEvent::identifier`]) use this one key, so both reach the same worker in the
/// order they happened, across reconnects (a new connection, the same identifier) too.
pub fn shard_key(identifier: &str) -> u64 {
    use std::hash::BuildHasher;
    // Fixed keys: the same identifier gives the same key for the life of the process.
    std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(identifier)
}

/// A rule message as handed to a handler: the frame text `rule_id::content` as received (no
/// copy) and its sender.
#[derive(Debug, Clone)]
pub struct RuleMessage {
    text: Box<str>,
    rule_end: usize,
    pub sender: Sender,
}

impl RuleMessage {
    /// `text` is the whole frame; `rule_end` the byte index of its first `::`.
    pub fn new(text: String, rule_end: usize, sender: Sender) -> Option<RuleMessage> {
        (text.is_char_boundary(rule_end) && text.get(rule_end..rule_end + 2) == Some("::")).then(
            || RuleMessage {
                text: text.into_boxed_str(),
                rule_end,
                sender,
            },
        )
    }

    /// Build from parts (tests and tools).
    pub fn from_parts(rule_id: &str, content: &str, sender: Sender) -> RuleMessage {
        RuleMessage {
            text: format!("{rule_id}::{content}").into_boxed_str(),
            rule_end: rule_id.len(),
            sender,
        }
    }

    pub fn rule_id(&self) -> &str {
        &self.text[..self.rule_end]
    }

    pub fn content(&self) -> &str {
        &self.text[self.rule_end + 2..]
    }

    /// The host's rewritten form, `rule_id::sender::content`.
    pub fn rewritten(&self) -> String {
        yonexus_protocol::frame::rewrite_with_sender(
            self.rule_id(),
            &self.sender.id,
            self.content(),
        )
    }
}

/// Why a message could not be handed to its handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("no handler is registered for rule '{0}'")]
    NotFound(String),
    #[error("handler for rule '{0}' is busy")]
    Busy(String),
    #[error("handler for rule '{rule}' failed: {reason}")]
    Failed { rule: String, reason: String },
}

/// A rule handler. `dispatch` runs on the connection's task and must not block: a handler that
/// does real work queues the message to its own worker (or, for a plugin that declared itself
/// both non-blocking and thread-safe, may call it at once under a watchdog: see
/// [`crate::plugins::PluginHandler`]). A handler with several workers picks one by the
/// follower's [`shard_key`], for messages and lifecycle events alike.
pub trait RuleHandler: Send + Sync + 'static {
    /// A name for logs and errors.
    fn name(&self) -> &str;
    /// Accept one message for handling.
    fn dispatch(&self, msg: RuleMessage) -> Result<(), DispatchError>;
    /// Whether it wants lifecycle events.
    fn handles_events(&self) -> bool {
        false
    }
    /// Accept one lifecycle event (never blocks; may drop when overloaded).
    fn deliver_event(&self, _event: &FollowerEvent) {}
}

/// The routing table as configured: rule id → handler.
pub type Routes = HashMap<String, Arc<dyn RuleHandler>>;

struct Route {
    handler: Arc<dyn RuleHandler>,
    /// `frames_received{kind="rule",rule=…}`, resolved once.
    frames: metrics::Counter,
}

/// A routing table ready for dispatch.
pub struct Table {
    routes: HashMap<Box<str>, Route>,
    /// Each distinct handler once (events go to each once, however many rules it has).
    handlers: Vec<Arc<dyn RuleHandler>>,
}

impl Table {
    fn build(routes: Routes) -> Table {
        let mut handlers: Vec<Arc<dyn RuleHandler>> = Vec::new();
        for h in routes.values() {
            if !handlers.iter().any(|x| Arc::ptr_eq(x, h)) {
                handlers.push(Arc::clone(h));
            }
        }
        Table {
            routes: routes
                .into_iter()
                .map(|(rule, handler)| {
                    let frames = crate::metrics::rule_frames_counter(&rule);
                    (rule.into_boxed_str(), Route { handler, frames })
                })
                .collect(),
            handlers,
        }
    }

    /// The configured rule ids, sorted.
    pub fn rules(&self) -> Vec<&str> {
        let mut r: Vec<&str> = self.routes.keys().map(|k| &**k).collect();
        r.sort();
        r
    }

    pub fn handler(&self, rule: &str) -> Option<&Arc<dyn RuleHandler>> {
        self.routes.get(rule).map(|r| &r.handler)
    }
}

/// Routes rule messages to handlers.
pub struct Router {
    table: ArcSwap<Table>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new(Routes::new())
    }
}

impl Router {
    pub fn new(routes: Routes) -> Self {
        Router {
            table: ArcSwap::from_pointee(Table::build(routes)),
        }
    }

    /// The current table.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Replace the whole table in one step; returns the previous one.
    pub fn swap(&self, routes: Routes) -> Arc<Table> {
        self.table.swap(Arc::new(Table::build(routes)))
    }

    /// Hand `msg` to the handler registered for its rule id (counting the frame).
    pub fn dispatch(&self, msg: RuleMessage) -> Result<(), DispatchError> {
        let table = self.table.load();
        match table.routes.get(msg.rule_id()) {
            Some(route) => {
                route.frames.increment(1);
                route.handler.dispatch(msg)
            }
            None => {
                crate::metrics::unknown_rule_frame();
                Err(DispatchError::NotFound(msg.rule_id().to_owned()))
            }
        }
    }

    /// Hand a lifecycle event to every handler that wants events.
    pub fn deliver_event(&self, event: &FollowerEvent) {
        let table = self.table.load();
        for h in table.handlers.iter().filter(|h| h.handles_events()) {
            h.deliver_event(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::QueueLimits;

    fn sender(id: &str, conn: u64) -> Sender {
        let peer = Peer::new(conn, ([127, 0, 0, 1], 9).into(), 0, QueueLimits::UNLIMITED);
        Sender::new(id.into(), Arc::new(peer))
    }

    #[test]
    fn a_followers_messages_and_events_share_one_shard_key_across_connections() {
        let before = sender("alice", 1);
        let after = sender("alice", 2); // reconnected
        let event = FollowerEvent::Authenticated {
            identifier: "alice".into(),
        };
        assert_eq!(before.shard_key(), after.shard_key());
        assert_eq!(before.shard_key(), shard_key(event.identifier()));
        assert_ne!(before.shard_key(), sender("bob", 1).shard_key());
    }
}
