//! The sampler: once a second it reads the [`AdminView`], turns counters into rates
//! (messages/s, plugin calls/s) and keeps the recent rate history for the chart. While event
//! streams are open it also reads the followers and pairings (every second, at once after a
//! lifecycle event, and when a stream opens) and publishes one [`Snapshot`] that every stream
//! diffs against what it already sent. Work per second is the same however many pages are
//! open, and the follower list is not built at all while none is.

use super::view::{AdminView, MessageCounters, PluginRow};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast::error::RecvError, watch, Notify};
use tokio_util::sync::CancellationToken;

/// How often counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Rate samples kept for `GET /api/rates` (the chart's width).
pub const HISTORY: usize = 120;

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
}

/// The sampler's shared state.
pub struct Sampler {
    history: Mutex<VecDeque<RateSample>>,
    plugins: Mutex<Vec<PluginRow>>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// A stream opened: publish a complete snapshot now.
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

    /// Follow the published snapshots. A fresh, complete one is published right after (the
    /// receiver sees it as a change).
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        let rx = self.tx.subscribe();
        self.wake.notify_one();
        rx
    }

    /// Sample until `shutdown`.
    pub async fn run(self: Arc<Self>, view: Arc<dyn AdminView>, shutdown: CancellationToken) {
        let mut events = view.subscribe();
        let mut events_open = true;
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut state = State::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => self.sample(&*view, &mut state, Sample::Tick).await,
                _ = self.wake.notified() => self.sample(&*view, &mut state, Sample::Opened).await,
                event = events.recv(), if events_open => {
                    match event {
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            self.sample(&*view, &mut state, Sample::Event).await
                        }
                        Err(RecvError::Closed) => events_open = false,
                    }
                }
            }
        }
    }

    /// Take one sample.
    async fn sample(&self, view: &dyn AdminView, state: &mut State, why: Sample) {
        let mut snapshot = Snapshot::clone(&self.tx.borrow());
        let mut changed = why == Sample::Opened;
        if self.tx.receiver_count() > 0 {
            changed |= snapshot.followers.update(to_json(&view.followers().await));
            changed |= snapshot.pairings.update(to_json(&view.pairings().await));
        }
        if why == Sample::Tick {
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

/// Why a sample is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sample {
    /// The once-a-second sample: counters, plugins, lists.
    Tick,
    /// A lifecycle event: the lists only.
    Event,
    /// A stream opened: the lists, published even if unchanged.
    Opened,
}

/// What the sampler remembers between samples.
#[derive(Default)]
struct State {
    counters: Option<(Instant, MessageCounters)>,
    /// Per plugin: (generation, calls, when).
    calls: HashMap<String, (u64, u64, Instant)>,
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
