//! The HTTP API (axum): webhook triggers, workflows, runs, leads, stats, health and metrics.
//! The only module that knows status codes; every error is
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! Code map: `webhooks` (`POST /hooks/{path}`), `workflows` (list, one, manual runs), `runs`
//! (list, one, cancel), `leads` (list, one with its score history), `stats` (the dashboard's
//! figures), `health` (`/healthz`, `/readyz`, `/metrics`), `body` (size limit and JSON rules),
//! `idempotency` (the `Idempotency-Key` header), `paging` (`limit`, `cursor` and `next_cursor`
//! of the list endpoints), `error` (the status codes).
mod body;
mod error;
mod health;
mod idempotency;
mod leads;
mod paging;
mod runs;
mod stats;
mod webhooks;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::http::header::InvalidHeaderValue;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;

use crate::engine::Engine;

pub use error::Error;

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Largest request body accepted, in bytes; larger bodies are answered 413.
    pub body_limit: usize,
    /// How long a `respond: on_complete` webhook waits for its run before answering 504.
    pub on_complete_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            on_complete_timeout: Duration::from_secs(30),
        }
    }
}

/// What every handler shares.
struct ApiState {
    engine: Engine,
    options: ApiOptions,
    metrics: Option<PrometheusHandle>,
}

/// The whole API. `metrics` renders `/metrics`; without it that route answers 503.
pub fn router(engine: Engine, options: ApiOptions, metrics: Option<PrometheusHandle>) -> Router {
    let body_limit = options.body_limit;
    let state = Arc::new(ApiState {
        engine,
        options,
        metrics,
    });
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
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
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
