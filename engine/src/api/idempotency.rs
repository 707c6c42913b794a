//! `Idempotency-Key` on webhooks and manual runs: requests to one workflow with the same key
//! within the engine's window get one run, and a response about an earlier run says so with
//! `Idempotent-Replayed: true`. The same key with a different body is refused with 422: a
//! client reusing a key by mistake learns of it instead of silently getting someone else's run.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{Error, Result};

/// The request header naming the key.
pub const KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header set on a replay.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key accepted: enough for a UUID or a composite id, short enough to index.
const MAX_KEY_LEN: usize = 255;

/// Put before a client's key in the store, so that no client key can equal the key of a cron
/// tick (`cron@…`) and suppress that tick.
const STORED_PREFIX: &str = "api:";

/// The request's key as the engine stores it; `None` without the header. A key must be 1–255
/// visible ASCII characters (no spaces or control characters), and there must be at most one:
/// anything else is 400 rather than a run the client did not mean to deduplicate.
pub fn key(headers: &HeaderMap) -> Result<Option<String>> {
    let mut values = headers.get_all(KEY_HEADER).into_iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::BadRequest(
            "send at most one Idempotency-Key header".into(),
        ));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(Error::BadRequest(format!(
            "the Idempotency-Key header must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    // Visible ASCII is valid UTF-8.
    let key = String::from_utf8_lossy(bytes);
    Ok(Some(format!("{STORED_PREFIX}{key}")))
}

/// The hash stored with a key: SHA-256 (hex) of the parsed body written out again, so that
/// whitespace and the order of object members do not make the same body look different.
pub fn body_hash(key: Option<&String>, body: &str) -> Option<String> {
    key?;
    // Parsed only here, when a key asks for it. serde_json's maps are sorted (no
    // `preserve_order`), so the text it writes back is canonical.
    let canonical = serde_json::from_str::<Value>(body).ok()?.to_string();
    Some(hex::encode(Sha256::digest(canonical.as_bytes())))
}

/// Adds `Idempotent-Replayed: true` when the response is about an earlier run.
pub fn mark(response: &mut Response, replayed: bool) {
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_keys(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = HeaderValue::from_bytes(value).expect("a header value");
            headers.append(KEY_HEADER, value);
        }
        headers
    }

    #[test]
    fn visible_ascii_keys_of_up_to_255_characters_are_accepted() {
        assert_eq!(key(&HeaderMap::new()).ok(), Some(None));
        let longest = "k".repeat(MAX_KEY_LEN);
        for accepted in [
            "a",
            "order-42:retry/1",
            "~!@#$%^&*()_+{}|",
            longest.as_str(),
        ] {
            let headers = with_keys(&[accepted.as_bytes()]);
            assert_eq!(key(&headers).ok(), Some(Some(format!("api:{accepted}"))));
        }
    }

    #[test]
    fn the_body_hash_ignores_layout_and_member_order_but_not_content() {
        let key = "api:k".to_owned();
        let hash = |text: &str| body_hash(Some(&key), text);
        assert_eq!(hash(r#"{"a":1,"b":[2]}"#), hash(r#"{ "b": [2], "a": 1 }"#));
        assert_ne!(hash(r#"{"a":1}"#), hash(r#"{"a":2}"#));
        assert_eq!(body_hash(None, "{}"), None);
    }

    #[test]
    fn empty_long_spaced_non_ascii_and_repeated_keys_are_refused() {
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        let refused: [&[&[u8]]; 6] = [
            &[b""],
            &[too_long.as_bytes()],
            &[b"two words"],
            &[b"tab\there"],
            &["clé".as_bytes()],
            &[b"a", b"b"],
        ];
        for values in refused {
            let result = key(&with_keys(values));
            assert!(matches!(result, Err(Error::BadRequest(_))), "{values:?}");
        }
    }
}
