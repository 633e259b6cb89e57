//! [`spawn`] and the connection task: connect (failing over between the configured URLs),
//! run one connection (`session.rs`) to its end, wait a backoff delay, and again — until
//! shutdown, until a connection ends with reconnection off, or until every host refused the
//! identifier.
//!
//! Between rounds of connection attempts the task waits an exponential, jittered backoff (reset
//! after each successful authentication); see `failover.rs` for the order of the URLs.

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::FollowerError;
use crate::event::{CodeProvider, Event, StopReason};
use crate::failover::Endpoints;
use crate::handle::{Control, FollowerHandle, Shared};
use crate::session::{self, shutdown_signal, Ctx, End, Ws};
use crate::spool::{self, Spool, SpoolSender};
use crate::state::State;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Capacity of the event channel returned by [`spawn`] (the backlog behind it is
/// [`Config::event_backlog`]).
pub const EVENT_CHANNEL: usize = 256;
/// How long a connection attempt (TCP + WebSocket handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Load (or create) the follower's state, then start the connection task on the current tokio
/// runtime. Events arrive on the returned receiver. The task never waits for the application:
/// events not read yet are held in a bounded backlog ([`Config::event_backlog`]; when it is
/// full the oldest rule messages are dropped and reported as [`Event::Dropped`]), so keep
/// reading. The channel closes once the task has ended and its last events were delivered
/// ([`FollowerHandle::stop_reason`] says why it ended).
pub fn spawn(
    config: Config,
    codes: CodeProvider,
) -> Result<(FollowerHandle, mpsc::Receiver<Event>), FollowerError> {
    config.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        FollowerError::InvalidConfig("spawn must be called inside a tokio runtime".into())
    })?;
    let state = State::load_or_create(&config.state_dir, &config.identifier)?;
    let tls = if config.urls.iter().any(|u| u.starts_with("wss://")) {
        Some(crate::tls::client_config(config.ca_file.as_deref())?)
    } else {
        None
    };
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let spool = Spool::new(config.event_backlog, config.event_backlog_bytes);
    runtime.spawn(spool::forward(
        spool.clone(),
        events_tx,
        shutdown_rx.clone(),
    ));
    let shared = Arc::new(Shared::new());
    let runner = Runner {
        backoff: Backoff::new(config.backoff_initial, config.backoff_max),
        endpoints: Endpoints::new(config.urls.clone()),
        tls,
        ctx: Ctx {
            config,
            codes,
            state,
            events: SpoolSender(spool),
            shutdown: shutdown_rx,
            shared: shared.clone(),
            pairing_expiry: None,
        },
    };
    let task = runtime.spawn(runner.run());
    let handle = FollowerHandle {
        shared,
        control: Arc::new(Control {
            shutdown: shutdown_tx,
            task: Mutex::new(Some(task)),
        }),
    };
    Ok((handle, events_rx))
}

struct Runner {
    ctx: Ctx,
    /// Client TLS configuration for `wss://` URLs.
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    endpoints: Endpoints,
    backoff: Backoff,
}

/// The result of one connection attempt.
enum Connect {
    Open(Box<Ws>),
    Failed(String),
    Shutdown,
}

impl Runner {
    async fn run(mut self) {
        let reason = self.run_until_stopped().await;
        self.ctx.shared.set_authenticated(false);
        self.ctx.shared.stop(reason);
        tracing::debug!(?reason, "follower task ended");
    }

    async fn run_until_stopped(&mut self) -> StopReason {
        // Hosts that refused the identifier since the last successful authentication.
        let mut refused: HashSet<usize> = HashSet::new();
        loop {
            if *self.ctx.shutdown.borrow() || self.ctx.shutdown.has_changed().is_err() {
                return StopReason::Shutdown;
            }
            // One round: each URL at most once, until one accepts the connection.
            let mut connected = None;
            while let Some(index) = self.endpoints.next_in_round() {
                let url = self.endpoints.url(index).to_string();
                match self.connect(&url).await {
                    Connect::Shutdown => return StopReason::Shutdown,
                    Connect::Failed(reason) => {
                        tracing::debug!(url = %url, reason = %reason, "connection attempt failed");
                        self.ctx.emit(Event::Disconnected { reason });
                    }
                    Connect::Open(ws) => {
                        tracing::debug!(url = %url, "connected");
                        self.ctx.emit(Event::Connected { url: url.clone() });
                        let outcome = session::run(&mut self.ctx, *ws, &url).await;
                        connected = Some((index, outcome));
                        break;
                    }
                }
            }
            match connected {
                None => self.endpoints.round_failed(),
                Some((index, outcome)) => {
                    if outcome.authenticated {
                        self.backoff.reset();
                        refused.clear();
                    }
                    self.endpoints
                        .connection_ended(index, outcome.authenticated);
                    match outcome.end {
                        End::Shutdown => return StopReason::Shutdown,
                        End::Lost(reason) => {
                            tracing::debug!(reason = %reason, "disconnected");
                            self.ctx.emit(Event::Disconnected { reason });
                        }
                        End::NotAllowed(reason) => {
                            tracing::debug!(reason = %reason, "identifier refused by host");
                            self.ctx.emit(Event::Disconnected { reason });
                            refused.insert(index);
                            if refused.len() >= self.endpoints.len() {
                                return StopReason::IdentifierNotAllowed;
                            }
                        }
                    }
                }
            }
            if !self.ctx.config.reconnect {
                return StopReason::ReconnectDisabled;
            }
            let delay = self.backoff.next_delay();
            let url = self.endpoints.upcoming().to_string();
            tracing::debug!(
                url = %url,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "reconnecting after backoff"
            );
            self.ctx.emit(Event::Reconnecting { url, delay });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown_signal(&mut self.ctx.shutdown) => return StopReason::Shutdown,
            }
        }
    }

    /// TCP + TLS (for `wss://`) + WebSocket handshake, within [`CONNECT_TIMEOUT`].
    async fn connect(&mut self, url: &str) -> Connect {
        let connector = if url.starts_with("wss://") {
            self.tls.clone().map(tokio_tungstenite::Connector::Rustls)
        } else {
            None
        };
        let connect = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector),
        );
        tokio::select! {
            _ = shutdown_signal(&mut self.ctx.shutdown) => Connect::Shutdown,
            r = connect => match r {
                Err(_) => Connect::Failed(format!("connect to {url} timed out")),
                Ok(Err(e)) => {
                    let e = e.to_string();
                    Connect::Failed(format!("connect to {url} failed: {e}{}", connect_hint(url, &e)))
                }
                Ok(Ok((ws, _response))) => Connect::Open(Box::new(ws)),
            },
        }
    }
}

/// What a connect error usually means, for the mistakes the bare error does not explain: a
/// host certificate nothing here vouches for, and a `ws://`/`wss://` mix-up.
fn connect_hint(url: &str, error: &str) -> &'static str {
    if error.contains("UnknownIssuer") || error.contains("invalid peer certificate") {
        " (the host's certificate is not signed by a CA this follower trusts: pass the CA's \
         certificate with --ca-file, or fix the host's chain)"
    } else if url.starts_with("ws://") && error.contains("invalid HTTP version") {
        " (the host answered with something other than HTTP: does it serve TLS? then use wss://)"
    } else if url.starts_with("wss://")
        && (error.contains("tls handshake eof")
            || error.contains("InvalidContentType")
            || error.contains("corrupt message"))
    {
        " (no TLS at the other end: does the host serve plain ws://?)"
    } else {
        ""
    }
}
