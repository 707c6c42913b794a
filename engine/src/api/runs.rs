//! `GET /api/v1/runs` (newest first, paged by cursor), `GET /api/v1/runs/{id}` and
//! `POST /api/v1/runs/{id}/cancel`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{Error, Result};
use super::paging::{self, non_empty};
use super::{ApiState, run_location};
use crate::engine::{Cancellation, Retrial};
use crate::store::{RunQuery, RunRecord, RunStatus};
use crate::view;

/// The query string of `GET /api/v1/runs`, as text so that each bad value gets its own message.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl ListParams {
    /// The store query, or 400 naming the bad parameter. Empty values count as absent, so
    /// `?status=&workflow=` from a form lists everything.
    fn to_query(&self) -> Result<RunQuery> {
        let status = match non_empty(&self.status) {
            None => None,
            Some(text) => Some(text.parse::<RunStatus>().map_err(|_| {
                Error::BadRequest(format!(
                    "`status` must be one of queued, running, succeeded, failed, cancelled; got `{text}`"
                ))
            })?),
        };
        let limit = paging::limit(&self.limit)?;
        let cursor = paging::cursor(&self.cursor, "a run id")?;
        Ok(RunQuery {
            workflow_id: non_empty(&self.workflow).map(str::to_owned),
            status,
            limit,
            cursor,
        })
    }
}

/// `{"runs": [summary…], "next_cursor": id | null}`; `next_cursor` is null on the last page.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(params) = params?;
    let query = params.to_query()?;
    let runs = state.engine.list_runs(&query).await?;
    let next_cursor = paging::next_cursor(
        &runs,
        query.limit,
        |run| &run.id,
        async |cursor| {
            let probe = RunQuery {
                limit: 1,
                cursor: Some(cursor),
                ..query.clone()
            };
            Ok(!state.engine.list_runs(&probe).await?.is_empty())
        },
    )
    .await?;
    let runs: Vec<Value> = runs.iter().map(view::summary_json).collect();
    Ok(Json(json!({ "runs": runs, "next_cursor": next_cursor })))
}

/// The run JSON with every node and attempt.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>> {
    state
        .engine
        .run_json(&run_id)
        .await?
        .map(Json)
        .ok_or_else(|| no_such_run(&run_id))
}

/// 202 with the run summary once cancellation is requested; 409 if the run already finished.
pub async fn cancel(
    State(state): State<Arc<ApiState>>,
    Path(run_id): Path<String>,
) -> Result<Response> {
    let run = match state.engine.cancel(&run_id).await? {
        Cancellation::Unknown => return Err(no_such_run(&run_id)),
        Cancellation::AlreadyFinished(run) => {
            return Err(Error::Conflict(format!(
                "run `{run_id}` already finished ({})",
                run.status
            )));
        }
        Cancellation::Requested(run) => run,
    };
    accepted(&run)
}

/// `POST /api/v1/runs/{id}/retry`: a failed or cancelled run goes on from the nodes that did
/// not finish; 202 with the run's summary.
pub async fn retry(
    State(state): State<Arc<ApiState>>,
    Path(run_id): Path<String>,
) -> Result<Response> {
    let run = match state.engine.retry(&run_id).await? {
        Retrial::Unknown => return Err(no_such_run(&run_id)),
        Retrial::NotRetryable(run) => {
            return Err(Error::Conflict(format!(
                "run `{run_id}` is {}; only a failed or cancelled run can be retried",
                run.status
            )));
        }
        Retrial::Reopened(run) => run,
    };
    accepted(&run)
}

/// 202 with the run's summary and its `Location`.
fn accepted(run: &RunRecord) -> Result<Response> {
    let location = run_location(&run.id).map_err(|e| Error::internal("bad run id", &e))?;
    let headers = [(header::LOCATION, location)];
    Ok((StatusCode::ACCEPTED, headers, Json(view::summary_json(run))).into_response())
}

fn no_such_run(run_id: &str) -> Error {
    Error::NotFound(format!("no run `{run_id}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(status: &str, limit: &str, cursor: &str) -> ListParams {
        ListParams {
            workflow: None,
            status: Some(status.into()),
            limit: Some(limit.into()),
            cursor: Some(cursor.into()),
        }
    }

    #[test]
    fn empty_values_are_defaults() {
        let query = params("", "", "").to_query().ok();
        let query = query.expect("valid");
        assert_eq!(query.limit, RunQuery::DEFAULT_LIMIT);
        assert_eq!(query.status, None);
        assert_eq!(query.cursor, None);
    }

    #[test]
    fn bad_values_are_bad_requests() {
        for (status, limit, cursor) in [
            ("done", "", ""),
            ("", "0", ""),
            ("", "501", ""),
            ("", "ten", ""),
            ("", "", "not-an-id"),
        ] {
            let result = params(status, limit, cursor).to_query();
            assert!(
                matches!(result, Err(Error::BadRequest(_))),
                "{status} {limit} {cursor}"
            );
        }
    }
}
