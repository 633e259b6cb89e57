//! Running one plugin instance: its worker thread(s), each fed by a mailbox that is drained a
//! whole batch per wake-up; the `create` handshake; every call timed against the deadline;
//! failures answered with `error HANDLER_FAILED`; the panic circuit breaker.
//!
//! Threads: an instance that is not thread-safe lives on one worker thread, which makes every
//! call. A thread-safe instance (its header says so) gets one worker per core, and each
//! follower's messages and lifecycle events go to one of them (sharded by its identifier, see
//! [`crate::router::shard_key`]), so a busy rule can use every core while each follower's
//! messages and events stay in order. A helper worker that cannot be started is left out: the
//! followers are sharded over the workers that did start.

use super::abi::Functions;
use super::error::LoadErrorKind;
use super::host_api::HostCtx;
use crate::events::FollowerEvent;
use crate::reply;
use crate::router::{RuleMessage, Sender};
use core::ffi::c_void;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use yonexus_plugin_api::abi::{self, FfiBuf, FfiStr, FreeBufFn};
use yonexus_protocol::envelope::ErrorCode;

/// A one-way flag threads can wait on: set once, then every wait returns at once.
#[derive(Debug, Default)]
pub struct Latch {
    fast: AtomicBool,
    set: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    pub fn new() -> Arc<Latch> {
        Arc::new(Latch::default())
    }

    /// Set the flag and wake every waiter.
    pub fn set(&self) {
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.fast.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    pub fn is_set(&self) -> bool {
        self.fast.load(Ordering::Acquire)
    }

    /// Wait until set or `timeout` passes; true when set.
    pub fn wait(&self, timeout: Duration) -> bool {
        if self.is_set() {
            return true;
        }
        let guard = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |set| !*set)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// Work for a plugin's thread.
#[derive(Debug)]
pub(crate) enum Job {
    Message(RuleMessage),
    Event(FollowerEvent),
}

#[derive(Debug, Default)]
struct MailboxState {
    jobs: VecDeque<Job>,
    messages: usize,
    events: usize,
    /// The worker is asleep waiting for jobs (only then does a push notify it).
    waiting: bool,
    closed: bool,
}

/// Why a job was not queued.
pub(crate) enum Refused {
    Full(Job),
    Closed(Job),
}

/// One worker's queue. Pushes never block; the worker takes everything queued at once.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    state: Mutex<MailboxState>,
    cv: Condvar,
    /// When the call in progress on this worker started (nanos since `Shared::epoch`), 0 idle.
    pub call_started: AtomicU64,
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a job: messages up to `max_messages`, events up to `max_events` (separately, so a
    /// burst of lifecycle events never makes a follower's message HANDLER_BUSY).
    pub fn push(&self, job: Job, max_messages: usize, max_events: usize) -> Result<(), Refused> {
        let mut s = self.lock();
        if s.closed {
            return Err(Refused::Closed(job));
        }
        match &job {
            Job::Message(_) if s.messages >= max_messages => return Err(Refused::Full(job)),
            Job::Event(_) if s.events >= max_events => return Err(Refused::Full(job)),
            Job::Message(_) => s.messages += 1,
            Job::Event(_) => s.events += 1,
        }
        s.jobs.push_back(job);
        let wake = std::mem::take(&mut s.waiting);
        drop(s);
        if wake {
            self.cv.notify_one();
        }
        Ok(())
    }

    /// Stop accepting; the worker ends once it has served what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Everything queued (waiting for it), or `None` once closed and empty.
    fn take_all(&self) -> Option<VecDeque<Job>> {
        let mut s = self.lock();
        loop {
            if !s.jobs.is_empty() {
                s.messages = 0;
                s.events = 0;
                return Some(std::mem::take(&mut s.jobs));
            }
            if s.closed {
                return None;
            }
            s.waiting = true;
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn queued(&self) -> usize {
        self.lock().jobs.len()
    }
}

/// Counters and health, shared between the handler and its workers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub calls: AtomicU64,
    pub panics: AtomicU64,
    pub errors: AtomicU64,
    pub overdue: AtomicU64,
    pub busy_rejections: AtomicU64,
    pub events_dropped: AtomicU64,
    pub disabled: AtomicBool,
    pub stuck_reported: AtomicBool,
    /// Jobs (messages and events) queued or being handled by the workers (not counting inline
    /// calls). Mirrored in the `yonexus_plugin_queue_depth` gauge by [`Shared::publish_depth`].
    pub pending: AtomicUsize,
    pub epoch: Instant,
    panic_times: Mutex<VecDeque<Instant>>,
    /// Set once every worker has served its last job and the instance is destroyed.
    pub finished: Arc<Latch>,
    pub metrics: crate::metrics::PluginMetrics,
}

impl Shared {
    pub fn new(name: &str) -> Self {
        Shared {
            calls: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            overdue: AtomicU64::new(0),
            busy_rejections: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            disabled: AtomicBool::new(false),
            stuck_reported: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            epoch: Instant::now(),
            panic_times: Mutex::new(VecDeque::new()),
            finished: Latch::new(),
            metrics: crate::metrics::PluginMetrics::new(name),
        }
    }

    /// Set the queue-depth gauge to `pending`. Called by whoever changed `pending`, after the
    /// change; setting again while `pending` moved under it means that, once the queue is
    /// quiet, the gauge shows the true value (no stale write from a racing thread survives).
    pub fn publish_depth(&self) {
        let mut depth = self.pending.load(Ordering::Acquire);
        // Bounded: under constant change the next change publishes again.
        for _ in 0..4 {
            self.metrics.queue_depth(depth);
            let now = self.pending.load(Ordering::Acquire);
            if now == depth {
                return;
            }
            depth = now;
        }
    }

    pub fn nanos(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Record a panic; true when this one trips the breaker.
    fn record_panic(&self, limit: u32, window: Duration) -> bool {
        self.panics.fetch_add(1, Ordering::Relaxed);
        if limit == 0 {
            return false;
        }
        let now = Instant::now();
        let mut times = self.panic_times.lock().unwrap_or_else(|p| p.into_inner());
        times.push_back(now);
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            times.pop_front();
        }
        times.len() >= limit as usize && !self.disabled.swap(true, Ordering::AcqRel)
    }
}

/// Why a disabled plugin's messages are refused (answered `HANDLER_FAILED`).
pub(crate) fn disabled_reason(name: &str) -> String {
    format!("plugin '{name}' is disabled after repeated panics until it is reloaded")
}

/// Settings the workers need.
pub(crate) struct WorkerConfig {
    pub name: String,
    pub config_json: String,
    pub call_deadline: Duration,
    pub panic_limit: u32,
    pub panic_window: Duration,
}

/// A created plugin instance and the context of the host API it was given. Dropped after
/// `destroy`: from then on, calls through a kept `Host` handle return `STATUS_GONE`.
pub(crate) struct Instance {
    f: Functions,
    ptr: *mut c_void,
    cfg: WorkerConfig,
    shared: Arc<Shared>,
    ctx: Box<HostCtx>,
}

// SAFETY: the instance pointer is only used from several threads when the plugin declared
// itself thread-safe; otherwise only its one worker thread touches it. The host API and
// context are immutable after creation.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

fn take_err(free: FreeBufFn, buf: FfiBuf) -> String {
    if buf.ptr.is_null() {
        return String::new();
    }
    // SAFETY: a plugin-made buffer: read it, then hand it back to the plugin's allocator.
    let text = String::from_utf8_lossy(&unsafe { buf.to_vec() }).into_owned();
    // SAFETY: as above; freed exactly once.
    unsafe { free(buf) };
    text
}

impl Instance {
    /// Handle one message on the calling thread (a worker, or an async thread for a
    /// non-blocking plugin). `start` is [`Shared::nanos`] as the caller took it for its own
    /// bookkeeping just before; returns it at the end (one clock read each, shared).
    pub fn call_message(&self, msg: &RuleMessage, start: u64) -> u64 {
        super::host_api::set_current_sender(Some(msg.sender.clone()));
        let mut err = FfiBuf::empty();
        // SAFETY: live instance (destroyed only after every caller is gone), calls serialized
        // unless the plugin is thread-safe, strings valid across the call.
        let status = unsafe {
            (self.f.on_message)(
                self.ptr,
                FfiStr::new(msg.rule_id()),
                FfiStr::new(&msg.sender.id),
                FfiStr::new(msg.content()),
                &mut err,
            )
        };
        super::host_api::set_current_sender(None);
        let end = self.shared.nanos();
        let elapsed = Duration::from_nanos(end.saturating_sub(start));
        self.finish(status, err, elapsed, Some(&msg.sender), "message");
        end
    }

    /// Answer a message queued before the panic breaker tripped without calling the plugin:
    /// the sender gets the `HANDLER_FAILED` that dispatch now gives everyone.
    fn refuse_disabled(&self, msg: &RuleMessage) {
        // Worded as dispatch words it for everyone else.
        let refusal = crate::router::DispatchError::Failed {
            rule: msg.rule_id().to_owned(),
            reason: disabled_reason(&self.cfg.name),
        };
        self.answer_failed(&msg.sender, refusal.to_string());
    }

    /// Tell a message's sender it was not handled (`HANDLER_FAILED`, `why`).
    fn answer_failed(&self, sender: &Sender, why: String) {
        let frame = reply::error(ErrorCode::HandlerFailed, why, self.ctx.clock.now(), None);
        // The sender may be gone; nothing else to do then.
        let _ = sender.peer.send(frame);
    }

    fn call_event(&self, ev: &FollowerEvent) {
        let Some(on_event) = self.f.on_event else {
            return;
        };
        let (kind, id, status) = match ev {
            FollowerEvent::Authenticated { identifier } => {
                (abi::EVENT_AUTHENTICATED, identifier, "")
            }
            FollowerEvent::Disconnected { identifier } => (abi::EVENT_DISCONNECTED, identifier, ""),
            FollowerEvent::LivenessChanged { identifier, status } => {
                (abi::EVENT_LIVENESS_CHANGED, identifier, status.as_str())
            }
        };
        let started = Instant::now();
        let mut err = FfiBuf::empty();
        // SAFETY: as for on_message.
        let st = unsafe {
            on_event(
                self.ptr,
                kind,
                FfiStr::new(id),
                FfiStr::new(status),
                &mut err,
            )
        };
        self.finish(st, err, started.elapsed(), None, "event");
    }

    fn finish(
        &self,
        status: u32,
        err: FfiBuf,
        elapsed: Duration,
        sender: Option<&Sender>,
        what: &str,
    ) {
        let (shared, cfg) = (&*self.shared, &self.cfg);
        shared.calls.fetch_add(1, Ordering::Relaxed);
        let message = take_err(self.f.free_buf, err);
        let overdue = elapsed > cfg.call_deadline;
        shared.metrics.call(
            match status {
                abi::STATUS_OK if overdue => "deadline",
                abi::STATUS_OK => "ok",
                abi::STATUS_PANIC => "panic",
                _ => "error",
            },
            elapsed,
        );
        if overdue {
            let n = shared.overdue.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(plugin = %cfg.name, ?elapsed, deadline = ?cfg.call_deadline, overdue_calls = n, "plugin {what} call exceeded its deadline");
        }
        let failure = match status {
            abi::STATUS_OK => return,
            abi::STATUS_PANIC => {
                let tripped = shared.record_panic(cfg.panic_limit, cfg.panic_window);
                tracing::error!(plugin = %cfg.name, panics = shared.panics.load(Ordering::Relaxed), "plugin panicked handling a {what}: {message}");
                if tripped {
                    tracing::error!(plugin = %cfg.name, limit = cfg.panic_limit, window = ?cfg.panic_window, "plugin disabled after repeated panics; its rules answer HANDLER_FAILED until it is reloaded");
                }
                format!("plugin '{}' failed (panic)", cfg.name)
            }
            other => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = %cfg.name, status = other, "plugin returned an error for a {what}: {message}");
                if message.is_empty() {
                    format!("plugin '{}' failed", cfg.name)
                } else {
                    format!("plugin '{}' failed: {message}", cfg.name)
                }
            }
        };
        if let Some(sender) = sender {
            self.answer_failed(sender, failure);
        }
    }
}

/// Serve one mailbox until it is closed and drained.
fn serve(instance: &Instance, mailbox: &Mailbox) {
    let shared = &instance.shared;
    while let Some(batch) = mailbox.take_all() {
        for job in batch {
            shared.stuck_reported.store(false, Ordering::Relaxed);
            let start = shared.nanos();
            mailbox.call_started.store(start, Ordering::Release);
            // Once the breaker has tripped, what is still queued is not handed to the plugin.
            let disabled = shared.disabled.load(Ordering::Acquire);
            match &job {
                Job::Message(m) if disabled => instance.refuse_disabled(m),
                Job::Message(m) => {
                    instance.call_message(m, start);
                }
                Job::Event(_) if disabled => {}
                Job::Event(ev) => instance.call_event(ev),
            }
            mailbox.call_started.store(0, Ordering::Release);
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            shared.publish_depth();
        }
    }
}

/// The mailbox of the worker that serves shard key `key` (see [`crate::router::shard_key`]):
/// always the same one for the same key and list.
pub(crate) fn shard(mailboxes: &[Arc<Mailbox>], key: u64) -> Option<&Arc<Mailbox>> {
    let n = mailboxes.len() as u64;
    if n == 0 {
        return None;
    }
    mailboxes.get((key % n) as usize)
}

/// Start a helper worker for each of `others` with `start(index, mailbox)` (index 1.. — the
/// first worker is 0). Returns the mailboxes of the workers that run — `first`, then each
/// helper that started — and the helpers' handles. A mailbox whose worker did not start is
/// closed and left out, so no follower is sharded to a queue nobody drains.
fn start_helpers<H>(
    name: &str,
    first: Arc<Mailbox>,
    others: Vec<Arc<Mailbox>>,
    mut start: impl FnMut(usize, Arc<Mailbox>) -> std::io::Result<H>,
) -> (Vec<Arc<Mailbox>>, Vec<H>) {
    let wanted = others.len() + 1;
    let mut live = vec![first];
    let mut helpers = Vec::new();
    for (i, mailbox) in others.into_iter().enumerate() {
        match start(i + 1, Arc::clone(&mailbox)) {
            Ok(h) => {
                helpers.push(h);
                live.push(mailbox);
            }
            Err(e) => {
                mailbox.close();
                tracing::error!(plugin = %name, error = %e, worker = i + 1, "cannot start a plugin worker thread; followers are sharded over the workers that started");
            }
        }
    }
    if live.len() < wanted {
        tracing::warn!(plugin = %name, started = live.len(), wanted, "plugin runs on fewer worker threads than wanted");
    }
    (live, helpers)
}

/// What [`spawn`] starts.
pub(crate) struct Workers {
    /// One per worker thread that started (at least the first).
    pub mailboxes: Vec<Arc<Mailbox>>,
    /// The instance itself, for non-blocking thread-safe plugins called inline.
    pub instance: Arc<Instance>,
}

/// Start the workers: the first calls `create` and reports the outcome; then every worker
/// waits for `gate` (a replacement instance starts only after its predecessor drained, keeping
/// each sender's order), serves jobs until its mailbox is closed and drained; the first then
/// waits for the others and calls `destroy`. Blocks until `create` returns (or times out).
pub(crate) fn spawn(
    cfg: WorkerConfig,
    f: Functions,
    ctx: Box<HostCtx>,
    shared: Arc<Shared>,
    create_timeout: Duration,
    gate: Arc<Latch>,
    workers: usize,
) -> Result<Workers, LoadErrorKind> {
    let mailboxes: Vec<Arc<Mailbox>> = (0..workers.max(1)).map(|_| Arc::default()).collect();
    type Started = (Arc<Instance>, Vec<Arc<Mailbox>>);
    let (init_tx, init_rx) = mpsc::channel::<Result<Started, LoadErrorKind>>();
    let first = Arc::clone(&mailboxes[0]);
    let others: Vec<Arc<Mailbox>> = mailboxes[1..].to_vec();
    let name = cfg.name.clone();
    std::thread::Builder::new()
        .name(format!("plugin-{name}"))
        .spawn(move || {
            // Valid forever; dropping `ctx` (after destroy) makes late calls return STATUS_GONE.
            let api = ctx.api();
            let mut ptr = std::ptr::null_mut();
            let mut err = FfiBuf::empty();
            // SAFETY: `api` is valid forever and `ctx` outlives the instance (dropped after
            // destroy); the config string lives across the call; out pointers are valid.
            let status =
                unsafe { (f.create)(api, FfiStr::new(&cfg.config_json), &mut ptr, &mut err) };
            let message = take_err(f.free_buf, err);
            let created = match status {
                abi::STATUS_OK if !ptr.is_null() => Ok(()),
                abi::STATUS_OK => Err(LoadErrorKind::Create("returned a null instance".into())),
                abi::STATUS_PANIC => Err(LoadErrorKind::CreatePanicked(message)),
                other => Err(LoadErrorKind::Create(if message.is_empty() {
                    format!("status {other}")
                } else {
                    message
                })),
            };
            if let Err(e) = created {
                // The receiver may have timed out and gone.
                let _ = init_tx.send(Err(e));
                drop(ctx);
                shared.finished.set();
                return;
            }
            let instance = Arc::new(Instance {
                f,
                ptr,
                cfg,
                shared: Arc::clone(&shared),
                ctx,
            });
            let (live, helpers) = start_helpers(&name, Arc::clone(&first), others, |i, mailbox| {
                let (instance, gate) = (Arc::clone(&instance), Arc::clone(&gate));
                std::thread::Builder::new()
                    .name(format!("plugin-{name}-{i}"))
                    .spawn(move || {
                        while !gate.wait(Duration::from_secs(3600)) {}
                        serve(&instance, &mailbox);
                    })
            });
            if init_tx.send(Ok((Arc::clone(&instance), live))).is_err() {
                // Nobody will send jobs: the creator timed out.
                first.close();
            }
            while !gate.wait(Duration::from_secs(3600)) {}
            serve(&instance, &first);
            for h in helpers {
                let _ = h.join();
            }
            // Wait for the last inline caller to let go of the instance.
            let mut instance = instance;
            loop {
                match Arc::try_unwrap(instance) {
                    Ok(owned) => {
                        // SAFETY: no call is running and none will follow.
                        unsafe { (owned.f.destroy)(owned.ptr) };
                        tracing::debug!(plugin = %name, "plugin instance destroyed");
                        drop(owned);
                        break;
                    }
                    Err(still_shared) => {
                        instance = still_shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            shared.finished.set();
        })
        .map_err(LoadErrorKind::Thread)?;
    match init_rx.recv_timeout(create_timeout) {
        Ok(Ok((instance, mailboxes))) => Ok(Workers {
            mailboxes,
            instance,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            for m in &mailboxes {
                m.close();
            }
            Err(LoadErrorKind::CreateTimedOut(create_timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Job {
        Job::Event(FollowerEvent::Disconnected {
            identifier: id.into(),
        })
    }

    #[test]
    fn followers_are_sharded_over_the_workers_that_started_only() {
        let all: Vec<Arc<Mailbox>> = (0..4).map(|_| Arc::default()).collect();
        let (live, helpers) = start_helpers(
            "t",
            Arc::clone(&all[0]),
            all[1..].to_vec(),
            |i, _mailbox| {
                if i == 2 {
                    Err(std::io::Error::other("no more threads"))
                } else {
                    Ok(i)
                }
            },
        );
        assert_eq!(helpers, vec![1, 3]);
        let kept: Vec<bool> = all
            .iter()
            .map(|m| live.iter().any(|l| Arc::ptr_eq(l, m)))
            .collect();
        assert_eq!(kept, vec![true, true, false, true]);
        // The worker that did not start takes nothing (its mailbox is closed)...
        assert!(matches!(
            all[2].push(event("x"), 1, 1),
            Err(Refused::Closed(_))
        ));
        // ...and no follower is sent to it: each lands on a running worker, always the same one.
        let mut used = [false; 3];
        for i in 0..64 {
            let key = crate::router::shard_key(&format!("follower-{i}"));
            let m = shard(&live, key).unwrap();
            assert!(!Arc::ptr_eq(m, &all[2]));
            assert!(Arc::ptr_eq(m, shard(&live, key).unwrap()));
            if let Some(at) = live.iter().position(|l| Arc::ptr_eq(l, m)) {
                used[at] = true;
            }
        }
        assert_eq!(
            used, [true; 3],
            "identifiers spread over every running worker"
        );
        assert!(shard(&[], 7).is_none());
    }

    #[test]
    fn when_no_helper_starts_the_first_worker_serves_everyone() {
        let all: Vec<Arc<Mailbox>> = (0..3).map(|_| Arc::default()).collect();
        let (live, helpers) = start_helpers("t", Arc::clone(&all[0]), all[1..].to_vec(), |_, _| {
            Err::<(), _>(std::io::Error::other("no more threads"))
        });
        assert!(helpers.is_empty());
        assert_eq!(live.len(), 1);
        assert!(Arc::ptr_eq(&live[0], &all[0]));
        for key in [0, 1, 2, u64::MAX] {
            assert!(Arc::ptr_eq(shard(&live, key).unwrap(), &all[0]));
        }
    }
}
