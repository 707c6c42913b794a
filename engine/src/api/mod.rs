//! The HTTP API (axum): webhook triggers, workflows, runs, leads, stats, health and metrics.
//! The only module that knows status codes; every error is
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! Code map: `webhooks` (`POST /hooks/{path}`), `workflows` (list, one, manual runs), `runs`
//! (list, one, cancel), `leads` (list, one with its score history), `stats` (the dashboard's
//! figures), `health` (`/healthz`, `/readyz`, `/metrics`), `body` (size limit, read timeout and
//! JSON rules), `json_limits` (depth and value count of JSON bodies), `limits` (announced body
//! length, request concurrency), `server` (the accept loop: connection cap, header timeout),
//! `idempotency` (the `Idempotency-Key` header), `paging` (`limit`, `cursor` and `next_cursor`
//! of the list endpoints), `error` (the status codes).
mod body;
mod error;
mod health;
mod idempotency;
mod json_limits;
mod leads;
mod limits;
mod paging;
mod runs;
mod server;
mod stats;
mod webhooks;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::http::header::InvalidHeaderValue;
use axum::middleware;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

use crate::engine::Engine;

pub use error::Error;
pub use json_limits::JsonLimits;
pub use server::{ServerOptions, serve};

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Largest request body accepted, in bytes; larger bodies are answered 413.
    pub body_limit: usize,
    /// How long a `respond: on_complete` webhook waits for its run before answering 504.
    pub on_complete_timeout: Duration,
    /// Time for a whole request body to arrive; slower bodies are answered 408.
    pub body_read_timeout: Duration,
    /// Nesting depth and value count of JSON bodies.
    pub json: JsonLimits,
    /// Requests served at once, health and metrics aside; more are answered 503.
    pub max_concurrent_requests: usize,
    /// Limits of the connections (used by [`serve`]).
    pub server: ServerOptions,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            on_complete_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            json: JsonLimits::default(),
            max_concurrent_requests: 256,
            server: ServerOptions::default(),
        }
    }
}

impl ApiOptions {
    /// How handlers read bodies.
    fn reading(&self) -> body::Reading {
        body::Reading {
            limit: self.body_limit,
            timeout: self.body_read_timeout,
        }
    }
}

/// What every handler shares.
struct ApiState {
    engine: Engine,
    options: ApiOptions,
    metrics: Option<PrometheusHandle>,
}

/// The whole API. `metrics` renders `/metrics`; without it that route answers 503. Health and
/// metrics are outside the concurrency limit, so probes still answer while the API is busy.
pub fn router(engine: Engine, options: ApiOptions, metrics: Option<PrometheusHandle>) -> Router {
    let body_limit = options.body_limit;
    let permits = Arc::new(Semaphore::new(options.max_concurrent_requests));
    let state = Arc::new(ApiState {
        engine,
        options,
        metrics,
    });
    let health = Router::new()
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics));
    Router::new()
        .route("/hooks/{*path}", post(webhooks::receive))
        .route("/api/v1/workflows", get(workflows::list))
        .route("/api/v1/workflows/{id}", get(workflows::show))
        .route("/api/v1/workflows/{id}/runs", post(workflows::start_run))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{id}", get(runs::show))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{id}/retry", post(runs::retry))
        .route("/api/v1/leads", get(leads::list))
        .route("/api/v1/leads/{id}", get(leads::show))
        .route("/api/v1/stats", get(stats::show))
        .route_layer(middleware::from_fn_with_state(permits, limits::concurrency))
        .merge(health)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            body_limit,
            limits::announced_length,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound("no such route".into())
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// `Location` of a run: `/api/v1/runs/{id}`.
fn run_location(run_id: &str) -> Result<HeaderValue, InvalidHeaderValue> {
    HeaderValue::from_str(&format!("/api/v1/runs/{run_id}"))
}
