//! `http.request`: any HTTP call (method, URL, headers, query, a JSON or raw body, the statuses
//! that count as success); the output is the response's status, headers and body.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use indexmap::IndexMap;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::redirect::{Follow, Hop, MAX_REDIRECTS, Next};
use crate::egress::{self, Refusal};
use crate::{ConfigError, ErrorKind, Node, NodeContext, NodeError};

/// Any HTTP call; its `with` block is described by [`Config`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRequest;

/// The `with` block of an `http.request` node, once its templates are rendered.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The HTTP method, in any case (`post` is `POST`); `GET` when absent.
    #[serde(default = "default_method")]
    method: String,
    /// The absolute `http` or `https` URL; it may carry a query string of its own.
    url: String,
    /// Request headers by name; values are strings, numbers or booleans. An `Idempotency-Key`
    /// header carrying the attempt's key is added unless one is set here.
    #[serde(default)]
    headers: IndexMap<String, Value>,
    /// Query parameters appended to the URL after its own; values are strings, numbers or booleans.
    #[serde(default)]
    query: IndexMap<String, Value>,
    /// A JSON body; `Content-Type: application/json` is set unless `headers` sets one.
    json: Option<Value>,
    /// A raw body, sent as it is; cannot be combined with `json`.
    body: Option<String>,
    /// The statuses that count as success; when absent, any 2xx status does.
    expect_status: Option<Vec<u16>>,
    /// A limit on the whole exchange, redirects included, from connecting to reading the last
    /// body, such as `10s`; the engine's default (30 s) when absent.
    timeout: Option<String>,
    /// Which redirects to follow: `none`, `same_origin` (the default) or `any`.
    redirects: Option<String>,
}

/// Every key of [`Config`], for checking un-rendered blocks.
const KEYS: [&str; 9] = [
    "method",
    "url",
    "headers",
    "query",
    "json",
    "body",
    "expect_status",
    "timeout",
    "redirects",
];

/// Methods a workflow may use. CONNECT is left out: it opens a tunnel, not a request.
const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

/// How much of an unexpected response's body an error message quotes.
const EXCERPT_CHARS: usize = 200;

fn default_method() -> String {
    Method::GET.to_string()
}

#[async_trait]
impl Node for HttpRequest {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        let Some(map) = with.as_object() else {
            return Err(ConfigError::new(
                "",
                "expected a map with at least the key `url`",
            ));
        };
        if let Some(key) = map.keys().find(|key| !KEYS.contains(&key.as_str())) {
            return Err(ConfigError::new(
                key.clone(),
                format!("unknown key `{key}`; expected one of {}", KEYS.join(", ")),
            ));
        }
        if !map.contains_key("url") {
            return Err(ConfigError::new("url", "missing required key `url`"));
        }
        if map.contains_key("json") && map.contains_key("body") {
            return Err(ConfigError::new(
                "body",
                "`body` and `json` cannot be combined",
            ));
        }
        map.iter()
            .try_for_each(|(key, value)| check_value(key, value))
    }

    async fn execute(&self, ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let config: Config = serde_json::from_value(with).map_err(|error| {
            NodeError::permanent(ErrorKind::Config, format!("invalid `with` block: {error}"))
        })?;
        let exchange = Exchange::try_from(config).map_err(|error| {
            NodeError::permanent(ErrorKind::Config, format!("`{}`: {}", error.path, error))
        })?;
        let target = exchange.target();
        tokio::select! {
            // Biased, so that an already cancelled run sends nothing.
            biased;
            () = ctx.cancellation.cancelled() => Err(NodeError::permanent(
                ErrorKind::Cancelled,
                format!("{target} was cancelled"),
            )),
            result = exchange.send(ctx, &target) => result,
        }
    }
}

/// Checks one literal value of an un-rendered block; templates are accepted anywhere.
fn check_value(key: &str, value: &Value) -> Result<(), ConfigError> {
    if is_template(value) {
        return Ok(());
    }
    let at = |message: String| ConfigError::new(key, message);
    match key {
        "method" => text(value).and_then(parse_method).map(drop).map_err(at),
        "url" => text(value).and_then(parse_url).map(drop).map_err(at),
        "body" => text(value).map(drop).map_err(at),
        "timeout" => text(value).and_then(parse_timeout).map(drop).map_err(at),
        "redirects" => text(value).and_then(Follow::parse).map(drop).map_err(at),
        "headers" => {
            let headers = value
                .as_object()
                .ok_or_else(|| at("expected a map".into()))?;
            headers.iter().try_for_each(|(name, value)| {
                check_header(name, value)
                    .map_err(|message| ConfigError::new(format!("headers.{name}"), message))
            })
        }
        "query" => {
            let query = value
                .as_object()
                .ok_or_else(|| at("expected a map".into()))?;
            query.iter().try_for_each(|(name, value)| {
                scalar_text(value)
                    .map(drop)
                    .map_err(|message| ConfigError::new(format!("query.{name}"), message))
            })
        }
        "expect_status" => {
            let statuses = value
                .as_array()
                .ok_or_else(|| at("expected a list of status codes".into()))?;
            statuses.iter().enumerate().try_for_each(|(index, status)| {
                let path = || format!("expect_status[{index}]");
                match (is_template(status), status.as_u64()) {
                    (true, _) => Ok(()),
                    (false, Some(code)) => parse_status(code)
                        .map(drop)
                        .map_err(|message| ConfigError::new(path(), message)),
                    (false, None) => Err(ConfigError::new(path(), "expected a status code")),
                }
            })
        }
        // `json` takes any value; `check_config` has already rejected unknown keys.
        _ => Ok(()),
    }
}

/// Checks a header name and value, each unless it is a template.
fn check_header(name: &str, value: &Value) -> Result<(), String> {
    if !is_template_text(name) {
        parse_header_name(name)?;
    }
    if !is_template(value) {
        parse_header_value(&scalar_text(value)?)?;
    }
    Ok(())
}

/// Whether a value is a string the engine renders as a template before `execute`.
fn is_template(value: &Value) -> bool {
    value.as_str().is_some_and(is_template_text)
}

fn is_template_text(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

fn text(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| "expected a string".to_owned())
}

/// The text of a header or query value: strings as they are, numbers and booleans as written.
pub(super) fn scalar_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        _ => Err("expected a string, number or boolean".to_owned()),
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.to_ascii_uppercase();
    METHODS
        .into_iter()
        .find(|method| method.as_str() == upper)
        .ok_or_else(|| {
            let known: Vec<&str> = METHODS.iter().map(Method::as_str).collect();
            format!(
                "unknown HTTP method `{text}`; expected one of {}",
                known.join(", ")
            )
        })
}

pub(super) fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("not an absolute URL: {error}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        scheme => Err(format!(
            "unsupported scheme `{scheme}`; expected http or https"
        )),
    }
}

/// The longest `timeout` of an outbound call, as long as the longest node `timeout`: a
/// longer one could never take effect, and a huge one would overflow deadline arithmetic.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

pub(super) fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("the timeout must be longer than zero".into()),
        Ok(duration) if duration > MAX_TIMEOUT => Err(format!(
            "the timeout `{text}` is longer than the most allowed, 24h"
        )),
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!("`{text}` is not a duration such as `10s`: {error}")),
    }
}

pub(super) fn parse_status(code: u64) -> Result<StatusCode, String> {
    u16::try_from(code)
        .ok()
        .filter(|code| (100..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("{code} is not a status code between 100 and 599"))
}

pub(super) fn parse_header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a header name"))
}

pub(super) fn parse_header_value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text).map_err(|_| "not a valid header value".to_owned())
}

/// A validated request, ready to send.
#[derive(Debug)]
struct Exchange {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Body,
    /// `None` accepts any 2xx status.
    expect_status: Option<Vec<StatusCode>>,
    timeout: Option<Duration>,
    redirects: Follow,
}

#[derive(Debug)]
enum Body {
    Empty,
    Json(Value),
    Raw(String),
}

impl TryFrom<Config> for Exchange {
    type Error = ConfigError;

    fn try_from(config: Config) -> Result<Self, ConfigError> {
        let method =
            parse_method(&config.method).map_err(|error| ConfigError::new("method", error))?;
        let mut url = parse_url(&config.url).map_err(|error| ConfigError::new("url", error))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let at = |message| ConfigError::new(format!("headers.{name}"), message);
            let value = scalar_text(value).and_then(|text| parse_header_value(&text));
            headers.append(parse_header_name(name).map_err(at)?, value.map_err(at)?);
        }
        if !config.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &config.query {
                let value = scalar_text(value)
                    .map_err(|message| ConfigError::new(format!("query.{name}"), message))?;
                pairs.append_pair(name, &value);
            }
        }
        let body = match (config.json, config.body) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "body",
                    "`body` and `json` cannot be combined",
                ));
            }
            (Some(json), None) => Body::Json(json),
            (None, Some(raw)) => Body::Raw(raw),
            (None, None) => Body::Empty,
        };
        let expect_status = config
            .expect_status
            .map(|codes| {
                let parse = |(index, code): (usize, u16)| {
                    parse_status(code.into()).map_err(|message| {
                        ConfigError::new(format!("expect_status[{index}]"), message)
                    })
                };
                codes
                    .into_iter()
                    .enumerate()
                    .map(parse)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let timeout = config
            .timeout
            .as_deref()
            .map(parse_timeout)
            .transpose()
            .map_err(|message| ConfigError::new("timeout", message))?;
        let redirects = config
            .redirects
            .as_deref()
            .map(Follow::parse)
            .transpose()
            .map_err(|message| ConfigError::new("redirects", message))?
            .unwrap_or_default();
        Ok(Self {
            method,
            url,
            headers,
            body,
            expect_status,
            timeout,
            redirects,
        })
    }
}

impl Exchange {
    /// `METHOD url` for messages, without credentials, query or fragment, which may hold secrets.
    fn target(&self) -> String {
        format!("{} {}", self.method, url_for_messages(&self.url))
    }

    fn accepts(&self, status: StatusCode) -> bool {
        match &self.expect_status {
            Some(expected) => expected.contains(&status),
            None => status.is_success(),
        }
    }

    /// The whole exchange, redirects included, within the node's `timeout` or the engine's
    /// default.
    async fn send(self, ctx: &NodeContext, target: &str) -> Result<Value, NodeError> {
        let limit = self.timeout.unwrap_or(ctx.egress.request_timeout);
        match tokio::time::timeout(limit, self.exchange(ctx, target, limit)).await {
            Ok(result) => result,
            Err(_) => Err(NodeError::retryable(
                ErrorKind::Timeout,
                format!(
                    "{target} timed out after {}",
                    humantime::format_duration(limit)
                ),
            )),
        }
    }

    async fn exchange(
        &self,
        ctx: &NodeContext,
        target: &str,
        limit: Duration,
    ) -> Result<Value, NodeError> {
        let mut response = self.follow(ctx, target, limit).await?;
        let status = response.status();
        let headers = headers_json(response.headers());
        let max = ctx.egress.max_response_bytes;
        if !self.accepts(status) {
            let retry_after = retry_after_header(response.headers());
            // The status decides the error; a body that cannot be read only shortens the message.
            let body = read_body(&mut response, max).await.map(|body| body.bytes);
            return Err(status_error(
                target,
                status,
                &body.unwrap_or_default(),
                retry_after,
            ));
        }
        let body = read_body(&mut response, max)
            .await
            .map_err(|error| transport_error(target, error))?;
        if body.truncated {
            return Err(too_large(target, max));
        }
        Ok(json!({
            "status": status.as_u16(),
            "headers": headers,
            "body": body_json(&body.bytes),
        }))
    }

    /// Sends the request and the redirects it may follow; the last response.
    async fn follow(
        &self,
        ctx: &NodeContext,
        target: &str,
        limit: Duration,
    ) -> Result<Response, NodeError> {
        let mut hop = Hop {
            method: self.method.clone(),
            url: self.url.clone(),
            headers: self.headers_with_key(ctx)?,
            with_body: true,
        };
        let mut redirects = 0;
        loop {
            let request = self.request(ctx, &hop, limit, target)?;
            let response = ctx
                .egress
                .send(&ctx.http, request)
                .await
                .map_err(|error| send_error(&hop_target(target, redirects, &hop), error))?;
            hop = match super::redirect::next(
                self.redirects,
                &hop,
                response.status(),
                response.headers(),
            ) {
                Next::Done => return Ok(response),
                Next::Follow(_) if redirects >= MAX_REDIRECTS => {
                    return Err(NodeError::permanent(
                        ErrorKind::Http,
                        format!("{target} redirected more than {MAX_REDIRECTS} times"),
                    ));
                }
                Next::Follow(next) => next,
                Next::Refuse(reason) => {
                    return Err(NodeError::permanent(
                        ErrorKind::Http,
                        format!("{target} was not followed: {reason}"),
                    ));
                }
            };
            redirects += 1;
        }
    }

    /// The request's headers with the attempt's `Idempotency-Key` unless one is set.
    fn headers_with_key(&self, ctx: &NodeContext) -> Result<HeaderMap, NodeError> {
        let mut headers = self.headers.clone();
        let idempotency_key = HeaderName::from_static("idempotency-key");
        if !headers.contains_key(&idempotency_key) {
            let value = parse_header_value(&ctx.idempotency_key).map_err(|message| {
                NodeError::permanent(ErrorKind::Node, format!("the idempotency key is {message}"))
            })?;
            headers.insert(idempotency_key, value);
        }
        Ok(headers)
    }

    fn request(
        &self,
        ctx: &NodeContext,
        hop: &Hop,
        limit: Duration,
        target: &str,
    ) -> Result<reqwest::Request, NodeError> {
        let mut request = ctx
            .http
            .request(hop.method.clone(), hop.url.clone())
            .headers(hop.headers.clone())
            .timeout(limit);
        request = match (&self.body, hop.with_body) {
            (Body::Json(json), true) => request.json(json),
            (Body::Raw(raw), true) => request.body(raw.clone()),
            (Body::Empty, _) | (_, false) => request,
        };
        request
            .build()
            .map_err(|error| transport_error(target, error))
    }
}

/// How a hop is named in messages: the request itself, or where its redirects led.
fn hop_target(target: &str, redirects: usize, hop: &Hop) -> String {
    match redirects {
        0 => target.to_owned(),
        _ => format!(
            "{target}, redirected to {} {},",
            hop.method,
            url_for_messages(&hop.url)
        ),
    }
}

/// A body over the egress policy's limit.
pub(super) fn too_large(target: &str, max: usize) -> NodeError {
    NodeError::permanent(
        ErrorKind::Http,
        format!("{target} returned a body larger than {max} bytes"),
    )
}

/// A URL for messages, without credentials, query or fragment, which may hold secrets.
pub(super) fn url_for_messages(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    // Both fail only for URLs that cannot have credentials, which then have none to hide.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// The delay a response's `Retry-After` header asks for, if it has a readable one.
pub(super) fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| retry_after(value, SystemTime::now()))
}

/// A response body, cut at the egress policy's `max_response_bytes`.
pub(super) struct ReadBody {
    pub(super) bytes: Vec<u8>,
    pub(super) truncated: bool,
}

/// Reads at most `max` bytes of the body. A `Content-Length` above `max` is refused before
/// anything is read; a body without one (chunked, endless) is cut once it passes `max`.
pub(super) async fn read_body(
    response: &mut Response,
    max: usize,
) -> Result<ReadBody, reqwest::Error> {
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |announced| announced > max) {
        return Ok(ReadBody {
            bytes: Vec::new(),
            truncated: true,
        });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len().saturating_add(chunk.len()) > max {
            return Ok(ReadBody {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(ReadBody {
        bytes,
        truncated: false,
    })
}

/// The body as JSON when it parses as JSON, else as (lossily decoded UTF-8) text.
pub(super) fn body_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Response headers by lowercase name; repeated headers are joined with `, `.
fn headers_json(headers: &HeaderMap) -> Map<String, Value> {
    let mut object = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match object.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                object.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    object
}

/// A status outside the accepted ones: 5xx and 429 may pass, other statuses will not.
pub(super) fn status_error(
    target: &str,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> NodeError {
    let mut message = format!("{target} returned {status}");
    let excerpt = excerpt(&String::from_utf8_lossy(body));
    if !excerpt.is_empty() {
        message = format!("{message}: {excerpt}");
    }
    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
        return NodeError::permanent(ErrorKind::Http, message);
    }
    let error = NodeError::retryable(ErrorKind::Http, message);
    match retry_after {
        Some(delay) => error.with_retry_after(delay),
        None => error,
    }
}

/// The start of a body, at most [`EXCERPT_CHARS`] characters, on one line.
pub(super) fn excerpt(body: &str) -> String {
    let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= EXCERPT_CHARS {
        return flat;
    }
    let mut cut: String = flat.chars().take(EXCERPT_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// No usable response: timeouts and network failures may pass, a request that cannot be built or
/// a redirect loop will not.
pub(super) fn transport_error(target: &str, error: reqwest::Error) -> NodeError {
    if let Some(refusal) = egress::refusal_in(&error) {
        return refused(target, refusal);
    }
    // reqwest's own message names the full URL, query string included.
    let error = error.without_url();
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail = format!("{detail}: {cause}");
        source = cause.source();
    }
    if error.is_timeout() {
        NodeError::retryable(ErrorKind::Timeout, format!("{target} timed out: {detail}"))
    } else if error.is_builder() {
        NodeError::permanent(
            ErrorKind::Config,
            format!("{target} cannot be sent: {detail}"),
        )
    } else if error.is_redirect() {
        NodeError::permanent(ErrorKind::Http, format!("{target} failed: {detail}"))
    } else {
        NodeError::retryable(ErrorKind::Http, format!("{target} failed: {detail}"))
    }
}

/// A send that got no response: refused by the egress policy, or failed on the way.
pub(super) fn send_error(target: &str, error: egress::SendError) -> NodeError {
    match error {
        egress::SendError::Refused(refusal) => refused(target, &refusal),
        egress::SendError::Http(error) => transport_error(target, error),
    }
}

/// The egress policy said no: no other attempt will change that.
pub(super) fn refused(target: &str, refusal: &Refusal) -> NodeError {
    NodeError::permanent(ErrorKind::Egress, format!("{target} refused: {refusal}"))
}

/// The longest wait a `Retry-After` may ask for. An upstream is not trusted to park an attempt
/// for days (or to overflow the engine's time arithmetic with `Retry-After: 100000000000000`);
/// after an hour the next attempt asks again.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The delay a `Retry-After` value asks for: seconds, or an HTTP date (no delay once past),
/// at most [`MAX_RETRY_AFTER`].
pub(super) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let date = httpdate::parse_http_date(value).ok()?;
        date.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(with: Value) -> Result<(), ConfigError> {
        HttpRequest.check_config(&with)
    }

    /// The path of the error `check_config` reports for `with`.
    fn error_path(with: Value) -> String {
        check(with).expect_err("the block should be rejected").path
    }

    fn exchange(with: Value) -> Result<Exchange, ConfigError> {
        let config: Config = serde_json::from_value(with).expect("the block should deserialize");
        Exchange::try_from(config)
    }

    #[test]
    fn accepts_a_full_literal_block() {
        let with = json!({
            "method": "post",
            "url": "https://api.example.com/v1/people?source=crm",
            "headers": {"Accept": "application/json", "X-Count": 3},
            "query": {"email": "a@b.c", "limit": 10, "verbose": true},
            "json": {"any": ["thing", 1, null]},
            "expect_status": [200, 404],
            "timeout": "1m 30s",
        });
        assert_eq!(check(with), Ok(()));
        assert_eq!(check(json!({"url": "http://localhost:8080"})), Ok(()));
    }

    #[test]
    fn rejects_unknown_and_missing_keys() {
        assert_eq!(
            error_path(json!({"url": "http://x", "header": {}})),
            "header"
        );
        assert_eq!(error_path(json!({"method": "GET"})), "url");
        assert_eq!(error_path(json!("http://x")), "");
        let both = json!({"url": "http://x", "json": {}, "body": "raw"});
        assert_eq!(error_path(both), "body");
    }

    #[test]
    fn rejects_bad_literals_at_their_path() {
        let cases = [
            (json!({"url": "http://x", "method": "FETCH"}), "method"),
            (json!({"url": "http://x", "method": 1}), "method"),
            (json!({"url": "/relative"}), "url"),
            (json!({"url": "ftp://x/file"}), "url"),
            (json!({"url": "http://x", "timeout": "soon"}), "timeout"),
            (json!({"url": "http://x", "timeout": "0s"}), "timeout"),
            (
                json!({"url": "http://x", "expect_status": 200}),
                "expect_status",
            ),
            (
                json!({"url": "http://x", "expect_status": [200, 600]}),
                "expect_status[1]",
            ),
            (
                json!({"url": "http://x", "expect_status": ["ok"]}),
                "expect_status[0]",
            ),
            (
                json!({"url": "http://x", "headers": {"Bad Name": "x"}}),
                "headers.Bad Name",
            ),
            (
                json!({"url": "http://x", "headers": {"A": "line\nbreak"}}),
                "headers.A",
            ),
            (
                json!({"url": "http://x", "headers": {"A": ["x"]}}),
                "headers.A",
            ),
            (json!({"url": "http://x", "headers": []}), "headers"),
            (
                json!({"url": "http://x", "query": {"q": {"nested": 1}}}),
                "query.q",
            ),
            (json!({"url": "http://x", "body": {"not": "text"}}), "body"),
            (json!({"url": "http://x", "redirects": "all"}), "redirects"),
            (json!({"url": "http://x", "redirects": true}), "redirects"),
        ];
        for (with, path) in cases {
            assert_eq!(error_path(with.clone()), path, "for {with}");
        }
    }

    #[test]
    fn accepts_templates_wherever_a_value_may_appear() {
        let with = json!({
            "method": "{{ inputs.method }}",
            "url": "{{ secrets.BASE_URL }}/people",
            "headers": {"Authorization": "Bearer {{ secrets.TOKEN }}", "{{ inputs.name }}": "x"},
            "query": "{{ inputs.query }}",
            "json": "{{ nodes.prepare.output }}",
            "expect_status": ["{{ inputs.status }}", 201],
            "timeout": "{{ inputs.timeout }}",
        });
        assert_eq!(check(with), Ok(()));
        let whole_maps = json!({
            "url": "{% if a %}http://a{% else %}http://b{% endif %}",
            "headers": "{{ inputs.headers }}",
            "expect_status": "{{ inputs.statuses }}",
            "body": "{{ inputs.body }}",
        });
        assert_eq!(check(whole_maps), Ok(()));
    }

    #[test]
    fn builds_the_request_from_a_rendered_block() {
        let exchange = exchange(json!({
            "method": "patch",
            "url": "https://user:pw@api.example.com/v1?key=secret#top",
            "headers": {"X-Count": 3},
            "query": {"all": false, "page": 2},
            "expect_status": [204],
            "timeout": "250ms",
        }))
        .expect("the block is valid");
        assert_eq!(exchange.method, Method::PATCH);
        assert_eq!(exchange.url.query(), Some("key=secret&all=false&page=2"));
        assert_eq!(
            exchange.headers.get("x-count").map(HeaderValue::as_bytes),
            Some(&b"3"[..])
        );
        assert_eq!(exchange.timeout, Some(Duration::from_millis(250)));
        assert!(exchange.accepts(StatusCode::NO_CONTENT));
        assert!(!exchange.accepts(StatusCode::OK));
        assert_eq!(exchange.target(), "PATCH https://api.example.com/v1");
    }

    #[test]
    fn rendered_errors_name_their_path() {
        let bad = |with: Value| exchange(with).expect_err("the block is invalid").path;
        assert_eq!(
            bad(json!({"url": "http://x", "expect_status": [99]})),
            "expect_status[0]"
        );
        assert_eq!(
            bad(json!({"url": "http://x", "json": 1, "body": "b"})),
            "body"
        );
        assert_eq!(bad(json!({"url": "not a url"})), "url");
        assert_eq!(
            bad(json!({"url": "http://x", "query": {"q": null}})),
            "query.q"
        );
    }

    #[test]
    fn accepts_2xx_without_expect_status() {
        let exchange = exchange(json!({"url": "http://x"})).expect("the block is valid");
        assert!(exchange.accepts(StatusCode::OK));
        assert!(exchange.accepts(StatusCode::CREATED));
        assert!(!exchange.accepts(StatusCode::NOT_MODIFIED));
        assert!(!exchange.accepts(StatusCode::NOT_FOUND));
        assert_eq!(exchange.method, Method::GET);
    }

    #[test]
    fn classifies_statuses() {
        let target = "GET http://x/";
        let error = status_error(target, StatusCode::BAD_GATEWAY, b"", None);
        assert!(error.is_retryable());
        assert_eq!(error.message, "GET http://x/ returned 502 Bad Gateway");
        let delay = Some(Duration::from_secs(7));
        let error = status_error(target, StatusCode::TOO_MANY_REQUESTS, b"slow down", delay);
        assert!(error.is_retryable());
        assert_eq!(error.retry_after, delay);
        assert!(error.message.ends_with("429 Too Many Requests: slow down"));
        let error = status_error(target, StatusCode::BAD_REQUEST, b"", delay);
        assert!(!error.is_retryable());
        assert_eq!(error.retry_after, None);
        assert_eq!(error.kind, ErrorKind::Http);
    }

    #[test]
    fn excerpts_stay_short() {
        assert_eq!(excerpt("  one\n  two  "), "one two");
        let long = "é".repeat(500);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn parses_retry_after() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").expect("a date");
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = "Wed, 21 Oct 2026 07:28:30 GMT";
        assert_eq!(retry_after(later, now), Some(Duration::from_secs(30)));
        let earlier = "Wed, 21 Oct 2026 07:00:00 GMT";
        assert_eq!(retry_after(earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
    }

    #[test]
    fn timeouts_are_bounded() {
        assert_eq!(parse_timeout("24h"), Ok(MAX_TIMEOUT));
        assert_eq!(
            parse_timeout("10000000years").unwrap_err(),
            "the timeout `10000000years` is longer than the most allowed, 24h"
        );
        assert_eq!(
            error_path(json!({"url": "https://example.com", "timeout": "25h"})),
            "timeout"
        );
    }

    #[test]
    fn retry_after_is_clamped_to_an_hour() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").expect("a date");
        let cases = [
            ("3600", MAX_RETRY_AFTER),
            ("3601", MAX_RETRY_AFTER),
            ("100000000000000", MAX_RETRY_AFTER),
            ("18446744073709551615", MAX_RETRY_AFTER),
            ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
            ("Wed, 21 Oct 2026 08:27:59 GMT", Duration::from_secs(3599)),
        ];
        for (value, expected) in cases {
            assert_eq!(
                retry_after(value, now),
                Some(expected),
                "Retry-After: {value}"
            );
        }
        // Larger than u64: not a number of seconds nor a date, so no delay is asked for.
        assert_eq!(retry_after("99999999999999999999999", now), None);
    }

    #[test]
    fn decodes_bodies_and_headers() {
        assert_eq!(body_json(br#"{"a": 1}"#), json!({"a": 1}));
        assert_eq!(body_json(b"plain text"), json!("plain text"));
        assert_eq!(body_json(b""), json!(""));
        let mut headers = HeaderMap::new();
        headers.append("Set-Cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.append("Content-Type", HeaderValue::from_static("text/plain"));
        let expected = json!({"set-cookie": "a=1, b=2", "content-type": "text/plain"});
        assert_eq!(Value::Object(headers_json(&headers)), expected);
    }
}
