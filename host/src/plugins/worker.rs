//! One plugin instance on its own thread: a bounded job queue, the `create` handshake, every
//! call timed against the deadline, failures answered with `error HANDLER_FAILED`, and the panic
//! circuit breaker. Plugin code never runs on the async reactor.

use super::abi::Functions;
use super::error::LoadErrorKind;
use super::host_api::HostCtx;
use crate::registry::FollowerEvent;
use crate::reply;
use crate::router::RuleMessage;
use core::ffi::c_void;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use yonexus_plugin_api::abi::{self, FfiBuf, FfiStr, FreeBufFn};
use yonexus_protocol::envelope::ErrorCode;

/// A one-way flag threads can wait on: set once, then every wait returns at once.
#[derive(Debug, Default)]
pub struct Latch {
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
        self.cv.notify_all();
    }

    pub fn is_set(&self) -> bool {
        *self.set.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until set or `timeout` passes; true when set.
    pub fn wait(&self, timeout: Duration) -> bool {
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

/// Counters and health, shared between the handler and its worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub calls: AtomicU64,
    pub panics: AtomicU64,
    pub errors: AtomicU64,
    pub overdue: AtomicU64,
    pub busy_rejections: AtomicU64,
    pub events_dropped: AtomicU64,
    pub disabled: AtomicBool,
    /// When the call in progress started (nanos since `epoch`), 0 when idle.
    pub call_started: AtomicU64,
    pub stuck_reported: AtomicBool,
    /// Jobs queued and not yet taken by the worker.
    pub queued: AtomicUsize,
    pub epoch: Instant,
    panic_times: Mutex<VecDeque<Instant>>,
    /// Set once the worker has served its last job and destroyed the instance.
    pub finished: Arc<Latch>,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            calls: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            overdue: AtomicU64::new(0),
            busy_rejections: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            disabled: AtomicBool::new(false),
            call_started: AtomicU64::new(0),
            stuck_reported: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            epoch: Instant::now(),
            panic_times: Mutex::new(VecDeque::new()),
            finished: Latch::new(),
        }
    }

    /// How long the call in progress has been running, if any.
    pub fn current_call_age(&self) -> Option<Duration> {
        match self.call_started.load(Ordering::Acquire) {
            0 => None,
            started => {
                let now = self.epoch.elapsed().as_nanos() as u64;
                Some(Duration::from_nanos(now.saturating_sub(started)))
            }
        }
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

/// Settings the worker needs.
pub(crate) struct WorkerConfig {
    pub name: String,
    pub config_json: String,
    pub queue_capacity: usize,
    pub call_deadline: Duration,
    pub panic_limit: u32,
    pub panic_window: Duration,
}

/// Copy a plugin-owned error buffer out and give it back to the plugin's `free_buf`.
fn take_err(free: FreeBufFn, buf: FfiBuf) -> String {
    if buf.ptr.is_null() {
        return String::new();
    }
    // SAFETY: the plugin wrote a buffer of `len` readable bytes into our slot.
    let bytes = unsafe { buf.to_vec() };
    // SAFETY: the buffer was allocated by the plugin; the plugin frees it (once).
    unsafe { free(buf) };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Start the worker: it calls `create`, reports the outcome, waits for `gate` (so a replacement
/// instance starts only after its predecessor drained, keeping each sender's order), then serves
/// jobs until every sender is dropped, and finally calls `destroy`. Blocks until `create`
/// returns (or times out).
pub(crate) fn spawn(
    cfg: WorkerConfig,
    f: Functions,
    ctx: Box<HostCtx>,
    shared: Arc<Shared>,
    create_timeout: Duration,
    gate: Arc<Latch>,
) -> Result<SyncSender<Job>, LoadErrorKind> {
    let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue_capacity.max(1));
    let (init_tx, init_rx) = mpsc::channel::<Result<(), LoadErrorKind>>();
    std::thread::Builder::new()
        .name(format!("plugin-{}", cfg.name))
        .spawn(move || {
            // Never freed; dropping `ctx` (after destroy) makes late calls return STATUS_GONE.
            let api = ctx.api();
            let mut instance = std::ptr::null_mut();
            let mut err = FfiBuf::empty();
            // SAFETY: `api` is valid forever and `ctx` outlives the instance (dropped at the end
            // of this thread, after destroy); the config string lives across the call; out
            // pointers are valid.
            let status =
                unsafe { (f.create)(api, FfiStr::new(&cfg.config_json), &mut instance, &mut err) };
            let message = take_err(f.free_buf, err);
            let outcome = match status {
                abi::STATUS_OK if !instance.is_null() => Ok(()),
                abi::STATUS_OK => Err(LoadErrorKind::Create("returned a null instance".into())),
                abi::STATUS_PANIC => Err(LoadErrorKind::CreatePanicked(message)),
                other => Err(LoadErrorKind::Create(if message.is_empty() {
                    format!("status {other}")
                } else {
                    message
                })),
            };
            let ok = outcome.is_ok();
            // The receiver may have timed out and gone; then nobody will send jobs either.
            let _ = init_tx.send(outcome);
            if ok {
                while !gate.wait(Duration::from_secs(3600)) {}
                // The instance never leaves this thread.
                serve(&cfg, &f, &ctx, &shared, instance, rx);
                // SAFETY: no call is running and none will follow (all senders are gone).
                unsafe { (f.destroy)(instance) };
                tracing::info!(plugin = %cfg.name, "plugin instance destroyed");
            }
            drop(ctx);
            shared.finished.set();
        })
        .map_err(LoadErrorKind::Thread)?;
    match init_rx.recv_timeout(create_timeout) {
        Ok(Ok(())) => Ok(tx),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LoadErrorKind::CreateTimedOut(create_timeout)),
    }
}

fn serve(
    cfg: &WorkerConfig,
    f: &Functions,
    ctx: &HostCtx,
    shared: &Shared,
    instance: *mut c_void,
    rx: Receiver<Job>,
) {
    while let Ok(job) = rx.recv() {
        let depth = shared
            .queued
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        crate::metrics::set_plugin_queue_depth(&cfg.name, depth);
        shared.stuck_reported.store(false, Ordering::Relaxed);
        let started = Instant::now();
        shared.call_started.store(
            (shared.epoch.elapsed().as_nanos() as u64).max(1),
            Ordering::Release,
        );
        let mut err = FfiBuf::empty();
        let (status, sender, what) = match &job {
            Job::Message(m) => {
                // SAFETY: live instance, serialized calls, strings valid across the call.
                let status = unsafe {
                    (f.on_message)(
                        instance,
                        FfiStr::new(&m.rule_id),
                        FfiStr::new(&m.sender),
                        FfiStr::new(&m.content),
                        &mut err,
                    )
                };
                (status, Some(m.sender.as_str()), "message")
            }
            Job::Event(ev) => match f.on_event {
                Some(on_event) => {
                    let (kind, id, status) = match ev {
                        FollowerEvent::Authenticated { identifier } => {
                            (abi::EVENT_AUTHENTICATED, identifier, "")
                        }
                        FollowerEvent::Disconnected { identifier } => {
                            (abi::EVENT_DISCONNECTED, identifier, "")
                        }
                        FollowerEvent::LivenessChanged { identifier, status } => {
                            (abi::EVENT_LIVENESS_CHANGED, identifier, status.as_str())
                        }
                    };
                    // SAFETY: as for on_message.
                    let st = unsafe {
                        on_event(
                            instance,
                            kind,
                            FfiStr::new(id),
                            FfiStr::new(status),
                            &mut err,
                        )
                    };
                    (st, None, "event")
                }
                None => continue,
            },
        };
        shared.call_started.store(0, Ordering::Release);
        shared.calls.fetch_add(1, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let message = take_err(f.free_buf, err);
        let outcome = match status {
            abi::STATUS_OK if elapsed > cfg.call_deadline => "deadline",
            abi::STATUS_OK => "ok",
            abi::STATUS_PANIC => "panic",
            _ => "error",
        };
        crate::metrics::plugin_call(&cfg.name, outcome, elapsed.as_secs_f64());
        if elapsed > cfg.call_deadline {
            let n = shared.overdue.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(plugin = %cfg.name, ?elapsed, deadline = ?cfg.call_deadline, overdue_calls = n, "plugin {what} call exceeded its deadline");
        }
        let failure = match status {
            abi::STATUS_OK => continue,
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
            let frame = reply::error(ErrorCode::HandlerFailed, failure, ctx.clock.now(), None);
            // The sender may be gone; nothing else to do then.
            let _ = ctx.registry.send_to(sender, frame);
        }
    }
}
