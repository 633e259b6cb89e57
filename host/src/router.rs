//! Rule routing: rule id → handler. The one interface through which every rule message leaves
//! the session; the handlers are plugins (see [`crate::plugins`]).
//!
//! The routing table is swapped as a whole (an `Arc` behind a lock held only to clone or
//! replace it), so a dispatch sees either the old table or the new one, never a mix.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A rule message as handed to a handler: `rule_id::sender::content` in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMessage {
    pub rule_id: String,
    pub sender: String,
    pub content: String,
}

impl RuleMessage {
    /// The host's rewritten form, `rule_id::sender::content`.
    pub fn rewritten(&self) -> String {
        yonexus_protocol::frame::rewrite_with_sender(&self.rule_id, &self.sender, &self.content)
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

/// A rule handler. `dispatch` is called on the async reactor and must not block: a handler that
/// does real work queues the message to its own worker and reports results through the registry.
pub trait RuleHandler: Send + Sync + 'static {
    /// A name for logs and errors.
    fn name(&self) -> &str;
    /// Accept one message for handling.
    fn dispatch(&self, msg: RuleMessage) -> Result<(), DispatchError>;
}

/// The routing table.
pub type Routes = HashMap<String, Arc<dyn RuleHandler>>;

/// Routes rule messages to handlers.
#[derive(Default)]
pub struct Router {
    table: RwLock<Arc<Routes>>,
}

impl Router {
    pub fn new(routes: Routes) -> Self {
        Router {
            table: RwLock::new(Arc::new(routes)),
        }
    }

    /// The current table.
    pub fn table(&self) -> Arc<Routes> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replace the whole table in one step; returns the previous one.
    pub fn swap(&self, routes: Routes) -> Arc<Routes> {
        let mut guard = self.table.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, Arc::new(routes))
    }

    /// Hand `msg` to the handler registered for its rule id.
    pub fn dispatch(&self, msg: RuleMessage) -> Result<(), DispatchError> {
        let table = self.table();
        match table.get(&msg.rule_id) {
            Some(handler) => handler.dispatch(msg),
            None => Err(DispatchError::NotFound(msg.rule_id)),
        }
    }
}
