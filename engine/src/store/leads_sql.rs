//! The lead store of both databases, written once: the statements of an upsert and the
//! queries of the API, expanded for each store by [`lead_store!`] in `leads_postgres` and
//! `leads_sqlite`.
//!
//! Each statement is written once with `?` parameters and `?::json` casts, and
//! [`dialect`](super::dialect) turns it into the database's text. The Rust around it is the
//! same text for both stores but not the same types: the store, its pools, sqlx's database
//! type, how an instant is bound and how a row is read (`Columns`, `timestamp`). Generic code
//! would need sqlx bounds for binding each field type, executing on a transaction's connection
//! and reading rows, longer than the code itself, so one `macro_rules!` expands the bodies for
//! each store instead, and what really differs (the substring function, how concurrent upserts
//! are serialised) stays in the two small modules.

/// Inserts an organisation, or returns (and locks) the one with its domain.
pub(super) const CLAIM_ORGANIZATION: &str = "INSERT INTO organizations (id, domain, name, industry,
         employees, revenue, country, data, created_at, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?::json, ?, ?)
     ON CONFLICT (domain) DO UPDATE SET domain = excluded.domain
     RETURNING *";

pub(super) const UPDATE_ORGANIZATION: &str = "UPDATE organizations SET name = ?, industry = ?,
         employees = ?, revenue = ?, country = ?, data = ?::json, updated_at = ?
     WHERE id = ?";

/// Inserts a contact, or returns (and locks) the one with its email.
pub(super) const CLAIM_CONTACT: &str = "INSERT INTO contacts (id, email, organization_id,
         first_name, last_name, title, data, created_at, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?::json, ?, ?)
     ON CONFLICT (email) DO UPDATE SET email = excluded.email
     RETURNING *";

pub(super) const UPDATE_CONTACT: &str = "UPDATE contacts SET organization_id = ?, first_name = ?,
         last_name = ?, title = ?, data = ?::json, updated_at = ?
     WHERE id = ?";

/// Inserts a lead, or returns (and locks) the one of its contact.
pub(super) const CLAIM_LEAD: &str = "INSERT INTO leads (id, contact_id, source, status, tags,
         score, tier, run_id, created_at, updated_at)
     VALUES (?, ?, ?, ?, ?::json, ?, ?, ?, ?, ?)
     ON CONFLICT (contact_id) DO UPDATE SET contact_id = excluded.contact_id
     RETURNING *";

pub(super) const UPDATE_LEAD: &str = "UPDATE leads SET source = ?, status = ?, tags = ?::json,
         score = ?, tier = ?, run_id = ?, updated_at = ?
     WHERE id = ?";

/// Inserts a score, or replaces the one of the same lead and run.
pub(super) const RECORD_SCORE: &str = "INSERT INTO lead_scores (id, lead_id, total, tier,
         breakdown, run_id, created_at)
     VALUES (?, ?, ?, ?, ?::json, ?, ?)
     ON CONFLICT (lead_id, run_id) DO UPDATE
     SET total = excluded.total, tier = excluded.tier, breakdown = excluded.breakdown";

pub(super) const SELECT_SCORES: &str =
    "SELECT * FROM lead_scores WHERE lead_id = ? ORDER BY id DESC";

pub(super) fn json_text(data: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(data.clone()).to_string()
}

pub(super) fn tags_text(tags: &[String]) -> String {
    serde_json::json!(tags).to_string()
}

/// `LeadStore`, `list`, `detail` and `Upserts` for one store, expanded in a child module of
/// `store`. `dialect` names both the store's module (`Columns`, `timestamp`) and its
/// [`dialect`](super::dialect) function; upserts run on the store's `write_connection()`,
/// queries on `read_pool`; `position` is the database's `strpos(haystack, needle)`.
macro_rules! lead_store {
    (
        store: $store:ident,
        database: $database:ident,
        dialect: $dialect:ident,
        read_pool: $read_pool:ident,
        position: $position:literal $(,)?
    ) => {
        use async_trait::async_trait;
        use chrono::Utc;
        use enrichflow_nodes::ServiceError;
        use enrichflow_nodes::leads::{LeadStore, LeadUpsert, UpsertedLead};
        use sqlx::{QueryBuilder, Transaction, $database};

        use super::dialect::translated;
        use super::leads::{
            self, ContactRecord, LeadDetail, LeadQuery, LeadRecord, LeadView, OrganizationRecord,
            ScoreRecord, Upserts,
        };
        use super::leads_sql::{
            CLAIM_CONTACT, CLAIM_LEAD, CLAIM_ORGANIZATION, RECORD_SCORE, SELECT_SCORES,
            UPDATE_CONTACT, UPDATE_LEAD, UPDATE_ORGANIZATION, json_text, tags_text,
        };
        use super::$dialect::{Columns, timestamp};
        use super::{Result, $store};

        #[async_trait]
        impl LeadStore for $store {
            async fn upsert_lead(&self, lead: &LeadUpsert) -> Result<UpsertedLead, ServiceError> {
                upsert(self, lead)
                    .await
                    .map_err(|error| ServiceError(error.to_string()))
            }
        }

        async fn upsert(store: &$store, lead: &LeadUpsert) -> Result<UpsertedLead> {
            let mut writer = store.write_connection().await?;
            let mut transaction = sqlx::Connection::begin(&mut *writer).await?;
            let upserted = leads::upsert(&mut transaction, lead, Utc::now()).await?;
            transaction.commit().await?;
            Ok(upserted)
        }

        /// Leads newest first, with their contact and organisation.
        pub(super) async fn list(store: &$store, query: &LeadQuery) -> Result<Vec<LeadView>> {
            let mut select = QueryBuilder::<$database>::new(leads::SELECT_VIEWS);
            if let Some(tier) = &query.tier {
                select.push(" AND l.tier = ").push_bind(tier.clone());
            }
            if let Some(status) = &query.status {
                select.push(" AND l.status = ").push_bind(status.clone());
            }
            if let Some(search) = &query.search {
                // A substring position rather than LIKE, so `%` and `_` in the text are literal.
                select
                    .push(concat!(" AND (", $position, "(c.email, "))
                    .push_bind(search.clone())
                    .push(concat!(") > 0 OR ", $position, "(o.domain, "))
                    .push_bind(search.clone())
                    .push(") > 0)");
            }
            if let Some(cursor) = &query.cursor {
                select.push(" AND l.id < ").push_bind(cursor.clone());
            }
            select
                .push(" ORDER BY l.id DESC LIMIT ")
                .push_bind(i64::from(query.page_size()));
            let rows = select.build().fetch_all(&store.$read_pool).await?;
            rows.iter().map(|row| leads::view(&Columns(row))).collect()
        }

        /// One lead with its score history, newest first.
        pub(super) async fn detail(store: &$store, lead_id: &str) -> Result<Option<LeadDetail>> {
            let mut select = QueryBuilder::<$database>::new(leads::SELECT_VIEWS);
            select.push(" AND l.id = ").push_bind(lead_id.to_owned());
            let Some(row) = select.build().fetch_optional(&store.$read_pool).await? else {
                return Ok(None);
            };
            let view = leads::view(&Columns(&row))?;
            let rows = sqlx::query(translated!($dialect, SELECT_SCORES))
                .bind(lead_id)
                .fetch_all(&store.$read_pool)
                .await?;
            let scores = rows
                .iter()
                .map(|row| leads::score(&Columns(row)))
                .collect::<Result<_>>()?;
            Ok(Some(LeadDetail { view, scores }))
        }

        #[async_trait]
        impl Upserts for Transaction<'_, $database> {
            async fn claim_organization(
                &mut self,
                new: &OrganizationRecord,
            ) -> Result<OrganizationRecord> {
                let row = sqlx::query(translated!($dialect, CLAIM_ORGANIZATION))
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
                sqlx::query(translated!($dialect, UPDATE_ORGANIZATION))
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
                let row = sqlx::query(translated!($dialect, CLAIM_CONTACT))
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
                sqlx::query(translated!($dialect, UPDATE_CONTACT))
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
                let row = sqlx::query(translated!($dialect, CLAIM_LEAD))
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
                sqlx::query(translated!($dialect, UPDATE_LEAD))
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
                sqlx::query(translated!($dialect, RECORD_SCORE))
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
    };
}

pub(super) use lead_store;
