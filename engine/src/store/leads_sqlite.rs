//! Leads on SQLite: the statements of an upsert (run in one transaction on the writer
//! connection, which also serialises concurrent upserts) and the queries of the API.

use async_trait::async_trait;
use chrono::Utc;
use enrichflow_nodes::ServiceError;
use enrichflow_nodes::leads::{LeadStore, LeadUpsert, UpsertedLead};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::leads::{
    self, ContactRecord, LeadDetail, LeadQuery, LeadRecord, LeadView, OrganizationRecord,
    ScoreRecord, Upserts,
};
use super::sqlite::{Columns, timestamp};
use super::{Result, SqliteStore};

#[async_trait]
impl LeadStore for SqliteStore {
    async fn upsert_lead(&self, lead: &LeadUpsert) -> Result<UpsertedLead, ServiceError> {
        upsert(self, lead)
            .await
            .map_err(|error| ServiceError(error.to_string()))
    }
}

async fn upsert(store: &SqliteStore, lead: &LeadUpsert) -> Result<UpsertedLead> {
    let mut transaction = store.writer.begin().await?;
    let upserted = leads::upsert(&mut transaction, lead, Utc::now()).await?;
    transaction.commit().await?;
    Ok(upserted)
}

/// Leads newest first, with their contact and organisation.
pub(super) async fn list(store: &SqliteStore, query: &LeadQuery) -> Result<Vec<LeadView>> {
    let mut sql = QueryBuilder::<Sqlite>::new(leads::SELECT_VIEWS);
    if let Some(tier) = &query.tier {
        sql.push(" AND l.tier = ").push_bind(tier.clone());
    }
    if let Some(status) = &query.status {
        sql.push(" AND l.status = ").push_bind(status.clone());
    }
    if let Some(search) = &query.search {
        // `instr` rather than LIKE, so `%` and `_` in the text are literal.
        sql.push(" AND (instr(c.email, ")
            .push_bind(search.clone())
            .push(") > 0 OR instr(o.domain, ")
            .push_bind(search.clone())
            .push(") > 0)");
    }
    if let Some(cursor) = &query.cursor {
        sql.push(" AND l.id < ").push_bind(cursor.clone());
    }
    sql.push(" ORDER BY l.id DESC LIMIT ")
        .push_bind(i64::from(query.page_size()));
    let rows = sql.build().fetch_all(&store.pool).await?;
    rows.iter().map(|row| leads::view(&Columns(row))).collect()
}

/// One lead with its score history, newest first.
pub(super) async fn detail(store: &SqliteStore, lead_id: &str) -> Result<Option<LeadDetail>> {
    let mut sql = QueryBuilder::<Sqlite>::new(leads::SELECT_VIEWS);
    sql.push(" AND l.id = ").push_bind(lead_id.to_owned());
    let Some(row) = sql.build().fetch_optional(&store.pool).await? else {
        return Ok(None);
    };
    let view = leads::view(&Columns(&row))?;
    let rows = sqlx::query("SELECT * FROM lead_scores WHERE lead_id = ? ORDER BY id DESC")
        .bind(lead_id)
        .fetch_all(&store.pool)
        .await?;
    let scores = rows
        .iter()
        .map(|row| leads::score(&Columns(row)))
        .collect::<Result<_>>()?;
    Ok(Some(LeadDetail { view, scores }))
}

fn json_text(data: &serde_json::Map<String, Value>) -> String {
    Value::Object(data.clone()).to_string()
}

fn tags_text(tags: &[String]) -> String {
    serde_json::json!(tags).to_string()
}

#[async_trait]
impl Upserts for Transaction<'static, Sqlite> {
    async fn claim_organization(&mut self, new: &OrganizationRecord) -> Result<OrganizationRecord> {
        let row: SqliteRow = sqlx::query(
            "INSERT INTO organizations (id, domain, name, industry, employees, revenue, country,
                 data, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (domain) DO UPDATE SET domain = excluded.domain
             RETURNING *",
        )
        .bind(&new.id)
        .bind(&new.domain)
        .bind(&new.name)
        .bind(&new.industry)
        .bind(new.employees)
        .bind(new.revenue)
        .bind(&new.country)
        .bind(json_text(&new.data))
        .bind(timestamp(new.created_at))
        .bind(timestamp(new.updated_at))
        .fetch_one(&mut **self)
        .await?;
        leads::organization(&Columns(&row), "")
    }

    async fn update_organization(&mut self, row: &OrganizationRecord) -> Result<()> {
        sqlx::query(
            "UPDATE organizations SET name = ?, industry = ?, employees = ?, revenue = ?,
                 country = ?, data = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(&row.name)
        .bind(&row.industry)
        .bind(row.employees)
        .bind(row.revenue)
        .bind(&row.country)
        .bind(json_text(&row.data))
        .bind(timestamp(row.updated_at))
        .bind(&row.id)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn claim_contact(&mut self, new: &ContactRecord) -> Result<ContactRecord> {
        let row: SqliteRow = sqlx::query(
            "INSERT INTO contacts (id, email, organization_id, first_name, last_name, title,
                 data, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (email) DO UPDATE SET email = excluded.email
             RETURNING *",
        )
        .bind(&new.id)
        .bind(&new.email)
        .bind(&new.organization_id)
        .bind(&new.first_name)
        .bind(&new.last_name)
        .bind(&new.title)
        .bind(json_text(&new.data))
        .bind(timestamp(new.created_at))
        .bind(timestamp(new.updated_at))
        .fetch_one(&mut **self)
        .await?;
        leads::contact(&Columns(&row), "")
    }

    async fn update_contact(&mut self, row: &ContactRecord) -> Result<()> {
        sqlx::query(
            "UPDATE contacts SET organization_id = ?, first_name = ?, last_name = ?, title = ?,
                 data = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(&row.organization_id)
        .bind(&row.first_name)
        .bind(&row.last_name)
        .bind(&row.title)
        .bind(json_text(&row.data))
        .bind(timestamp(row.updated_at))
        .bind(&row.id)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn claim_lead(&mut self, new: &LeadRecord) -> Result<LeadRecord> {
        let row: SqliteRow = sqlx::query(
            "INSERT INTO leads (id, contact_id, source, status, tags, score, tier, run_id,
                 created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (contact_id) DO UPDATE SET contact_id = excluded.contact_id
             RETURNING *",
        )
        .bind(&new.id)
        .bind(&new.contact_id)
        .bind(&new.source)
        .bind(&new.status)
        .bind(tags_text(&new.tags))
        .bind(new.score)
        .bind(&new.tier)
        .bind(&new.run_id)
        .bind(timestamp(new.created_at))
        .bind(timestamp(new.updated_at))
        .fetch_one(&mut **self)
        .await?;
        leads::lead(&Columns(&row))
    }

    async fn update_lead(&mut self, row: &LeadRecord) -> Result<()> {
        sqlx::query(
            "UPDATE leads SET source = ?, status = ?, tags = ?, score = ?, tier = ?, run_id = ?,
                 updated_at = ?
             WHERE id = ?",
        )
        .bind(&row.source)
        .bind(&row.status)
        .bind(tags_text(&row.tags))
        .bind(row.score)
        .bind(&row.tier)
        .bind(&row.run_id)
        .bind(timestamp(row.updated_at))
        .bind(&row.id)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn record_score(&mut self, score: &ScoreRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO lead_scores (id, lead_id, total, tier, breakdown, run_id, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (lead_id, run_id) DO UPDATE
             SET total = excluded.total, tier = excluded.tier, breakdown = excluded.breakdown",
        )
        .bind(&score.id)
        .bind(&score.lead_id)
        .bind(score.total)
        .bind(&score.tier)
        .bind(score.breakdown.to_string())
        .bind(&score.run_id)
        .bind(timestamp(score.created_at))
        .execute(&mut **self)
        .await?;
        Ok(())
    }
}
