//! The admin HTTP port: `/metrics`, `/healthz`, `/readyz`, the operator dashboard at `/`, and
//! the JSON API under `/api/…` the dashboard is built on (documented in `docs/api.md`).
//!
//! Layout:
//! - [`view`]: [`AdminView`], everything the dashboard reads from and asks of the host, and
//!   the row types (which are also the API's JSON);
//! - [`host_view`]: [`HostView`], `AdminView` for the running host (hub, reloader, metrics);
//! - [`event_log`]: recent lifecycle events and their broadcast, for an `AdminView`;
//! - [`routes`]: the axum router: static assets, probes, API, actions;
//! - [`auth`]: the admin token, the cross-site checks actions pass, and the `Host` check of a
//!   loopback port (DNS rebinding);
//! - [`sampler`]: once a second, rates (messages/s, plugin calls/s) and a snapshot for
//!   [`stream`], the server-sent events that keep a page current;
//! - [`listener`]: the hyper connection loop with the hostile-input bounds;
//! - `assets/`: the page (HTML, CSS, plain JS), compiled into the binary.

pub mod auth;
pub mod event_log;
pub mod host_view;
pub mod listener;
pub mod routes;
pub mod sampler;
pub mod stream;
pub mod view;

pub use auth::{AdminToken, TokenError};
pub use host_view::HostView;
pub use view::AdminView;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the admin HTTP port could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot listen on {addr} ([admin] listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Shared by every request.
pub struct Dashboard {
    pub view: Arc<dyn AdminView>,
    /// `None`: read-only.
    pub token: Option<AdminToken>,
    /// The environment variable the token is read from (named in messages, never its value).
    pub token_env: String,
    pub sampler: Arc<sampler::Sampler>,
    pub shutdown: CancellationToken,
    /// The port listens on a loopback address: the page and the API answer only requests
    /// addressed to a loopback name (see [`auth::check_loopback_host`]).
    pub loopback_only: bool,
    /// Event streams open now, at most [`stream::MAX_STREAMS`]: a stream holds its connection
    /// for as long as its client likes, and the port's connections are capped, so without a
    /// cap of their own, streams (never read, say) could take every slot from `/healthz`.
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// The admin port, bound and with its token read, not serving yet (the host binds its ports
/// before loading plugins, and serves once everything is up).
pub struct Bound {
    listener: TcpListener,
    token: Option<AdminToken>,
    token_env: String,
    /// The bound address.
    pub addr: SocketAddr,
}

/// Read the admin token from the environment variable `token_env` (refusing a non-loopback
/// `listen` without one) and bind `listen`.
pub async fn bind(listen: SocketAddr, token_env: &str) -> Result<Bound, Error> {
    let token = AdminToken::from_env(token_env, listen)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    Ok(Bound {
        listener,
        token,
        token_env: token_env.to_owned(),
        addr,
    })
}

impl Bound {
    /// Serve `view` in the background until `shutdown`. Returns the bound address.
    pub fn serve(self, view: Arc<dyn AdminView>, shutdown: CancellationToken) -> SocketAddr {
        tracing::info!(
            address = %self.addr,
            actions = if self.token.is_some() { "enabled" } else { "off (read-only)" },
            token_env = %self.token_env,
            "admin HTTP listening (dashboard /, API /api, /metrics, /healthz, /readyz)"
        );
        spawn(
            self.listener,
            self.token,
            &self.token_env,
            view,
            shutdown,
            listener::LIMITS,
        );
        self.addr
    }
}

/// [`bind`], then [`Bound::serve`].
pub async fn serve(
    listen: SocketAddr,
    token_env: &str,
    view: Arc<dyn AdminView>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    Ok(bind(listen, token_env).await?.serve(view, shutdown))
}

/// Serve on an already-bound `listener` (for tests with their own limits).
pub fn spawn(
    listener: TcpListener,
    token: Option<AdminToken>,
    token_env: &str,
    view: Arc<dyn AdminView>,
    shutdown: CancellationToken,
    limits: listener::Limits,
) -> tokio::task::JoinHandle<()> {
    // Unknown address (cannot happen for a bound socket): check, the safe side.
    let loopback_only = listener.local_addr().map_or(true, |a| a.ip().is_loopback());
    let sampler = Arc::new(sampler::Sampler::new());
    tokio::spawn(Arc::clone(&sampler).run(Arc::clone(&view), shutdown.clone()));
    let dash = Arc::new(Dashboard {
        view,
        token,
        token_env: token_env.to_owned(),
        sampler,
        shutdown: shutdown.clone(),
        loopback_only,
        streams: Arc::new(tokio::sync::Semaphore::new(stream::MAX_STREAMS)),
    });
    tokio::spawn(listener::run(
        listener,
        routes::router(dash),
        shutdown,
        limits,
    ))
}

#[cfg(test)]
mod tests;
