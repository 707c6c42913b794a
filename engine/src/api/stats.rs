//! `GET /api/v1/stats?window=24h`: the figures of a dashboard's home page — open runs, what
//! finished in the window, run durations, failed and retried attempts, leads and the queue.
//! Every windowed figure sits under a `last_window` key, whatever the window, so clients read
//! one shape; `window` and `since` say which window it was.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::{Error, Result};
use super::paging::non_empty;
use crate::store::{FinishedRuns, LeadStats, StatsQuery, StoreStats, WorkflowStats};
use crate::view;

/// The window when none is asked for.
const DEFAULT_WINDOW: &str = "24h";
/// Shorter windows say little; longer ones would make every poll read too much.
const MIN_WINDOW: Duration = Duration::from_secs(60);
const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Tiers listed even when no lead has them, so a dashboard's tiles never disappear.
const TIERS: [&str; 3] = ["hot", "warm", "cold"];

/// The query string of `GET /api/v1/stats`, as text so that a bad value gets its own message.
#[derive(Debug, Default, Deserialize)]
pub struct StatsParams {
    window: Option<String>,
}

/// The span the windowed figures cover, with the text it was asked as.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    text: String,
    span: TimeDelta,
}

impl Window {
    /// A humantime duration (`90m`, `24h`, `7d`) from 1 minute to 30 days, or 400.
    fn parse(text: Option<&str>) -> Result<Window> {
        let text = text.unwrap_or(DEFAULT_WINDOW).trim();
        let bad = || {
            Error::BadRequest(format!(
                "`window` must be a duration from 1m to 30d, like `1h`, `24h` or `7d`; got `{text}`"
            ))
        };
        let duration = humantime::parse_duration(text).map_err(|_| bad())?;
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&duration) {
            return Err(bad());
        }
        let span = TimeDelta::from_std(duration).map_err(|_| bad())?;
        Ok(Window {
            text: text.to_owned(),
            span,
        })
    }
}

/// The figures; see `docs/behaviour.md` for the shape.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    params: Result<Query<StatsParams>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(params) = params?;
    let window = Window::parse(non_empty(&params.window))?;
    let now = Utc::now();
    let since = now - window.span;
    let workflow_ids = state
        .engine
        .catalog()
        .list()
        .iter()
        .map(|workflow| workflow.id.to_string())
        .collect();
    let query = StatsQuery {
        since,
        workflow_ids,
    };
    let stats = state.engine.store().stats(&query).await?;
    let mut body = stats_json(&stats, state.engine.queue_depth());
    body["generated_at"] = json!(view::instant(now));
    body["window"] = json!(window.text);
    body["since"] = json!(view::instant(since));
    Ok(Json(body))
}

/// Everything but the time and window fields.
fn stats_json(stats: &StoreStats, queue_depth: usize) -> Value {
    let finished = stats.finished();
    let durations = &stats.durations;
    let mut runs_in_window = finished_json(&finished);
    runs_in_window["failure_rate"] = json!(finished.failure_rate());
    runs_in_window["duration_ms"] = json!({
        "p50": durations.p50_ms,
        "p95": durations.p95_ms,
        "sample": durations.sample,
    });
    json!({
        "runs": {
            "queued": stats.queued(),
            "running": stats.running(),
            "oldest_queued_at": stats.oldest_queued_at().map(view::instant),
            "last_window": runs_in_window,
        },
        "workflows": stats.workflows.iter().map(workflow_json).collect::<Vec<_>>(),
        "nodes": {
            "last_window": {
                "failed_attempts": stats.attempts.failed,
                "retried_attempts": stats.attempts.retried,
            },
        },
        "leads": leads_json(&stats.leads),
        "queue": { "depth": queue_depth },
    })
}

fn finished_json(finished: &FinishedRuns) -> Value {
    json!({
        "succeeded": finished.succeeded,
        "failed": finished.failed,
        "cancelled": finished.cancelled,
    })
}

fn workflow_json(workflow: &WorkflowStats) -> Value {
    json!({
        "id": workflow.workflow_id,
        "queued": workflow.queued,
        "running": workflow.running,
        "last_window": finished_json(&workflow.finished),
        "last_run_at": workflow.last_run_at.map(view::instant),
    })
}

fn leads_json(leads: &LeadStats) -> Value {
    let mut by_tier: Map<String, Value> = TIERS
        .iter()
        .map(|tier| (tier.to_string(), json!(0)))
        .collect();
    for (tier, n) in &leads.by_tier {
        by_tier.insert(tier.clone(), json!(n));
    }
    by_tier.insert("unscored".to_owned(), json!(leads.unscored));
    json!({
        "total": leads.total,
        "by_tier": by_tier,
        "last_window": { "created": leads.created },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_window_defaults_to_a_day_and_reads_humantime() {
        let window = Window::parse(None).expect("the default");
        assert_eq!(
            (window.text.as_str(), window.span),
            ("24h", TimeDelta::hours(24))
        );
        for (text, span) in [
            ("1m", TimeDelta::minutes(1)),
            ("90m", TimeDelta::minutes(90)),
            (" 7d ", TimeDelta::days(7)),
            ("30d", TimeDelta::days(30)),
            ("1h 30m", TimeDelta::minutes(90)),
        ] {
            let window = Window::parse(Some(text)).expect(text);
            assert_eq!((window.text.as_str(), window.span), (text.trim(), span));
        }
    }

    #[test]
    fn bad_windows_are_bad_requests() {
        for text in ["", "59s", "31d", "0s", "ten", "-1h", "24", "1y"] {
            let result = Window::parse(Some(text));
            assert!(
                matches!(result, Err(Error::BadRequest(_))),
                "{text}: {result:?}"
            );
        }
    }

    #[test]
    fn every_known_tier_is_listed_and_no_runs_give_no_rate() {
        let leads = LeadStats {
            total: 3,
            by_tier: BTreeMap::from([("warm".to_owned(), 1), ("vip".to_owned(), 1)]),
            unscored: 1,
            created: 2,
        };
        let stats = StoreStats {
            leads,
            ..StoreStats::default()
        };
        let body = stats_json(&stats, 4);
        assert_eq!(
            body["leads"],
            json!({
                "total": 3,
                "by_tier": { "hot": 0, "warm": 1, "cold": 0, "vip": 1, "unscored": 1 },
                "last_window": { "created": 2 },
            })
        );
        assert_eq!(body["runs"]["last_window"]["failure_rate"], Value::Null);
        assert_eq!(
            body["runs"]["last_window"]["duration_ms"]["p50"],
            Value::Null
        );
        assert_eq!(body["queue"], json!({ "depth": 4 }));
    }
}
