//! [`PluginHandler`]: a plugin instance as the router sees it. `dispatch` only enqueues (never
//! blocks the reactor); lifecycle events are forwarded to the same queue by a small thread.

use super::worker::{Job, Shared};
use crate::registry::Registry;
use crate::router::{DispatchError, RuleHandler, RuleMessage};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Counters of one plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PluginStats {
    /// Calls completed (messages and events).
    pub calls: u64,
    pub panics: u64,
    /// Calls that returned an error status.
    pub errors: u64,
    /// Calls that ran longer than the deadline.
    pub overdue: u64,
    /// Messages refused with `Busy` because the queue was full.
    pub busy_rejections: u64,
    /// Lifecycle events dropped because the queue was full.
    pub events_dropped: u64,
    /// True once the panic breaker tripped.
    pub disabled: bool,
}

struct Inner {
    name: String,
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
    call_deadline: Duration,
}

/// A loaded, running plugin instance; implements [`RuleHandler`]. Dropping the last clone of the
/// `Arc` stops its worker (after queued jobs) and destroys the instance; the library stays mapped.
pub struct PluginHandler {
    inner: Arc<Inner>,
}

impl PluginHandler {
    pub(crate) fn new(
        name: String,
        tx: SyncSender<Job>,
        shared: Arc<Shared>,
        call_deadline: Duration,
    ) -> Self {
        PluginHandler {
            inner: Arc::new(Inner {
                name,
                tx,
                shared,
                call_deadline,
            }),
        }
    }

    /// Forward follower lifecycle events to this instance's queue until it is dropped.
    pub(crate) fn forward_events(&self, registry: &Registry) -> std::io::Result<()> {
        let mut rx = registry.subscribe();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let name = self.inner.name.clone();
        std::thread::Builder::new()
            .name(format!("plugin-{name}-events"))
            .spawn(move || loop {
                // Ends on the first event after the handler is gone, or when the registry is.
                match rx.blocking_recv() {
                    Ok(event) => {
                        let Some(inner) = weak.upgrade() else { break };
                        inner.shared.queued.fetch_add(1, Ordering::AcqRel);
                        let sent = inner.tx.try_send(Job::Event(event));
                        if sent.is_err() {
                            inner.shared.queued.fetch_sub(1, Ordering::AcqRel);
                        }
                        match sent {
                            Ok(()) => {}
                            Err(TrySendError::Full(job)) => {
                                inner.shared.events_dropped.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(plugin = %name, ?job, "plugin queue full; lifecycle event dropped");
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(plugin = %name, missed = n, "plugin missed lifecycle events (event channel lagged)");
                    }
                    Err(RecvError::Closed) => break,
                }
            })?;
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PluginStats {
        let s = &self.inner.shared;
        PluginStats {
            calls: s.calls.load(Ordering::Relaxed),
            panics: s.panics.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            overdue: s.overdue.load(Ordering::Relaxed),
            busy_rejections: s.busy_rejections.load(Ordering::Relaxed),
            events_dropped: s.events_dropped.load(Ordering::Relaxed),
            disabled: s.disabled.load(Ordering::Relaxed),
        }
    }

    /// Set once this instance's worker has served its last queued job and destroyed the
    /// instance (after every clone of the handler is dropped).
    pub fn finished(&self) -> Arc<super::worker::Latch> {
        Arc::clone(&self.inner.shared.finished)
    }

    /// Nothing queued and no call running right now.
    pub fn is_idle(&self) -> bool {
        let s = &self.inner.shared;
        s.queued.load(Ordering::Acquire) == 0 && s.current_call_age().is_none()
    }

    /// Whether the panic breaker has disabled this instance.
    pub fn is_disabled(&self) -> bool {
        self.inner.shared.disabled.load(Ordering::Relaxed)
    }
}

impl RuleHandler for PluginHandler {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn dispatch(&self, msg: RuleMessage) -> Result<(), DispatchError> {
        let inner = &self.inner;
        if inner.shared.disabled.load(Ordering::Relaxed) {
            return Err(DispatchError::Failed {
                rule: msg.rule_id,
                reason: format!(
                    "plugin '{}' is disabled after repeated panics until it is reloaded",
                    inner.name
                ),
            });
        }
        // Counted before the send so the worker never sees it go below zero.
        inner.shared.queued.fetch_add(1, Ordering::AcqRel);
        let sent = inner.tx.try_send(Job::Message(msg));
        if sent.is_err() {
            inner.shared.queued.fetch_sub(1, Ordering::AcqRel);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Job::Message(msg))) => {
                inner.shared.busy_rejections.fetch_add(1, Ordering::Relaxed);
                crate::metrics::plugin_call(&inner.name, "busy", 0.0);
                if let Some(age) = inner.shared.current_call_age() {
                    if age > inner.call_deadline
                        && !inner.shared.stuck_reported.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(plugin = %inner.name, running_for = ?age, "plugin call is over its deadline and its queue is full");
                    }
                }
                Err(DispatchError::Busy(msg.rule_id))
            }
            Err(TrySendError::Full(_)) => Err(DispatchError::Busy(String::new())),
            Err(TrySendError::Disconnected(job)) => {
                let rule = match job {
                    Job::Message(m) => m.rule_id,
                    Job::Event(_) => String::new(),
                };
                Err(DispatchError::Failed {
                    rule,
                    reason: format!("plugin '{}' worker has stopped", inner.name),
                })
            }
        }
    }
}
