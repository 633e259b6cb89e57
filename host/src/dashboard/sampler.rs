//! The sampler: once a second it reads the [`AdminView`]'s frame totals and plugins, turns
//! counters into rates (messages/s, plugin calls/s) and keeps the recent rate history for the
//! chart. While event streams are open it also reads the trust lists (followers and pairings,
//! from one store read) and publishes one [`Snapshot`] that every stream diffs against what it
//! already sent. Work is the same however many pages are open, and the trust store is not read
//! at all while none is.
//!
//! Trust reads are coalesced: one every tick, one soon after lifecycle events (a burst of
//! events within [`SETTLE`] costs one read), one when a stream opens, but never two within
//! [`LIST_GAP`]. A failed read keeps the last good lists and publishes the outage instead
//! (the `store` part), so a page never shows every follower vanishing during a database outage.

use super::view::{AdminView, MessageCounters, PluginRow, TrustLists};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast::error::RecvError, watch, Notify};
// The runtime's clock (the same as the system's, except in tests with paused time).
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Rate samples kept for `GET /api/rates` (the chart's width).
pub const HISTORY: usize = 120;
/// At most one read of the trust store per this, however many events arrive.
pub const LIST_GAP: Duration = Duration::from_millis(250);
/// After a lifecycle event, wait this long for the rest of a burst before reading.
pub const SETTLE: Duration = Duration::from_millis(50);

/// Message rates over one sample interval (`GET /api/rates`, SSE `rate`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateSample {
    /// Unix seconds at the end of the interval.
    pub at: i64,
    /// Frames received and sent since the process started.
    pub received: u64,
    pub sent: u64,
    /// Frames per second over the interval.
    pub in_per_sec: f64,
    pub out_per_sec: f64,
}

/// Whether the trust store answered the last read (SSE `store`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    pub available: bool,
    /// Why it cannot be read (while unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds: since when reads fail (while unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Unix seconds: when the lists last sent were read (while unavailable; `None`: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lists_at: Option<i64>,
}

/// One JSON document and a number that changes whenever the document does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    pub version: u64,
    pub json: Arc<str>,
}

impl Part {
    /// Replace the document if `json` differs; returns whether it did.
    fn update(&mut self, json: String) -> bool {
        if *self.json == *json {
            return false;
        }
        self.version += 1;
        self.json = json.into();
        true
    }
}

/// What the event streams publish.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The latest rate sample (`None` until two samples were taken).
    pub rate: Option<RateSample>,
    pub followers: Part,
    pub pairings: Part,
    pub plugins: Part,
    /// A [`StoreStatus`].
    pub store: Part,
}

/// The sampler's shared state.
pub struct Sampler {
    history: Mutex<VecDeque<RateSample>>,
    plugins: Mutex<Vec<PluginRow>>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// A stream opened: publish a complete snapshot soon.
    wake: Notify,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Self {
        Sampler {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            plugins: Mutex::new(Vec::new()),
            tx: watch::channel(Arc::new(Snapshot::default())).0,
            wake: Notify::new(),
        }
    }

    /// The rate history, oldest first.
    pub fn history(&self) -> Vec<RateSample> {
        lock(&self.history).iter().copied().collect()
    }

    /// The plugins with their call rates, as last sampled.
    pub fn plugins(&self) -> Vec<PluginRow> {
        lock(&self.plugins).clone()
    }

    /// Follow the published snapshots. A fresh, complete one is published soon after (the
    /// receiver sees it as a change).
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        let rx = self.tx.subscribe();
        self.wake.notify_one();
        rx
    }

    fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Sample until `shutdown`.
    pub async fn run(self: Arc<Self>, view: Arc<dyn AdminView>, shutdown: CancellationToken) {
        let mut events = view.subscribe();
        let mut events_open = true;
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut state = State::default();
        loop {
            let due = state.due;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    let now = Instant::now();
                    let lists = self.watched() && state.may_read(now);
                    if self.watched() && !lists {
                        state.request(now);
                    }
                    self.sample(&*view, &mut state, true, lists).await;
                }
                _ = self.wake.notified() => {
                    state.publish = true;
                    state.request(Instant::now());
                }
                event = events.recv(), if events_open => match event {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        if self.watched() {
                            state.request(Instant::now() + SETTLE);
                        }
                    }
                    Err(RecvError::Closed) => events_open = false,
                },
                _ = sleep_until(due), if due.is_some() => {
                    self.sample(&*view, &mut state, false, true).await;
                }
            }
        }
    }

    /// Take one sample: the counters and plugins (`tick`), the trust lists (`lists`).
    async fn sample(&self, view: &dyn AdminView, state: &mut State, tick: bool, lists: bool) {
        let mut snapshot = Snapshot::clone(&self.tx.borrow());
        let mut changed = false;
        if lists {
            state.due = None;
            state.last_read = Some(Instant::now());
            changed |= std::mem::take(&mut state.publish);
            if self.watched() {
                let read = view.trust().await;
                changed |= state.apply(&mut snapshot, read, view.now());
            }
        }
        if tick {
            let now = Instant::now();
            let counters = view.counters();
            if let Some((then, before)) = state.counters.replace((now, counters)) {
                let sample = rate(view.now(), now.duration_since(then), before, counters);
                let mut history = lock(&self.history);
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(sample);
                snapshot.rate = Some(sample);
                changed = true;
            }
            let plugins = plugin_rates(view.plugins(), &mut state.calls, now);
            changed |= snapshot.plugins.update(to_json(&plugins));
            *lock(&self.plugins) = plugins;
        }
        if changed {
            self.tx.send_replace(Arc::new(snapshot));
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// What the sampler remembers between samples.
#[derive(Default)]
struct State {
    counters: Option<(Instant, MessageCounters)>,
    /// Per plugin: (generation, calls, when).
    calls: HashMap<String, (u64, u64, Instant)>,
    /// When the trust lists are to be read next (`None`: not requested).
    due: Option<Instant>,
    /// When the trust lists were last read.
    last_read: Option<Instant>,
    /// Publish after the next read even if nothing changed (a stream opened).
    publish: bool,
    /// While reads fail: since when (Unix seconds).
    outage: Option<i64>,
    /// When the lists were last read successfully (Unix seconds).
    lists_at: Option<i64>,
}

impl State {
    /// Whether a read now keeps to [`LIST_GAP`].
    fn may_read(&self, now: Instant) -> bool {
        self.last_read.is_none_or(|t| now >= t + LIST_GAP)
    }

    /// Ask for a read at `at`, or as soon after as [`LIST_GAP`] allows (an earlier request
    /// already pending stands).
    fn request(&mut self, at: Instant) {
        let at = match self.last_read {
            Some(t) => at.max(t + LIST_GAP),
            None => at,
        };
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Put the outcome of a trust read into `snapshot` (`now`: Unix seconds); returns whether
    /// it changed. A failed read leaves the lists as they were.
    fn apply(
        &mut self,
        snapshot: &mut Snapshot,
        read: Result<TrustLists, super::view::StoreUnavailable>,
        now: i64,
    ) -> bool {
        let mut changed = false;
        let status = match read {
            Ok(lists) => {
                changed |= snapshot.followers.update(to_json(&lists.followers));
                changed |= snapshot.pairings.update(to_json(&lists.pairings));
                self.lists_at = Some(now);
                if self.outage.take().is_some() {
                    tracing::info!("dashboard: the trust store answers again");
                }
                StoreStatus {
                    available: true,
                    error: None,
                    since: None,
                    lists_at: None,
                }
            }
            Err(e) => {
                if self.outage.is_none() {
                    tracing::warn!(error = %e, "dashboard: cannot read the trust store; open pages keep the last lists and say so");
                }
                let since = *self.outage.get_or_insert(now);
                StoreStatus {
                    available: false,
                    error: Some(e.to_string()),
                    since: Some(since),
                    lists_at: self.lists_at,
                }
            }
        };
        changed | snapshot.store.update(to_json(&status))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the data (plain values) stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_json<T: Serialize>(value: &T) -> String {
    // ok: the row types serialise to JSON without fallible parts (no maps with non-string keys).
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The rate between two counter readings `elapsed` apart. Counters that went down (a restart
/// of whatever backs them) count as no traffic rather than a negative rate.
fn rate(at: i64, elapsed: Duration, before: MessageCounters, after: MessageCounters) -> RateSample {
    let secs = elapsed.as_secs_f64().max(0.001);
    let per_sec = |b: u64, a: u64| round2(a.saturating_sub(b) as f64 / secs);
    RateSample {
        at,
        received: after.received,
        sent: after.sent,
        in_per_sec: per_sec(before.received, after.received),
        out_per_sec: per_sec(before.sent, after.sent),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Fill in `calls_per_sec` from the previous reading of each plugin (a new generation starts
/// from zero calls).
fn plugin_rates(
    mut rows: Vec<PluginRow>,
    previous: &mut HashMap<String, (u64, u64, Instant)>,
    now: Instant,
) -> Vec<PluginRow> {
    let mut next = HashMap::with_capacity(rows.len());
    for row in &mut rows {
        row.calls_per_sec = match previous.get(&row.name) {
            Some(&(generation, calls, then)) => {
                let secs = now.duration_since(then).as_secs_f64().max(0.001);
                let base = if generation == row.generation {
                    calls
                } else {
                    0
                };
                round2(row.calls.saturating_sub(base) as f64 / secs)
            }
            None => 0.0,
        };
        next.insert(row.name.clone(), (row.generation, row.calls, now));
    }
    *previous = next;
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::view::Breaker;

    fn row(name: &str, generation: u64, calls: u64) -> PluginRow {
        PluginRow {
            name: name.into(),
            library: name.into(),
            version: "1".into(),
            abi: "1.0".into(),
            rules: vec![name.into()],
            generation,
            queue_depth: 0,
            calls,
            calls_per_sec: 0.0,
            panics: 0,
            errors: 0,
            breaker: Breaker::Closed,
            demoted: false,
        }
    }

    #[test]
    fn rates_from_counter_deltas() {
        let r = rate(
            100,
            Duration::from_millis(500),
            MessageCounters {
                received: 10,
                sent: 4,
            },
            MessageCounters {
                received: 20,
                sent: 4,
            },
        );
        assert_eq!((r.in_per_sec, r.out_per_sec), (20.0, 0.0));
        let r = rate(
            100,
            Duration::from_secs(1),
            MessageCounters {
                received: 10,
                sent: 4,
            },
            MessageCounters {
                received: 3,
                sent: 1,
            },
        );
        assert_eq!((r.in_per_sec, r.out_per_sec), (0.0, 0.0));
    }

    #[test]
    fn plugin_call_rates_follow_generations() {
        let t0 = Instant::now();
        let mut prev = HashMap::new();
        let rows = plugin_rates(vec![row("echo", 1, 5)], &mut prev, t0);
        assert_eq!(rows[0].calls_per_sec, 0.0);
        let rows = plugin_rates(
            vec![row("echo", 1, 15)],
            &mut prev,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(rows[0].calls_per_sec, 5.0);
        // A reload: the new instance's counters start at zero.
        let rows = plugin_rates(
            vec![row("echo", 2, 3)],
            &mut prev,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(rows[0].calls_per_sec, 3.0);
    }

    #[test]
    fn parts_change_version_only_when_the_document_does() {
        let mut p = Part::default();
        assert!(p.update("[1]".into()));
        assert!(!p.update("[1]".into()));
        assert!(p.update("[2]".into()));
        assert_eq!(p.version, 2);
    }
}
