//! `/healthz` (the process answers), `/readyz` (its dependencies answer) and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiState;
use super::error::{Error, Result};

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Liveness: answers as long as the process serves HTTP.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 200 when the database answers; otherwise 503 naming what is down. The failure
/// itself is logged, not returned, so no connection detail reaches the client.
pub async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    match state.engine.ready().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(unready) => {
            tracing::warn!(component = unready.component, detail = %unready.detail, "not ready");
            let body = json!({ "status": "unavailable", "down": [unready.component] });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// The Prometheus text format of every `enrichflow_*` series.
pub async fn metrics(State(state): State<Arc<ApiState>>) -> Result<Response> {
    let handle = state
        .metrics
        .as_ref()
        .ok_or(Error::Unavailable("metrics are not enabled on this server"))?;
    state.engine.observe();
    let text = handle.render();
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response())
}
