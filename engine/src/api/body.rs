//! Reading request bodies: the size limit, the read timeout and the JSON rules shared by webhooks
//! and manual runs.
//!
//! Any JSON value is accepted, not only objects. An empty (or all-whitespace) body counts as `{}`,
//! because many webhook senders post nothing for a ping; a workflow that needs fields still
//! refuses it through its `inputs` schema. The `Content-Type` header is not checked, since
//! senders label JSON inconsistently.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use futures::StreamExt;

use super::error::{Error, Result};
use super::json_limits::{self, Exceeded, JsonLimits};

/// How a body is read.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// Largest body, in bytes.
    pub limit: usize,
    /// Time for the whole body to arrive.
    pub timeout: Duration,
}

/// The whole body: 413 when it announces or sends more than `limit` bytes (an announced length
/// is refused before anything is read), 408 when it has not arrived within `timeout`.
pub async fn read(body: Body, reading: Reading) -> Result<Bytes> {
    let limit = reading.limit;
    if body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(Error::PayloadTooLarge(limit));
    }
    let collect = async {
        let mut stream = body.into_data_stream();
        let mut collected: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|error| Error::BadRequest(format!("cannot read the body: {error}")))?;
            if chunk.len() > limit.saturating_sub(collected.len()) {
                return Err(Error::PayloadTooLarge(limit));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(collected))
    };
    tokio::time::timeout(reading.timeout, collect)
        .await
        .map_err(|_| Error::BodyTimeout(reading.timeout))?
}

/// Checks a body's limits and that it is JSON, without building a tree of it, and returns its
/// text (`{}` when it is empty): what a trigger stores as sent.
pub fn json_text(body: &[u8], limits: JsonLimits) -> Result<&str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("{}");
    }
    within_limits(body, limits)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|error| Error::InvalidJson(error.to_string()))?;
    std::str::from_utf8(body).map_err(|error| Error::InvalidJson(error.to_string()))
}

fn within_limits(body: &[u8], limits: JsonLimits) -> Result<()> {
    json_limits::check(body, limits).map_err(|exceeded| match exceeded {
        Exceeded::Depth(limit) => Error::JsonTooDeep(limit),
        Exceeded::Values(limit) => Error::JsonTooManyValues(limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_default(body: &[u8]) -> Result<&str> {
        json_text(body, JsonLimits::default())
    }

    #[test]
    fn empty_and_blank_bodies_are_empty_objects() {
        assert_eq!(json_default(b"").ok(), Some("{}"));
        assert_eq!(json_default(b" \n").ok(), Some("{}"));
    }

    #[test]
    fn any_json_value_is_accepted_as_sent() {
        assert_eq!(json_default(b"[1, 2]").ok(), Some("[1, 2]"));
        assert_eq!(json_default(b" \"text\" ").ok(), Some(" \"text\" "));
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        for malformed in [&b"{\"a\":"[..], b"[1] [2]", b"\"\xff\""] {
            assert!(matches!(
                json_default(malformed),
                Err(Error::InvalidJson(_))
            ));
        }
    }

    #[test]
    fn bodies_beyond_the_json_limits_are_refused_before_parsing() {
        let limits = JsonLimits {
            max_depth: 2,
            max_values: 4,
        };
        assert!(matches!(
            json_text(b"[[[]]]", limits),
            Err(Error::JsonTooDeep(2))
        ));
        assert!(matches!(
            json_text(b"[1,2,3,4]", limits),
            Err(Error::JsonTooManyValues(4))
        ));
        assert_eq!(json_text(b"[[1]]", limits).ok(), Some("[[1]]"));
    }

    fn reading(limit: usize) -> Reading {
        Reading {
            limit,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let bytes = read(Body::from("{\"a\":1}"), reading(7)).await;
        assert_eq!(bytes.ok().as_deref(), Some(&b"{\"a\":1}"[..]));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_payload_too_large() {
        let result = read(Body::from("12345678"), reading(7)).await;
        assert!(
            matches!(result, Err(Error::PayloadTooLarge(7))),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_times_out() {
        let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let result = read(Body::from_stream(never), reading(7)).await;
        assert!(matches!(result, Err(Error::BodyTimeout(_))), "{result:?}");
    }
}
