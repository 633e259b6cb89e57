//! `GET /api/stream`: server-sent events that keep an open dashboard current without reloads.
//!
//! Events (each `data:` is JSON in the shape of the matching `GET /api/…` answer):
//! - `followers`, `pairings`, `plugins`: the whole list, sent on connect and whenever it
//!   changes (checked every second and soon after lifecycle events; `plugins` every second);
//! - `store`: whether the trust store answered ([`StoreStatus`](super::sampler::StoreStatus)),
//!   on connect and when that changes; while it does not, the lists are not re-sent (the page
//!   keeps the last ones and says they may be stale);
//! - `rate`: one [`RateSample`](super::sampler::RateSample) per second (also a heartbeat);
//! - `lifecycle`: one [`LifecycleEvent`] as it happens;
//! - `resync`: the stream fell behind and skipped events; re-read `/api/events`.

use super::sampler::{Part, Snapshot};
use super::view::LifecycleEvent;
use super::Dashboard;
use axum::response::sse::{Event, Sse};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Reconnect delay a browser's `EventSource` is told to use.
const RETRY: Duration = Duration::from_secs(2);

struct State {
    /// This stream's place among [`MAX_STREAMS`], given back when it ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Receiver<LifecycleEvent>,
    events_open: bool,
    shutdown: CancellationToken,
    /// Versions of followers, pairings, plugins, store already sent.
    sent: [u64; 4],
    /// The last rate sample sent.
    rate: Option<super::sampler::RateSample>,
    queue: VecDeque<Event>,
}

impl State {
    /// Queue what changed in the latest snapshot since the last one sent.
    fn queue_snapshot(&mut self) {
        let snapshot = Arc::clone(&self.snapshots.borrow_and_update());
        let parts: [(&str, &Part); 4] = [
            ("store", &snapshot.store),
            ("followers", &snapshot.followers),
            ("pairings", &snapshot.pairings),
            ("plugins", &snapshot.plugins),
        ];
        for (i, (name, part)) in parts.into_iter().enumerate() {
            if part.version != self.sent[i] && part.version != 0 {
                self.sent[i] = part.version;
                self.queue
                    .push_back(Event::default().event(name).data(&*part.json));
            }
        }
        if let Some(rate) = snapshot.rate.filter(|r| Some(*r) != self.rate) {
            self.rate = Some(rate);
            if let Ok(e) = Event::default().event("rate").json_data(rate) {
                self.queue.push_back(e);
            }
        }
    }
}

/// The event stream for one page.
/// Event streams open at once; the rest of the port's connections (see
/// [`listener::MAX_CONNECTIONS`](super::listener::MAX_CONNECTIONS)) stay for requests.
pub const MAX_STREAMS: usize = 16;

/// A stream for the caller, or `None` when [`MAX_STREAMS`] are open.
pub fn open(dash: &Arc<Dashboard>) -> Option<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let slot = Arc::clone(&dash.streams).try_acquire_owned().ok()?;
    let mut state = State {
        _slot: slot,
        snapshots: dash.sampler.watch(),
        events: dash.view.subscribe(),
        events_open: true,
        shutdown: dash.shutdown.clone(),
        sent: [0; 4],
        rate: None,
        queue: VecDeque::new(),
    };
    state.queue.push_back(Event::default().retry(RETRY));
    // Nothing from the snapshot yet: the sampler publishes a fresh one for the new stream (see
    // `Sampler::watch`); the one it holds may be older than what the page just read from `/api`.
    Some(Sse::new(stream::unfold(state, next)))
}

async fn next(mut state: State) -> Option<(Result<Event, Infallible>, State)> {
    loop {
        if let Some(event) = state.queue.pop_front() {
            return Some((Ok(event), state));
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return None,
            changed = state.snapshots.changed() => {
                if changed.is_err() {
                    return None;
                }
                state.queue_snapshot();
            }
            event = state.events.recv(), if state.events_open => match event {
                Ok(event) => {
                    if let Ok(e) = Event::default().event("lifecycle").json_data(&event) {
                        state.queue.push_back(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    state.queue.push_back(Event::default().event("resync").data("{}"));
                }
                Err(broadcast::error::RecvError::Closed) => state.events_open = false,
            },
        }
    }
}
