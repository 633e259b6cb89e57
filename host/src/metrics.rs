//! Metrics: the one place that names and records them. Everything else calls the small
//! functions here (no `metrics::counter!` anywhere else), so names, labels and their
//! cardinality are decided in one file.
//!
//! Recording goes through the `metrics` facade into a Prometheus recorder
//! (`metrics-exporter-prometheus`, without its HTTP listener); [`Metrics::render`] gives the
//! text that [`crate::dashboard`] serves on `/metrics`. Before [`install`] (and in unit tests that
//! never call it) every recording function is a cheap no-op.
//!
//! The recorder is process-global: several hosts started in one process (tests) share one set
//! of values.
//!
//! Besides the recorder, two plain process-wide totals count every frame received and sent
//! ([`frame_totals`]), bumped wherever `frames_received` / `frames_sent` are: the dashboard's
//! messages-per-second chart reads them every second without rendering the exposition text.
//!
//! Naming: every metric starts with `yonexus_`, counters end in `_total`, durations are
//! histograms in seconds ending in `_seconds`. Label values are bounded:
//! - `kind`, `reason`, `result`, `outcome`, `state`, `liveness` take `&'static str` or enums, so
//!   only values written in the source can appear (never text a peer sent);
//! - `plugin` is a configured plugin name;
//! - `rule` is a configured rule id or [`UNKNOWN_RULE`] (see [`frame_in`]); at most
//!   [`MAX_RULE_LABELS`] distinct values are ever recorded.

use metrics::CounterFn;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// Histogram buckets for every `*_seconds` metric: 50 µs … 5 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The `rule` label of a rule frame whose rule id is not routed (the caller passed `None`), and
/// of any rule id beyond [`MAX_RULE_LABELS`].
pub const UNKNOWN_RULE: &str = "_unknown";

/// At most this many distinct `rule` label values are recorded; later ones count as
/// [`UNKNOWN_RULE`]. A safety net: callers already pass only configured rule ids.
pub const MAX_RULE_LABELS: usize = 512;

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Every metric name, for tests and dashboards.
pub mod names {
    pub const CONNECTIONS_OPENED: &str = "yonexus_connections_opened_total";
    pub const CONNECTIONS_CLOSED: &str = "yonexus_connections_closed_total";
    pub const CONNECTIONS: &str = "yonexus_connections";
    pub const CONNECTIONS_REJECTED: &str = "yonexus_connections_rejected_total";
    pub const FOLLOWERS: &str = "yonexus_followers";
    pub const FRAMES_RECEIVED: &str = "yonexus_frames_received_total";
    pub const RECEIVED_BYTES: &str = "yonexus_received_bytes_total";
    pub const FRAMES_SENT: &str = "yonexus_frames_sent_total";
    pub const SENT_BYTES: &str = "yonexus_sent_bytes_total";
    pub const AUTH_RESULTS: &str = "yonexus_auth_results_total";
    pub const PAIRING_RESULTS: &str = "yonexus_pairing_results_total";
    pub const PLUGIN_CALLS: &str = "yonexus_plugin_calls_total";
    pub const PLUGIN_CALL_DURATION: &str = "yonexus_plugin_call_duration_seconds";
    pub const PLUGIN_QUEUE_DEPTH: &str = "yonexus_plugin_queue_depth";
    pub const CONFIG_RELOADS: &str = "yonexus_config_reloads_total";
    pub const SLOW_CONSUMER_CLOSES: &str = "yonexus_slow_consumer_closes_total";
    pub const RATE_LIMITED: &str = "yonexus_rate_limited_total";
    pub const MESSAGES_TOO_LARGE: &str = "yonexus_messages_too_large_total";
    pub const AUTH_REFUSED: &str = "yonexus_auth_refused_total";
    pub const ABUSERS_CLOSED: &str = "yonexus_abusers_closed_total";
    pub const THROTTLED: &str = "yonexus_throttled_total";
    pub const LOG_LINES_SUPPRESSED: &str = "yonexus_log_lines_suppressed_total";
    pub const PLUGIN_DEMOTIONS: &str = "yonexus_plugin_demotions_total";
    pub const CLUSTER_UNDELIVERABLE: &str = "yonexus_cluster_undeliverable_total";
    pub const CLUSTER_LINK_UP: &str = "yonexus_cluster_link_up";
}
use names::*;

/// A handle to the installed recorder.
#[derive(Clone, Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// The current values in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

static INSTALLED: OnceLock<Result<Metrics, String>> = OnceLock::new();

/// Install the global Prometheus recorder. Idempotent: later calls (another host in the same
/// process) return a handle to the same recorder. Fails only if some other recorder was
/// installed in this process first; that failure is then returned by every call.
pub fn install() -> Result<Metrics, String> {
    INSTALLED.get_or_init(build_and_install).clone()
}

fn installed() -> bool {
    matches!(INSTALLED.get(), Some(Ok(_)))
}

fn build_and_install() -> Result<Metrics, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| format!("metrics histogram buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe_all();
    register_fixed_series();
    // Without a scrape, histogram samples wait in per-thread blocks until upkeep folds them
    // into buckets; do it on a timer so memory stays flat whether or not anyone scrapes.
    let upkeep = handle.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("yonexus-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_PERIOD);
            upkeep.run_upkeep();
        })
    {
        tracing::warn!(error = %e, "metrics upkeep thread not started; histograms are folded on scrape only");
    }
    Ok(Metrics { handle })
}

fn describe_all() {
    describe_counter!(
        CONNECTIONS_OPENED,
        "WebSocket connections accepted (TCP accept)."
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections that ended, for any reason."
    );
    describe_gauge!(
        CONNECTIONS,
        "Open connections by state (unauthenticated, authenticated)."
    );
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Connections refused or dropped by a limit or timeout, by reason."
    );
    describe_gauge!(
        FOLLOWERS,
        "Known followers by liveness (online, unstable, offline)."
    );
    describe_counter!(
        FRAMES_RECEIVED,
        "Frames received, by kind (builtin, rule, binary, malformed); rule frames also by rule id (_unknown = not routed)."
    );
    describe_counter!(
        RECEIVED_BYTES,
        Unit::Bytes,
        "Payload bytes received, by frame kind."
    );
    describe_counter!(FRAMES_SENT, "Frames sent, by kind.");
    describe_counter!(
        SENT_BYTES,
        Unit::Bytes,
        "Payload bytes sent, by frame kind."
    );
    describe_counter!(
        AUTH_RESULTS,
        "Authentication attempts by result (success, or the auth_failed reason)."
    );
    describe_counter!(
        PAIRING_RESULTS,
        "Pairing events by result (started, paired, notify_failed, or the pair_failed reason)."
    );
    describe_counter!(
        PLUGIN_CALLS,
        "Plugin calls by plugin and outcome (ok, error, panic, busy, deadline)."
    );
    describe_histogram!(
        PLUGIN_CALL_DURATION,
        Unit::Seconds,
        "Time a plugin spent on one call, by plugin (busy rejections are not timed)."
    );
    describe_gauge!(
        PLUGIN_QUEUE_DEPTH,
        "Messages and events waiting for a plugin's worker thread."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Config reloads by outcome (applied, refused, unchanged)."
    );
    describe_counter!(
        SLOW_CONSUMER_CLOSES,
        "Connections closed because their outbound queue was full."
    );
    describe_counter!(
        RATE_LIMITED,
        "Frames over a rate limit (messages refused, pings unanswered, connections over the budget before authentication)."
    );
    describe_counter!(
        AUTH_REFUSED,
        "Refused proofs and hellos, by what failed (not_allowed, not_paired, malformed_nonce, stale, future, replayed, wrong_key, bad_signature)."
    );
    describe_counter!(
        ABUSERS_CLOSED,
        "Connections closed for repeated failures or too many frames before authentication, by kind (auth, pairing, frames)."
    );
    describe_counter!(
        THROTTLED,
        "Answers deliberately delayed, by what was throttled (address, identifier, pairing)."
    );
    describe_counter!(
        LOG_LINES_SUPPRESSED,
        "Log lines about refused peers suppressed by the log rate limit."
    );
    describe_counter!(
        PLUGIN_DEMOTIONS,
        "Non-blocking plugins moved to their own thread by the watchdog, by plugin."
    );
    describe_counter!(
        MESSAGES_TOO_LARGE,
        "Messages refused for exceeding the size limit."
    );
    describe_gauge!(
        CLUSTER_LINK_UP,
        "1 while this host is connected to NATS, 0 while not (clustered hosts only): while 0, sends to followers on other hosts answer TARGET_OFFLINE."
    );
}

/// Make the unlabelled and fixed-label series visible at 0 from the first scrape.
fn register_fixed_series() {
    for name in [
        CONNECTIONS_OPENED,
        CONNECTIONS_CLOSED,
        SLOW_CONSUMER_CLOSES,
        RATE_LIMITED,
        MESSAGES_TOO_LARGE,
        LOG_LINES_SUPPRESSED,
    ] {
        counter!(name).increment(0);
    }
    for kind in ["address", "identifier", "pairing"] {
        counter!(THROTTLED, "kind" => kind).increment(0);
    }
    for kind in ["auth", "pairing", "frames"] {
        counter!(ABUSERS_CLOSED, "reason" => kind).increment(0);
    }
    for state in [
        ConnectionState::Unauthenticated,
        ConnectionState::Authenticated,
    ] {
        gauge!(CONNECTIONS, "state" => state.as_str()).increment(0.0);
    }
    for liveness in ["online", "unstable", "offline"] {
        gauge!(FOLLOWERS, "liveness" => liveness).increment(0.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// The state label of [`names::CONNECTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Unauthenticated,
    Authenticated,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Unauthenticated => "unauthenticated",
            ConnectionState::Authenticated => "authenticated",
        }
    }
}

/// A connection was accepted. Counts only; the state gauge moves with [`connection_state`].
pub fn connection_opened() {
    counter!(CONNECTIONS_OPENED).increment(1);
}

/// A connection ended (any reason). Counts only; the state gauge moves with
/// [`connection_state`].
pub fn connection_closed() {
    counter!(CONNECTIONS_CLOSED).increment(1);
}

/// Move one connection between states of the `yonexus_connections{state}` gauge: `None` is
/// "not open". Accept: `(None, Some(Unauthenticated))`; authenticated:
/// `(Some(Unauthenticated), Some(Authenticated))`; close: `(Some(current), None)`.
/// Use either this or [`set_connections`] for a state, not both.
pub fn connection_state(from: Option<ConnectionState>, to: Option<ConnectionState>) {
    if from == to {
        return;
    }
    if let Some(from) = from {
        gauge!(CONNECTIONS, "state" => from.as_str()).decrement(1.0);
    }
    if let Some(to) = to {
        gauge!(CONNECTIONS, "state" => to.as_str()).increment(1.0);
    }
}

/// Set the `yonexus_connections{state}` gauge to a count the caller keeps (e.g. the registry's
/// size for `Authenticated`).
pub fn set_connections(state: ConnectionState, n: usize) {
    gauge!(CONNECTIONS, "state" => state.as_str()).set(n as f64);
}

/// A connection was refused or dropped by a limit or timeout. `reason`: e.g.
/// `"too_many_unauthenticated"`, `"per_ip_limit"`, `"connection_rate"`, `"too_many_handshakes"`,
/// `"upgrade_timeout"`, `"auth_timeout"`.
pub fn connection_rejected(reason: &'static str) {
    counter!(CONNECTIONS_REJECTED, "reason" => reason).increment(1);
}

/// A connection was closed because its outbound queue was full.
pub fn slow_consumer_closed() {
    counter!(SLOW_CONSUMER_CLOSES).increment(1);
}

/// A message was refused by a rate limit.
pub fn rate_limited() {
    counter!(RATE_LIMITED).increment(1);
}

/// A message was refused for exceeding the size limit.
pub fn message_too_large() {
    counter!(MESSAGES_TOO_LARGE).increment(1);
}

/// Set the `yonexus_followers{liveness}` gauge (all three at once, from one snapshot).
pub fn set_followers_by_liveness(online: usize, unstable: usize, offline: usize) {
    gauge!(FOLLOWERS, "liveness" => "online").set(online as f64);
    gauge!(FOLLOWERS, "liveness" => "unstable").set(unstable as f64);
    gauge!(FOLLOWERS, "liveness" => "offline").set(offline as f64);
}

// ---------------------------------------------------------------------------------------------
// Frames

/// A handle cached for the life of the process, once the recorder is installed (before that,
/// a no-op that is not cached).
fn hot(slot: &'static OnceLock<Counter>, make: fn() -> Counter) -> Counter {
    if !installed() {
        return Counter::noop();
    }
    slot.get_or_init(make).clone()
}

/// Frames received from followers, every kind, since the process started (the sum of
/// `frames_received`, also counted before [`install`]).
static FRAMES_IN_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Frames handed to followers' sockets since the process started (the sum of `frames_sent`).
static FRAMES_OUT_TOTAL: AtomicU64 = AtomicU64::new(0);

/// The process-wide frame totals: (received, sent). Two atomic loads.
pub fn frame_totals() -> (u64, u64) {
    (
        FRAMES_IN_TOTAL.load(Ordering::Relaxed),
        FRAMES_OUT_TOTAL.load(Ordering::Relaxed),
    )
}

/// One non-rule frame received. `kind`: `"builtin"` (a protocol message the host handles),
/// `"binary"`, `"malformed"`. `bytes`: the frame's payload length. Rule frames are counted by
/// the router (per configured rule, see [`rule_frames_counter`]) and [`rule_bytes_in`].
pub fn frame_in(kind: &'static str, bytes: usize) {
    FRAMES_IN_TOTAL.fetch_add(1, Ordering::Relaxed);
    counter!(FRAMES_RECEIVED, "kind" => kind).increment(1);
    counter!(RECEIVED_BYTES, "kind" => kind).increment(bytes as u64);
}

/// Payload bytes of a rule frame received.
pub fn rule_bytes_in(bytes: usize) {
    static SLOT: OnceLock<Counter> = OnceLock::new();
    hot(&SLOT, || counter!(RECEIVED_BYTES, "kind" => "rule")).increment(bytes as u64);
}

/// A rule frame whose rule id is not routed (`rule="_unknown"`).
pub fn unknown_rule_frame() {
    static SLOT: OnceLock<Counter> = OnceLock::new();
    FRAMES_IN_TOTAL.fetch_add(1, Ordering::Relaxed);
    hot(&SLOT, || make_rule_counter(UNKNOWN_RULE)).increment(1);
}

/// The counter of rule frames for a configured `rule` (resolved once per routing table). Its
/// increments also count in [`frame_totals`].
pub fn rule_frames_counter(rule: &str) -> Counter {
    Counter::from_arc(Arc::new(AlsoTotal(rule_frame_counter(rule))))
}

/// A `frames_received` counter whose increments also go to [`FRAMES_IN_TOTAL`].
struct AlsoTotal(Counter);

impl CounterFn for AlsoTotal {
    fn increment(&self, value: u64) {
        FRAMES_IN_TOTAL.fetch_add(value, Ordering::Relaxed);
        self.0.increment(value);
    }

    fn absolute(&self, value: u64) {
        self.0.absolute(value);
    }
}

/// `n` text frames of `bytes` payload+header bytes handed to a socket (one batch).
pub fn frames_out(n: usize, bytes: usize) {
    static FRAMES: OnceLock<Counter> = OnceLock::new();
    static BYTES: OnceLock<Counter> = OnceLock::new();
    FRAMES_OUT_TOTAL.fetch_add(n as u64, Ordering::Relaxed);
    hot(&FRAMES, || counter!(FRAMES_SENT, "kind" => "text")).increment(n as u64);
    hot(&BYTES, || counter!(SENT_BYTES, "kind" => "text")).increment(bytes as u64);
}

/// Counter handles for `frames_received{kind="rule",rule=…}`, so the hot path does one map
/// lookup instead of building a label set per frame; also enforces [`MAX_RULE_LABELS`].
static RULE_FRAMES: OnceLock<RwLock<HashMap<String, Counter>>> = OnceLock::new();

fn rule_frame_counter(rule: &str) -> Counter {
    // Before install the facade hands out no-op counters; don't cache those.
    if !installed() {
        return make_rule_counter(rule);
    }
    cached_rule_counter(
        RULE_FRAMES.get_or_init(Default::default),
        MAX_RULE_LABELS,
        rule,
    )
}

fn make_rule_counter(rule: &str) -> Counter {
    counter!(FRAMES_RECEIVED, "kind" => "rule", "rule" => rule.to_owned())
}

/// The cached counter for `rule`, creating it while the cache holds fewer than `cap` rules;
/// beyond that, the [`UNKNOWN_RULE`] counter.
fn cached_rule_counter(
    cache: &RwLock<HashMap<String, Counter>>,
    cap: usize,
    rule: &str,
) -> Counter {
    if let Ok(map) = cache.read() {
        if let Some(c) = map.get(rule) {
            return c.clone();
        }
    }
    let Ok(mut map) = cache.write() else {
        return make_rule_counter(UNKNOWN_RULE);
    };
    if let Some(c) = map.get(rule) {
        return c.clone();
    }
    if map.len() >= cap && rule != UNKNOWN_RULE {
        return make_rule_counter(UNKNOWN_RULE);
    }
    let c = make_rule_counter(rule);
    map.insert(rule.to_owned(), c.clone());
    c
}

// ---------------------------------------------------------------------------------------------
// Protocol outcomes

/// One authentication attempt. `result`: `"success"`, or the `auth_failed`
/// reason (`AuthFailReason::as_str`; this host never sends `re_pair_required`).
pub fn auth_result(result: &'static str) {
    counter!(AUTH_RESULTS, "result" => result).increment(1);
}

/// One pairing event. `result`: `"started"`, `"paired"`, `"notify_failed"`, or the
/// `pair_failed` reason (e.g. `"invalid_code"`, `"expired"`).
pub fn pairing_result(result: &'static str) {
    counter!(PAIRING_RESULTS, "result" => result).increment(1);
}

/// A refused proof or hello, by what failed (a `&'static str` from the auth checks).
pub fn auth_refused(kind: &'static str) {
    counter!(AUTH_REFUSED, "reason" => kind).increment(1);
}

/// A connection closed for repeated failures (`"auth"`, `"pairing"`) or for more frames
/// before authentication than a follower sends (`"frames"`).
pub fn abuser_closed(kind: &'static str) {
    counter!(ABUSERS_CLOSED, "reason" => kind).increment(1);
}

/// An answer deliberately delayed (`"address"`, `"identifier"`, `"pairing"`).
pub fn throttled(kind: &'static str) {
    counter!(THROTTLED, "kind" => kind).increment(1);
}

/// Log lines suppressed by the log rate limit.
pub fn log_lines_suppressed(n: u64) {
    counter!(LOG_LINES_SUPPRESSED).increment(n);
}

/// A frame another host sent for a follower no longer connected here.
pub fn cluster_undeliverable() {
    counter!(CLUSTER_UNDELIVERABLE).increment(1);
}

/// This host's NATS connection went up or down.
pub fn set_cluster_link_up(up: bool) {
    gauge!(CLUSTER_LINK_UP).set(if up { 1.0 } else { 0.0 });
}

/// The watchdog moved a non-blocking plugin to its own thread.
pub fn plugin_demoted(plugin: &str) {
    counter!(PLUGIN_DEMOTIONS, "plugin" => plugin.to_owned()).increment(1);
}

/// A config reload. `outcome`: `"applied"`, `"refused"`, `"unchanged"`.
pub fn reload(outcome: &'static str) {
    counter!(CONFIG_RELOADS, "outcome" => outcome).increment(1);
}

// ---------------------------------------------------------------------------------------------
// Plugins

/// One plugin call finished. `plugin`: its configured name. `outcome`: `"ok"`, `"error"`,
/// `"panic"`, `"busy"` (queue full, never ran), `"deadline"` (ran past its deadline).
/// `seconds`: how long the call ran; not observed for `"busy"`.
pub fn plugin_call(plugin: &str, outcome: &'static str, seconds: f64) {
    counter!(PLUGIN_CALLS, "plugin" => plugin.to_owned(), "outcome" => outcome).increment(1);
    if outcome != "busy" {
        histogram!(PLUGIN_CALL_DURATION, "plugin" => plugin.to_owned()).record(seconds);
    }
}

/// Set how many messages/events wait for `plugin`'s worker.
pub fn set_plugin_queue_depth(plugin: &str, depth: usize) {
    gauge!(PLUGIN_QUEUE_DEPTH, "plugin" => plugin.to_owned()).set(depth as f64);
}

/// One plugin instance's metric handles, resolved once when it is created (no label set is
/// built per call).
#[derive(Debug)]
pub struct PluginMetrics {
    ok: Counter,
    error: Counter,
    panic: Counter,
    busy: Counter,
    deadline: Counter,
    duration: metrics::Histogram,
    depth: metrics::Gauge,
}

impl PluginMetrics {
    pub fn new(plugin: &str) -> Self {
        let calls = |outcome: &'static str| counter!(PLUGIN_CALLS, "plugin" => plugin.to_owned(), "outcome" => outcome);
        PluginMetrics {
            ok: calls("ok"),
            error: calls("error"),
            panic: calls("panic"),
            busy: calls("busy"),
            deadline: calls("deadline"),
            duration: histogram!(PLUGIN_CALL_DURATION, "plugin" => plugin.to_owned()),
            depth: gauge!(PLUGIN_QUEUE_DEPTH, "plugin" => plugin.to_owned()),
        }
    }

    /// One call finished (`"ok"`, `"error"`, `"panic"`, `"deadline"`) or was refused
    /// (`"busy"`, not timed).
    pub fn call(&self, outcome: &'static str, elapsed: Duration) {
        let counter = match outcome {
            "ok" => &self.ok,
            "panic" => &self.panic,
            "busy" => &self.busy,
            "deadline" => &self.deadline,
            _ => &self.error,
        };
        counter.increment(1);
        if outcome != "busy" {
            self.duration.record(elapsed.as_secs_f64());
        }
    }

    pub fn queue_depth(&self, depth: usize) {
        self.depth.set(depth as f64);
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A sample line: name, labels, value.
    pub(crate) type ParsedSample = (String, Vec<(String, String)>, f64);

    /// Check `text` against the Prometheus text format (0.0.4): every sample line is
    /// `name{labels} value` with a float value and belongs to a family with a `# TYPE` line
    /// before it; `# HELP`/`# TYPE` lines are well formed. Returns the samples as
    /// `(name, labels, value)`.
    pub(crate) fn parse_prometheus_text(text: &str) -> Result<Vec<ParsedSample>, String> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let mut parts = rest.trim_start().splitn(3, ' ');
                match parts.next() {
                    Some("TYPE") => {
                        let name = parts.next().ok_or(format!("line {n}: TYPE without name"))?;
                        let ty = parts.next().ok_or(format!("line {n}: TYPE without type"))?;
                        check_name(name).map_err(|e| format!("line {n}: {e}"))?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                            return Err(format!("line {n}: unknown type {ty:?}"));
                        }
                        if types.insert(name.into(), ty.into()).is_some() {
                            return Err(format!("line {n}: second TYPE for {name}"));
                        }
                    }
                    Some("HELP") => {
                        let name = parts.next().ok_or(format!("line {n}: HELP without name"))?;
                        check_name(name).map_err(|e| format!("line {n}: {e}"))?;
                    }
                    _ => {}
                }
                continue;
            }
            let (name, labels, rest) = split_sample(line).map_err(|e| format!("line {n}: {e}"))?;
            let mut fields = rest.split_whitespace();
            let value = fields
                .next()
                .ok_or(format!("line {n}: no value"))
                .and_then(|v| parse_value(v).ok_or(format!("line {n}: bad value {v:?}")))?;
            if let Some(ts) = fields.next() {
                ts.parse::<i64>()
                    .map_err(|_| format!("line {n}: bad timestamp {ts:?}"))?;
            }
            if fields.next().is_some() {
                return Err(format!("line {n}: trailing fields"));
            }
            let family = family_of(&name, &types)
                .ok_or(format!("line {n}: sample {name} has no # TYPE before it"))?;
            if family.is_empty() {
                return Err(format!("line {n}: empty family"));
            }
            samples.push((name, labels, value));
        }
        Ok(samples)
    }

    fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
        if types.contains_key(name) {
            return Some(name);
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if matches!(
                    types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                ) {
                    return Some(base);
                }
            }
        }
        None
    }

    fn check_name(name: &str) -> Result<(), String> {
        let mut chars = name.chars();
        let ok_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if ok_first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            Ok(())
        } else {
            Err(format!("bad metric name {name:?}"))
        }
    }

    type Sample<'a> = (String, Vec<(String, String)>, &'a str);

    fn split_sample(line: &str) -> Result<Sample<'_>, String> {
        let end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..end];
        check_name(name)?;
        let mut labels = Vec::new();
        let mut rest = &line[end..];
        if let Some(mut s) = rest.strip_prefix('{') {
            loop {
                s = s.trim_start_matches(',');
                if let Some(after) = s.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = s.find('=').ok_or("label without =")?;
                let key = &s[..eq];
                check_name(key)?;
                let mut chars = s[eq + 1..].char_indices();
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err("label value not quoted".into());
                }
                let mut value = String::new();
                let mut close = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            _ => return Err("bad escape in label value".into()),
                        },
                        '"' => {
                            close = Some(j);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                let close = close.ok_or("unterminated label value")?;
                labels.push((key.to_owned(), value));
                s = &s[eq + 1 + close + 1..];
            }
        }
        let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
        Ok((name.to_owned(), labels, rest))
    }

    fn parse_value(v: &str) -> Option<f64> {
        match v {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => v.parse::<f64>().ok().filter(|f| f.is_finite()),
        }
    }

    /// The value of the sample `name` with exactly these labels (order-insensitive).
    pub(crate) fn sample(
        samples: &[ParsedSample],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        let want: HashSet<(&str, &str)> = labels.iter().copied().collect();
        samples.iter().find_map(|(n, l, v)| {
            let have: HashSet<(&str, &str)> =
                l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            (n == name && have == want).then_some(*v)
        })
    }

    #[test]
    fn install_is_idempotent() {
        let a = install().expect("install");
        let b = install().expect("second install");
        reload("idempotent_test");
        for m in [a, b] {
            let s = parse_prometheus_text(&m.render()).unwrap();
            assert_eq!(
                sample(&s, CONFIG_RELOADS, &[("outcome", "idempotent_test")]),
                Some(1.0)
            );
        }
    }

    #[test]
    fn recorded_values_render_with_labels_help_and_type() {
        let m = install().expect("install");
        // Label values unique to this test, since the recorder is shared by the whole process.
        let c = rule_frames_counter("metrics_test_rule");
        c.increment(1);
        c.increment(1);
        rule_bytes_in(22);
        unknown_rule_frame();
        frame_in("malformed", 3);
        frames_out(2, 42);
        auth_result("metrics_test_reason");
        pairing_result("metrics_test_paired");
        plugin_call("metrics_test_plugin", "ok", 0.000_3);
        plugin_call("metrics_test_plugin", "ok", 0.2);
        plugin_call("metrics_test_plugin", "busy", 0.0);
        set_plugin_queue_depth("metrics_test_plugin", 17);
        reload("metrics_test_applied");
        connection_rejected("metrics_test_limit");
        set_followers_by_liveness(3, 2, 1);
        slow_consumer_closed();
        rate_limited();
        message_too_large();
        connection_opened();
        connection_closed();

        let text = m.render();
        let s = parse_prometheus_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let get = |name: &str, labels: &[(&str, &str)]| {
            sample(&s, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"))
        };
        assert_eq!(
            get(
                FRAMES_RECEIVED,
                &[("kind", "rule"), ("rule", "metrics_test_rule")]
            ),
            2.0
        );
        assert!(get(FRAMES_RECEIVED, &[("kind", "rule"), ("rule", "_unknown")]) >= 1.0);
        assert!(get(FRAMES_RECEIVED, &[("kind", "malformed")]) >= 1.0);
        assert!(get(RECEIVED_BYTES, &[("kind", "rule")]) >= 22.0);
        assert!(get(FRAMES_SENT, &[("kind", "text")]) >= 2.0);
        assert!(get(SENT_BYTES, &[("kind", "text")]) >= 42.0);
        assert_eq!(get(AUTH_RESULTS, &[("result", "metrics_test_reason")]), 1.0);
        assert_eq!(
            get(PAIRING_RESULTS, &[("result", "metrics_test_paired")]),
            1.0
        );
        let p = ("plugin", "metrics_test_plugin");
        assert_eq!(get(PLUGIN_CALLS, &[p, ("outcome", "ok")]), 2.0);
        assert_eq!(get(PLUGIN_CALLS, &[p, ("outcome", "busy")]), 1.0);
        assert_eq!(get(PLUGIN_QUEUE_DEPTH, &[p]), 17.0);
        // Histogram: busy calls are not timed; buckets are cumulative, in seconds.
        let hist = format!("{PLUGIN_CALL_DURATION}_count");
        assert_eq!(get(&hist, &[p]), 2.0);
        let bucket = format!("{PLUGIN_CALL_DURATION}_bucket");
        assert_eq!(get(&bucket, &[p, ("le", "0.0005")]), 1.0);
        assert_eq!(get(&bucket, &[p, ("le", "0.25")]), 2.0);
        assert_eq!(get(&bucket, &[p, ("le", "+Inf")]), 2.0);
        assert_eq!(
            get(CONFIG_RELOADS, &[("outcome", "metrics_test_applied")]),
            1.0
        );
        assert_eq!(
            get(CONNECTIONS_REJECTED, &[("reason", "metrics_test_limit")]),
            1.0
        );
        assert_eq!(get(FOLLOWERS, &[("liveness", "online")]), 3.0);
        assert_eq!(get(FOLLOWERS, &[("liveness", "unstable")]), 2.0);
        assert_eq!(get(FOLLOWERS, &[("liveness", "offline")]), 1.0);
        for name in [
            SLOW_CONSUMER_CLOSES,
            RATE_LIMITED,
            MESSAGES_TOO_LARGE,
            CONNECTIONS_OPENED,
            CONNECTIONS_CLOSED,
        ] {
            assert!(get(name, &[]) >= 1.0, "{name}");
        }
        for name in [FRAMES_RECEIVED, PLUGIN_CALL_DURATION, FOLLOWERS] {
            assert!(text.contains(&format!("# HELP {name} ")), "HELP {name}");
        }
        assert!(text.contains(&format!("# TYPE {PLUGIN_CALL_DURATION} histogram")));
        assert!(text.contains(&format!("# TYPE {FOLLOWERS} gauge")));
        assert!(text.contains(&format!("# TYPE {AUTH_RESULTS} counter")));
        for (name, _, _) in &s {
            assert!(name.starts_with("yonexus_"), "{name}");
        }
    }

    #[test]
    fn connection_state_gauge_moves() {
        let m = install().expect("install");
        // The gauge is shared with other tests in this process; check deltas by setting first.
        set_connections(ConnectionState::Authenticated, 5);
        set_connections(ConnectionState::Unauthenticated, 0);
        connection_state(None, Some(ConnectionState::Unauthenticated));
        connection_state(None, Some(ConnectionState::Unauthenticated));
        connection_state(
            Some(ConnectionState::Unauthenticated),
            Some(ConnectionState::Authenticated),
        );
        connection_state(Some(ConnectionState::Authenticated), None);
        connection_state(
            Some(ConnectionState::Authenticated),
            Some(ConnectionState::Authenticated),
        );
        let s = parse_prometheus_text(&m.render()).unwrap();
        assert_eq!(
            sample(&s, CONNECTIONS, &[("state", "unauthenticated")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&s, CONNECTIONS, &[("state", "authenticated")]),
            Some(5.0)
        );
    }

    #[test]
    fn frame_totals_follow_every_frame_counter() {
        // The totals are process-wide and other tests count frames too: move each one by far
        // more than they could in the meantime, and check it moved at least that much.
        const N: u64 = 10_000;
        let (in0, out0) = frame_totals();
        for _ in 0..N {
            frame_in("builtin", 1);
        }
        let (in1, _) = frame_totals();
        assert!(in1 - in0 >= N, "frame_in: {}", in1 - in0);
        rule_frames_counter("totals_test_rule").increment(N);
        let (in2, _) = frame_totals();
        assert!(in2 - in1 >= N, "rule frames: {}", in2 - in1);
        for _ in 0..N {
            unknown_rule_frame();
        }
        let (in3, _) = frame_totals();
        assert!(in3 - in2 >= N, "unknown rule: {}", in3 - in2);
        frames_out(N as usize, 1);
        let (_, out1) = frame_totals();
        assert!(out1 - out0 >= N, "frames_out: {}", out1 - out0);
        // The rule counter still records into the recorder once installed.
        let m = install().expect("install");
        rule_frames_counter("totals_test_rule_2").increment(3);
        let s = parse_prometheus_text(&m.render()).unwrap();
        assert_eq!(
            sample(
                &s,
                FRAMES_RECEIVED,
                &[("kind", "rule"), ("rule", "totals_test_rule_2")]
            ),
            Some(3.0)
        );
    }

    #[test]
    fn rule_labels_are_capped() {
        let m = install().expect("install");
        // A private cache with a small cap, so the shared one keeps room for other tests.
        let cache = RwLock::default();
        for i in 0..5 {
            cached_rule_counter(&cache, 3, &format!("cap_test_{i}")).increment(1);
        }
        cached_rule_counter(&cache, 3, "cap_test_0").increment(1);
        let s = parse_prometheus_text(&m.render()).unwrap();
        let rule = |r: &str| sample(&s, FRAMES_RECEIVED, &[("kind", "rule"), ("rule", r)]);
        assert_eq!(rule("cap_test_0"), Some(2.0));
        assert_eq!(rule("cap_test_2"), Some(1.0));
        assert_eq!(rule("cap_test_3"), None);
        assert_eq!(rule("cap_test_4"), None);
        assert!(rule(UNKNOWN_RULE).is_some_and(|v| v >= 2.0));
    }

    #[test]
    fn format_check_rejects_bad_text() {
        assert!(parse_prometheus_text("# TYPE a counter\na 1\n").is_ok());
        assert!(parse_prometheus_text("a 1\n").is_err(), "no TYPE");
        assert!(parse_prometheus_text("# TYPE a counter\na one\n").is_err());
        assert!(parse_prometheus_text("# TYPE a counter\na{b=c} 1\n").is_err());
        assert!(parse_prometheus_text("# TYPE a counter\na{b=\"c} 1\n").is_err());
        assert!(parse_prometheus_text("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n").is_ok());
        assert!(parse_prometheus_text("# TYPE g gauge\ng_bucket 1\n").is_err());
    }
}
