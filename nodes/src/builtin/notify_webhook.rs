//! `notify.webhook`: POSTs a JSON body to a URL, optionally signed with HMAC-SHA256 in the same
//! `X-Enrichflow-Signature: sha256=<hex>` scheme the engine's own webhook triggers verify, so one
//! enrichflow can call another.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::{Fields, Phase, Read, at_index, describe, rendered, text};
use super::http_request::{
    parse_header_name, parse_header_value, parse_status, scalar_text, url_for_messages,
};
use super::notify_http::{Post, idempotency_header, read_timeout, read_url};
use crate::{ConfigError, ErrorKind, Node, NodeContext, NodeError};

/// POSTs JSON to a URL; its `with` block is described in `docs/nodes.md`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifyWebhook;

const KEYS: [&str; 6] = [
    "url",
    "body",
    "headers",
    "secret",
    "timeout",
    "expect_status",
];

/// `sha256=<hex of HMAC-SHA256(secret, raw body)>`.
const SIGNATURE_HEADER: &str = "x-enrichflow-signature";

/// Sent unless `headers` sets it; the name most APIs read for de-duplication.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A rendered, checked `with` block.
struct Config {
    url: Url,
    body: Value,
    headers: HeaderMap,
    secret: Option<String>,
    timeout: Duration,
    expect_status: Option<Vec<StatusCode>>,
}

#[async_trait]
impl Node for NotifyWebhook {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let config = rendered(read(Phase::Run, &with))?;
        let body = serde_json::to_vec(&config.body).map_err(|error| {
            NodeError::permanent(ErrorKind::Config, format!("`with.body`: {error}"))
        })?;
        let mut headers = config.headers;
        let idempotency = HeaderName::from_static(IDEMPOTENCY_HEADER);
        if !headers.contains_key(&idempotency) {
            headers.insert(idempotency, idempotency_header(ctx)?);
        }
        if let Some(secret) = &config.secret {
            let signature = parse_header_value(&signature(secret, &body)?)
                .map_err(|message| NodeError::permanent(ErrorKind::Node, message))?;
            headers.insert(HeaderName::from_static(SIGNATURE_HEADER), signature);
        }
        let post = Post {
            target: format!("POST {}", url_for_messages(&config.url)),
            url: config.url,
            headers,
            body,
            timeout: config.timeout,
            expect_status: config.expect_status,
        };
        let delivered = post.send(ctx).await?;
        Ok(json!({"status": delivered.status.as_u16(), "body": delivered.body}))
    }
}

/// The signature header's value for `body`.
fn signature(secret: &str, body: &[u8]) -> Result<String, NodeError> {
    // HMAC takes keys of any length, so this error is not expected; it is reported, not panicked.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .map_err(|error| NodeError::permanent(ErrorKind::Node, format!("signing: {error}")))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

fn read(phase: Phase, with: &Value) -> Read<Config> {
    if phase.is_pending(with) {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with the keys `url` and `body`")?;
    fields.only(&KEYS)?;
    let url = read_url(phase, fields.required("url")?, "url")?;
    // Any JSON is a body, a template included; only the rendered value is sent.
    let body = fields.required("body")?.clone();
    let headers = match fields.optional("headers") {
        Some(headers) => read_headers(phase, headers)?,
        None => Some(HeaderMap::new()),
    };
    let secret = match fields.optional("secret") {
        Some(secret) => read_secret(phase, secret)?.map(Some),
        None => Some(None),
    };
    let timeout = read_timeout(phase, fields.optional("timeout"), "timeout")?;
    let expect_status = match fields.optional("expect_status") {
        Some(statuses) => read_statuses(phase, statuses)?.map(Some),
        None => Some(None),
    };
    let (Some(url), Some(headers), Some(secret), Some(timeout), Some(expect_status)) =
        (url, headers, secret, timeout, expect_status)
    else {
        return Ok(None);
    };
    Ok(Some(Config {
        url,
        body,
        headers,
        secret,
        timeout,
        expect_status,
    }))
}

fn read_secret(phase: Phase, value: &Value) -> Read<String> {
    let Some(secret) = text(phase, value, "secret")? else {
        return Ok(None);
    };
    if secret.is_empty() {
        return Err(ConfigError::new("secret", "the signing secret is empty"));
    }
    Ok(Some(secret.to_owned()))
}

/// Header names and values (strings, numbers or booleans); the signature header is the node's.
fn read_headers(phase: Phase, value: &Value) -> Read<HeaderMap> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let fields = Fields::read(value, "headers", "a map of header names to values")?;
    let mut headers = HeaderMap::new();
    let mut pending = false;
    for (name, value) in fields.iter() {
        let at = |message: String| ConfigError::new(fields.path(name), message);
        if phase.is_pending(&json!(name)) || phase.is_pending(value) {
            pending = true;
            continue;
        }
        let header_name = parse_header_name(name).map_err(at)?;
        if header_name == SIGNATURE_HEADER {
            return Err(at("set by the node from `secret`".to_owned()));
        }
        let header_value = scalar_text(value)
            .and_then(|text| parse_header_value(&text))
            .map_err(at)?;
        headers.append(header_name, header_value);
    }
    Ok((!pending).then_some(headers))
}

fn read_statuses(phase: Phase, value: &Value) -> Read<Vec<StatusCode>> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let Value::Array(statuses) = value else {
        return Err(ConfigError::new(
            "expect_status",
            format!("expected a list of status codes, found {}", describe(value)),
        ));
    };
    let mut codes = Vec::new();
    let mut pending = false;
    for (index, status) in statuses.iter().enumerate() {
        let path = at_index("expect_status", index);
        if phase.is_pending(status) {
            pending = true;
            continue;
        }
        let code = status.as_u64().ok_or_else(|| {
            ConfigError::new(
                &path,
                format!("expected a status code, found {}", describe(status)),
            )
        })?;
        codes.push(parse_status(code).map_err(|message| ConfigError::new(&path, message))?);
    }
    Ok((!pending).then_some(codes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_path(with: Value) -> String {
        NotifyWebhook
            .check_config(&with)
            .expect_err("the block should be rejected")
            .path
    }

    #[test]
    fn accepts_literals_and_templates() {
        let with = json!({
            "url": "https://crm.example.com/hooks/lead?token=t",
            "body": {"lead": "{{ nodes.score.output }}", "n": 1},
            "headers": {"Authorization": "Bearer {{ secrets.CRM }}", "X-Count": 2},
            "secret": "{{ secrets.CRM_HOOK_SECRET }}",
            "timeout": "3s",
            "expect_status": [200, "{{ inputs.status }}"],
        });
        assert_eq!(NotifyWebhook.check_config(&with), Ok(()));
        let templated = json!({"url": "{{ secrets.URL }}", "body": "{{ trigger.body }}"});
        assert_eq!(NotifyWebhook.check_config(&templated), Ok(()));
    }

    #[test]
    fn rejects_bad_keys_at_their_path() {
        let url = "http://localhost/hook";
        let cases = [
            (json!({"body": {}}), "url"),
            (json!({"url": url}), "body"),
            (json!({"url": "/relative", "body": {}}), "url"),
            (json!({"url": url, "body": {}, "method": "PUT"}), "method"),
            (json!({"url": url, "body": {}, "headers": []}), "headers"),
            (
                json!({"url": url, "body": {}, "headers": {"A B": "x"}}),
                "headers.A B",
            ),
            (
                json!({"url": url, "body": {}, "headers": {"A": {"x": 1}}}),
                "headers.A",
            ),
            (
                json!({"url": url, "body": {}, "headers": {"X-Enrichflow-Signature": "x"}}),
                "headers.X-Enrichflow-Signature",
            ),
            (json!({"url": url, "body": {}, "secret": ""}), "secret"),
            (json!({"url": url, "body": {}, "secret": 42}), "secret"),
            (json!({"url": url, "body": {}, "timeout": "0s"}), "timeout"),
            (
                json!({"url": url, "body": {}, "expect_status": 200}),
                "expect_status",
            ),
            (
                json!({"url": url, "body": {}, "expect_status": [200, 700]}),
                "expect_status[1]",
            ),
        ];
        for (with, path) in cases {
            assert_eq!(error_path(with.clone()), path, "for {with}");
        }
    }

    #[test]
    fn signs_like_the_engine_verifies() {
        // The well-known HMAC-SHA256 example (Wikipedia, "HMAC").
        let expected = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        let fox = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(signature("key", fox).expect("any key signs"), expected);
    }
}
