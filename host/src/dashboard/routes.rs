//! The router: every path the admin port answers. See `docs/api.md` for the API.
//!
//! - `GET /`, `/app.js`, `/style.css`: the dashboard (compiled in);
//! - `GET /metrics` (Prometheus text), `/healthz`, `/readyz` (503 while not ready);
//! - `GET /api/status`, `/api/followers`, `/api/pairings`, `/api/plugins`, `/api/events`,
//!   `/api/rates`, `/api/stream` (server-sent events);
//! - actions (see [`super::auth`]): `POST /api/followers/{identifier}/revoke`,
//!   `POST /api/pairings/{identifier}/reveal`, `POST /api/reload`.
//!
//! Every answer carries `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`, a strict
//! `Content-Security-Policy` (own scripts and styles only, no framing) and no referrer. On a
//! loopback port the page and the API (not the probes, which carry no follower data and are
//! scraped under whatever name) answer 421 to a request whose `Host` is not a loopback name
//! ([`auth::check_loopback_host`]).

use super::auth;
use super::view::{ActionError, StoreUnavailable, TrustLists};
use super::Dashboard;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// The Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Request bodies are never needed beyond a small JSON object.
const MAX_BODY_BYTES: usize = 4 * 1024;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

type Dash = State<Arc<Dashboard>>;

/// The admin port's routes over `dash`.
pub fn router(dash: Arc<Dashboard>) -> Router {
    let mut page_and_api = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/status", get(status))
        .route("/api/followers", get(followers))
        .route("/api/pairings", get(pairings))
        .route("/api/plugins", get(plugins))
        .route("/api/events", get(events))
        .route("/api/rates", get(rates))
        .route("/api/stream", get(stream))
        .route("/api/followers/{identifier}/revoke", post(revoke))
        .route("/api/pairings/{identifier}/reveal", post(reveal))
        .route("/api/reload", post(reload));
    if dash.loopback_only {
        page_and_api = page_and_api.route_layer(middleware::from_fn(loopback_host));
    }
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .merge(page_and_api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(security_headers))
        .with_state(dash)
}

/// Refuse a request not addressed to a loopback name (see [`auth::check_loopback_host`]).
async fn loopback_host(request: Request, next: Next) -> Response {
    match auth::check_loopback_host(request.headers(), request.uri()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(
                path = %request.uri().path(),
                "admin HTTP: request for another host name refused (DNS rebinding guard)"
            );
            error(refusal.status, refusal.message)
        }
    }
}

/// A path nothing serves: JSON under `/api/`, like every other API answer; text elsewhere.
async fn not_found(uri: axum::http::Uri) -> Response {
    refuse_path(
        &uri,
        StatusCode::NOT_FOUND,
        "no such API endpoint (see docs/api.md)",
        "not found\n",
    )
}

/// A served path asked with a method it does not take.
async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    refuse_path(
        &uri,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed for this endpoint (see docs/api.md)",
        "method not allowed\n",
    )
}

/// `status` as a JSON error under `/api/` (`api`), as plain text elsewhere (`plain`).
fn refuse_path(
    uri: &axum::http::Uri,
    status: StatusCode,
    api: &str,
    plain: &'static str,
) -> Response {
    if uri.path().starts_with("/api/") {
        error(status, api)
    } else {
        text(status, plain)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    response
}

async fn metrics(State(dash): Dash) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        dash.view.metrics_text(),
    )
        .into_response()
}

async fn readyz(State(dash): Dash) -> Response {
    if dash.view.ready() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn status(State(dash): Dash) -> Response {
    Json(json!({
        "now": dash.view.now(),
        "ready": dash.view.ready(),
        "version": env!("CARGO_PKG_VERSION"),
        "actions": dash.token.is_some(),
        "tokenEnv": dash.token_env,
        "sampleEverySecs": super::sampler::SAMPLE_EVERY.as_secs(),
    }))
    .into_response()
}

async fn followers(State(dash): Dash) -> Result<Response, ApiError> {
    let TrustLists { followers, .. } = dash.view.trust().await.map_err(unavailable)?;
    Ok(Json(followers).into_response())
}

async fn pairings(State(dash): Dash) -> Result<Response, ApiError> {
    let TrustLists { pairings, .. } = dash.view.trust().await.map_err(unavailable)?;
    Ok(Json(pairings).into_response())
}

/// 503 for a list that cannot be read (never an empty list that looks like "nobody").
fn unavailable(e: StoreUnavailable) -> ApiError {
    tracing::debug!(error = %e, "admin HTTP: trust store unavailable");
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("trust store unavailable: {e}; try again when it answers"),
    }
}

async fn plugins(State(dash): Dash) -> Response {
    let sampled = dash.sampler.plugins();
    if sampled.is_empty() {
        // Before the first sample (rates unknown yet).
        return Json(dash.view.plugins()).into_response();
    }
    Json(sampled).into_response()
}

async fn events(State(dash): Dash) -> Response {
    Json(dash.view.recent_events()).into_response()
}

async fn rates(State(dash): Dash) -> Response {
    Json(dash.sampler.history()).into_response()
}

async fn stream(State(dash): Dash) -> Response {
    let Some(events) = super::stream::open(&dash) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} event streams are open already; try again later",
                super::stream::MAX_STREAMS
            ),
        );
    };
    let mut response = events.into_response();
    // Reverse proxies must pass events on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// An API error: its status and a message safe to show, answered as `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let status = match e {
            ActionError::NotFound(_) => StatusCode::NOT_FOUND,
            ActionError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ActionError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ActionError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

/// Check an action request (see [`auth::authorize`]); refusals are logged, never the token.
fn authorize(dash: &Dashboard, headers: &HeaderMap, action: &'static str) -> Result<(), ApiError> {
    auth::authorize(headers, dash.token.as_ref(), &dash.token_env).map_err(|refusal| {
        tracing::warn!(
            action,
            status = refusal.status.as_u16(),
            reason = %refusal.message,
            "admin HTTP: action refused"
        );
        ApiError {
            status: refusal.status,
            message: refusal.message,
        }
    })
}

/// A follower identifier from the path, checked by the protocol's rules.
fn identifier(raw: &str) -> Result<&str, ApiError> {
    yonexus_protocol::validate::identifier(raw)
        .map(|()| raw)
        .map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("bad identifier: {e}"),
        })
}

async fn revoke(
    State(dash): Dash,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&dash, &headers, "revoke")?;
    let id = identifier(&raw)?.to_owned();
    let revoked = dash.view.revoke(id.clone()).await?;
    tracing::info!(identifier = %id, existed = revoked, "revoked from the dashboard");
    Ok(Json(json!({ "identifier": id, "revoked": revoked })).into_response())
}

async fn reveal(
    State(dash): Dash,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&dash, &headers, "reveal")?;
    let id = identifier(&raw)?;
    let code = dash
        .view
        .reveal_code(id.to_owned())
        .await?
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "no pending pairing for '{id}' (it completed, expired or was cancelled)"
            ),
        })?;
    tracing::info!(identifier = %id, "pairing code revealed on the dashboard");
    Ok(Json(code).into_response())
}

async fn reload(State(dash): Dash, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&dash, &headers, "reload")?;
    let report = dash.view.reload().await?;
    Ok(Json(report).into_response())
}
