//! The scheduler: a pure function from (workflow, run state, now) to the actions that advance
//! the run. It does no IO and never awaits, so every rule of SPEC's "Rules" is a table test here.
//! The driver (`crate::driver`) performs the actions.
//!
//! Times and durations here come from data (stored attempts, workflow files), so every sum is
//! checked or saturating: a lint makes sure no plain `+` on them creeps back in.
#![warn(clippy::arithmetic_side_effects)]

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{AttemptRecord, AttemptStatus, ErrorInfo, RunRecord, RunStatus};
use crate::workflow::{NodeDef, NodeId, OnError, RetryPolicy, Workflow};

/// One step the driver must take.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Record attempt `attempt` of `node` as queued and put it on the queue.
    Enqueue { node: NodeId, attempt: u32 },
    /// Record attempt `attempt` of `node` as pending until `not_before`, then queue it.
    Retry {
        node: NodeId,
        attempt: u32,
        not_before: DateTime<Utc>,
    },
    /// Record `node` as skipped without running it.
    Skip { node: NodeId },
    /// Every node is done and none failed the run: render the output and finish.
    Succeed,
    /// Finish the run as failed: cancel what is in flight, skip what was never reached.
    Fail { error: ErrorInfo },
    /// The user cancelled the run: cancel what is in flight and what was never reached.
    Cancel,
}

/// Where one node stands, derived from its latest attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    /// No attempt yet.
    NotStarted,
    /// An attempt is pending, queued or running.
    InFlight,
    Succeeded,
    Skipped,
    /// Failed and no retry is left (or the error is not retryable).
    Failed,
    Cancelled,
    /// The latest attempt failed and another one is allowed.
    RetryDue,
}

impl NodeState {
    fn is_done(self) -> bool {
        matches!(
            self,
            NodeState::Succeeded | NodeState::Skipped | NodeState::Failed | NodeState::Cancelled
        )
    }
}

/// Decides what to do next for a run. `attempts` are every attempt of the run, in any order.
pub fn decide(
    workflow: &Workflow,
    run: &RunRecord,
    attempts: &[AttemptRecord],
    now: DateTime<Utc>,
) -> Vec<Action> {
    if run.status.is_finished() {
        return Vec::new();
    }
    // A queued run can be cancelled too; it never needs to be admitted first.
    if run.cancel_requested {
        return vec![Action::Cancel];
    }
    if run.status != RunStatus::Running {
        return Vec::new();
    }
    if run.deadline_at.is_some_and(|deadline| now >= deadline) {
        let limit = workflow.timeout.map(format_duration).unwrap_or_default();
        return vec![Action::Fail {
            error: ErrorInfo::new(
                "timeout",
                format!("the run exceeded its timeout of {limit}"),
            ),
        }];
    }

    let latest = latest_attempts(attempts);
    let states: HashMap<&str, NodeState> = workflow
        .nodes
        .values()
        .map(|node| {
            (
                node.id.as_str(),
                node_state(node, latest.get(node.id.as_str())),
            )
        })
        .collect();

    if let Some(error) = run_failure(workflow, &states, &latest) {
        return vec![Action::Fail { error }];
    }

    let mut actions = Vec::new();
    for node in workflow.nodes.values() {
        match states[node.id.as_str()] {
            NodeState::NotStarted => actions.extend(start_or_skip(node, &states)),
            NodeState::RetryDue => {
                if let Some(failed) = latest.get(node.id.as_str()) {
                    actions.push(retry(node, failed));
                }
            }
            _ => {}
        }
    }
    if actions.is_empty() && states.values().all(|state| state.is_done()) {
        actions.push(Action::Succeed);
    }
    actions
}

/// The latest attempt of each node.
pub fn latest_attempts(attempts: &[AttemptRecord]) -> HashMap<&str, &AttemptRecord> {
    let mut latest: HashMap<&str, &AttemptRecord> = HashMap::new();
    for attempt in attempts {
        let node = attempt.key.node_id.as_str();
        if latest
            .get(node)
            .is_none_or(|seen| seen.key.attempt < attempt.key.attempt)
        {
            latest.insert(node, attempt);
        }
    }
    latest
}

fn node_state(node: &NodeDef, latest: Option<&&AttemptRecord>) -> NodeState {
    let Some(attempt) = latest else {
        return NodeState::NotStarted;
    };
    match attempt.status {
        AttemptStatus::Pending | AttemptStatus::Queued | AttemptStatus::Running => {
            NodeState::InFlight
        }
        AttemptStatus::Succeeded => NodeState::Succeeded,
        AttemptStatus::Skipped => NodeState::Skipped,
        AttemptStatus::Cancelled => NodeState::Cancelled,
        AttemptStatus::Failed if attempt.retryable && attempt.key.attempt < node.retry.attempts => {
            NodeState::RetryDue
        }
        AttemptStatus::Failed => NodeState::Failed,
    }
}

/// The first node (in file order) whose final failure fails the run.
fn run_failure(
    workflow: &Workflow,
    states: &HashMap<&str, NodeState>,
    latest: &HashMap<&str, &AttemptRecord>,
) -> Option<ErrorInfo> {
    let failed = workflow.nodes.values().find(|node| {
        node.on_error == OnError::Fail && states[node.id.as_str()] == NodeState::Failed
    })?;
    let cause = latest
        .get(failed.id.as_str())
        .and_then(|attempt| attempt.error.clone())
        .unwrap_or_else(|| ErrorInfo::new("node", "failed"));
    Some(ErrorInfo::new(
        cause.kind,
        format!("node `{}` failed: {}", failed.id, cause.message),
    ))
}

/// A node with no attempt starts once every need is done; it is skipped when all of its needs
/// were skipped, or when a need failed without `on_error: continue` (the run fails anyway).
fn start_or_skip(node: &NodeDef, states: &HashMap<&str, NodeState>) -> Option<Action> {
    let needs: Vec<NodeState> = node
        .needs
        .iter()
        .map(|need| {
            states
                .get(need.as_str())
                .copied()
                .unwrap_or(NodeState::Skipped)
        })
        .collect();
    if !needs.iter().all(|state| state.is_done()) {
        return None;
    }
    let all_skipped = !needs.is_empty() && needs.iter().all(|s| *s == NodeState::Skipped);
    let any_cancelled = needs.contains(&NodeState::Cancelled);
    if all_skipped || any_cancelled {
        return Some(Action::Skip {
            node: node.id.clone(),
        });
    }
    Some(Action::Enqueue {
        node: node.id.clone(),
        attempt: 1,
    })
}

fn retry(node: &NodeDef, failed: &AttemptRecord) -> Action {
    let finished = failed.finished_at.unwrap_or(failed.created_at);
    let delay = backoff(&node.retry, failed.key.attempt, &failed.key.run_id);
    let mut not_before = later_by(finished, delay);
    // A failed attempt's `not_before` carries the wait the remote side asked for (Retry-After).
    if let Some(asked) = failed.not_before {
        not_before = not_before.max(asked);
    }
    Action::Retry {
        node: node.id.clone(),
        // Cannot saturate: a retry is only due while the attempt is below `retry.attempts`.
        attempt: failed.key.attempt.saturating_add(1),
        not_before,
    }
}

/// `time + delay`, or `time` itself when the sum is out of chrono's range (only a corrupt stored
/// time can get there: delays are bounded at load). Retrying early beats panicking the driver.
pub fn later_by(time: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(delay)
        .ok()
        .and_then(|delay| time.checked_add_signed(delay))
        .unwrap_or(time)
}

/// Exponential backoff with "equal jitter": half the delay is fixed, half is spread. The jitter
/// is derived from the run id and attempt, so the decision stays a pure function while
/// different runs still spread out.
pub fn backoff(policy: &RetryPolicy, failed_attempt: u32, run_id: &str) -> Duration {
    let exponent = failed_attempt.saturating_sub(1).min(30);
    let full = policy
        .backoff
        .saturating_mul(1u32 << exponent)
        .min(policy.max_backoff);
    let half = full.checked_div(2).unwrap_or_default();
    let spread = stable_fraction(run_id, failed_attempt);
    // `spread` is in [0, 1), so the product is finite and below `half`.
    half.saturating_add(half.mul_f64(spread))
}

/// A number in [0, 1) from a string and a counter (FNV-1a).
fn stable_fraction(text: &str, counter: u32) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes().chain(counter.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
