//! `enrich.person`: a person by email address (Clearbit-style `GET /v2/people/find`, or Hunter's
//! email verifier), or the most likely address of a name at a domain (Hunter's email finder),
//! mapped into one output shape with the address's verification status. A person the provider
//! does not know is an answer (`found: false`), not an error. Caching, rate limiting and the
//! circuit breaker are [`super::provider`]'s. The output is described in `docs/nodes.md`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use super::config::{Fields, Phase, Read, rendered};
use super::provider::{
    self, Defaults, Gates, Lookup, Reply, Settings, Style, count_at, country_code, linkedin_url,
    normalise_domain, normalise_email, normalise_name, text_at,
};
use crate::{ConfigError, Node, NodeContext, NodeError};

/// Looks a person up; its `with` block is the provider settings and either `email`, or
/// `first_name`, `last_name` and `domain`.
#[derive(Debug, Default)]
pub struct EnrichPerson {
    /// Shared by every run in the process, and with the other enrichment node (see
    /// [`super::enrichment_nodes`]), by provider base URL.
    gates: Arc<Gates>,
}

impl EnrichPerson {
    /// The node with rate limiters and circuit breakers shared with another node.
    pub(super) fn with_gates(gates: Arc<Gates>) -> Self {
        Self { gates }
    }
}

const KEYS: [&str; 10] = [
    "email",
    "first_name",
    "last_name",
    "domain",
    "provider",
    "base_url",
    "api_key",
    "cache_ttl",
    "timeout",
    "rate_limit",
];

const NAME_KEYS: [&str; 3] = ["first_name", "last_name", "domain"];

const DEFAULTS: Defaults = Defaults {
    node: "enrich.person",
    style: Style::Hunter,
    clearbit_base_url: "https://person.clearbit.com",
    hunter_base_url: "https://api.hunter.io",
};

/// Who to look up, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Email(String),
    Name {
        first_name: String,
        last_name: String,
        domain: String,
    },
}

#[async_trait]
impl Node for EnrichPerson {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let (settings, subject) = rendered(read(Phase::Run, &with))?;
        let lookup = lookup(settings.style, &subject);
        let style = settings.style;
        let map = |reply| person(style, &subject, reply);
        provider::fetch(ctx, &self.gates, &settings, lookup, map).await
    }
}

fn lookup(style: Style, subject: &Subject) -> Lookup {
    match subject {
        Subject::Email(email) => Lookup {
            path: match style {
                Style::Clearbit => "/v2/people/find",
                Style::Hunter => "/v2/email-verifier",
            },
            query: vec![("email", email.clone())],
            cache_key: format!("email:{email}"),
        },
        Subject::Name {
            first_name,
            last_name,
            domain,
        } => Lookup {
            path: "/v2/email-finder",
            query: vec![
                ("domain", domain.clone()),
                ("first_name", first_name.clone()),
                ("last_name", last_name.clone()),
            ],
            // JSON quoting keeps names that contain separators apart.
            cache_key: format!(
                "name:{}",
                Value::from(vec![
                    domain.clone(),
                    first_name.to_lowercase(),
                    last_name.to_lowercase()
                ])
            ),
        },
    }
}

fn read(phase: Phase, with: &Value) -> Read<(Settings, Subject)> {
    if phase.is_pending(with) {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with the keys `email` and `api_key`")?;
    fields.only(&KEYS)?;
    let subject = read_subject(phase, &fields)?;
    let settings = provider::read_settings(phase, &fields, DEFAULTS)?;
    if let (Some(settings), Some(Subject::Name { .. })) = (&settings, &subject)
        && settings.style == Style::Clearbit
    {
        return Err(ConfigError::new(
            fields.path("provider"),
            "clearbit looks people up by `email` only; use provider hunter to find an address \
             from `first_name`, `last_name` and `domain`",
        ));
    }
    Ok(settings.zip(subject))
}

fn read_subject(phase: Phase, fields: &Fields) -> Read<Subject> {
    let name_key = NAME_KEYS.iter().find(|key| fields.optional(key).is_some());
    let read = |key: &str, parse: fn(&str) -> Result<String, String>| -> Read<String> {
        provider::parsed(phase, fields.required(key)?, &fields.path(key), parse)
    };
    match (fields.optional("email"), name_key) {
        (Some(_), Some(key)) => Err(ConfigError::new(
            fields.path(key),
            "give either `email`, or `first_name`, `last_name` and `domain`, not both",
        )),
        (Some(_), None) => Ok(read("email", normalise_email)?.map(Subject::Email)),
        (None, Some(_)) => {
            let first_name = read("first_name", normalise_name)?;
            let last_name = read("last_name", normalise_name)?;
            let domain = read("domain", normalise_domain)?;
            let (Some(first_name), Some(last_name), Some(domain)) = (first_name, last_name, domain)
            else {
                return Ok(None);
            };
            Ok(Some(Subject::Name {
                first_name,
                last_name,
                domain,
            }))
        }
        (None, None) => Err(ConfigError::new(
            fields.path("email"),
            "missing required key `email` (or `first_name`, `last_name` and `domain`)",
        )),
    }
}

/// The node's output: the same keys whatever the provider and whether it found the person.
#[derive(Debug, Default, Serialize)]
struct Person {
    found: bool,
    provider: &'static str,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    full_name: Option<String>,
    title: Option<String>,
    seniority: Option<String>,
    company_name: Option<String>,
    company_domain: Option<String>,
    linkedin: Option<String>,
    country: Option<String>,
    /// Hunter's verification status: valid, invalid, accept_all, webmail, disposable, unknown.
    verification: Option<String>,
    /// True for `valid`, false for `invalid`, unknown otherwise.
    deliverable: Option<bool>,
    /// Hunter's confidence, 0–100.
    score: Option<u64>,
}

/// Maps a reply; `Err` says why a body is not what the provider's API promises.
fn person(style: Style, subject: &Subject, reply: Reply) -> Result<Value, String> {
    let person = match (style, reply.record(style)?) {
        (_, None) => not_found(style, subject),
        (Style::Clearbit, Some(body)) => from_clearbit(subject, &body),
        (Style::Hunter, Some(data)) => match subject {
            Subject::Email(_) => from_hunter_verifier(subject, &data),
            Subject::Name { .. } => from_hunter_finder(subject, &data),
        },
    };
    serde_json::to_value(person).map_err(|error| error.to_string())
}

/// What was asked, so that a miss still says who was looked for.
fn not_found(style: Style, subject: &Subject) -> Person {
    let asked = match subject {
        Subject::Email(email) => Person {
            email: Some(email.clone()),
            ..Person::default()
        },
        Subject::Name {
            first_name,
            last_name,
            domain,
        } => Person {
            first_name: Some(first_name.clone()),
            last_name: Some(last_name.clone()),
            full_name: Some(format!("{first_name} {last_name}")),
            company_domain: Some(domain.clone()),
            ..Person::default()
        },
    };
    Person {
        provider: style.name(),
        ..asked
    }
}

fn from_clearbit(subject: &Subject, body: &Value) -> Person {
    Person {
        found: true,
        provider: Style::Clearbit.name(),
        email: text_at(body, "/email").or_else(|| asked_email(subject)),
        first_name: text_at(body, "/name/givenName"),
        last_name: text_at(body, "/name/familyName"),
        full_name: text_at(body, "/name/fullName"),
        title: text_at(body, "/employment/title"),
        seniority: text_at(body, "/employment/seniority"),
        company_name: text_at(body, "/employment/name"),
        company_domain: text_at(body, "/employment/domain"),
        linkedin: linkedin_url(text_at(body, "/linkedin/handle")),
        country: country_code(text_at(body, "/geo/countryCode")),
        ..Person::default()
    }
}

/// The verifier always answers about the address; `found` says it did.
fn from_hunter_verifier(subject: &Subject, data: &Value) -> Person {
    let verification = text_at(data, "/status");
    Person {
        found: true,
        provider: Style::Hunter.name(),
        email: text_at(data, "/email").or_else(|| asked_email(subject)),
        deliverable: deliverable(verification.as_deref())
            .or_else(|| deliverable_result(text_at(data, "/result").as_deref())),
        verification,
        score: count_at(data, "/score"),
        ..Person::default()
    }
}

/// The finder answers 200 with a null `email` when it has no guess.
fn from_hunter_finder(subject: &Subject, data: &Value) -> Person {
    let Some(email) = text_at(data, "/email") else {
        return not_found(Style::Hunter, subject);
    };
    let first_name = text_at(data, "/first_name");
    let last_name = text_at(data, "/last_name");
    let full_name = match (&first_name, &last_name) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (first, last) => first.clone().or_else(|| last.clone()),
    };
    let verification = text_at(data, "/verification/status");
    Person {
        found: true,
        provider: Style::Hunter.name(),
        email: Some(email.to_lowercase()),
        first_name,
        last_name,
        full_name,
        title: text_at(data, "/position"),
        seniority: text_at(data, "/seniority"),
        company_name: text_at(data, "/company"),
        company_domain: text_at(data, "/domain"),
        linkedin: linkedin_url(text_at(data, "/linkedin_url")),
        deliverable: deliverable(verification.as_deref()),
        verification,
        score: count_at(data, "/score"),
        ..Person::default()
    }
}

fn asked_email(subject: &Subject) -> Option<String> {
    match subject {
        Subject::Email(email) => Some(email.clone()),
        Subject::Name { .. } => None,
    }
}

/// Only `valid` and `invalid` are firm; `accept_all`, `webmail`, `disposable` and `unknown`
/// servers accept or hide mail for any address.
fn deliverable(status: Option<&str>) -> Option<bool> {
    match status {
        Some("valid") => Some(true),
        Some("invalid") => Some(false),
        _ => None,
    }
}

/// The verifier's older `result` field, used when `status` is absent.
fn deliverable_result(result: Option<&str>) -> Option<bool> {
    match result {
        Some("deliverable") => Some(true),
        Some("undeliverable") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CLEARBIT: &str = include_str!("../../tests/fixtures/providers/clearbit_person.json");
    const FINDER: &str = include_str!("../../tests/fixtures/providers/hunter_email_finder.json");
    const FINDER_EMPTY: &str =
        include_str!("../../tests/fixtures/providers/hunter_email_finder_empty.json");
    const VERIFIER: &str =
        include_str!("../../tests/fixtures/providers/hunter_email_verifier.json");

    fn check(with: Value) -> Result<(), ConfigError> {
        EnrichPerson::default().check_config(&with)
    }

    fn by_email() -> Subject {
        Subject::Email("patrick@stripe.com".into())
    }

    fn by_name() -> Subject {
        Subject::Name {
            first_name: "Patrick".into(),
            last_name: "Collison".into(),
            domain: "stripe.com".into(),
        }
    }

    fn map(style: Style, subject: &Subject, fixture: &str) -> Value {
        let body = serde_json::from_str(fixture).expect("the fixture is JSON");
        person(style, subject, Reply::Found(body)).expect("the body maps")
    }

    #[test]
    fn accepts_either_an_email_or_a_name_at_a_domain() {
        let cases = [
            json!({"email": "{{ trigger.body.email }}", "api_key": "{{ secrets.HUNTER_API_KEY }}"}),
            json!({"email": "Ada@Stripe.com", "api_key": "k", "provider": "clearbit"}),
            json!({"first_name": "Ada", "last_name": "{{ x }}", "domain": "stripe.com", "api_key": "k"}),
            json!({"first_name": "Ada", "last_name": "L", "domain": "x.io", "api_key": "k", "provider": "{{ p }}"}),
        ];
        for with in cases {
            assert_eq!(check(with.clone()), Ok(()), "for {with}");
        }
    }

    #[test]
    fn rejects_bad_blocks_at_their_path() {
        let cases = [
            (json!({"api_key": "k"}), "email"),
            (
                json!({"email": "a@b.co", "first_name": "A", "api_key": "k"}),
                "first_name",
            ),
            (
                json!({"first_name": "A", "domain": "b.co", "api_key": "k"}),
                "last_name",
            ),
            (
                json!({"first_name": "A", "last_name": " ", "domain": "b.co", "api_key": "k"}),
                "last_name",
            ),
            (json!({"email": "not-an-email", "api_key": "k"}), "email"),
            (json!({"email": "a@b.co"}), "api_key"),
            (
                json!({"email": "a@b.co", "api_key": "k", "company": "x"}),
                "company",
            ),
            (
                json!({"first_name": "A", "last_name": "B", "domain": "b.co", "api_key": "k", "provider": "clearbit"}),
                "provider",
            ),
        ];
        for (with, path) in cases {
            let error = check(with.clone()).expect_err("rejected");
            assert_eq!(error.path, path, "for {with}: {error}");
        }
    }

    #[test]
    fn builds_one_request_per_subject() {
        let verifier = lookup(Style::Hunter, &by_email());
        assert_eq!(verifier.path, "/v2/email-verifier");
        assert_eq!(verifier.cache_key, "email:patrick@stripe.com");
        assert_eq!(lookup(Style::Clearbit, &by_email()).path, "/v2/people/find");
        let finder = lookup(Style::Hunter, &by_name());
        assert_eq!(finder.path, "/v2/email-finder");
        assert_eq!(
            finder.cache_key,
            r#"name:["stripe.com","patrick","collison"]"#
        );
    }

    #[test]
    fn maps_a_clearbit_person() {
        let subject = Subject::Email("ada@stripe.com".into());
        assert_eq!(
            map(Style::Clearbit, &subject, CLEARBIT),
            json!({
                "found": true, "provider": "clearbit", "email": "ada@stripe.com",
                "first_name": "Ada", "last_name": "Lovelace", "full_name": "Ada Lovelace",
                "title": "Head of Engineering", "seniority": "director", "company_name": "Stripe",
                "company_domain": "stripe.com",
                "linkedin": "https://www.linkedin.com/in/ada-lovelace", "country": "GB",
                "verification": null, "deliverable": null, "score": null,
            })
        );
    }

    #[test]
    fn maps_hunters_finder_and_verifier() {
        let found = map(Style::Hunter, &by_name(), FINDER);
        assert_eq!(found["found"], true);
        assert_eq!(found["email"], "patrick@stripe.com");
        assert_eq!(found["full_name"], "Patrick Collison");
        assert_eq!(found["title"], "CEO");
        assert_eq!(found["company_name"], "Stripe");
        assert_eq!(
            found["linkedin"],
            "https://www.linkedin.com/in/patrickcollison"
        );
        assert_eq!(found["verification"], "valid");
        assert_eq!(found["deliverable"], true);
        assert_eq!(found["score"], 97);

        let verified = map(Style::Hunter, &by_email(), VERIFIER);
        assert_eq!(verified["found"], true);
        assert_eq!(verified["email"], "patrick@stripe.com");
        assert_eq!(verified["verification"], "valid");
        assert_eq!(verified["deliverable"], true);
        assert_eq!(verified["score"], 100);
        assert_eq!(verified["first_name"], Value::Null);
    }

    #[test]
    fn misses_say_who_was_looked_for() {
        let empty = map(Style::Hunter, &by_name(), FINDER_EMPTY);
        assert_eq!(empty["found"], false);
        assert_eq!(empty["email"], Value::Null);
        assert_eq!(empty["full_name"], "Patrick Collison");
        assert_eq!(empty["company_domain"], "stripe.com");
        let missing = person(Style::Clearbit, &by_email(), Reply::NotFound).expect("maps");
        assert_eq!(missing["found"], false);
        assert_eq!(missing["provider"], "clearbit");
        assert_eq!(missing["email"], "patrick@stripe.com");
        assert_eq!(missing.as_object().map(|o| o.len()), Some(15));
    }

    #[test]
    fn only_firm_statuses_decide_deliverability() {
        assert_eq!(deliverable(Some("valid")), Some(true));
        assert_eq!(deliverable(Some("invalid")), Some(false));
        assert_eq!(deliverable(Some("accept_all")), None);
        assert_eq!(deliverable(None), None);
        assert_eq!(deliverable_result(Some("undeliverable")), Some(false));
    }
}
