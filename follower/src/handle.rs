//! [`FollowerHandle`]: how the application talks to the connection task (queue rule messages,
//! ask whether it is authenticated, shut it down), and the state the two share.

use crate::error::FollowerError;
use crate::event::StopReason;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use yonexus_protocol::{frame, validate};

/// Most rule messages held while not authenticated (or not yet written to the socket).
pub const OUTBOUND_BUFFER: usize = 1024;

/// State shared between the handle(s) and the connection task.
pub(crate) struct Shared {
    /// Encoded rule frames not yet written, oldest first.
    pub(crate) queue: Mutex<VecDeque<String>>,
    /// Signalled when a frame is queued.
    pub(crate) queued: Notify,
    pub(crate) authenticated: AtomicBool,
    pub(crate) stopped: AtomicBool,
    pub(crate) stop_reason: Mutex<Option<StopReason>>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            authenticated: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stop_reason: Mutex::new(None),
        }
    }

    pub(crate) fn set_authenticated(&self, yes: bool) {
        self.authenticated.store(yes, Ordering::SeqCst);
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::SeqCst)
    }

    /// Record why the task ends, then mark it stopped.
    pub(crate) fn stop(&self, reason: StopReason) {
        *lock(&self.stop_reason) = Some(reason);
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// The oldest queued frame, left in the queue (it leaves only once written).
    pub(crate) fn front(&self) -> Option<String> {
        lock(&self.queue).front().cloned()
    }

    pub(crate) fn pop_front(&self) {
        lock(&self.queue).pop_front();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Control {
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) task: Mutex<Option<JoinHandle<()>>>,
}

/// Talks to the connection task. Cheap to clone; dropping every clone stops the task.
#[derive(Clone)]
pub struct FollowerHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: Arc<Control>,
}

impl fmt::Debug for FollowerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowerHandle")
            .field("authenticated", &self.is_authenticated())
            .field("queued", &self.queued())
            .finish()
    }
}

impl FollowerHandle {
    /// Queue a rule message `<rule_id>::<content>`. It is written once the session is
    /// authenticated, in order; while not authenticated up to [`OUTBOUND_BUFFER`] messages wait.
    /// The rule id must pass [`validate::rule_id`].
    pub fn send(&self, rule_id: &str, content: &str) -> Result<(), FollowerError> {
        validate::rule_id(rule_id)
            .map_err(|why| FollowerError::InvalidRuleId(rule_id.to_string(), why))?;
        if self.is_stopped() {
            return Err(FollowerError::Stopped);
        }
        let mut q = lock(&self.shared.queue);
        if q.len() >= OUTBOUND_BUFFER {
            return Err(FollowerError::QueueFull(q.len()));
        }
        q.push_back(frame::encode_rule(rule_id, content));
        drop(q);
        self.shared.queued.notify_one();
        Ok(())
    }

    /// Whether the current session is authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.shared.is_authenticated()
    }

    /// Whether the connection task has ended.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Why the connection task ended; `None` while it runs.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *lock(&self.shared.stop_reason)
    }

    /// Messages queued and not yet written to the socket.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Wait until every queued message has been written (true) or `timeout` passed (false).
    pub async fn wait_flushed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.queued() == 0 {
                return true;
            }
            if Instant::now() >= deadline || self.is_stopped() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Close the socket (close code 1000) and end the connection task.
    pub async fn shutdown(self) {
        self.control.shutdown.send_replace(true);
        let task = lock(&self.control.task).take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!("follower task ended abnormally: {e}");
            }
        }
    }
}
