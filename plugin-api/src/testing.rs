//! A real [`HostApi`] backed by an in-memory recorder, so plugin authors can unit-test their
//! logic without a hub: create a [`TestHost`], mark some followers connected, call your
//! plugin's `create` / `on_message` / `on_event` with [`TestHost::host`], then inspect
//! [`TestHost::take_sent`] and [`TestHost::logs`]. Calls go through the same `extern "C"`
//! callbacks a real host provides. [`TestHost::retire`] makes every callback answer as a real
//! host does after the instance was destroyed ([`abi::STATUS_GONE`]), to test that a thread your
//! plugin keeps notices and stops.

use crate::abi::{self, FfiBuf, FfiStr, HostApi, Status};
use crate::sdk::Host;
use core::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

/// Something the plugin asked the host to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// `<rule>::<content>` to `target`.
    Message {
        target: String,
        rule: String,
        content: String,
    },
    /// `error{code, message}` to `target` (`code` is an `abi::ERR_*` value).
    Error {
        target: String,
        code: u32,
        message: String,
    },
}

impl Sent {
    pub fn message(target: &str, rule: &str, content: &str) -> Sent {
        Sent::Message {
            target: target.into(),
            rule: rule.into(),
            content: content.into(),
        }
    }
    pub fn error(target: &str, code: crate::ErrorCode, message: &str) -> Sent {
        Sent::Error {
            target: target.into(),
            code: code.to_abi(),
            message: message.into(),
        }
    }
}

#[derive(Default)]
struct State {
    sent: Mutex<Vec<Sent>>,
    connected: Mutex<Vec<String>>,
    logs: Mutex<Vec<(u32, String)>>,
    now: AtomicI64,
    gone: AtomicBool,
}

impl State {
    fn gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

/// An in-memory host. Keep it alive while the plugin instance uses its [`Host`].
pub struct TestHost {
    state: Box<State>,
    api: Box<HostApi>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn state<'a>(ctx: *const c_void) -> &'a State {
    // SAFETY: ctx is the address of the boxed State owned by the TestHost, which outlives calls.
    unsafe { &*ctx.cast::<State>() }
}

fn s(v: FfiStr) -> Option<String> {
    // SAFETY: the plugin passes strings valid for the call.
    unsafe { v.as_str() }.map(str::to_owned)
}

unsafe extern "C" fn send_to(ctx: *const c_void, t: FfiStr, r: FfiStr, c: FfiStr) -> Status {
    let st = state(ctx);
    if st.gone() {
        return abi::STATUS_GONE;
    }
    let (Some(target), Some(rule), Some(content)) = (s(t), s(r), s(c)) else {
        return abi::STATUS_INVALID;
    };
    if rule.is_empty() || rule == "builtin" {
        return abi::STATUS_INVALID;
    }
    if !lock(&st.connected).contains(&target) {
        return abi::STATUS_OFFLINE;
    }
    lock(&st.sent).push(Sent::Message {
        target,
        rule,
        content,
    });
    abi::STATUS_OK
}

unsafe extern "C" fn send_error(ctx: *const c_void, t: FfiStr, code: u32, m: FfiStr) -> Status {
    let st = state(ctx);
    if st.gone() {
        return abi::STATUS_GONE;
    }
    let (Some(target), Some(message)) = (s(t), s(m)) else {
        return abi::STATUS_INVALID;
    };
    if !lock(&st.connected).contains(&target) {
        return abi::STATUS_OFFLINE;
    }
    lock(&st.sent).push(Sent::Error {
        target,
        code,
        message,
    });
    abi::STATUS_OK
}

unsafe extern "C" fn broadcast(ctx: *const c_void, r: FfiStr, c: FfiStr, e: FfiStr) -> u64 {
    let st = state(ctx);
    if st.gone() {
        return 0;
    }
    let (Some(rule), Some(content), Some(except)) = (s(r), s(c), s(e)) else {
        return 0;
    };
    let targets: Vec<String> = lock(&st.connected)
        .iter()
        .filter(|id| **id != except)
        .cloned()
        .collect();
    let mut sent = lock(&st.sent);
    for target in &targets {
        sent.push(Sent::message(target, &rule, &content));
    }
    targets.len() as u64
}

unsafe extern "C" fn log(ctx: *const c_void, level: u32, m: FfiStr) {
    let st = state(ctx);
    if !st.gone() {
        lock(&st.logs).push((level, s(m).unwrap_or_default()));
    }
}

unsafe extern "C" fn log_enabled(ctx: *const c_void, _level: u32) -> u32 {
    u32::from(!state(ctx).gone())
}

unsafe extern "C" fn now(ctx: *const c_void) -> i64 {
    let st = state(ctx);
    if st.gone() {
        return 0;
    }
    st.now.load(Ordering::SeqCst)
}

unsafe extern "C" fn connected_followers(ctx: *const c_void, out: *mut FfiBuf) -> Status {
    let st = state(ctx);
    if st.gone() {
        if !out.is_null() {
            // SAFETY: the plugin passes a writable slot.
            unsafe { out.write(FfiBuf::empty()) };
        }
        return abi::STATUS_GONE;
    }
    let text = lock(&st.connected).join("\n");
    if !out.is_null() {
        // SAFETY: the plugin passes a writable slot.
        unsafe { out.write(FfiBuf::from_vec(text.into_bytes())) };
    }
    abi::STATUS_OK
}

unsafe extern "C" fn free_buf(buf: FfiBuf) {
    // SAFETY: only buffers made by `connected_followers` above come back here.
    unsafe { buf.free() }
}

impl TestHost {
    pub fn new() -> TestHost {
        let state = Box::new(State::default());
        let api = Box::new(HostApi {
            struct_size: core::mem::size_of::<HostApi>() as u32,
            abi_minor: abi::ABI_MINOR,
            _reserved: 0,
            ctx: (&*state as *const State).cast(),
            send_to,
            send_error,
            broadcast,
            log,
            log_enabled,
            now,
            connected_followers,
            free_buf,
        });
        TestHost { state, api }
    }

    /// The raw API pointer (valid while `self` lives).
    pub fn api(&self) -> *const HostApi {
        &*self.api
    }

    /// A [`Host`] handle for the plugin under test (valid while `self` lives).
    pub fn host(&self) -> Host {
        // SAFETY: the boxed HostApi is complete and lives as long as self.
        unsafe { Host::from_raw(self.api()) }
    }

    /// Mark a follower connected.
    pub fn connect(&self, identifier: &str) {
        let mut c = lock(&self.state.connected);
        if !c.iter().any(|x| x == identifier) {
            c.push(identifier.into());
            c.sort();
        }
    }

    /// Mark a follower disconnected.
    pub fn disconnect(&self, identifier: &str) {
        lock(&self.state.connected).retain(|x| x != identifier);
    }

    /// Act as a real host does once the plugin instance was destroyed or replaced: from now on
    /// every callback does nothing and reports it ([`abi::STATUS_GONE`], `broadcast` 0, `now` 0,
    /// logging disabled).
    pub fn retire(&self) {
        self.state.gone.store(true, Ordering::SeqCst);
    }

    pub fn set_now(&self, unix_secs: i64) {
        self.state.now.store(unix_secs, Ordering::SeqCst);
    }

    /// Everything delivered since the last call.
    pub fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut *lock(&self.state.sent))
    }

    /// Every log record so far: (`abi::LOG_*` level, message).
    pub fn logs(&self) -> Vec<(u32, String)> {
        lock(&self.state.logs).clone()
    }
}
