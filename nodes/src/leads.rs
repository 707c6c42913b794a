//! The lead store as nodes see it: what `leads.upsert` writes and what it gets back. The
//! engine implements [`LeadStore`] on SQLite and Postgres.

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::services::{NoLeadStore, ServiceError};

/// One lead to record: the contact it is about, their organisation, and the score, if any.
///
/// Emails and domains arrive normalised (lowercase, punycode); dedupe keys on them. A field
/// that is `None` (or a `data` entry that is absent) leaves what is stored as it is, so a later
/// upsert with less information never erases earlier enrichment.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadUpsert {
    /// The contact's normalised address: the key of the contact, and so of the lead.
    pub email: String,
    /// What is known about the person.
    pub contact: ContactFields,
    /// The contact's organisation, keyed by its domain; `None` for a free-mail address with no
    /// company given.
    pub organization: Option<OrganizationFields>,
    /// Where the lead came from (`webhook`, `import`, …).
    pub source: Option<String>,
    /// The lead's pipeline status; a new lead without one is `new`.
    pub status: Option<String>,
    /// Added to the lead's tags (never removed).
    pub tags: Vec<String>,
    /// Appended to the lead's score history and shown as its latest score.
    pub score: Option<LeadScore>,
    /// The run that produced this version of the lead.
    pub run_id: String,
}

/// What is known about the person.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactFields {
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Job title, as given or found.
    pub title: Option<String>,
    /// Any other attributes, merged key by key into the stored ones.
    pub data: Map<String, Value>,
}

/// What is known about the organisation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrganizationFields {
    /// Normalised (lowercase ASCII, punycode): the organisation's key.
    pub domain: String,
    /// The organisation's name.
    pub name: Option<String>,
    /// Its industry, in the provider's words.
    pub industry: Option<String>,
    /// Head count.
    pub employees: Option<i64>,
    /// Annual revenue, in the provider's currency (usually USD).
    pub revenue: Option<f64>,
    /// Country code or name, as the provider gives it.
    pub country: Option<String>,
    /// Any other attributes, merged key by key into the stored ones.
    pub data: Map<String, Value>,
}

/// One score of a lead, as `score.weighted` outputs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadScore {
    /// 0–100.
    pub total: f64,
    /// `hot`, `warm` or `cold`, when the scorer gives one.
    pub tier: Option<String>,
    /// How the total came about; stored as given.
    pub breakdown: Value,
}

/// What the store did with a [`LeadUpsert`].
#[derive(Debug, Clone, PartialEq)]
pub struct UpsertedLead {
    /// The lead's id (`GET /api/v1/leads/{id}`).
    pub lead_id: String,
    /// The contact's id.
    pub contact_id: String,
    /// The organisation's id; `None` when no organisation was kept (free mail).
    pub organization_id: Option<String>,
    /// False when the lead already existed and was updated.
    pub created: bool,
}

/// Where leads are kept.
#[async_trait]
pub trait LeadStore: Send + Sync {
    /// Creates or updates the organisation (by domain), the contact (by email) and the lead,
    /// and appends the score to the lead's history, in one transaction.
    async fn upsert_lead(&self, lead: &LeadUpsert) -> Result<UpsertedLead, ServiceError>;
}

#[async_trait]
impl LeadStore for NoLeadStore {
    async fn upsert_lead(&self, _: &LeadUpsert) -> Result<UpsertedLead, ServiceError> {
        Err(ServiceError("no lead store is configured here".into()))
    }
}
