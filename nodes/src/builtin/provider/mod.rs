//! What `enrich.company` and `enrich.person` share: the keys that say which provider to ask and
//! how ([`settings`]), and one lookup: the cache first, then the circuit breaker and rate limiter
//! ([`gate`]), the HTTP call, and the reading of its status ([`reply`]). The nodes only build the
//! request and map the provider's answer.

mod gate;
mod json;
mod reply;
mod settings;
mod subject;

use std::time::Duration;

use reqwest::Url;
use reqwest::header::ACCEPT;
use serde_json::Value;

use super::http_request::{
    read_body, retry_after_header, send_error, transport_error, url_for_messages,
};
use crate::{ErrorKind, NodeContext, NodeError, egress};
pub(super) use gate::Gates;
use gate::Outcome;
pub(super) use json::{count_at, country_code, linkedin_url, number_at, text_at, texts_at};
pub(super) use reply::Reply;
pub(super) use settings::{Defaults, Settings, Style, parsed, read_settings};
pub(super) use subject::{normalise_domain, normalise_email, normalise_name};

/// One lookup: what to ask the provider, and where its answer is cached.
#[derive(Debug, Clone)]
pub(super) struct Lookup {
    /// The endpoint's path below the base URL, such as `/v2/companies/find`.
    pub(super) path: &'static str,
    /// Query parameters, without the API key.
    pub(super) query: Vec<(&'static str, String)>,
    /// The cache key inside the node's and provider's namespace: the normalised domain or email.
    pub(super) cache_key: String,
}

/// Answers a lookup from the cache or the provider. `map` turns the provider's reply into the
/// node's output (an object without `cached`), or says why the body is not what the API
/// promises. Both answers, found and not found, are cached: the provider bills both.
pub(super) async fn fetch(
    ctx: &NodeContext,
    gates: &Gates,
    settings: &Settings,
    lookup: Lookup,
    map: impl FnOnce(Reply) -> Result<Value, String>,
) -> Result<Value, NodeError> {
    let namespace = format!("{}/{}", settings.node, settings.style.name());
    let caching = !settings.cache_ttl.is_zero();
    let cache = &ctx.services.cache;
    // A cache that fails is skipped rather than failing the attempt: the provider still answers.
    if caching
        && let Ok(Some(hit @ Value::Object(_))) = cache.get(&namespace, &lookup.cache_key).await
    {
        return Ok(with_cached(hit, true));
    }
    let url = endpoint(settings, &lookup);
    let target = format!("{} GET {}", settings.style.name(), url_for_messages(&url));
    let output = call(ctx, gates, settings, url, &target)
        .await
        .and_then(|reply| map(reply).map_err(|why| reply::malformed(&target, &why)))
        .map_err(|error| redact(error, &settings.api_key))?;
    if caching {
        let _ = cache
            .put(&namespace, &lookup.cache_key, &output, settings.cache_ttl)
            .await;
    }
    Ok(with_cached(output, false))
}

fn with_cached(output: Value, cached: bool) -> Value {
    match output {
        Value::Object(mut fields) => {
            fields.insert("cached".into(), Value::Bool(cached));
            Value::Object(fields)
        }
        other => other,
    }
}

fn endpoint(settings: &Settings, lookup: &Lookup) -> Url {
    let mut url = settings.base_url.clone();
    let path = format!("{}{}", url.path().trim_end_matches('/'), lookup.path);
    url.set_path(&path);
    {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in &lookup.query {
            pairs.append_pair(name, value);
        }
        if settings.style == Style::Hunter {
            pairs.append_pair("api_key", &settings.api_key);
        }
    }
    url
}

/// One call through the provider's gate, abandoned when the run is cancelled.
async fn call(
    ctx: &NodeContext,
    gates: &Gates,
    settings: &Settings,
    url: Url,
    target: &str,
) -> Result<Reply, NodeError> {
    let gate = gates.get(settings.base_url.as_str());
    let permit = gate.admit().map_err(|wait| circuit_open(target, wait))?;
    let exchange = async {
        gate.wait_turn(settings.rate_limit).await;
        send(ctx, settings, url, target).await
    };
    let (outcome, reply) = tokio::select! {
        biased;
        () = ctx.cancellation.cancelled() => {
            return Err(NodeError::permanent(
                ErrorKind::Cancelled,
                format!("{target} was cancelled"),
            ));
        }
        result = exchange => result,
    };
    permit.record(outcome);
    reply
}

async fn send(
    ctx: &NodeContext,
    settings: &Settings,
    url: Url,
    target: &str,
) -> (Outcome, Result<Reply, NodeError>) {
    let mut request = ctx
        .http
        .get(url)
        .timeout(settings.timeout)
        .header(ACCEPT, "application/json");
    if settings.style == Style::Clearbit {
        request = request.bearer_auth(&settings.api_key);
    }
    let request = match request.build() {
        Ok(request) => request,
        Err(error) => return (Outcome::Answered, Err(transport_error(target, error))),
    };
    let mut response = match ctx.egress.send(&ctx.http, request).await {
        Ok(response) => response,
        // A refused address says nothing about the provider's health: no mark on its circuit.
        Err(error @ egress::SendError::Refused(_)) => {
            return (Outcome::Answered, Err(send_error(target, error)));
        }
        Err(error) => return (Outcome::Failed, Err(send_error(target, error))),
    };
    let max = ctx.egress.max_response_bytes;
    let status = response.status();
    let retry_after = retry_after_header(response.headers());
    let body = match read_body(&mut response, max).await {
        Ok(body) if body.truncated => {
            let why = format!("the body is larger than {max} bytes");
            let error = reply::malformed(target, &why);
            return (Outcome::Answered, Err(error));
        }
        Ok(body) => body.bytes,
        Err(error) => return (Outcome::Failed, Err(transport_error(target, error))),
    };
    let outcome = if status.is_server_error() {
        Outcome::Failed
    } else {
        Outcome::Answered
    };
    let reply = reply::classify(settings.style, target, status, &body, retry_after);
    (outcome, reply)
}

fn circuit_open(target: &str, wait: Duration) -> NodeError {
    NodeError::retryable(
        ErrorKind::Http,
        format!(
            "{target} not called: the circuit is open after repeated failures of this provider; \
             next try in {}s",
            wait.as_secs_f64().ceil()
        ),
    )
    .with_retry_after(wait)
}

/// Providers may echo the key they were sent (Hunter's is in the URL); it must not reach a
/// stored error.
fn redact(mut error: NodeError, api_key: &str) -> NodeError {
    if !api_key.is_empty() && error.message.contains(api_key) {
        error.message = error.message.replace(api_key, "[redacted]");
    }
    error
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::builtin::config::{Fields, Phase};

    #[test]
    fn appends_the_path_the_query_and_hunters_key_to_the_base_url() {
        let with =
            json!({"provider": "hunter", "base_url": "http://127.0.0.1:9/proxy/", "api_key": "k"});
        let fields = Fields::read(&with, "", "a map").expect("a map");
        let defaults = Defaults {
            node: "enrich.test",
            style: Style::Clearbit,
            clearbit_base_url: "https://company.clearbit.com",
            hunter_base_url: "https://api.hunter.io",
        };
        let settings = read_settings(Phase::Run, &fields, defaults)
            .expect("valid")
            .expect("final");
        let lookup = Lookup {
            path: "/v2/domain-search",
            query: vec![("domain", "a b.com".into())],
            cache_key: "a b.com".into(),
        };
        assert_eq!(
            endpoint(&settings, &lookup).as_str(),
            "http://127.0.0.1:9/proxy/v2/domain-search?domain=a+b.com&api_key=k"
        );
    }

    #[test]
    fn redacts_the_key_from_messages() {
        let error = NodeError::permanent(ErrorKind::Http, "bad key s3cret, s3cret!");
        assert_eq!(
            redact(error, "s3cret").message,
            "bad key [redacted], [redacted]!"
        );
    }

    #[test]
    fn the_circuit_error_says_when_to_come_back() {
        let error = circuit_open("hunter GET http://x/", Duration::from_millis(12_300));
        assert!(error.is_retryable());
        assert_eq!(error.retry_after, Some(Duration::from_millis(12_300)));
        assert!(
            error.message.contains("circuit is open"),
            "{}",
            error.message
        );
        assert!(
            error.message.ends_with("next try in 13s"),
            "{}",
            error.message
        );
    }
}
