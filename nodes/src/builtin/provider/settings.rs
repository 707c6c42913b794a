//! Reading the keys every provider node shares: `provider`, `base_url`, `api_key`, `cache_ttl`,
//! `timeout` and `rate_limit`, with their defaults.

use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use crate::ConfigError;
use crate::builtin::config::{Fields, Phase, Read, describe, text};
use crate::builtin::http_request::{parse_timeout, parse_url};

/// Paid answers change slowly; a month keeps a lead that comes back from costing twice.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Long enough for a provider's slow path, short enough to retry a hung connection soon.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests per second: below the documented limits of Clearbit (600/min) and Hunter (15/s).
const DEFAULT_RATE_LIMIT: f64 = 10.0;
const MAX_RATE_LIMIT: f64 = 1000.0;

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::builtin) enum Style {
    /// `GET /v2/companies/find?domain=`, `GET /v2/people/find?email=`; a bearer token.
    Clearbit,
    /// `GET /v2/domain-search`, `/v2/email-finder`, `/v2/email-verifier`; an `api_key` parameter.
    Hunter,
}

impl Style {
    /// The name used in `with.provider`, outputs, cache namespaces and messages.
    pub(in crate::builtin) fn name(self) -> &'static str {
        match self {
            Style::Clearbit => "clearbit",
            Style::Hunter => "hunter",
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "clearbit" => Ok(Style::Clearbit),
            "hunter" => Ok(Style::Hunter),
            other => Err(format!(
                "unknown provider `{other}`; expected clearbit or hunter"
            )),
        }
    }
}

/// What differs between the two nodes when reading the shared keys.
#[derive(Debug, Clone, Copy)]
pub(in crate::builtin) struct Defaults {
    /// The node type, the first part of its cache namespace.
    pub(in crate::builtin) node: &'static str,
    pub(in crate::builtin) style: Style,
    pub(in crate::builtin) clearbit_base_url: &'static str,
    pub(in crate::builtin) hunter_base_url: &'static str,
}

/// Which provider to ask, and how.
#[derive(Debug, Clone)]
pub(in crate::builtin) struct Settings {
    pub(in crate::builtin) node: &'static str,
    pub(in crate::builtin) style: Style,
    /// Without query or fragment; endpoint paths are appended to its path.
    pub(in crate::builtin) base_url: Url,
    pub(in crate::builtin) api_key: String,
    /// Zero turns the cache off.
    pub(in crate::builtin) cache_ttl: Duration,
    pub(in crate::builtin) timeout: Duration,
    /// Requests per second to this provider from this process.
    pub(in crate::builtin) rate_limit: f64,
}

/// Reads the shared keys of `fields`; `Ok(None)` when one of them is still a template.
pub(in crate::builtin) fn read_settings(
    phase: Phase,
    fields: &Fields,
    defaults: Defaults,
) -> Read<Settings> {
    let style = match fields.optional("provider") {
        None => Some(defaults.style),
        Some(value) => parsed(phase, value, &fields.path("provider"), Style::parse)?,
    };
    let base_url = match (fields.optional("base_url"), style) {
        (Some(value), _) => parsed(phase, value, &fields.path("base_url"), parse_base_url)?,
        (None, Some(Style::Clearbit)) => parse_base_url(defaults.clearbit_base_url).ok(),
        (None, Some(Style::Hunter)) => parse_base_url(defaults.hunter_base_url).ok(),
        (None, None) => None,
    };
    let api_key = parsed(
        phase,
        fields.required("api_key")?,
        &fields.path("api_key"),
        parse_api_key,
    )?;
    let cache_ttl = optional(phase, fields, "cache_ttl", DEFAULT_CACHE_TTL, parse_ttl)?;
    let timeout = optional(phase, fields, "timeout", DEFAULT_TIMEOUT, parse_timeout)?;
    let rate_limit = match fields.optional("rate_limit") {
        None => Some(DEFAULT_RATE_LIMIT),
        Some(value) => read_rate_limit(phase, value, &fields.path("rate_limit"))?,
    };
    let (
        Some(style),
        Some(base_url),
        Some(api_key),
        Some(cache_ttl),
        Some(timeout),
        Some(rate_limit),
    ) = (style, base_url, api_key, cache_ttl, timeout, rate_limit)
    else {
        return Ok(None);
    };
    Ok(Some(Settings {
        node: defaults.node,
        style,
        base_url,
        api_key,
        cache_ttl,
        timeout,
        rate_limit,
    }))
}

/// A string read with `parse`, or a pending template.
pub(in crate::builtin) fn parsed<T>(
    phase: Phase,
    value: &Value,
    path: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Read<T> {
    let Some(text) = text(phase, value, path)? else {
        return Ok(None);
    };
    parse(text)
        .map(Some)
        .map_err(|message| ConfigError::new(path, message))
}

fn optional<T>(
    phase: Phase,
    fields: &Fields,
    key: &str,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Read<T> {
    match fields.optional(key) {
        None => Ok(Some(default)),
        Some(value) => parsed(phase, value, &fields.path(key), parse),
    }
}

fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = parse_url(text)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the base URL cannot carry a query string or fragment".into());
    }
    Ok(url)
}

/// Never quotes the key: a message is stored and shown.
fn parse_api_key(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("the API key is empty; is its secret defined?".into());
    }
    Ok(text.trim().to_owned())
}

/// The longest `cache_ttl`: a year is already longer than any enrichment stays true.
const MAX_CACHE_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not a duration such as `7d`: {error}"))?;
    if ttl > MAX_CACHE_TTL {
        return Err(format!(
            "`{text}` is longer than the most allowed, 365 days"
        ));
    }
    Ok(ttl)
}

fn read_rate_limit(phase: Phase, value: &Value, path: &str) -> Read<f64> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    match value.as_f64() {
        Some(rate) if rate > 0.0 && rate <= MAX_RATE_LIMIT => Ok(Some(rate)),
        _ => Err(ConfigError::new(
            path,
            format!(
                "expected requests per second above 0 and at most {MAX_RATE_LIMIT}, found {}",
                describe(value)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DEFAULTS: Defaults = Defaults {
        node: "enrich.test",
        style: Style::Clearbit,
        clearbit_base_url: "https://company.clearbit.com",
        hunter_base_url: "https://api.hunter.io",
    };

    fn read(phase: Phase, with: Value) -> Read<Settings> {
        let fields = Fields::read(&with, "", "a map").expect("a map");
        read_settings(phase, &fields, DEFAULTS)
    }

    fn error_path(with: Value) -> String {
        read(Phase::Load, with).expect_err("rejected").path
    }

    #[test]
    fn defaults_fill_what_is_absent() {
        let settings = read(Phase::Run, json!({"api_key": " k "}))
            .expect("valid")
            .expect("final");
        assert_eq!(settings.style, Style::Clearbit);
        assert_eq!(settings.base_url.as_str(), "https://company.clearbit.com/");
        assert_eq!(settings.api_key, "k");
        assert_eq!(settings.cache_ttl, DEFAULT_CACHE_TTL);
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.rate_limit, DEFAULT_RATE_LIMIT);
        let hunter = read(Phase::Run, json!({"api_key": "k", "provider": "hunter"}))
            .expect("valid")
            .expect("final");
        assert_eq!(hunter.base_url.as_str(), "https://api.hunter.io/");
    }

    #[test]
    fn reads_every_key() {
        let with = json!({
            "provider": "hunter", "base_url": "http://127.0.0.1:9/proxy/", "api_key": "k",
            "cache_ttl": "0s", "timeout": "250ms", "rate_limit": 0.5,
        });
        let settings = read(Phase::Run, with).expect("valid").expect("final");
        assert_eq!(settings.cache_ttl, Duration::ZERO);
        assert_eq!(settings.timeout, Duration::from_millis(250));
        assert_eq!(settings.rate_limit, 0.5);
    }

    #[test]
    fn templates_wait_for_the_run() {
        let with = json!({
            "provider": "{{ inputs.provider }}", "api_key": "{{ secrets.KEY }}",
            "cache_ttl": "{{ inputs.ttl }}", "timeout": "{{ inputs.t }}", "rate_limit": "{{ r }}",
        });
        assert_eq!(read(Phase::Load, with).expect("valid").map(drop), None);
    }

    #[test]
    fn bad_values_are_located() {
        let cases = [
            (json!({}), "api_key"),
            (json!({"api_key": ""}), "api_key"),
            (json!({"api_key": 7}), "api_key"),
            (json!({"api_key": "k", "provider": "zoominfo"}), "provider"),
            (json!({"api_key": "k", "base_url": "ftp://x"}), "base_url"),
            (
                json!({"api_key": "k", "base_url": "http://x/?a=1"}),
                "base_url",
            ),
            (json!({"api_key": "k", "cache_ttl": "forever"}), "cache_ttl"),
            (
                json!({"api_key": "k", "cache_ttl": "10000000years"}),
                "cache_ttl",
            ),
            (
                json!({"api_key": "k", "timeout": "10000000years"}),
                "timeout",
            ),
            (json!({"api_key": "k", "timeout": "0s"}), "timeout"),
            (json!({"api_key": "k", "rate_limit": 0}), "rate_limit"),
            (json!({"api_key": "k", "rate_limit": "10"}), "rate_limit"),
        ];
        for (with, path) in cases {
            assert_eq!(error_path(with.clone()), path, "for {with}");
        }
    }
}
