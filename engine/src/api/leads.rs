//! `GET /api/v1/leads` (newest first, paged by cursor, filtered by tier, status or text) and
//! `GET /api/v1/leads/{id}` (with the score history): what `leads.upsert` nodes stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::error::{Error, Result};
use super::paging::{self, non_empty};
use crate::store::{ContactRecord, LeadQuery, LeadView, OrganizationRecord, ScoreRecord};
use crate::view;

/// The query string of `GET /api/v1/leads`, as text so that each bad value gets its own message.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    tier: Option<String>,
    status: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl ListParams {
    /// The store query, or 400 naming the bad parameter. Empty values count as absent.
    fn to_query(&self) -> Result<LeadQuery> {
        let limit = paging::limit(&self.limit)?;
        let cursor = paging::cursor(&self.cursor, "a lead id")?;
        Ok(LeadQuery {
            tier: non_empty(&self.tier).map(str::to_owned),
            status: non_empty(&self.status).map(str::to_owned),
            // Emails and domains are stored lowercase.
            search: non_empty(&self.q).map(str::to_lowercase),
            limit,
            cursor,
        })
    }
}

/// `{"leads": [lead…], "next_cursor": id | null}`; `next_cursor` is null on the last page.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(params) = params?;
    let query = params.to_query()?;
    let store = state.engine.store();
    let leads = store.list_leads(&query).await?;
    let next_cursor = paging::next_cursor(
        &leads,
        query.limit,
        |view| &view.lead.id,
        async |cursor| {
            let probe = LeadQuery {
                limit: 1,
                cursor: Some(cursor),
                ..query.clone()
            };
            Ok(!store.list_leads(&probe).await?.is_empty())
        },
    )
    .await?;
    let leads: Vec<Value> = leads.iter().map(lead_json).collect();
    Ok(Json(json!({ "leads": leads, "next_cursor": next_cursor })))
}

/// One lead as listed, plus `scores`: its score history, newest first.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    Path(lead_id): Path<String>,
) -> Result<Json<Value>> {
    let detail = state.engine.store().lead(&lead_id).await?;
    let detail = detail.ok_or_else(|| Error::NotFound(format!("no lead `{lead_id}`")))?;
    let mut lead = lead_json(&detail.view);
    lead["scores"] = detail.scores.iter().map(score_json).collect();
    Ok(Json(lead))
}

fn lead_json(view: &LeadView) -> Value {
    let lead = &view.lead;
    json!({
        "id": lead.id,
        "status": lead.status,
        "source": lead.source,
        "tags": lead.tags,
        "score": lead.score,
        "tier": lead.tier,
        "run_id": lead.run_id,
        "created_at": view::instant(lead.created_at),
        "updated_at": view::instant(lead.updated_at),
        "contact": contact_json(&view.contact),
        "organization": view.organization.as_ref().map(organization_json),
    })
}

fn contact_json(contact: &ContactRecord) -> Value {
    json!({
        "id": contact.id,
        "email": contact.email,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "title": contact.title,
        "data": contact.data,
        "created_at": view::instant(contact.created_at),
        "updated_at": view::instant(contact.updated_at),
    })
}

fn organization_json(organization: &OrganizationRecord) -> Value {
    json!({
        "id": organization.id,
        "domain": organization.domain,
        "name": organization.name,
        "industry": organization.industry,
        "employees": organization.employees,
        "revenue": organization.revenue,
        "country": organization.country,
        "data": organization.data,
        "created_at": view::instant(organization.created_at),
        "updated_at": view::instant(organization.updated_at),
    })
}

fn score_json(score: &ScoreRecord) -> Value {
    json!({
        "id": score.id,
        "total": score.total,
        "tier": score.tier,
        "breakdown": score.breakdown,
        "run_id": score.run_id,
        "created_at": view::instant(score.created_at),
    })
}

/// As in the run JSON: RFC 3339 in UTC with milliseconds (also used by `stats`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunQuery;

    fn params(limit: &str, cursor: &str, q: &str) -> ListParams {
        ListParams {
            limit: Some(limit.into()),
            cursor: Some(cursor.into()),
            q: Some(q.into()),
            ..ListParams::default()
        }
    }

    #[test]
    fn empty_values_are_defaults_and_search_is_lowercased() {
        let query = params("", "", "").to_query().expect("valid");
        assert_eq!(query.limit, RunQuery::DEFAULT_LIMIT);
        assert_eq!((query.cursor, query.search), (None, None));
        let query = params("", "", "Acme.COM").to_query().expect("valid");
        assert_eq!(query.search.as_deref(), Some("acme.com"));
    }

    #[test]
    fn bad_values_are_bad_requests() {
        for (limit, cursor) in [("0", ""), ("501", ""), ("ten", ""), ("", "not-an-id")] {
            let result = params(limit, cursor, "").to_query();
            assert!(
                matches!(result, Err(Error::BadRequest(_))),
                "{limit} {cursor}"
            );
        }
    }
}
