//! `GET /api/v1/leads` (newest first, paged by cursor, filtered by tier, status or text) and
//! `GET /api/v1/leads/{id}` (with the score history): what `leads.upsert` nodes stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::error::{Error, Result};
use crate::store::{ContactRecord, LeadQuery, LeadView, OrganizationRecord, RunQuery, ScoreRecord};

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
        let limit = match non_empty(&self.limit) {
            None => RunQuery::DEFAULT_LIMIT,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=RunQuery::MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "`limit` must be a whole number from 1 to {}; got `{text}`",
                        RunQuery::MAX_LIMIT
                    ))
                })?,
        };
        let cursor = match non_empty(&self.cursor) {
            None => None,
            Some(text) => {
                uuid::Uuid::parse_str(text).map_err(|_| {
                    Error::BadRequest(format!("`cursor` must be a lead id; got `{text}`"))
                })?;
                Some(text.to_owned())
            }
        };
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

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
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
    let next_cursor = match leads.last() {
        // A full page: look one lead further to tell whether another page follows.
        Some(last) if leads.len() == query.limit as usize => {
            let probe = LeadQuery {
                limit: 1,
                cursor: Some(last.lead.id.clone()),
                ..query.clone()
            };
            let more = !store.list_leads(&probe).await?.is_empty();
            more.then(|| Value::String(last.lead.id.clone()))
        }
        _ => None,
    };
    let leads: Vec<Value> = leads.iter().map(lead_json).collect();
    Ok(Json(
        json!({ "leads": leads, "next_cursor": next_cursor.unwrap_or(Value::Null) }),
    ))
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
        "created_at": timestamp(lead.created_at),
        "updated_at": timestamp(lead.updated_at),
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
        "created_at": timestamp(contact.created_at),
        "updated_at": timestamp(contact.updated_at),
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
        "created_at": timestamp(organization.created_at),
        "updated_at": timestamp(organization.updated_at),
    })
}

fn score_json(score: &ScoreRecord) -> Value {
    json!({
        "id": score.id,
        "total": score.total,
        "tier": score.tier,
        "breakdown": score.breakdown,
        "run_id": score.run_id,
        "created_at": timestamp(score.created_at),
    })
}

/// As in the run JSON: RFC 3339 in UTC with milliseconds.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
