//! Middleware that refuses work before it starts: a body announced larger than the limit (413 at
//! once, nothing read) and requests beyond the concurrency limit (503 with `Retry-After`, rather
//! than an unbounded queue of requests each holding its body in memory).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::Error;

/// Answers 413 to a request whose `Content-Length` is over `limit`, before its body is read, so a
/// client announcing a huge body and sending little cannot hold the connection.
pub async fn announced_length(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if announced.is_some_and(|length| length > limit_u64) {
        return Error::PayloadTooLarge(limit).into_response();
    }
    next.run(request).await
}

/// Serves the request while a permit is free; 503 otherwise.
pub async fn concurrency(
    State(permits): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        return Error::Overloaded.into_response();
    };
    next.run(request).await
}
