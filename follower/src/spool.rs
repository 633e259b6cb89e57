//! The event spool: events the connection task has reported and the application has not read
//! yet. The task hands events over without ever waiting ([`Spool::push`]), so an application
//! that falls behind (a slow `--exec` program, a blocked stdout) never stops the connection from
//! reading frames, answering pings and sending heartbeats.
//!
//! A forwarding task ([`forward`]) moves events, in order, into the application's channel
//! ([`EVENT_CHANNEL`](crate::EVENT_CHANNEL) slots), waiting there for room. Behind the channel
//! the spool holds at most [`Config::event_backlog`](crate::Config::event_backlog) events and
//! [`Config::event_backlog_bytes`](crate::Config::event_backlog_bytes) bytes of their text;
//! when one more would not fit, the oldest rule message is dropped (the oldest event of any kind
//! when no rule message is left), and the application gets [`Event::Dropped`] with the counts in
//! its place, before the next event it receives.

use crate::event::Event;
use crate::handle::lock;
use crate::session::shutdown_signal;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};

/// The events waiting for the application, and what was dropped since it last heard.
pub(crate) struct Spool {
    inner: Mutex<Inner>,
    /// Signalled when an event is pushed or the spool is closed (one consumer: [`forward`]).
    ready: Notify,
}

struct Inner {
    queue: VecDeque<Event>,
    /// Text bytes of the events in `queue` (see [`weight`]).
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    dropped_rules: u64,
    dropped_other: u64,
    /// No more events will be pushed (the connection task ended).
    closed: bool,
}

/// The bytes an event holds beyond its fixed size: the text it carries from the host.
fn weight(event: &Event) -> usize {
    match event {
        Event::Rule { rule_id, content } => rule_id.len() + content.len(),
        Event::HostError { message, .. } => message.len(),
        Event::StatusUpdate { status, reason } => status.len() + reason.len(),
        Event::Disconnected { reason } => reason.len(),
        _ => 0,
    }
}

impl Spool {
    /// A spool holding at most `max_events` events and `max_bytes` bytes of their text (one
    /// event larger than `max_bytes` is still held, alone).
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Arc<Spool> {
        Arc::new(Spool {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                bytes: 0,
                max_events: max_events.max(1),
                max_bytes,
                dropped_rules: 0,
                dropped_other: 0,
                closed: false,
            }),
            ready: Notify::new(),
        })
    }

    /// Add an event; never waits. When it does not fit, the oldest rule message (or, with none
    /// left, the oldest event) is dropped and counted.
    pub(crate) fn push(&self, event: Event) {
        let size = weight(&event);
        let mut inner = lock(&self.inner);
        while !inner.queue.is_empty()
            && (inner.queue.len() >= inner.max_events
                || inner.bytes.saturating_add(size) > inner.max_bytes)
        {
            let oldest_rule = inner
                .queue
                .iter()
                .position(|e| matches!(e, Event::Rule { .. }));
            let dropped = match oldest_rule {
                Some(i) => {
                    inner.dropped_rules += 1;
                    inner.queue.remove(i)
                }
                None => {
                    inner.dropped_other += 1;
                    inner.queue.pop_front()
                }
            };
            if let Some(dropped) = dropped {
                inner.bytes = inner.bytes.saturating_sub(weight(&dropped));
            }
        }
        inner.bytes = inner.bytes.saturating_add(size);
        inner.queue.push_back(event);
        drop(inner);
        self.ready.notify_one();
    }

    /// No more events: [`forward`] delivers what is left, then closes the channel.
    pub(crate) fn close(&self) {
        lock(&self.inner).closed = true;
        self.ready.notify_one();
    }

    /// The next event for the application (an [`Event::Dropped`] first when something was
    /// dropped); `None` once closed and empty.
    async fn next(&self) -> Option<Event> {
        loop {
            {
                let mut inner = lock(&self.inner);
                if inner.dropped_rules > 0 || inner.dropped_other > 0 {
                    let event = Event::Dropped {
                        rules: inner.dropped_rules,
                        other: inner.dropped_other,
                    };
                    inner.dropped_rules = 0;
                    inner.dropped_other = 0;
                    tracing::debug!(?event, "the application fell behind; events dropped");
                    return Some(event);
                }
                if let Some(event) = inner.queue.pop_front() {
                    inner.bytes = inner.bytes.saturating_sub(weight(&event));
                    return Some(event);
                }
                if inner.closed {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a push between the check above
            // and this wait is not missed.
            self.ready.notified().await;
        }
    }
}

/// Closes the spool when the connection task lets go of it (however the task ends).
pub(crate) struct SpoolSender(pub(crate) Arc<Spool>);

impl SpoolSender {
    pub(crate) fn push(&self, event: Event) {
        self.0.push(event);
    }
}

impl Drop for SpoolSender {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Move events from the spool into the application's channel, in order, until the spool is
/// closed and empty (then the channel closes) or the application dropped its receiver. After
/// shutdown was requested, events are delivered only while the channel has room.
pub(crate) async fn forward(
    spool: Arc<Spool>,
    tx: mpsc::Sender<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some(event) = spool.next().await {
        tokio::select! {
            biased;
            sent = tx.send(event) => if sent.is_err() { return },
            _ = shutdown_signal(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(n: usize) -> Event {
        Event::Rule {
            rule_id: "r".into(),
            content: n.to_string(),
        }
    }

    async fn drain(spool: &Spool) -> Vec<Event> {
        spool.close();
        let mut out = Vec::new();
        while let Some(e) = spool.next().await {
            out.push(e);
        }
        out
    }

    #[tokio::test]
    async fn keeps_order_and_drops_the_oldest_rule_messages_first() {
        let spool = Spool::new(4, usize::MAX);
        spool.push(Event::Authenticated);
        for n in 0..6 {
            spool.push(rule(n));
        }
        // Full at 4: rules 0, 1 and 2 went, the older control event stayed.
        assert_eq!(
            drain(&spool).await,
            vec![
                Event::Dropped { rules: 3, other: 0 },
                Event::Authenticated,
                rule(3),
                rule(4),
                rule(5)
            ]
        );
    }

    #[tokio::test]
    async fn without_rule_messages_the_oldest_event_goes_and_counts_reset() {
        let spool = Spool::new(2, usize::MAX);
        spool.push(Event::Paired);
        spool.push(Event::Authenticated);
        spool.push(Event::NoPairingCode);
        assert_eq!(
            spool.next().await,
            Some(Event::Dropped { rules: 0, other: 1 })
        );
        assert_eq!(spool.next().await, Some(Event::Authenticated));
        spool.push(rule(7));
        assert_eq!(
            drain(&spool).await,
            vec![Event::NoPairingCode, rule(7)],
            "nothing dropped since the last report"
        );
    }

    #[tokio::test]
    async fn bytes_are_bounded_too() {
        let spool = Spool::new(100, 10);
        let big = |c: &str| Event::Rule {
            rule_id: "r".into(),
            content: c.into(),
        };
        spool.push(big("aaaa")); // 5 bytes
        spool.push(big("bbbb")); // 10
        spool.push(big("cccc")); // would be 15: "aaaa" goes
        spool.push(big(&"x".repeat(50))); // alone larger than the bound: held alone
        assert_eq!(
            drain(&spool).await,
            vec![Event::Dropped { rules: 3, other: 0 }, big(&"x".repeat(50))]
        );
    }

    #[tokio::test]
    async fn forward_delivers_then_closes_the_channel() {
        let spool = Spool::new(16, usize::MAX);
        let (tx, mut rx) = mpsc::channel(1);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let sender = SpoolSender(spool.clone());
        let task = tokio::spawn(forward(spool, tx, stop_rx));
        for n in 0..5 {
            sender.push(rule(n));
        }
        drop(sender);
        for n in 0..5 {
            assert_eq!(rx.recv().await, Some(rule(n)));
        }
        assert_eq!(rx.recv().await, None);
        task.await.unwrap();
    }
}
