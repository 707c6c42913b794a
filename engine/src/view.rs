//! The run as JSON, exactly as SPEC shows it (printed by `enrichflow run`, returned by the API).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::store::{AttemptKey, AttemptRecord, AttemptStatus, Progress, RunRecord, RunSummary};
use crate::workflow::Workflow;

/// The run JSON with every node: its latest status and output, and every attempt in `history`.
/// Nodes never reached are `pending`. A node whose latest attempt is running and has recorded
/// `progress` (a `foreach`) shows it.
pub fn run_json(
    run: &RunRecord,
    attempts: &[AttemptRecord],
    workflow: Option<&Workflow>,
    progress: &[(AttemptKey, Progress)],
) -> Value {
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
    let nodes: Map<String, Value> = by_node
        .into_iter()
        .map(|(id, mut attempts)| {
            attempts.sort_by_key(|a| a.key.attempt);
            (id.to_owned(), node_json(&attempts, progress))
        })
        .collect();
    let mut value = summary_json(run);
    if let Some(map) = value.as_object_mut() {
        map.insert("nodes".into(), Value::Object(nodes));
    }
    value
}

/// The run JSON without nodes (the answer to a trigger, a cancel or a retry).
pub fn summary_json(run: &RunRecord) -> Value {
    let mut value = json!({
        "id": run.id,
        "workflow": run.workflow_id,
        "status": run.status.as_str(),
        "output": run.output,
        "error": run.error,
        "created_at": timestamp(Some(run.created_at)),
        "started_at": timestamp(run.started_at),
        "finished_at": timestamp(run.finished_at),
        "revision": run.revision,
    });
    if let Some(map) = value.as_object_mut() {
        // Moved in rather than copied by `json!`. A trigger that cannot be read shows as
        // null; the run's error says why.
        map.insert("trigger".into(), run.trigger.value().unwrap_or(Value::Null));
    }
    value
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

fn node_json(attempts: &[&AttemptRecord], progress: &[(AttemptKey, Progress)]) -> Value {
    let Some(latest) = attempts.last() else {
        return json!({
            "status": "pending", "attempts": 0, "output": null, "error": null,
            "started_at": null, "finished_at": null, "history": [],
        });
    };
    let ran = attempts.iter().filter(|a| a.started_at.is_some()).count();
    let history: Vec<Value> = attempts.iter().map(|a| attempt_json(a)).collect();
    let mut node = json!({
        "status": node_status(latest.status),
        "attempts": ran,
        "output": latest.output,
        "error": latest.error,
        "started_at": timestamp(attempts.iter().find_map(|a| a.started_at)),
        "finished_at": timestamp(latest.finished_at),
        "history": history,
    });
    if let Some(progress) = running_progress(latest, progress)
        && let Some(map) = node.as_object_mut()
    {
        map.insert("progress".into(), json!(progress));
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

fn attempt_json(attempt: &AttemptRecord) -> Value {
    json!({
        "attempt": attempt.key.attempt,
        "status": attempt.status.as_str(),
        "input": attempt.input,
        "output": attempt.output,
        "error": attempt.error,
        "not_before": timestamp(attempt.not_before),
        "started_at": timestamp(attempt.started_at),
        "finished_at": timestamp(attempt.finished_at),
        "worker": attempt.worker,
    })
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
