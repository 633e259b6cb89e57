//! The admin HTTP port: `/metrics`, `/healthz`, `/readyz`, the operator dashboard at `/`, and
//! the JSON API under `/api/…` the dashboard is built on (documented in `docs/api.md`).
//!
//! Layout:
//! - [`view`]: [`AdminView`], everything the dashboard reads from and asks of the host, and
//!   the row types (which are also the API's JSON);
//! - [`host_view`]: [`HostView`], `AdminView` for the running host (hub, reloader, metrics);
//! - [`event_log`]: recent lifecycle events and their broadcast, for an `AdminView`;
//! - [`routes`]: the axum router: static assets, probes, API, actions;
//! - [`auth`]: the admin token and the cross-site checks actions pass;
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
}

/// Start the admin HTTP port on `listen`: read the admin token from the environment variable
/// `token_env` (refusing a non-loopback `listen` without one), bind, and serve `view` in the
/// background until `shutdown`. Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    token_env: &str,
    view: Arc<dyn AdminView>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    let token = AdminToken::from_env(token_env, listen)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    tracing::info!(
        address = %bound,
        actions = if token.is_some() { "enabled" } else { "off (read-only)" },
        token_env,
        "admin HTTP listening (dashboard /, API /api, /metrics, /healthz, /readyz)"
    );
    spawn(listener, token, token_env, view, shutdown, listener::LIMITS);
    Ok(bound)
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
    let sampler = Arc::new(sampler::Sampler::new());
    tokio::spawn(Arc::clone(&sampler).run(Arc::clone(&view), shutdown.clone()));
    let dash = Arc::new(Dashboard {
        view,
        token,
        token_env: token_env.to_owned(),
        sampler,
        shutdown: shutdown.clone(),
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
