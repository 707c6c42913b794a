//! The run as JSON, exactly as SPEC shows it (printed by `enrichflow run`, returned by the API).
//!
//! The run JSON is written from the records it shows, not built as a tree first: the trigger
//! and every attempt's input and output are written as the JSON text they are kept as, so
//! reading a run that holds a lead list (a list import's body, a `foreach` over it) copies
//! none of it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::store::{
    AttemptKey, AttemptRecord, AttemptStatus, Json, Progress, RunRecord, RunSummary, Trigger,
};
use crate::workflow::Workflow;

/// A JSON object whose members are written in name order, as a `serde_json` map writes them.
pub type Fields<'a> = BTreeMap<&'static str, Field<'a>>;

/// A member of the run JSON: a small value built for it, or a large one written from the text
/// it is kept as.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Field<'a> {
    Value(Value),
    Borrowed(Option<&'a Value>),
    Json(Option<&'a Json>),
    Trigger(&'a Trigger),
    List(Vec<Fields<'a>>),
    Nodes(BTreeMap<&'a str, Fields<'a>>),
}

/// The run JSON with every node: its latest status and output, and every attempt in `history`.
/// Nodes never reached are `pending`. A node whose latest attempt is running and has recorded
/// `progress` (a `foreach`) shows it.
pub fn run_view<'a>(
    run: &'a RunRecord,
    attempts: &'a [AttemptRecord],
    workflow: Option<&'a Workflow>,
    progress: &[(AttemptKey, Progress)],
) -> Fields<'a> {
    let mut by_node: BTreeMap<&str, Vec<&AttemptRecord>> = BTreeMap::new();
    if let Some(workflow) = workflow {
        for id in workflow.nodes.keys() {
            by_node.entry(id.as_str()).or_default();
        }
    }
    for attempt in attempts {
        by_node
            .entry(attempt.key.node_id.as_str())
            .or_default()
            .push(attempt);
    }
    let nodes = by_node
        .into_iter()
        .map(|(id, mut attempts)| {
            attempts.sort_by_key(|a| a.key.attempt);
            (id, node_view(&attempts, progress))
        })
        .collect();
    let mut fields = summary_fields(run);
    fields.insert("nodes", Field::Nodes(nodes));
    fields
}

/// The members of the run JSON about the run itself.
fn summary_fields(run: &RunRecord) -> Fields<'_> {
    let value = |value: Value| Field::Value(value);
    BTreeMap::from([
        ("id", value(json!(run.id))),
        ("workflow", value(json!(run.workflow_id))),
        ("status", value(json!(run.status.as_str()))),
        ("output", Field::Borrowed(run.output.as_ref())),
        ("error", value(json!(run.error))),
        ("created_at", value(timestamp(Some(run.created_at)))),
        ("started_at", value(timestamp(run.started_at))),
        ("finished_at", value(timestamp(run.finished_at))),
        ("revision", value(json!(run.revision))),
        ("trigger", Field::Trigger(&run.trigger)),
    ])
}

/// The run JSON without nodes (the answer to a trigger, a cancel or a retry).
pub fn summary_json(run: &RunRecord) -> Value {
    serde_json::to_value(summary_fields(run)).unwrap_or(Value::Null)
}

/// A run in a list: what [`summary_json`] shows but the trigger and the output, which can be
/// large (`GET /api/v1/runs/{id}` has them).
pub fn list_item_json(run: &RunSummary) -> Value {
    json!({
        "id": run.id,
        "workflow": run.workflow_id,
        "status": run.status.as_str(),
        "error": run.error,
        "created_at": timestamp(Some(run.created_at)),
        "started_at": timestamp(run.started_at),
        "finished_at": timestamp(run.finished_at),
        "revision": run.revision,
    })
}

/// A run in a list whose stored row cannot be read: its id and why.
pub fn unreadable_json(id: &str, error: &str) -> Value {
    json!({
        "id": id,
        "error": { "kind": crate::unreadable::KIND, "message": error },
    })
}

fn node_view<'a>(
    attempts: &[&'a AttemptRecord],
    progress: &[(AttemptKey, Progress)],
) -> Fields<'a> {
    let value = |value: Value| Field::Value(value);
    let Some(latest) = attempts.last() else {
        return BTreeMap::from([
            ("status", value(json!("pending"))),
            ("attempts", value(json!(0))),
            ("output", value(Value::Null)),
            ("error", value(Value::Null)),
            ("started_at", value(Value::Null)),
            ("finished_at", value(Value::Null)),
            ("history", Field::List(Vec::new())),
        ]);
    };
    let ran = attempts.iter().filter(|a| a.started_at.is_some()).count();
    let history = attempts.iter().map(|a| attempt_view(a)).collect();
    let mut node = BTreeMap::from([
        ("status", value(json!(node_status(latest.status)))),
        ("attempts", value(json!(ran))),
        ("output", Field::Json(latest.output.as_ref())),
        ("error", value(json!(latest.error))),
        (
            "started_at",
            value(timestamp(attempts.iter().find_map(|a| a.started_at))),
        ),
        ("finished_at", value(timestamp(latest.finished_at))),
        ("history", Field::List(history)),
    ]);
    if let Some(progress) = running_progress(latest, progress) {
        node.insert("progress", value(json!(progress)));
    }
    node
}

/// The progress of `attempt` while it runs. Once it finished its output (or error) says
/// more, and the last count written (up to a second before the end) would be stale.
fn running_progress(
    attempt: &AttemptRecord,
    progress: &[(AttemptKey, Progress)],
) -> Option<Progress> {
    if attempt.status != AttemptStatus::Running {
        return None;
    }
    progress
        .iter()
        .find(|(key, _)| *key == attempt.key)
        .map(|(_, progress)| *progress)
}

fn attempt_view(attempt: &AttemptRecord) -> Fields<'_> {
    let value = |value: Value| Field::Value(value);
    BTreeMap::from([
        ("attempt", value(json!(attempt.key.attempt))),
        ("status", value(json!(attempt.status.as_str()))),
        ("input", Field::Json(attempt.input.as_ref())),
        ("output", Field::Json(attempt.output.as_ref())),
        ("error", value(json!(attempt.error))),
        ("not_before", value(timestamp(attempt.not_before))),
        ("started_at", value(timestamp(attempt.started_at))),
        ("finished_at", value(timestamp(attempt.finished_at))),
        ("worker", value(json!(attempt.worker))),
    ])
}

/// Node statuses of SPEC: an attempt waiting in the queue or for its backoff is `pending`.
fn node_status(status: AttemptStatus) -> &'static str {
    match status {
        AttemptStatus::Pending | AttemptStatus::Queued => "pending",
        other => other.as_str(),
    }
}

fn timestamp(at: Option<DateTime<Utc>>) -> Value {
    at.map(|at| Value::String(instant(at)))
        .unwrap_or(Value::Null)
}

/// How every instant in the API's JSON is written: RFC 3339, UTC, milliseconds.
pub fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_json(attempts: &[&AttemptRecord], progress: &[(AttemptKey, Progress)]) -> Value {
        serde_json::to_value(node_view(attempts, progress)).expect("JSON")
    }

    fn attempt(node: &str, status: AttemptStatus) -> AttemptRecord {
        let now = Utc::now();
        AttemptRecord {
            key: AttemptKey {
                run_id: "run-1".into(),
                node_id: node.into(),
                attempt: 1,
            },
            status,
            input: None,
            output: None,
            error: None,
            retryable: false,
            not_before: None,
            created_at: now,
            started_at: Some(now),
            finished_at: status.is_finished().then_some(now),
            worker: None,
        }
    }

    #[test]
    fn only_a_running_attempt_shows_its_progress() {
        let running = attempt("each", AttemptStatus::Running);
        let finished = attempt("done", AttemptStatus::Succeeded);
        let progress = [
            (running.key.clone(), Progress { done: 3, total: 10 }),
            (finished.key.clone(), Progress { done: 9, total: 10 }),
        ];
        let each = node_json(&[&running], &progress);
        assert_eq!(each["progress"], json!({ "done": 3, "total": 10 }));
        let done = node_json(&[&finished], &progress);
        assert!(done.get("progress").is_none(), "{done}");
        let none = node_json(&[&running], &[]);
        assert!(none.get("progress").is_none(), "{none}");
    }
}
