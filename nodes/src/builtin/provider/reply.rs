//! What a provider's status code and body mean: an answer, "no such record", or an error that
//! says whether another attempt may help. Clearbit-style APIs use the common meanings; Hunter
//! documents its own (403 is its rate limit, 429 its exhausted monthly quota).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::Style;
use crate::builtin::http_request::excerpt;
use crate::{ErrorKind, NodeError};

/// A provider's answer to a lookup.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::builtin) enum Reply {
    /// A record was found: the response body, a JSON object.
    Found(Value),
    /// The provider has no record (404), or may not give it out (Hunter's 451).
    NotFound,
}

impl Reply {
    /// The record the provider answered with, `None` when it has none. A Clearbit-style body is
    /// the record itself; Hunter wraps it in a `data` object, and `Err` says a body has none.
    pub(in crate::builtin) fn record(self, style: Style) -> Result<Option<Value>, String> {
        match (style, self) {
            (_, Reply::NotFound) => Ok(None),
            (Style::Clearbit, Reply::Found(body)) => Ok(Some(body)),
            (Style::Hunter, Reply::Found(mut body)) => {
                match body.get_mut("data").map(Value::take) {
                    Some(data @ Value::Object(_)) => Ok(Some(data)),
                    _ => Err("the body has no `data` object".to_owned()),
                }
            }
        }
    }
}

/// What a status means, before the body is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    Body,
    NotFound,
    InvalidKey,
    OutOfCredits,
    RateLimited,
    /// The provider is still working on the lookup; asking again later will answer it.
    Pending(&'static str),
    ServerError,
    Rejected,
}

fn meaning(style: Style, status: StatusCode) -> Meaning {
    match (style, status.as_u16()) {
        (_, 202) => Meaning::Pending("the lookup is still in progress at the provider"),
        (Style::Hunter, 222) => {
            Meaning::Pending("the mail server gave no usable answer to the verification")
        }
        (_, 200..=299) => Meaning::Body,
        (_, 404) | (Style::Hunter, 451) => Meaning::NotFound,
        (_, 401) | (Style::Clearbit, 403) => Meaning::InvalidKey,
        (_, 402) | (Style::Hunter, 429) => Meaning::OutOfCredits,
        (Style::Clearbit, 429) | (Style::Hunter, 403) => Meaning::RateLimited,
        (_, 500..=599) => Meaning::ServerError,
        _ => Meaning::Rejected,
    }
}

/// Reads a response: `target` names the provider and request in messages.
pub(super) fn classify(
    style: Style,
    target: &str,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Reply, NodeError> {
    let code = status.as_u16();
    let detail = detail(body).map_or_else(String::new, |detail| format!(": {detail}"));
    let permanent = |what: &str| {
        NodeError::permanent(
            ErrorKind::Http,
            format!("{what} (HTTP {code}) from {target}{detail}"),
        )
    };
    let retryable = |what: &str| {
        let error = NodeError::retryable(
            ErrorKind::Http,
            format!("{what} (HTTP {code}) from {target}{detail}"),
        );
        match retry_after {
            Some(delay) => error.with_retry_after(delay),
            None => error,
        }
    };
    match meaning(style, status) {
        Meaning::Body => parse_body(target, body),
        Meaning::NotFound => Ok(Reply::NotFound),
        Meaning::InvalidKey => Err(permanent("invalid API key")),
        Meaning::OutOfCredits => Err(permanent("out of credits")),
        Meaning::RateLimited => Err(retryable("rate limited")),
        Meaning::Pending(what) => Err(retryable(what)),
        Meaning::ServerError => Err(retryable("provider error")),
        Meaning::Rejected => Err(permanent("request rejected")),
    }
}

/// A 2xx body: a JSON object, unless it only carries Hunter-style `errors`.
fn parse_body(target: &str, body: &[u8]) -> Result<Reply, NodeError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.get("errors").is_some() && value.get("data").is_none() => {
            let detail = detail(body).unwrap_or_else(|| "no details".to_owned());
            Err(NodeError::permanent(
                ErrorKind::Http,
                format!("{target} reported an error: {detail}"),
            ))
        }
        Ok(value @ Value::Object(_)) => Ok(Reply::Found(value)),
        Ok(_) => Err(malformed(target, "expected a JSON object")),
        Err(error) => Err(malformed(target, &error.to_string())),
    }
}

/// A body that cannot be read as the provider's API promises. Retryable: it is usually a proxy's
/// error page or a truncated answer, which the next attempt does not get.
pub(super) fn malformed(target: &str, why: &str) -> NodeError {
    NodeError::retryable(
        ErrorKind::Http,
        format!("malformed JSON from {target}: {why}"),
    )
}

/// The provider's own explanation: Clearbit's `error.message`, Hunter's `errors[0].details`.
fn detail(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = ["/error/message", "/errors/0/details", "/error"]
        .iter()
        .find_map(|pointer| value.pointer(pointer).and_then(Value::as_str))?;
    Some(excerpt(text))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TARGET: &str = "clearbit GET http://x/v2/companies/find";

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).expect("a status code")
    }

    fn error(style: Style, code: u16, body: &[u8]) -> NodeError {
        classify(
            style,
            TARGET,
            status(code),
            body,
            Some(Duration::from_secs(3)),
        )
        .expect_err("an error status")
    }

    #[test]
    fn reads_answers_and_absences() {
        let body = br#"{"name": "Stripe"}"#;
        let found = classify(Style::Clearbit, TARGET, status(200), body, None);
        assert_eq!(
            found.expect("found"),
            Reply::Found(json!({"name": "Stripe"}))
        );
        for (style, code) in [
            (Style::Clearbit, 404),
            (Style::Hunter, 404),
            (Style::Hunter, 451),
        ] {
            let reply = classify(style, TARGET, status(code), b"", None);
            assert_eq!(reply.expect("not found"), Reply::NotFound);
        }
    }

    #[test]
    fn credentials_and_credits_are_permanent() {
        let cases = [
            (Style::Clearbit, 401, "invalid API key (HTTP 401)"),
            (Style::Clearbit, 403, "invalid API key (HTTP 403)"),
            (Style::Clearbit, 402, "out of credits (HTTP 402)"),
            (Style::Hunter, 401, "invalid API key (HTTP 401)"),
            (Style::Hunter, 429, "out of credits (HTTP 429)"),
            (Style::Clearbit, 400, "request rejected (HTTP 400)"),
        ];
        for (style, code, message) in cases {
            let error = error(style, code, b"");
            assert!(!error.is_retryable(), "{code}");
            assert_eq!(error.retry_after, None);
            assert!(error.message.starts_with(message), "{}", error.message);
        }
    }

    #[test]
    fn limits_and_outages_are_retryable_after_the_asked_delay() {
        for (style, code) in [
            (Style::Clearbit, 429),
            (Style::Hunter, 403),
            (Style::Clearbit, 503),
            (Style::Clearbit, 202),
            (Style::Hunter, 222),
        ] {
            let error = error(style, code, b"");
            assert!(error.is_retryable(), "{code}");
            assert_eq!(error.retry_after, Some(Duration::from_secs(3)), "{code}");
            assert_eq!(error.kind, ErrorKind::Http);
        }
    }

    #[test]
    fn quotes_the_providers_explanation() {
        let clearbit = br#"{"error": {"type": "auth", "message": "Invalid   API key"}}"#;
        let message = error(Style::Clearbit, 401, clearbit).message;
        assert_eq!(
            message,
            format!("invalid API key (HTTP 401) from {TARGET}: Invalid API key")
        );
        let hunter = br#"{"errors": [{"id": "wrong_params", "code": 400, "details": "You are missing the domain parameter"}]}"#;
        let message = error(Style::Hunter, 400, hunter).message;
        assert!(
            message.ends_with(": You are missing the domain parameter"),
            "{message}"
        );
        let long = json!({"error": "x".repeat(1000)}).to_string();
        let message = error(Style::Clearbit, 500, long.as_bytes()).message;
        assert!(message.ends_with('…'), "{message}");
    }

    #[test]
    fn an_errors_array_in_a_200_is_an_error() {
        let body = br#"{"errors": [{"id": "invalid_email", "details": "bad email"}]}"#;
        let error = classify(Style::Hunter, TARGET, status(200), body, None).expect_err("errors");
        assert!(!error.is_retryable());
        assert!(
            error.message.ends_with("reported an error: bad email"),
            "{}",
            error.message
        );
    }

    #[test]
    fn hunter_records_are_the_data_object() {
        let body = json!({"data": {"email": "a@b.co"}, "meta": {}});
        let record = Reply::Found(body.clone()).record(Style::Hunter);
        assert_eq!(record, Ok(Some(json!({"email": "a@b.co"}))));
        let record = Reply::Found(body.clone()).record(Style::Clearbit);
        assert_eq!(record, Ok(Some(body)));
        assert_eq!(Reply::NotFound.record(Style::Hunter), Ok(None));
        for body in [
            json!({"meta": {}}),
            json!({"data": null}),
            json!({"data": [1]}),
        ] {
            let record = Reply::Found(body).record(Style::Hunter);
            assert_eq!(record, Err("the body has no `data` object".to_owned()));
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_malformed() {
        for body in [&b"<html>busy</html>"[..], b"[1, 2]", b""] {
            let error =
                classify(Style::Clearbit, TARGET, status(200), body, None).expect_err("malformed");
            assert!(error.is_retryable());
            assert!(
                error.message.starts_with("malformed JSON from clearbit"),
                "{}",
                error.message
            );
        }
    }
}
