//! The one error type of the HTTP API: each variant picks a status code and a stable `code`, and
//! renders as `{"error": {"code": "...", "message": "..."}}`. Internal failures are logged here
//! and answered with a generic message, so no store or queue detail ever reaches a client.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::run_location;

/// Everything a handler can answer instead of success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such route, workflow, run or webhook path.
    #[error("{0}")]
    NotFound(String),
    /// A route exists, but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A malformed request: a bad query parameter, an unreadable body.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The body nests arrays and objects deeper than the limit.
    #[error("the body nests JSON arrays and objects deeper than the limit of {0} levels")]
    JsonTooDeep(usize),
    /// The body holds more JSON values than the limit.
    #[error("the body holds more than the limit of {0} JSON values")]
    JsonTooManyValues(usize),
    /// The body did not arrive in time.
    #[error("the body did not arrive within the limit of {}", humantime::format_duration(*.0))]
    BodyTimeout(Duration),
    /// As many requests as allowed are being served; the client should retry shortly.
    #[error("the server is busy; try again shortly")]
    Overloaded,
    /// The `Idempotency-Key` was used before with a different body.
    #[error("the Idempotency-Key was already used with a different body")]
    KeyReused,
    /// A signed webhook without a valid `X-Enrichflow-Signature`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The payload does not satisfy the workflow's `inputs` schema; one entry per violation.
    #[error("the input does not match the workflow's schema")]
    InvalidInput(Vec<String>),
    /// The request conflicts with the resource's state (cancelling a finished run).
    #[error("{0}")]
    Conflict(String),
    /// A webhook with `respond: on_complete` whose run failed.
    #[error("{message}")]
    RunFailed { run_id: String, message: String },
    /// A webhook with `respond: on_complete` whose run was cancelled.
    #[error("the run was cancelled")]
    RunCancelled { run_id: String },
    /// A webhook with `respond: on_complete` whose run is still going after the wait.
    #[error("the run did not finish within {}", humantime::format_duration(*waited))]
    Timeout { run_id: String, waited: Duration },
    /// A part of the server that is switched off (the metrics recorder).
    #[error("{0}")]
    Unavailable(&'static str),
    /// Anything the client cannot act on; already logged where it was converted.
    #[error("internal error; the server log has the details")]
    Internal,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Logs the failure with its details and answers a generic 500.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Error::Internal
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadRequest(_) | Error::InvalidJson(_) | Error::JsonTooDeep(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::PayloadTooLarge(_) | Error::JsonTooManyValues(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Error::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::InvalidInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict(_) | Error::RunCancelled { .. } => StatusCode::CONFLICT,
            Error::RunFailed { .. } | Error::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::BadRequest(_) => "bad_request",
            Error::InvalidJson(_) => "invalid_json",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::JsonTooDeep(_) => "json_too_deep",
            Error::JsonTooManyValues(_) => "json_too_large",
            Error::BodyTimeout(_) => "body_timeout",
            Error::Overloaded => "overloaded",
            Error::KeyReused => "idempotency_key_reused",
            Error::Unauthorized(_) => "unauthorized",
            Error::InvalidInput(_) => "invalid_input",
            Error::Conflict(_) => "conflict",
            Error::RunFailed { .. } => "run_failed",
            Error::RunCancelled { .. } => "run_cancelled",
            Error::Timeout { .. } => "timeout",
            Error::Unavailable(_) => "unavailable",
            Error::Internal => "internal",
        }
    }

    /// The run an on-complete webhook started, for the errors that have one.
    fn run_id(&self) -> Option<&str> {
        match self {
            Error::RunFailed { run_id, .. }
            | Error::RunCancelled { run_id }
            | Error::Timeout { run_id, .. } => Some(run_id),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let Error::InvalidInput(violations) = &self {
            error["details"] = json!(violations);
        }
        let mut body = json!({ "error": error });
        if let Some(run_id) = self.run_id() {
            body["run_id"] = Value::String(run_id.to_owned());
        }
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Some(location) = self.run_id().and_then(|id| run_location(id).ok()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        if let Error::Overloaded = self {
            // Requests finish in milliseconds to seconds: a second is a fair first wait.
            let retry_after = HeaderValue::from_static("1");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

impl From<crate::engine::Error> for Error {
    fn from(error: crate::engine::Error) -> Self {
        match error {
            crate::engine::Error::InvalidInput(crate::inputs::Error::Invalid(violations)) => {
                Error::InvalidInput(violations)
            }
            crate::engine::Error::KeyReused(_) => Error::KeyReused,
            crate::engine::Error::Store(error) => error.into(),
            other => Error::internal("engine error", &other),
        }
    }
}

impl From<crate::store::Error> for Error {
    fn from(error: crate::store::Error) -> Self {
        if let crate::store::Error::KeyContended(_) = &error {
            // Other requests kept taking and releasing the key: the client's retry will settle.
            return Error::Conflict(error.to_string());
        }
        if let crate::store::Error::TooDeep { .. } = &error {
            // Only a body nested deeper than the store keeps gets here: the client's to fix.
            return Error::BadRequest(error.to_string());
        }
        if error.is_unavailable() {
            // Nothing was recorded: the sender should retry, as it would on any 503.
            tracing::warn!(%error, "the database is unavailable");
            return Error::Unavailable("the database is unavailable; try again shortly");
        }
        Error::internal("store error", &error)
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Error::BadRequest(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Rolled back only because another write broke its batch: nothing was recorded, and the
    /// sender is told to try again, not that the server failed.
    #[test]
    fn a_write_rolled_back_with_its_batch_is_a_503() {
        let rolled_back = crate::store::Error::RolledBack(Arc::new(sqlx::Error::RowNotFound));
        assert!(rolled_back.is_retryable());
        let answer = Error::from(rolled_back);
        assert!(matches!(answer, Error::Unavailable(_)), "{answer:?}");
    }
}
