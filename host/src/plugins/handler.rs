//! [`PluginHandler`]: a plugin instance as the router sees it. `dispatch` never blocks: it
//! queues the message for one of the instance's workers, or calls the plugin right away on the
//! calling thread (inline), under a watchdog. `deliver_event` always queues.
//!
//! Sharding: a thread-safe instance has several workers; a follower's messages and lifecycle
//! events all go to the one picked by its identifier ([`crate::router::shard_key`]), so the
//! plugin sees them in the order they happened, also across reconnects.
//!
//! Inline calls: a message runs inline only when all of these hold:
//! - the plugin declared itself both non-blocking *and* thread-safe (either alone is not
//!   enough: only such a plugin may be called from any thread, concurrently, without delay);
//! - the host allows inline calls ([`set_inline_limit`] above 0; the host sets it to one less
//!   than its async worker threads, so at least one always stays free for other followers) and
//!   fewer than that many inline calls are running right now, across all plugins;
//! - the plugin has not been demoted: a call that overran [`INLINE_BUDGET`] by its own doing
//!   sends its later messages to its own workers like any other plugin's, until it is reloaded.
//!   The watchdog finds a call past the budget, then keeps looking every tick: once the call
//!   has used a further budget of CPU time (spinning or heavy work), or its thread has been
//!   found asleep on two looks in a row (blocking), it demotes; while the thread is runnable
//!   but gets little CPU — preempted by other busy threads, not the plugin's fault and common
//!   on a loaded machine — it keeps watching ([`sched`](super::sched) reads the thread's CPU
//!   clock and state). Where the kernel cannot tell, wall-clock time alone decides: one
//!   overrun, seen by the watchdog or when the call returns, demotes;
//! - the instance is not waiting for its gate (a reload's predecessor still draining), and
//!   nothing of it is queued or running on its workers (messages or events), so each
//!   follower's order holds;
//! - the calling thread has one of the watchdog's 64 thread slots.
//!
//! Otherwise the message is queued. The watchdog thread checks every `INLINE_BUDGET / 2` while
//! inline calls run, and parks (costing nothing) once it has found none running for
//! [`WATCHDOG_IDLE_GRACE`]; the next inline call wakes it. Under load calls start thousands of
//! times per second and each lasts microseconds, so a watchdog that parked whenever it found
//! none running was woken by almost every tick's next call: a futex wake on the I/O thread
//! and two more context switches per millisecond on the cores that serve followers.

use super::sched::{self, ThreadProbe, Verdict};
use super::worker::{self, Instance, Job, Latch, Mailbox, Refused, Shared};
use crate::events::FollowerEvent;
use crate::router::{shard_key, DispatchError, RuleHandler, RuleMessage};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// An inline call running longer than this demotes its plugin to its own thread.
pub const INLINE_BUDGET: Duration = Duration::from_millis(2);
/// Lifecycle events that may wait per worker beyond the message queue.
pub const EVENT_QUEUE: usize = 4096;
/// Threads that can run inline calls (each gets a slot the watchdog can see).
const INLINE_SLOTS: usize = 64;

/// How many inline calls may run at once (0 = none: every call goes to a worker thread).
static INLINE_LIMIT: AtomicUsize = AtomicUsize::new(0);
static INLINE_ACTIVE: AtomicUsize = AtomicUsize::new(0);
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
/// How the watchdog looks at the thread behind each slot (unset: slot not taken yet; `None`:
/// the kernel cannot tell, wall-clock time alone judges).
static SLOT_PROBES: [OnceLock<Option<ThreadProbe>>; INLINE_SLOTS] =
    [const { OnceLock::new() }; INLINE_SLOTS];
/// The watchdog thread, unparked when an inline call starts while it is parked.
static WATCHDOG: OnceLock<std::thread::Thread> = OnceLock::new();
/// Set by the watchdog just before it parks; the call that finds it set wakes it.
static WATCHDOG_PARKED: AtomicBool = AtomicBool::new(false);
/// How long the watchdog keeps ticking after it last found an inline call running.
pub const WATCHDOG_IDLE_GRACE: Duration = Duration::from_millis(50);
static WATCHDOG_CHECKS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Allow up to `n` inline calls at once (the host: its async worker threads minus one).
pub fn set_inline_limit(n: usize) {
    INLINE_LIMIT.store(n, Ordering::Relaxed);
}

fn thread_slot() -> Option<usize> {
    SLOT.with(|s| {
        if s.get().is_none() {
            let n = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            if n < INLINE_SLOTS {
                let _ = SLOT_PROBES[n].set(ThreadProbe::current());
                s.set(Some(n));
            }
        }
        s.get()
    })
}

/// How many times the inline watchdog has looked at the running inline calls (diagnostics and
/// tests: it parks once no inline call has run for [`WATCHDOG_IDLE_GRACE`]).
pub fn inline_watchdog_checks() -> u64 {
    WATCHDOG_CHECKS.load(Ordering::Relaxed)
}

fn try_inline_permit() -> bool {
    let limit = INLINE_LIMIT.load(Ordering::Relaxed);
    // SeqCst here and in the watchdog's park: either it sees this call running, or this call
    // sees it parked (and wakes it).
    if INLINE_ACTIVE
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
            (a < limit).then_some(a + 1)
        })
        .is_err()
    {
        return false;
    }
    if WATCHDOG_PARKED.load(Ordering::SeqCst) && WATCHDOG_PARKED.swap(false, Ordering::SeqCst) {
        if let Some(watchdog) = WATCHDOG.get() {
            watchdog.unpark();
        }
    }
    true
}

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
    /// Lifecycle events dropped because the event queue was full.
    pub events_dropped: u64,
    /// True once the panic breaker tripped.
    pub disabled: bool,
    /// Jobs (messages and events) queued for the workers right now.
    pub queued: usize,
    /// True once the watchdog moved a non-blocking plugin to its own thread.
    pub demoted: bool,
}

struct Inline {
    demoted: AtomicBool,
    /// Start (nanos since the shared epoch) of the inline call running on each thread slot.
    starts: Box<[AtomicU64]>,
}

struct Inner {
    name: String,
    shared: Arc<Shared>,
    mailboxes: Vec<Arc<Mailbox>>,
    instance: Arc<Instance>,
    call_deadline: Duration,
    max_messages: usize,
    handles_events: bool,
    gate: Arc<Latch>,
    inline: Option<Inline>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Workers serve what is queued, then the instance is destroyed.
        for m in &self.mailboxes {
            m.close();
        }
    }
}

impl Inner {
    /// The worker mailbox for shard key `key` (see [`crate::router::shard_key`]).
    fn mailbox_for(&self, key: u64) -> Option<&Arc<Mailbox>> {
        worker::shard(&self.mailboxes, key)
    }

    fn demote(&self, why: &str) {
        if let Some(inline) = &self.inline {
            if !inline.demoted.swap(true, Ordering::AcqRel) {
                crate::metrics::plugin_demoted(&self.name);
                tracing::warn!(plugin = %self.name, budget = ?INLINE_BUDGET, "non-blocking plugin {why}: its messages now go to its own thread until it is reloaded");
            }
        }
    }
}

/// The watchdog's list of plugins that may run inline. The first call starts the watchdog.
fn watched() -> &'static Mutex<Vec<Weak<Inner>>> {
    static LIST: OnceLock<Mutex<Vec<Weak<Inner>>>> = OnceLock::new();
    LIST.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("yonexus-inline-watchdog".into())
            .spawn(|| {
                let mut seen = HashMap::new();
                let mut last_busy = std::time::Instant::now();
                loop {
                    if INLINE_ACTIVE.load(Ordering::SeqCst) != 0 {
                        last_busy = std::time::Instant::now();
                    } else if last_busy.elapsed() >= WATCHDOG_IDLE_GRACE {
                        // Until a call finds it parked and unparks it (an unpark that comes
                        // before this park makes it return at once; a spurious return loops).
                        seen.clear();
                        WATCHDOG_PARKED.store(true, Ordering::SeqCst);
                        if INLINE_ACTIVE.load(Ordering::SeqCst) == 0 {
                            std::thread::park();
                        }
                        WATCHDOG_PARKED.store(false, Ordering::SeqCst);
                        last_busy = std::time::Instant::now();
                        continue;
                    }
                    std::thread::sleep(INLINE_BUDGET / 2);
                    WATCHDOG_CHECKS.fetch_add(1, Ordering::Relaxed);
                    seen = watch_once(&seen);
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = WATCHDOG.set(handle.thread().clone());
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the inline watchdog; plugins run on their own threads");
                set_inline_limit(0);
            }
        }
        Mutex::new(Vec::new())
    })
}

/// An inline call the watchdog found past its budget: which call (its start), when it looked
/// last, its thread's CPU time then and at the first look, and for how many looks in a row it
/// has been found asleep.
struct Sighting {
    start: u64,
    at: u64,
    cpu: u64,
    first_cpu: u64,
    asleep: u32,
}

/// Looks in a row that must find a call asleep before it counts as blocking (one look could
/// catch it waiting a moment for a lock whose holder is preempted).
const ASLEEP_LOOKS: u32 = 2;

/// One look at every running inline call; demotes the plugins whose call overran by its own
/// doing (see the module docs). Returns the calls to look at again on the next tick, keyed by
/// plugin instance and thread slot.
fn watch_once(seen: &HashMap<(usize, usize), Sighting>) -> HashMap<(usize, usize), Sighting> {
    let live: Vec<Arc<Inner>> = {
        let mut list = watched().lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    };
    let budget = INLINE_BUDGET.as_nanos() as u64;
    let mut next = HashMap::new();
    for inner in live {
        let Some(inline) = &inner.inline else {
            continue;
        };
        if inline.demoted.load(Ordering::Relaxed) {
            continue;
        }
        for (slot, s) in inline.starts.iter().enumerate() {
            let start = s.load(Ordering::Acquire);
            if start == 0 || inner.shared.nanos().saturating_sub(start) <= budget {
                continue;
            }
            let probe = SLOT_PROBES[slot].get().copied().flatten();
            let Some((probe, cpu)) = probe.and_then(|p| Some((p, p.cpu_ns()?))) else {
                inner.demote("overran its call budget");
                break;
            };
            let at = inner.shared.nanos();
            let key = (Arc::as_ptr(&inner) as usize, slot);
            let mut sighting = Sighting {
                start,
                at,
                cpu,
                first_cpu: cpu,
                asleep: 0,
            };
            if let Some(before) = seen.get(&key).filter(|b| b.start == start) {
                sighting.first_cpu = before.first_cpu;
                let ran = cpu.saturating_sub(before.cpu);
                let elapsed = at.saturating_sub(before.at);
                if sched::judge(ran, elapsed, probe.runnable().unwrap_or(false)) == Verdict::Blocked
                {
                    sighting.asleep = before.asleep + 1;
                }
            }
            // The thread's CPU time and state belong to this call only if it is still running:
            // one that ended meanwhile (its thread now busy with other work, or idle) says
            // nothing about the plugin.
            if s.load(Ordering::Acquire) != start {
                continue;
            }
            let age_ms = at.saturating_sub(start) as f64 / 1e6;
            let ran = cpu.saturating_sub(sighting.first_cpu);
            if ran >= budget {
                // A further budget of CPU time spent while already past the budget.
                let ran_ms = ran as f64 / 1e6;
                inner.demote(&format!("overran its call budget (running: {ran_ms:.1} ms on a CPU since the watchdog first saw it, {age_ms:.1} ms into the call)"));
                break;
            }
            if sighting.asleep >= ASLEEP_LOOKS {
                inner.demote(&format!(
                    "overran its call budget (blocked: asleep {age_ms:.1} ms into the call)"
                ));
                break;
            }
            next.insert(key, sighting);
        }
    }
    next
}

/// A loaded, running plugin instance; implements [`RuleHandler`]. Dropping the last clone of the
/// `Arc` stops its workers (after queued jobs) and destroys the instance; the library stays
/// mapped.
pub struct PluginHandler {
    inner: Arc<Inner>,
}

impl PluginHandler {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        shared: Arc<Shared>,
        mailboxes: Vec<Arc<Mailbox>>,
        instance: Arc<Instance>,
        call_deadline: Duration,
        max_messages: usize,
        handles_events: bool,
        gate: Arc<Latch>,
        inline: bool,
    ) -> Self {
        let inline = inline.then(|| Inline {
            demoted: AtomicBool::new(false),
            starts: (0..INLINE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        });
        let watch = inline.is_some();
        let inner = Arc::new(Inner {
            name,
            shared,
            mailboxes,
            instance,
            call_deadline,
            max_messages,
            handles_events,
            gate,
            inline,
        });
        if watch {
            watched()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::downgrade(&inner));
        }
        PluginHandler { inner }
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
            queued: self.inner.mailboxes.iter().map(|m| m.queued()).sum(),
            demoted: self
                .inner
                .inline
                .as_ref()
                .is_some_and(|i| i.demoted.load(Ordering::Relaxed)),
        }
    }

    /// Set once every worker has served its last queued job and the instance is destroyed
    /// (after every clone of the handler is dropped).
    pub fn finished(&self) -> Arc<Latch> {
        Arc::clone(&self.inner.shared.finished)
    }

    /// Nothing queued and no call running right now.
    pub fn is_idle(&self) -> bool {
        let inner = &self.inner;
        inner.shared.pending.load(Ordering::Acquire) == 0
            && inner
                .mailboxes
                .iter()
                .all(|m| m.call_started.load(Ordering::Acquire) == 0)
            && inner
                .inline
                .as_ref()
                .is_none_or(|i| i.starts.iter().all(|s| s.load(Ordering::Acquire) == 0))
    }

    /// Whether the panic breaker has disabled this instance.
    pub fn is_disabled(&self) -> bool {
        self.inner.shared.disabled.load(Ordering::Relaxed)
    }

    /// Whether calls may run inline right now (tests).
    pub fn runs_inline(&self) -> bool {
        self.inner
            .inline
            .as_ref()
            .is_some_and(|i| !i.demoted.load(Ordering::Relaxed))
            && INLINE_LIMIT.load(Ordering::Relaxed) > 0
    }

    /// Try to handle `msg` on this thread; gives it back when it must be queued.
    fn try_inline(&self, msg: RuleMessage) -> Result<(), RuleMessage> {
        let inner = &self.inner;
        let Some(inline) = &inner.inline else {
            return Err(msg);
        };
        if inline.demoted.load(Ordering::Relaxed)
            || !inner.gate.is_set()
            || inner.shared.pending.load(Ordering::Acquire) != 0
        {
            return Err(msg);
        }
        let Some(slot) = thread_slot() else {
            return Err(msg);
        };
        if !try_inline_permit() {
            return Err(msg);
        }
        let start = inner.shared.nanos();
        inline.starts[slot].store(start, Ordering::Release);
        let end = inner.instance.call_message(&msg, start);
        inline.starts[slot].store(0, Ordering::Release);
        INLINE_ACTIVE.fetch_sub(1, Ordering::AcqRel);
        let watched_closely = SLOT_PROBES[slot].get().is_some_and(Option::is_some);
        if !watched_closely && end.saturating_sub(start) > INLINE_BUDGET.as_nanos() as u64 {
            inner.demote("overran its call budget");
        }
        Ok(())
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
                rule: msg.rule_id().to_owned(),
                reason: worker::disabled_reason(&inner.name),
            });
        }
        let msg = match self.try_inline(msg) {
            Ok(()) => return Ok(()),
            Err(msg) => msg,
        };
        let Some(mailbox) = inner.mailbox_for(msg.sender.shard_key()) else {
            return Err(DispatchError::Failed {
                rule: msg.rule_id().to_owned(),
                reason: format!("plugin '{}' has no worker", inner.name),
            });
        };
        // Counted before the push so a worker never sees it go below zero.
        inner.shared.pending.fetch_add(1, Ordering::AcqRel);
        match mailbox.push(Job::Message(msg), inner.max_messages, EVENT_QUEUE) {
            Ok(()) => {
                inner.shared.publish_depth();
                Ok(())
            }
            Err(refused) => {
                inner.shared.pending.fetch_sub(1, Ordering::AcqRel);
                inner.shared.publish_depth();
                let (job, full) = match refused {
                    Refused::Full(job) => (job, true),
                    Refused::Closed(job) => (job, false),
                };
                let rule = match job {
                    Job::Message(m) => m.rule_id().to_owned(),
                    Job::Event(_) => String::new(),
                };
                if !full {
                    return Err(DispatchError::Failed {
                        rule,
                        reason: format!("plugin '{}' worker has stopped", inner.name),
                    });
                }
                inner.shared.busy_rejections.fetch_add(1, Ordering::Relaxed);
                inner.shared.metrics.call("busy", Duration::ZERO);
                let started = mailbox.call_started.load(Ordering::Acquire);
                if started != 0 {
                    let age = Duration::from_nanos(inner.shared.nanos().saturating_sub(started));
                    if age > inner.call_deadline
                        && !inner.shared.stuck_reported.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(plugin = %inner.name, running_for = ?age, "plugin call is over its deadline and its queue is full");
                    }
                }
                Err(DispatchError::Busy(rule))
            }
        }
    }

    fn handles_events(&self) -> bool {
        self.inner.handles_events
    }

    fn deliver_event(&self, event: &FollowerEvent) {
        let inner = &self.inner;
        // A plugin disabled by its panic breaker is not called again until it is reloaded.
        if !inner.handles_events || inner.shared.disabled.load(Ordering::Relaxed) {
            return;
        }
        // The follower's messages use the same key: same worker, same order.
        let Some(mailbox) = inner.mailbox_for(shard_key(event.identifier())) else {
            return;
        };
        inner.shared.pending.fetch_add(1, Ordering::AcqRel);
        match mailbox.push(Job::Event(event.clone()), usize::MAX, EVENT_QUEUE) {
            Ok(()) => inner.shared.publish_depth(),
            Err(refused) => {
                inner.shared.pending.fetch_sub(1, Ordering::AcqRel);
                inner.shared.publish_depth();
                if let Refused::Full(_) = refused {
                    inner.shared.events_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(plugin = %inner.name, kind = event.kind(), "plugin event queue full; lifecycle event dropped");
                }
            }
        }
    }
}
