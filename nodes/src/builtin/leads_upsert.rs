//! `leads.upsert`: writes a lead into the engine's database — its organisation (by domain),
//! its contact (by email), the lead itself and, when given, its score — and outputs the ids.
//!
//! ```yaml
//! with:
//!   email: "{{ nodes.normalize.output.email }}"
//!   first_name: "{{ trigger.body.first_name | default(none) }}"
//!   company: "{{ nodes.company.output }}"
//!   source: webhook
//!   tags: [inbound]
//!   score: "{{ nodes.score.output }}"
//! ```
//!
//! The email and domains are normalised exactly as `enrich.email` does, so one person is one
//! contact however the address was typed. No organisation is kept for a free-mail domain.
//! Values that are absent, null or blank leave what is stored untouched. See `docs/nodes.md`.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::config::{Fields, Phase, Read, at_index, describe, join, number, rendered};
use super::enrich_email::{ascii_domain, is_free_mail, parse};
use crate::leads::{ContactFields, LeadScore, LeadUpsert, OrganizationFields};
use crate::{ConfigError, ErrorKind, Node, NodeContext, NodeError};

/// Writes a lead into the lead store; its `with` block is described in `docs/nodes.md`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeadsUpsert;

const KEYS: [&str; 10] = [
    "email",
    "first_name",
    "last_name",
    "title",
    "company",
    "domain",
    "source",
    "status",
    "tags",
    "score",
];
/// Keys of `company` with a column of their own; any other key is kept in its `data`.
const COMPANY_COLUMNS: [&str; 7] = [
    "domain",
    "name",
    "industry",
    "employees",
    "revenue",
    "annual_revenue",
    "country",
];
const SCORE_KEYS: [&str; 3] = ["total", "tier", "breakdown"];

#[async_trait]
impl Node for LeadsUpsert {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let mut lead = rendered(read(Phase::Run, &with))?;
        lead.run_id = ctx.run_id.clone();
        let upserted = ctx
            .services
            .leads
            .upsert_lead(&lead)
            .await
            .map_err(|error| {
                // The database may be back for the next attempt; the data will be the same.
                NodeError::retryable(ErrorKind::Node, format!("storing the lead failed: {error}"))
            })?;
        Ok(json!({
            "lead_id": upserted.lead_id,
            "contact_id": upserted.contact_id,
            "organization_id": upserted.organization_id,
            "created": upserted.created,
        }))
    }
}

/// Reads values of one phase, remembering whether any was a template still to be rendered.
struct Reader {
    phase: Phase,
    pending: bool,
}

impl Reader {
    /// Whether `value` is pending (and so accepted as it is); remembers it.
    fn pending(&mut self, value: &Value) -> bool {
        let pending = self.phase.is_pending(value);
        self.pending |= pending;
        pending
    }

    /// An optional string; blank text counts as absent, so an empty form field never
    /// overwrites what is stored.
    fn text(&mut self, value: Option<&Value>, path: &str) -> Result<Option<String>, ConfigError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(value) if self.pending(value) => Ok(None),
            Some(Value::String(text)) => {
                Ok(Some(text.trim().to_owned()).filter(|text| !text.is_empty()))
            }
            Some(other) => Err(ConfigError::new(
                path,
                format!("expected a string, found {}", describe(other)),
            )),
        }
    }

    /// An optional number.
    fn number(&mut self, value: Option<&Value>, path: &str) -> Result<Option<f64>, ConfigError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(value) if self.pending(value) => Ok(None),
            Some(value) => number(value, path).map(Some),
        }
    }
}

/// The `with` block as a lead to upsert (its `run_id` is left empty for the caller).
fn read(phase: Phase, with: &Value) -> Read<LeadUpsert> {
    let mut reader = Reader {
        phase,
        pending: phase.is_pending(with),
    };
    if reader.pending {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with at least the key `email`")?;
    fields.only(&KEYS)?;
    let (email, email_domain) = read_email(&mut reader, fields.required("email")?)?;
    let contact = ContactFields {
        first_name: reader.text(fields.optional("first_name"), "first_name")?,
        last_name: reader.text(fields.optional("last_name"), "last_name")?,
        title: reader.text(fields.optional("title"), "title")?,
        data: Map::new(),
    };
    let domain = read_domain(&mut reader, fields.optional("domain"), "domain")?;
    let company = read_company(&mut reader, fields.optional("company"))?;
    let organization = company.and_then(|company| {
        let given = Some(company.domain.clone()).filter(|domain| !domain.is_empty());
        let domain = given.or(domain).or(email_domain)?;
        let organization = OrganizationFields { domain, ..company };
        // A free-mail domain names a mailbox provider, not the lead's employer.
        (!is_free_mail(&organization.domain)).then_some(organization)
    });
    let lead = LeadUpsert {
        email,
        contact,
        organization,
        source: reader.text(fields.optional("source"), "source")?,
        status: reader.text(fields.optional("status"), "status")?,
        tags: read_tags(&mut reader, fields.optional("tags"))?,
        score: read_score(&mut reader, fields.optional("score"))?,
        run_id: String::new(),
    };
    Ok((!reader.pending).then_some(lead))
}

/// The normalised address and its domain (both empty while pending).
fn read_email(reader: &mut Reader, value: &Value) -> Result<(String, Option<String>), ConfigError> {
    if reader.pending(value) {
        return Ok((String::new(), None));
    }
    let Value::String(text) = value else {
        return Err(ConfigError::new(
            "email",
            format!("expected an email address, found {}", describe(value)),
        ));
    };
    let address = parse(text.trim()).map_err(|reason| {
        ConfigError::new(
            "email",
            format!(
                "`{}` is not a valid email address ({})",
                text.trim(),
                reason.code()
            ),
        )
    })?;
    let email = format!("{}@{}", address.local, address.domain);
    Ok((email, Some(address.domain)))
}

fn read_domain(
    reader: &mut Reader,
    value: Option<&Value>,
    path: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(text) = reader.text(value, path)? else {
        return Ok(None);
    };
    let domain = ascii_domain(&text.to_lowercase()).map_err(|reason| {
        ConfigError::new(
            path,
            format!("`{text}` is not a domain name ({})", reason.code()),
        )
    })?;
    Ok(Some(domain))
}

/// The organisation's fields, with an empty domain when `company` gives none; `None` while
/// `company` is a template. Without `company`, the organisation is the domain alone.
fn read_company(
    reader: &mut Reader,
    value: Option<&Value>,
) -> Result<Option<OrganizationFields>, ConfigError> {
    match value {
        None | Some(Value::Null) => Ok(Some(OrganizationFields::default())),
        Some(value) if reader.pending(value) => Ok(None),
        Some(value) => {
            let fields = Fields::read(value, "company", "a map of company fields")?;
            read_company_fields(reader, &fields).map(Some)
        }
    }
}

fn read_company_fields(
    reader: &mut Reader,
    fields: &Fields<'_>,
) -> Result<OrganizationFields, ConfigError> {
    let path = |key: &str| join("company", key);
    let employees = reader.number(fields.optional("employees"), &path("employees"))?;
    if let Some(employees) = employees
        && (employees.fract() != 0.0 || employees < 0.0)
    {
        return Err(ConfigError::new(
            path("employees"),
            format!("expected a whole number of people, found {employees}"),
        ));
    }
    let revenue = match reader.number(fields.optional("revenue"), &path("revenue"))? {
        Some(revenue) => Some(revenue),
        None => reader.number(fields.optional("annual_revenue"), &path("annual_revenue"))?,
    };
    let data = fields
        .iter()
        .filter(|(key, value)| !COMPANY_COLUMNS.contains(&key.as_str()) && !value.is_null())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok(OrganizationFields {
        domain: read_domain(reader, fields.optional("domain"), &path("domain"))?
            .unwrap_or_default(),
        name: reader.text(fields.optional("name"), &path("name"))?,
        industry: reader.text(fields.optional("industry"), &path("industry"))?,
        employees: employees.map(|employees| employees as i64),
        revenue,
        country: reader.text(fields.optional("country"), &path("country"))?,
        data,
    })
}

fn read_tags(reader: &mut Reader, value: Option<&Value>) -> Result<Vec<String>, ConfigError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(value) if reader.pending(value) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ConfigError::new(
                "tags",
                format!("expected a list of strings, found {}", describe(other)),
            ));
        }
    };
    let mut tags = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if let Some(tag) = reader.text(Some(item), &at_index("tags", index))? {
            tags.push(tag);
        }
    }
    Ok(tags)
}

fn read_score(
    reader: &mut Reader,
    value: Option<&Value>,
) -> Result<Option<LeadScore>, ConfigError> {
    let value = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(value) if reader.pending(value) => return Ok(None),
        Some(value) => value,
    };
    let fields = Fields::read(value, "score", "a score such as `score.weighted` outputs")?;
    fields.only(&SCORE_KEYS)?;
    let total = fields.required("total")?;
    if total.is_null() {
        return Err(ConfigError::new(
            "score.total",
            "expected a number, found null",
        ));
    }
    let total = reader.number(Some(total), "score.total")?;
    let tier = reader.text(fields.optional("tier"), "score.tier")?;
    let breakdown = fields.optional("breakdown").cloned().unwrap_or(Value::Null);
    Ok(total.map(|total| LeadScore {
        total,
        tier,
        breakdown,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use crate::leads::{LeadStore, UpsertedLead};
    use crate::{ServiceError, Services};

    use super::*;
    use crate::builtin::testing::context;

    /// Remembers what it was asked to store; fails when `fail` is set.
    #[derive(Default)]
    struct Recorder {
        leads: Mutex<Vec<LeadUpsert>>,
        fail: bool,
    }

    #[async_trait]
    impl LeadStore for Recorder {
        async fn upsert_lead(&self, lead: &LeadUpsert) -> Result<UpsertedLead, ServiceError> {
            if self.fail {
                return Err(ServiceError("connection refused".into()));
            }
            self.leads.lock().expect("not poisoned").push(lead.clone());
            Ok(UpsertedLead {
                lead_id: "l1".into(),
                contact_id: "c1".into(),
                organization_id: lead.organization.as_ref().map(|_| "o1".into()),
                created: true,
            })
        }
    }

    async fn upsert(with: Value) -> (Result<Value, NodeError>, Vec<LeadUpsert>) {
        let recorder = Arc::new(Recorder::default());
        let mut ctx = context();
        ctx.services = Services {
            leads: recorder.clone(),
            ..Services::local()
        };
        let output = LeadsUpsert.execute(&ctx, with).await;
        let leads = recorder.leads.lock().expect("not poisoned").clone();
        (output, leads)
    }

    #[tokio::test]
    async fn normalises_and_maps_a_full_lead() {
        let (output, leads) = upsert(json!({
            "email": "  Ada.Lovelace@Analytical-Engines.DE ",
            "first_name": "Ada", "last_name": " ", "title": null,
            "company": {
                "domain": "Analytical-Engines.de", "name": "Analytical Engines",
                "employees": 250, "annual_revenue": 1.5e6, "country": "DE",
                "founded_year": 1843, "city": null,
            },
            "source": "webhook",
            "tags": ["inbound", ""],
            "score": {"total": 81.5, "tier": "hot", "breakdown": {"ml": {"score": 80}}},
        }))
        .await;
        let output = output.expect("an output");
        assert_eq!(
            output,
            json!({"lead_id": "l1", "contact_id": "c1", "organization_id": "o1", "created": true})
        );
        let lead = &leads[0];
        assert_eq!(lead.email, "ada.lovelace@analytical-engines.de");
        assert_eq!(lead.run_id, "run");
        assert_eq!(lead.contact.first_name.as_deref(), Some("Ada"));
        assert_eq!(lead.contact.last_name, None);
        let organization = lead.organization.as_ref().expect("an organization");
        assert_eq!(organization.domain, "analytical-engines.de");
        assert_eq!(organization.employees, Some(250));
        assert_eq!(organization.revenue, Some(1.5e6));
        assert_eq!(
            Value::Object(organization.data.clone()),
            json!({"founded_year": 1843})
        );
        assert_eq!(
            (lead.status.as_deref(), lead.tags.clone()),
            (None, vec!["inbound".into()])
        );
        let score = lead.score.as_ref().expect("a score");
        assert_eq!((score.total, score.tier.as_deref()), (81.5, Some("hot")));
    }

    #[tokio::test]
    async fn the_organisation_comes_from_the_email_unless_it_is_free_mail() {
        let (_, leads) = upsert(json!({"email": "bob@Acme.com"})).await;
        let organization = leads[0].organization.as_ref().expect("an organization");
        assert_eq!(organization.domain, "acme.com");
        let (_, leads) = upsert(json!({"email": "bob@acme.com", "domain": "acme.io"})).await;
        let organization = leads[0].organization.as_ref().expect("an organization");
        assert_eq!(organization.domain, "acme.io");
        let (output, leads) = upsert(json!({"email": "bob@gmail.com", "score": null})).await;
        assert_eq!(leads[0].organization, None);
        assert_eq!(output.expect("an output")["organization_id"], Value::Null);
        let with = json!({"email": "bob@gmail.com", "company": {"name": "Acme"}});
        let (_, leads) = upsert(with).await;
        assert_eq!(leads[0].organization, None, "no domain to key it by");
    }

    #[tokio::test]
    async fn an_invalid_address_fails_for_good() {
        let (output, leads) = upsert(json!({"email": "ada at example.com"})).await;
        let error = output.expect_err("not an address");
        assert!(!error.is_retryable());
        assert_eq!(error.kind, ErrorKind::Config);
        assert_eq!(
            error.message,
            "`with.email`: `ada at example.com` is not a valid email address (missing_at)"
        );
        assert!(leads.is_empty());
    }

    #[tokio::test]
    async fn a_store_failure_is_retried() {
        let mut ctx = context();
        ctx.services = Services {
            leads: Arc::new(Recorder {
                fail: true,
                ..Recorder::default()
            }),
            ..Services::local()
        };
        let error = LeadsUpsert
            .execute(&ctx, json!({"email": "ada@acme.com"}))
            .await
            .expect_err("the store fails");
        assert!(error.is_retryable());
        assert_eq!(error.message, "storing the lead failed: connection refused");
    }

    #[test]
    fn check_config_accepts_templates_and_names_bad_keys() {
        for with in [
            json!({"email": "{{ trigger.body.email }}"}),
            json!({"email": "{{ x }}", "company": "{{ nodes.company.output }}",
                   "score": "{{ nodes.score.output }}", "tags": "{{ trigger.body.tags }}"}),
            json!({"email": "{{ x }}", "company": {"name": "{{ y }}", "employees": "{{ z }}"},
                   "tags": ["a", "{{ t }}"], "score": {"total": "{{ s }}"}}),
            json!("{{ trigger.body }}"),
        ] {
            assert_eq!(LeadsUpsert.check_config(&with), Ok(()), "for {with}");
        }
        let cases = [
            (json!({}), "email", "missing required key `email`"),
            (
                json!({"email": "ada"}),
                "email",
                "`ada` is not a valid email address (missing_at)",
            ),
            (
                json!({"email": "{{ x }}", "phone": 1}),
                "phone",
                "unknown key `phone`; expected one of email, first_name, last_name, title, company, domain, source, status, tags, score",
            ),
            (
                json!({"email": "{{ x }}", "tags": "a"}),
                "tags",
                "expected a list of strings, found the string `a`",
            ),
            (
                json!({"email": "{{ x }}", "tags": [1]}),
                "tags[0]",
                "expected a string, found the number 1",
            ),
            (
                json!({"email": "{{ x }}", "company": {"employees": 2.5}}),
                "company.employees",
                "expected a whole number of people, found 2.5",
            ),
            (
                json!({"email": "{{ x }}", "company": {"domain": "not a domain"}}),
                "company.domain",
                "`not a domain` is not a domain name (domain_invalid)",
            ),
            (
                json!({"email": "{{ x }}", "score": {"tier": "hot"}}),
                "score.total",
                "missing required key `total`",
            ),
            (
                json!({"email": "{{ x }}", "score": {"total": 1, "points": 2}}),
                "score.points",
                "unknown key `points`; expected one of total, tier, breakdown",
            ),
            (
                json!({"email": "{{ x }}", "status": 3}),
                "status",
                "expected a string, found the number 3",
            ),
        ];
        for (with, path, message) in cases {
            let error = LeadsUpsert.check_config(&with).expect_err("a bad block");
            assert_eq!(
                (error.path.as_str(), error.message.as_str()),
                (path, message),
                "for {with}"
            );
        }
    }
}
