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
use crate::store::{Listed, RunQuery, RunRecord, RunStatus};
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

/// The most bytes of run summaries one page of `GET /api/v1/runs` carries: a page stops at the
/// run that would pass it (never before its first run) and its `next_cursor` goes on from there.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// `{"runs": [summary…], "next_cursor": id | null}`; `next_cursor` is null on the last page.
/// Summaries leave out triggers and outputs (`GET /api/v1/runs/{id}` has them). Runs whose
/// stored row cannot be read are listed apart, under `unreadable`, only when there are any.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(params) = params?;
    let query = params.to_query()?;
    let listed = state.engine.list_run_summaries(&query).await?;
    let page = Page::of(&listed, MAX_PAGE_BYTES);
    let next_cursor = match page.cut_after {
        Some(id) => Some(id.to_owned()),
        None => {
            paging::next_cursor(
                &listed,
                query.limit,
                |run| run.id(),
                async |cursor| {
                    let probe = RunQuery {
                        limit: 1,
                        cursor: Some(cursor),
                        ..query.clone()
                    };
                    Ok(!state.engine.list_run_summaries(&probe).await?.is_empty())
                },
            )
            .await?
        }
    };
    let mut body = json!({ "runs": page.runs, "next_cursor": next_cursor });
    if !page.unreadable.is_empty()
        && let Some(map) = body.as_object_mut()
    {
        map.insert("unreadable".into(), Value::Array(page.unreadable));
    }
    Ok(Json(body))
}

/// One page of the run list, within a byte budget.
#[derive(Debug)]
struct Page<'a> {
    runs: Vec<Value>,
    unreadable: Vec<Value>,
    /// The id of the last run shown when the budget cut the page short.
    cut_after: Option<&'a str>,
}

impl<'a> Page<'a> {
    /// The summaries of `listed` in order, stopping before the one that would take the page
    /// past `max_bytes` of JSON.
    fn of(listed: &'a [Listed], max_bytes: usize) -> Page<'a> {
        let mut page = Page {
            runs: Vec::new(),
            unreadable: Vec::new(),
            cut_after: None,
        };
        let mut bytes: usize = 0;
        let mut last: Option<&'a str> = None;
        for item in listed {
            let value = match item {
                Listed::Run(run) => view::list_item_json(run),
                Listed::Unreadable { id, error } => view::unreadable_json(id, error),
            };
            let size = value.to_string().len();
            if last.is_some() && bytes.saturating_add(size) > max_bytes {
                page.cut_after = last;
                break;
            }
            bytes = bytes.saturating_add(size);
            last = Some(item.id());
            match item {
                Listed::Run(_) => page.runs.push(value),
                Listed::Unreadable { .. } => page.unreadable.push(value),
            }
        }
        page
    }
}

/// The run JSON with every node and attempt, written from the run's records.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    Path(run_id): Path<String>,
) -> Result<Response> {
    let shown = state
        .engine
        .run_shown(&run_id)
        .await?
        .ok_or_else(|| no_such_run(&run_id))?;
    Ok(Json(shown.view()).into_response())
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

    fn summary(id: &str, message_bytes: usize) -> Listed {
        Listed::Run(crate::store::RunSummary {
            id: id.into(),
            workflow_id: "w".into(),
            revision: "r".into(),
            status: RunStatus::Failed,
            error: Some(crate::store::ErrorInfo::new(
                "http",
                "x".repeat(message_bytes),
            )),
            created_at: chrono::DateTime::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            deadline_at: None,
        })
    }

    #[test]
    fn a_page_stops_at_its_byte_budget() {
        let listed: Vec<Listed> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|id| summary(id, 400))
            .collect();
        // Each summary is some 600 bytes: two fit in 1500, a third would not.
        let page = Page::of(&listed, 1500);
        assert_eq!(page.runs.len(), 2);
        assert_eq!(page.cut_after, Some("b"));
        let whole = Page::of(&listed, MAX_PAGE_BYTES);
        assert_eq!((whole.runs.len(), whole.cut_after), (4, None));
        // A page always shows its first run, however large.
        let first = Page::of(&listed, 10);
        assert_eq!((first.runs.len(), first.cut_after), (1, Some("a")));
    }

    #[test]
    fn unreadable_runs_are_listed_apart() {
        let listed = vec![
            summary("a", 1),
            Listed::Unreadable {
                id: "b".into(),
                error: "run b: trigger: EOF".into(),
            },
        ];
        let page = Page::of(&listed, MAX_PAGE_BYTES);
        assert_eq!(page.runs.len(), 1);
        assert_eq!(page.runs[0]["id"], "a");
        assert!(
            page.runs[0].get("trigger").is_none(),
            "no trigger in a list"
        );
        assert_eq!(
            page.unreadable,
            vec![json!({"id": "b", "error": {"kind": "store", "message": "run b: trigger: EOF"}})]
        );
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
