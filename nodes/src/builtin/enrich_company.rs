//! `enrich.company`: a company's profile by its domain, from a Clearbit-style API (`GET
//! /v2/companies/find`) or Hunter's domain search, mapped into one output shape. A company the
//! provider does not know is an answer (`found: false`), not an error. Answers are cached; calls
//! go through the provider's rate limiter and circuit breaker ([`super::provider`]). The output is
//! described in `docs/nodes.md`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use super::config::{Fields, Phase, Read, rendered};
use super::provider::{
    self, Defaults, Gates, Lookup, Reply, Settings, Style, count_at, country_code, linkedin_url,
    normalise_domain, number_at, text_at, texts_at,
};
use crate::{ConfigError, Node, NodeContext, NodeError};

/// Looks a company up by domain; its `with` block is the provider settings and `domain`.
#[derive(Debug, Default)]
pub struct EnrichCompany {
    /// Shared by every run in the process, and with the other enrichment node (see
    /// [`super::enrichment_nodes`]), by provider base URL.
    gates: Arc<Gates>,
}

impl EnrichCompany {
    /// The node with rate limiters and circuit breakers shared with another node.
    pub(super) fn with_gates(gates: Arc<Gates>) -> Self {
        Self { gates }
    }
}

const KEYS: [&str; 7] = [
    "domain",
    "provider",
    "base_url",
    "api_key",
    "cache_ttl",
    "timeout",
    "rate_limit",
];

const DEFAULTS: Defaults = Defaults {
    node: "enrich.company",
    style: Style::Clearbit,
    clearbit_base_url: "https://company.clearbit.com",
    hunter_base_url: "https://api.hunter.io",
};

#[async_trait]
impl Node for EnrichCompany {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let (settings, domain) = rendered(read(Phase::Run, &with))?;
        let path = match settings.style {
            Style::Clearbit => "/v2/companies/find",
            Style::Hunter => "/v2/domain-search",
        };
        let lookup = Lookup {
            path,
            query: vec![("domain", domain.clone())],
            cache_key: domain.clone(),
        };
        let style = settings.style;
        let map = |reply| profile(style, &domain, reply);
        provider::fetch(ctx, &self.gates, &settings, lookup, map).await
    }
}

fn read(phase: Phase, with: &Value) -> Read<(Settings, String)> {
    if phase.is_pending(with) {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with the keys `domain` and `api_key`")?;
    fields.only(&KEYS)?;
    let domain = provider::parsed(
        phase,
        fields.required("domain")?,
        &fields.path("domain"),
        normalise_domain,
    )?;
    let settings = provider::read_settings(phase, &fields, DEFAULTS)?;
    Ok(settings.zip(domain))
}

/// The node's output: the same keys whatever the provider and whether it found the company.
#[derive(Debug, Default, Serialize)]
struct Company {
    found: bool,
    provider: &'static str,
    domain: String,
    name: Option<String>,
    description: Option<String>,
    industry: Option<String>,
    employees: Option<u64>,
    employees_range: Option<String>,
    annual_revenue: Option<f64>,
    revenue_range: Option<String>,
    founded_year: Option<u64>,
    country: Option<String>,
    state: Option<String>,
    city: Option<String>,
    linkedin: Option<String>,
    tags: Vec<String>,
    technologies: Vec<String>,
}

/// Maps a reply; `Err` says why a body is not what the provider's API promises.
fn profile(style: Style, domain: &str, reply: Reply) -> Result<Value, String> {
    let company = match (style, reply.record(style)?) {
        (_, None) => not_found(style, domain),
        (Style::Clearbit, Some(body)) => from_clearbit(domain, &body),
        (Style::Hunter, Some(data)) => from_hunter(domain, &data),
    };
    serde_json::to_value(company).map_err(|error| error.to_string())
}

fn not_found(style: Style, domain: &str) -> Company {
    Company {
        provider: style.name(),
        domain: domain.to_owned(),
        ..Company::default()
    }
}

fn from_clearbit(domain: &str, body: &Value) -> Company {
    Company {
        found: true,
        provider: Style::Clearbit.name(),
        domain: domain.to_owned(),
        name: text_at(body, "/name"),
        description: text_at(body, "/description"),
        industry: text_at(body, "/category/industry"),
        employees: count_at(body, "/metrics/employees"),
        employees_range: text_at(body, "/metrics/employeesRange"),
        annual_revenue: number_at(body, "/metrics/annualRevenue"),
        revenue_range: text_at(body, "/metrics/estimatedAnnualRevenue"),
        founded_year: count_at(body, "/foundedYear"),
        country: country_code(text_at(body, "/geo/countryCode")),
        state: text_at(body, "/geo/state"),
        city: text_at(body, "/geo/city"),
        linkedin: linkedin_url(text_at(body, "/linkedin/handle")),
        tags: texts_at(body, "/tags"),
        technologies: texts_at(body, "/tech"),
    }
}

/// Hunter answers an unknown domain with 200 and empty data: no organisation, no addresses.
fn from_hunter(domain: &str, data: &Value) -> Company {
    let name = text_at(data, "/organization");
    let has_emails = data
        .get("emails")
        .and_then(Value::as_array)
        .is_some_and(|emails| !emails.is_empty());
    if name.is_none() && !has_emails {
        return not_found(Style::Hunter, domain);
    }
    Company {
        found: true,
        provider: Style::Hunter.name(),
        domain: domain.to_owned(),
        name,
        description: text_at(data, "/description"),
        industry: text_at(data, "/industry"),
        employees_range: text_at(data, "/headcount"),
        country: country_code(text_at(data, "/country")),
        state: text_at(data, "/state"),
        city: text_at(data, "/city"),
        linkedin: linkedin_url(text_at(data, "/linkedin")),
        technologies: texts_at(data, "/technologies"),
        ..Company::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CLEARBIT: &str = include_str!("../../tests/fixtures/providers/clearbit_company.json");
    const HUNTER: &str = include_str!("../../tests/fixtures/providers/hunter_domain_search.json");
    const HUNTER_EMPTY: &str =
        include_str!("../../tests/fixtures/providers/hunter_domain_search_empty.json");

    fn check(with: Value) -> Result<(), ConfigError> {
        EnrichCompany::default().check_config(&with)
    }

    fn map(style: Style, fixture: &str) -> Value {
        let body = serde_json::from_str(fixture).expect("the fixture is JSON");
        profile(style, "stripe.com", Reply::Found(body)).expect("the body maps")
    }

    #[test]
    fn accepts_literal_and_templated_blocks() {
        let literal = json!({
            "domain": "https://www.Stripe.com/", "api_key": "k", "provider": "hunter",
            "base_url": "http://127.0.0.1:8080", "cache_ttl": "7d", "timeout": "5s",
            "rate_limit": 2,
        });
        assert_eq!(check(literal), Ok(()));
        let templated = json!({
            "domain": "{{ nodes.normalize.output.domain }}",
            "api_key": "{{ secrets.CLEARBIT_API_KEY }}",
        });
        assert_eq!(check(templated), Ok(()));
        assert_eq!(check(json!("{{ inputs.company }}")), Ok(()));
    }

    #[test]
    fn rejects_bad_blocks_at_their_path() {
        let cases = [
            (json!({"api_key": "k"}), "domain"),
            (json!({"domain": "stripe.com"}), "api_key"),
            (
                json!({"domain": "ada@stripe.com", "api_key": "k"}),
                "domain",
            ),
            (json!({"domain": 7, "api_key": "k"}), "domain"),
            (
                json!({"domain": "stripe.com", "api_key": "k", "email": "x"}),
                "email",
            ),
            (
                json!({"domain": "stripe.com", "api_key": "k", "provider": "x"}),
                "provider",
            ),
            (json!(["stripe.com"]), ""),
        ];
        for (with, path) in cases {
            let error = check(with.clone()).expect_err("rejected");
            assert_eq!(error.path, path, "for {with}: {error}");
        }
    }

    #[test]
    fn maps_a_clearbit_company() {
        let company = map(Style::Clearbit, CLEARBIT);
        assert_eq!(
            company,
            json!({
                "found": true, "provider": "clearbit", "domain": "stripe.com", "name": "Stripe",
                "description": "Online payment processing for internet businesses.",
                "industry": "Internet Software & Services", "employees": 7000,
                "employees_range": "5K-10K", "annual_revenue": null, "revenue_range": "$1B-$10B",
                "founded_year": 2010, "country": "US", "state": "California",
                "city": "South San Francisco", "linkedin": "https://www.linkedin.com/company/stripe",
                "tags": ["Technology", "Finance", "Payments", "B2B"],
                "technologies": ["google_apps", "salesforce", "react"],
            })
        );
    }

    #[test]
    fn maps_a_hunter_domain_search() {
        let company = map(Style::Hunter, HUNTER);
        assert_eq!(company["found"], true);
        assert_eq!(company["provider"], "hunter");
        assert_eq!(company["name"], "Stripe");
        assert_eq!(company["industry"], "Financial Services");
        assert_eq!(company["employees"], Value::Null);
        assert_eq!(company["employees_range"], "5001-10000");
        assert_eq!(company["country"], "US");
        assert_eq!(
            company["linkedin"],
            "https://www.linkedin.com/company/stripe"
        );
        assert_eq!(company["technologies"], json!(["stripe", "react"]));
        assert_eq!(company["tags"], json!([]));
    }

    #[test]
    fn empty_hunter_data_and_404_are_not_found_with_the_same_keys() {
        let empty = map(Style::Hunter, HUNTER_EMPTY);
        let missing = profile(Style::Clearbit, "stripe.com", Reply::NotFound).expect("maps");
        let found = map(Style::Clearbit, CLEARBIT);
        for output in [&empty, &missing] {
            assert_eq!(output["found"], false);
            assert_eq!(output["domain"], "stripe.com");
            assert_eq!(output["name"], Value::Null);
            let keys = |value: &Value| {
                value
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
            };
            assert_eq!(keys(output), keys(&found));
        }
    }

    #[test]
    fn hunter_without_data_is_malformed() {
        let error = profile(
            Style::Hunter,
            "stripe.com",
            Reply::Found(json!({"meta": {}})),
        )
        .expect_err("no data");
        assert!(error.contains("`data`"), "{error}");
    }
}
