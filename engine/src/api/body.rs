//! Reading request bodies: the size limit and the JSON rules shared by webhooks and manual runs.
//!
//! Any JSON value is accepted, not only objects. An empty (or all-whitespace) body counts as `{}`,
//! because many webhook senders post nothing for a ping; a workflow that needs fields still
//! refuses it through its `inputs` schema. The `Content-Type` header is not checked, since
//! senders label JSON inconsistently.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;

use super::error::{Error, Result};

/// The raw body, or 413 when it is over `limit` bytes.
pub fn raw(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge(limit)
        } else {
            Error::BadRequest(format!("cannot read the body: {}", rejection.body_text()))
        }
    })
}

/// Parses a body as JSON; empty means `{}`.
pub fn json(body: &[u8]) -> Result<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice(body).map_err(|error| Error::InvalidJson(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_blank_bodies_are_empty_objects() {
        assert_eq!(json(b"").ok(), Some(serde_json::json!({})));
        assert_eq!(json(b" \n").ok(), Some(serde_json::json!({})));
    }

    #[test]
    fn any_json_value_is_accepted() {
        assert_eq!(json(b"[1, 2]").ok(), Some(serde_json::json!([1, 2])));
        assert_eq!(json(b"\"text\"").ok(), Some(serde_json::json!("text")));
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        assert!(matches!(json(b"{\"a\":"), Err(Error::InvalidJson(_))));
    }
}
