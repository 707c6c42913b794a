//! Leads, written once for both stores: the records the API reads, how an upsert merges into
//! what is stored, and the order of its statements. Each store supplies the statements
//! ([`Upserts`], in `leads_sqlite` and `leads_postgres`); the rules live here.
//!
//! An upsert claims each row by its natural key (domain, email, contact) with
//! `INSERT … ON CONFLICT DO UPDATE … RETURNING *`, which inserts it or locks and returns the
//! stored one, so two runs upserting one address at once wait for each other instead of
//! failing or duplicating it. The merge then happens here, under that lock: a field the
//! upsert leaves out keeps its stored value, `data` is merged key by key, tags are a union.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use enrichflow_nodes::leads::{LeadUpsert, OrganizationFields, UpsertedLead};
use serde_json::{Map, Value};

use super::rows::Columns;
use super::{Error, Result};

/// The status of a lead created without one.
pub const DEFAULT_STATUS: &str = "new";

/// An organisation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OrganizationRecord {
    pub id: String,
    pub domain: String,
    pub name: Option<String>,
    pub industry: Option<String>,
    pub employees: Option<i64>,
    pub revenue: Option<f64>,
    pub country: Option<String>,
    pub data: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A contact as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRecord {
    pub id: String,
    pub email: String,
    pub organization_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub title: Option<String>,
    pub data: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A lead as stored: one per contact, with its latest score.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadRecord {
    pub id: String,
    pub contact_id: String,
    pub source: Option<String>,
    pub status: String,
    pub tags: Vec<String>,
    pub score: Option<f64>,
    pub tier: Option<String>,
    /// The run of the last upsert.
    pub run_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a lead's score history.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRecord {
    pub id: String,
    pub lead_id: String,
    pub total: f64,
    pub tier: Option<String>,
    pub breakdown: Value,
    pub run_id: String,
    pub created_at: DateTime<Utc>,
}

/// A lead with its contact and the contact's organisation, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadView {
    pub lead: LeadRecord,
    pub contact: ContactRecord,
    pub organization: Option<OrganizationRecord>,
}

/// A lead with its score history, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadDetail {
    pub view: LeadView,
    pub scores: Vec<ScoreRecord>,
}

/// Filters and paging of [`super::Store::list_leads`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadQuery {
    pub tier: Option<String>,
    pub status: Option<String>,
    /// Text the contact's email or the organisation's domain contains.
    pub search: Option<String>,
    /// 0 means the default page size; see [`super::RunQuery::page_size`].
    pub limit: u32,
    /// The id of the last lead of the previous page.
    pub cursor: Option<String>,
}

impl LeadQuery {
    /// `limit` clamped like a runs page.
    pub fn page_size(&self) -> u32 {
        super::record::page_size(self.limit)
    }
}

/// The statements of one upsert, inside one transaction of one store.
#[async_trait]
pub(super) trait Upserts: Send {
    /// Inserts `new` unless its domain is taken; returns the stored row, locked until commit.
    async fn claim_organization(&mut self, new: &OrganizationRecord) -> Result<OrganizationRecord>;
    async fn update_organization(&mut self, row: &OrganizationRecord) -> Result<()>;
    /// Inserts `new` unless its email is taken; returns the stored row, locked until commit.
    async fn claim_contact(&mut self, new: &ContactRecord) -> Result<ContactRecord>;
    async fn update_contact(&mut self, row: &ContactRecord) -> Result<()>;
    /// Inserts `new` unless its contact has a lead; returns the stored row, locked until commit.
    async fn claim_lead(&mut self, new: &LeadRecord) -> Result<LeadRecord>;
    async fn update_lead(&mut self, row: &LeadRecord) -> Result<()>;
    /// Inserts the score, or replaces the one of the same lead and run.
    async fn record_score(&mut self, score: &ScoreRecord) -> Result<()>;
}

/// Organisation, contact, lead and score, in that order (every upsert locks rows in the same
/// order, so concurrent upserts cannot deadlock one another).
pub(super) async fn upsert(
    statements: &mut impl Upserts,
    lead: &LeadUpsert,
    now: DateTime<Utc>,
) -> Result<UpsertedLead> {
    let organization_id = match &lead.organization {
        Some(fields) => Some(upsert_organization(statements, fields, now).await?),
        None => None,
    };
    let new = new_contact(lead, organization_id.clone(), now);
    let stored = statements.claim_contact(&new).await?;
    let contact_id = stored.id.clone();
    if stored.id != new.id {
        let merged = merged_contact(stored, lead, organization_id.clone(), now);
        statements.update_contact(&merged).await?;
    }
    let new = new_lead(lead, &contact_id, now);
    let stored = statements.claim_lead(&new).await?;
    let created = stored.id == new.id;
    let lead_id = stored.id.clone();
    if !created {
        statements
            .update_lead(&merged_lead(stored, lead, now))
            .await?;
    }
    if let Some(score) = &lead.score {
        let record = ScoreRecord {
            id: new_id(),
            lead_id: lead_id.clone(),
            total: score.total,
            tier: score.tier.clone(),
            breakdown: score.breakdown.clone(),
            run_id: lead.run_id.clone(),
            created_at: now,
        };
        statements.record_score(&record).await?;
    }
    Ok(UpsertedLead {
        lead_id,
        contact_id,
        organization_id,
        created,
    })
}

async fn upsert_organization(
    statements: &mut impl Upserts,
    fields: &OrganizationFields,
    now: DateTime<Utc>,
) -> Result<String> {
    let new = OrganizationRecord {
        id: new_id(),
        domain: fields.domain.clone(),
        name: fields.name.clone(),
        industry: fields.industry.clone(),
        employees: fields.employees,
        revenue: fields.revenue,
        country: fields.country.clone(),
        data: merged_data(Map::new(), &fields.data),
        created_at: now,
        updated_at: now,
    };
    let stored = statements.claim_organization(&new).await?;
    if stored.id != new.id {
        let merged = OrganizationRecord {
            name: fields.name.clone().or(stored.name),
            industry: fields.industry.clone().or(stored.industry),
            employees: fields.employees.or(stored.employees),
            revenue: fields.revenue.or(stored.revenue),
            country: fields.country.clone().or(stored.country),
            data: merged_data(stored.data, &fields.data),
            updated_at: now,
            ..stored
        };
        statements.update_organization(&merged).await?;
        return Ok(merged.id);
    }
    Ok(stored.id)
}

fn new_contact(
    lead: &LeadUpsert,
    organization_id: Option<String>,
    now: DateTime<Utc>,
) -> ContactRecord {
    let fields = &lead.contact;
    ContactRecord {
        id: new_id(),
        email: lead.email.clone(),
        organization_id,
        first_name: fields.first_name.clone(),
        last_name: fields.last_name.clone(),
        title: fields.title.clone(),
        data: merged_data(Map::new(), &fields.data),
        created_at: now,
        updated_at: now,
    }
}

fn merged_contact(
    stored: ContactRecord,
    lead: &LeadUpsert,
    organization_id: Option<String>,
    now: DateTime<Utc>,
) -> ContactRecord {
    let fields = &lead.contact;
    ContactRecord {
        organization_id: organization_id.or(stored.organization_id),
        first_name: fields.first_name.clone().or(stored.first_name),
        last_name: fields.last_name.clone().or(stored.last_name),
        title: fields.title.clone().or(stored.title),
        data: merged_data(stored.data, &fields.data),
        updated_at: now,
        ..stored
    }
}

fn new_lead(lead: &LeadUpsert, contact_id: &str, now: DateTime<Utc>) -> LeadRecord {
    LeadRecord {
        id: new_id(),
        contact_id: contact_id.to_owned(),
        source: lead.source.clone(),
        status: lead
            .status
            .clone()
            .unwrap_or_else(|| DEFAULT_STATUS.to_owned()),
        tags: merged_tags(Vec::new(), &lead.tags),
        score: lead.score.as_ref().map(|score| score.total),
        tier: lead.score.as_ref().and_then(|score| score.tier.clone()),
        run_id: Some(lead.run_id.clone()),
        created_at: now,
        updated_at: now,
    }
}

fn merged_lead(stored: LeadRecord, lead: &LeadUpsert, now: DateTime<Utc>) -> LeadRecord {
    // A new score replaces the latest one entirely, tier included: a tier left from an
    // older score would contradict the total shown beside it.
    let (score, tier) = match &lead.score {
        Some(score) => (Some(score.total), score.tier.clone()),
        None => (stored.score, stored.tier),
    };
    LeadRecord {
        source: lead.source.clone().or(stored.source),
        status: lead.status.clone().unwrap_or(stored.status),
        tags: merged_tags(stored.tags, &lead.tags),
        score,
        tier,
        run_id: Some(lead.run_id.clone()),
        updated_at: now,
        ..stored
    }
}

/// `stored` with every non-null entry of `incoming` written over it: a provider that knows
/// less this time does not erase what an earlier one found.
fn merged_data(
    mut stored: Map<String, Value>,
    incoming: &Map<String, Value>,
) -> Map<String, Value> {
    for (key, value) in incoming {
        if !value.is_null() {
            stored.insert(key.clone(), value.clone());
        }
    }
    stored
}

/// The stored tags followed by the new ones, each once.
fn merged_tags(mut stored: Vec<String>, incoming: &[String]) -> Vec<String> {
    for tag in incoming {
        if !stored.contains(tag) {
            stored.push(tag.clone());
        }
    }
    stored
}

/// UUIDv7, like run ids: text order is creation order.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The columns of a lead joined with its contact (`c_…`) and organisation (`o_…`), for both
/// dialects; a lead's query appends its conditions to this.
pub(super) const SELECT_VIEWS: &str = "SELECT l.*,
       c.id AS c_id, c.email AS c_email, c.organization_id AS c_organization_id,
       c.first_name AS c_first_name, c.last_name AS c_last_name, c.title AS c_title,
       c.data AS c_data, c.created_at AS c_created_at, c.updated_at AS c_updated_at,
       o.id AS o_id, o.domain AS o_domain, o.name AS o_name, o.industry AS o_industry,
       o.employees AS o_employees, o.revenue AS o_revenue, o.country AS o_country,
       o.data AS o_data, o.created_at AS o_created_at, o.updated_at AS o_updated_at
FROM leads l
JOIN contacts c ON c.id = l.contact_id
LEFT JOIN organizations o ON o.id = c.organization_id
WHERE 1 = 1";

pub(super) fn view(columns: &impl Columns) -> Result<LeadView> {
    let organization = match columns.optional_text("o_id")? {
        Some(_) => Some(organization(columns, "o_")?),
        None => None,
    };
    Ok(LeadView {
        lead: lead(columns)?,
        contact: contact(columns, "c_")?,
        organization,
    })
}

/// An organisation from columns named `{prefix}id`, `{prefix}domain`, …
pub(super) fn organization(columns: &impl Columns, prefix: &str) -> Result<OrganizationRecord> {
    let name = |column: &str| format!("{prefix}{column}");
    Ok(OrganizationRecord {
        id: columns.text(&name("id"))?,
        domain: columns.text(&name("domain"))?,
        name: columns.optional_text(&name("name"))?,
        industry: columns.optional_text(&name("industry"))?,
        employees: columns.optional_integer(&name("employees"))?,
        revenue: columns.optional_real(&name("revenue"))?,
        country: columns.optional_text(&name("country"))?,
        data: object(columns, &name("data"))?,
        created_at: columns.time(&name("created_at"))?,
        updated_at: columns.time(&name("updated_at"))?,
    })
}

/// A contact from columns named `{prefix}id`, `{prefix}email`, …
pub(super) fn contact(columns: &impl Columns, prefix: &str) -> Result<ContactRecord> {
    let name = |column: &str| format!("{prefix}{column}");
    Ok(ContactRecord {
        id: columns.text(&name("id"))?,
        email: columns.text(&name("email"))?,
        organization_id: columns.optional_text(&name("organization_id"))?,
        first_name: columns.optional_text(&name("first_name"))?,
        last_name: columns.optional_text(&name("last_name"))?,
        title: columns.optional_text(&name("title"))?,
        data: object(columns, &name("data"))?,
        created_at: columns.time(&name("created_at"))?,
        updated_at: columns.time(&name("updated_at"))?,
    })
}

pub(super) fn lead(columns: &impl Columns) -> Result<LeadRecord> {
    Ok(LeadRecord {
        id: columns.text("id")?,
        contact_id: columns.text("contact_id")?,
        source: columns.optional_text("source")?,
        status: columns.text("status")?,
        tags: columns.typed_json("tags")?.unwrap_or_default(),
        score: columns.optional_real("score")?,
        tier: columns.optional_text("tier")?,
        run_id: columns.optional_text("run_id")?,
        created_at: columns.time("created_at")?,
        updated_at: columns.time("updated_at")?,
    })
}

pub(super) fn score(columns: &impl Columns) -> Result<ScoreRecord> {
    Ok(ScoreRecord {
        id: columns.text("id")?,
        lead_id: columns.text("lead_id")?,
        total: columns
            .optional_real("total")?
            .ok_or_else(|| Error::Corrupt("lead_scores.total is null".into()))?,
        tier: columns.optional_text("tier")?,
        breakdown: columns.json("breakdown")?.unwrap_or(Value::Null),
        run_id: columns.text("run_id")?,
        created_at: columns.time("created_at")?,
    })
}

fn object(columns: &impl Columns, column: &str) -> Result<Map<String, Value>> {
    Ok(columns.typed_json(column)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn data_merges_key_by_key_and_skips_nulls() {
        let stored = json!({"a": 1, "b": 2})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let incoming = json!({"b": null, "c": 3})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            Value::Object(merged_data(stored, &incoming)),
            json!({"a": 1, "b": 2, "c": 3})
        );
    }

    #[test]
    fn tags_are_a_union_in_first_seen_order() {
        let stored = vec!["b".to_owned(), "a".to_owned()];
        let incoming = ["a".to_owned(), "c".to_owned(), "c".to_owned()];
        assert_eq!(merged_tags(stored, &incoming), ["b", "a", "c"]);
    }
}
