//! What `notify.slack` and `notify.webhook` share: reading their common keys, and one JSON POST
//! whose failures are classified like `http.request`'s (5xx, 429 and network errors may pass on
//! another attempt, `Retry-After` is honoured, other statuses are final).

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::config::{Phase, Read, text};
use super::http_request::{
    body_json, parse_header_value, parse_timeout, parse_url, read_body, retry_after_header,
    send_error, status_error, too_large, transport_error,
};
use crate::{ConfigError, ErrorKind, NodeContext, NodeError};

/// How long a POST may take when `timeout` is absent: a notification is small, and a receiver
/// slower than this is better retried than waited for.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// An absolute `http` or `https` URL, or a pending template.
pub(super) fn read_url(phase: Phase, value: &Value, path: &str) -> Read<Url> {
    let Some(url) = text(phase, value, path)? else {
        return Ok(None);
    };
    parse_url(url)
        .map(Some)
        .map_err(|message| ConfigError::new(path, message))
}

/// A URL that is a secret (a Slack webhook URL is its own credential): errors say that it is
/// invalid, never what it is.
pub(super) fn read_secret_url(phase: Phase, value: &Value, path: &str) -> Read<Url> {
    let Some(url) = text(phase, value, path)? else {
        return Ok(None);
    };
    match parse_url(url) {
        Ok(url) => Ok(Some(url)),
        Err(_) => Err(ConfigError::new(
            path,
            "expected an absolute http or https URL (the value is not shown: it is a secret)",
        )),
    }
}

/// A duration such as `10s`, or a pending template.
pub(super) fn read_timeout(phase: Phase, value: Option<&Value>, path: &str) -> Read<Duration> {
    let Some(value) = value else {
        return Ok(Some(DEFAULT_TIMEOUT));
    };
    let Some(timeout) = text(phase, value, path)? else {
        return Ok(None);
    };
    parse_timeout(timeout)
        .map(Some)
        .map_err(|message| ConfigError::new(path, message))
}

/// The attempt's idempotency key as a header value.
pub(super) fn idempotency_header(ctx: &NodeContext) -> Result<HeaderValue, NodeError> {
    parse_header_value(&ctx.idempotency_key).map_err(|message| {
        NodeError::permanent(ErrorKind::Node, format!("the idempotency key is {message}"))
    })
}

/// One JSON POST, ready to send.
#[derive(Debug)]
pub(super) struct Post {
    /// How the receiver is named in messages; never a secret.
    pub(super) target: String,
    pub(super) url: Url,
    pub(super) headers: HeaderMap,
    /// The serialised JSON, sent byte for byte (a signature covers exactly these bytes).
    pub(super) body: Vec<u8>,
    pub(super) timeout: Duration,
    /// The statuses that count as delivered; any 2xx when `None`.
    pub(super) expect_status: Option<Vec<StatusCode>>,
}

/// A response with an accepted status.
#[derive(Debug)]
pub(super) struct Delivered {
    pub(super) status: StatusCode,
    /// JSON when the body parses as JSON, else text.
    pub(super) body: Value,
}

impl Post {
    /// Sends the request unless the run is cancelled first, and classifies the outcome.
    pub(super) async fn send(self, ctx: &NodeContext) -> Result<Delivered, NodeError> {
        let target = self.target.clone();
        tokio::select! {
            // Biased, so that an already cancelled run sends nothing.
            biased;
            () = ctx.cancellation.cancelled() => Err(NodeError::permanent(
                ErrorKind::Cancelled,
                format!("{target} was cancelled"),
            )),
            result = self.exchange(ctx) => result,
        }
    }

    async fn exchange(self, ctx: &NodeContext) -> Result<Delivered, NodeError> {
        let mut headers = self.headers;
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = ctx
            .http
            .post(self.url)
            .headers(headers)
            .body(self.body)
            .timeout(self.timeout)
            .build()
            .map_err(|error| transport_error(&self.target, error))?;
        let mut response = ctx
            .egress
            .send(&ctx.http, request)
            .await
            .map_err(|error| send_error(&self.target, error))?;
        let max = ctx.egress.max_response_bytes;
        let status = response.status();
        let accepted = match &self.expect_status {
            Some(expected) => expected.contains(&status),
            None => status.is_success(),
        };
        if !accepted {
            let retry_after = retry_after_header(response.headers());
            // The status decides the error; a body that cannot be read only shortens the message.
            let body = read_body(&mut response, max).await.map(|body| body.bytes);
            return Err(status_error(
                &self.target,
                status,
                &body.unwrap_or_default(),
                retry_after,
            ));
        }
        let body = read_body(&mut response, max)
            .await
            .map_err(|error| transport_error(&self.target, error))?;
        if body.truncated {
            return Err(too_large(&self.target, max));
        }
        Ok(Delivered {
            status,
            body: body_json(&body.bytes),
        })
    }
}
