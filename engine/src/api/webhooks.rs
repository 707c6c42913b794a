//! `POST /hooks/{path}`: the webhook trigger. Checks run in this order, so a client learns the
//! first thing to fix: announced body too large (413, before anything is read), unknown path
//! (404), body too large or too slow (413, 408), signature (401), `Idempotency-Key` (400), JSON
//! (400; nesting deeper than the limit 400, more values than the limit 413), the workflow's
//! `inputs` schema (422). Then the run starts (or, for a known `Idempotency-Key`, the earlier run
//! is taken, with `Idempotent-Replayed: true` on the answer; 422 if that run came with another
//! body) and the answer depends on the trigger's `respond`:
//!
//! - `accepted`: 202 `{"run_id", "status"}` with `Location: /api/v1/runs/{id}`.
//! - `on_complete`: waits up to `ApiOptions::on_complete_timeout`; a succeeded run answers 200
//!   with its `output` as the body, a failed one 500 `run_failed`, a cancelled one 409
//!   `run_cancelled`, one still going 504 `timeout`. Those errors carry `run_id` and `Location`.
//!
//! The hook path is matched on the raw request path: percent-escapes are not decoded, so
//! `/hooks/a%2Fb` is not the hook `a/b` (hook paths never contain `%`).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::error::{Error, Result};
use super::{ApiState, body, idempotency, run_location};
use crate::engine::TriggerRequest;
use crate::store::{RunRecord, RunStatus, Trigger};
use crate::telemetry;
use crate::workflow::{Respond, WebhookTrigger, Workflow};

/// The header carrying `sha256=<hex of HMAC-SHA256(secret, raw body)>`.
pub const SIGNATURE_HEADER: &str = "x-enrichflow-signature";

/// The run a webhook started, on every success response.
const RUN_ID_HEADER: HeaderName = HeaderName::from_static("x-enrichflow-run-id");

/// Headers never copied into `trigger.headers`: credentials and the signature.
const HIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    SIGNATURE_HEADER,
];

/// Where hook paths start in the raw request path.
const HOOKS_PREFIX: &str = "/hooks/";

/// Label of `enrichflow_webhook_requests_total` for paths no workflow listens on, so that
/// scanners cannot create one series per guessed path.
const UNKNOWN_PATH: &str = "<unknown>";

pub async fn receive(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The raw path, never the decoded one: `%2F` must not become a `/` that reaches another hook.
    let path = uri.path().strip_prefix(HOOKS_PREFIX).unwrap_or_default();
    // Cloned out, so a reload during a long on-complete wait does not pin the old catalog.
    let hook = state
        .engine
        .catalog()
        .webhook(path)
        .map(|(workflow, trigger)| (workflow, trigger.clone()));
    let label = match &hook {
        Some((_, trigger)) => trigger.path.clone(),
        None => UNKNOWN_PATH.to_owned(),
    };
    let response = match hook {
        Some((workflow, trigger)) => {
            let request = Incoming {
                uri: &uri,
                headers: &headers,
                body,
            };
            handle(&state, workflow, &trigger, request)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        None => Error::NotFound(format!("no webhook at /hooks/{path}")).into_response(),
    };
    telemetry::webhook_request(&label, response.status().as_u16());
    response
}

/// The parts of the request a webhook reads.
struct Incoming<'a> {
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: Body,
}

async fn handle(
    state: &ApiState,
    workflow: Arc<Workflow>,
    trigger: &WebhookTrigger,
    request: Incoming<'_>,
) -> Result<Response> {
    let raw = body::read(request.body, state.options.reading()).await?;
    if let Some(template) = &trigger.secret {
        let secret = render_secret(state, template)?;
        verify_signature(
            secret.as_bytes(),
            &raw,
            request.headers.get(SIGNATURE_HEADER),
        )?;
    }
    let idempotency_key = idempotency::key(request.headers)?;
    let body = body::json_text(&raw, state.options.json)?;
    let idempotency_body_hash = idempotency::body_hash(idempotency_key.as_ref(), body);
    let headers = visible_headers(request.headers).to_string();
    let query = query(request.uri)?.to_string();
    let stored = Trigger::from_parts(
        "webhook",
        &[("body", body), ("headers", &headers), ("query", &query)],
    );
    let triggered = state
        .engine
        .trigger(TriggerRequest {
            workflow,
            trigger: stored,
            idempotency_key,
            idempotency_body_hash,
        })
        .await?;
    // A replay answers like the first request, failures of an on-complete run included.
    let mut response = match trigger.respond {
        Respond::Accepted => accepted(&triggered.run),
        Respond::OnComplete => completed(state, triggered.run).await,
    }
    .unwrap_or_else(IntoResponse::into_response);
    idempotency::mark(&mut response, triggered.replayed);
    Ok(response)
}

/// The secret of a signed webhook. A template that does not render (an undefined secret) or
/// renders empty is a server misconfiguration: 500, never an unsigned pass.
fn render_secret(state: &ApiState, template: &str) -> Result<String> {
    let scope = crate::scope::secrets_only(state.engine.secrets());
    let rendered = state
        .engine
        .templates()
        .render_value(&Value::String(template.to_owned()), &scope)
        .map_err(|error| Error::internal("the webhook secret does not render", &error))?;
    let secret = match rendered {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if secret.is_empty() {
        tracing::error!("the webhook secret renders empty; refusing the request");
        return Err(Error::Internal);
    }
    Ok(secret)
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of the raw body, in constant time.
fn verify_signature(secret: &[u8], body: &[u8], header: Option<&HeaderValue>) -> Result<()> {
    let header = header.ok_or(Error::Unauthorized("missing X-Enrichflow-Signature header"))?;
    let signature = header
        .to_str()
        .ok()
        .and_then(|text| text.trim().strip_prefix("sha256="))
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .ok_or(Error::Unauthorized(
            "X-Enrichflow-Signature must be `sha256=<hex>`",
        ))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|error| Error::internal("HMAC key", &error))?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| Error::Unauthorized("the signature does not match the body"))
}

/// Every header but the hidden ones, by lowercase name; repeated headers are joined with `, `.
fn visible_headers(headers: &HeaderMap) -> Value {
    let mut visible = Map::new();
    for name in headers.keys() {
        if HIDDEN_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        visible.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    Value::Object(visible)
}

/// The query string as an object; the last of repeated keys wins.
fn query(uri: &Uri) -> Result<Value> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)?;
    let map: Map<String, Value> = pairs
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    Ok(Value::Object(map))
}

fn accepted(run: &RunRecord) -> Result<Response> {
    let body = json!({ "run_id": run.id, "status": run.status.as_str() });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    add_run_headers(&mut response, &run.id);
    Ok(response)
}

async fn completed(state: &ApiState, run: RunRecord) -> Result<Response> {
    let waited = state.options.on_complete_timeout;
    let Some(run) = state.engine.wait(&run.id, waited).await? else {
        return Err(Error::Timeout {
            run_id: run.id,
            waited,
        });
    };
    match run.status {
        RunStatus::Succeeded => {
            let output = run.output.clone().unwrap_or(Value::Null);
            let mut response = (StatusCode::OK, Json(output)).into_response();
            add_run_headers(&mut response, &run.id);
            Ok(response)
        }
        RunStatus::Cancelled => Err(Error::RunCancelled { run_id: run.id }),
        // `wait` only returns finished runs; anything else is a failure to report.
        RunStatus::Failed | RunStatus::Queued | RunStatus::Running => {
            let message = run
                .error
                .map(|error| error.message)
                .unwrap_or_else(|| "the run failed".to_owned());
            Err(Error::RunFailed {
                run_id: run.id,
                message,
            })
        }
    }
}

fn add_run_headers(response: &mut Response, run_id: &str) {
    let headers = response.headers_mut();
    if let Ok(location) = run_location(run_id) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(value) = HeaderValue::from_str(run_id) {
        headers.insert(RUN_ID_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> HeaderValue {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        let hex_text = hex::encode(mac.finalize().into_bytes());
        HeaderValue::from_str(&format!("sha256={hex_text}")).expect("ascii")
    }

    #[test]
    fn a_correct_signature_passes() {
        let header = sign(b"key", b"{}");
        assert!(verify_signature(b"key", b"{}", Some(&header)).is_ok());
    }

    #[test]
    fn missing_malformed_and_wrong_signatures_are_unauthorized() {
        let wrong_key = sign(b"other", b"{}");
        let wrong_body = sign(b"key", b"{ }");
        let malformed = HeaderValue::from_static("sha256=zz");
        let no_prefix = HeaderValue::from_static("abcd");
        for header in [
            None,
            Some(&wrong_key),
            Some(&wrong_body),
            Some(&malformed),
            Some(&no_prefix),
        ] {
            let result = verify_signature(b"key", b"{}", header);
            assert!(matches!(result, Err(Error::Unauthorized(_))), "{header:?}");
        }
    }

    #[test]
    fn credentials_and_the_signature_are_not_copied() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        headers.insert("cookie", HeaderValue::from_static("a=b"));
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_static("sha256=00"));
        headers.insert("x-source", HeaderValue::from_static("crm"));
        headers.append("x-tag", HeaderValue::from_static("a"));
        headers.append("x-tag", HeaderValue::from_static("b"));
        assert_eq!(
            visible_headers(&headers),
            json!({ "x-source": "crm", "x-tag": "a, b" })
        );
    }

    #[test]
    fn the_last_repeated_query_key_wins() {
        let uri: Uri = "/hooks/x?a=1&b=two&a=3".parse().expect("uri");
        assert_eq!(query(&uri).ok(), Some(json!({ "a": "3", "b": "two" })));
    }
}
