//! A manual retry of a failed or cancelled run (`POST /api/v1/runs/{id}/retry`): the run goes on
//! from where it stopped. What runs again is decided here from the run's attempts alone; the
//! engine applies it in one store transaction and lets the scheduler take over.
//!
//! - A node whose latest attempt failed (and whose failure fails the run) or was cancelled runs
//!   again as its next attempt; its needs are done, since it had started. The retry grants that
//!   one attempt: the node's `retry.attempts` counts every attempt, so automatic retries follow
//!   only while the attempt number is below it.
//! - A node the run never reached (its attempt is a placeholder of kind `unreached`) loses the
//!   placeholder and is decided afresh once its needs are done.
//! - Everything else — succeeded nodes, nodes skipped on purpose, failures accepted by
//!   `on_error: continue` — stays as it is, so no side effect is repeated.

use crate::driver::UNREACHED;
use crate::scheduler::latest_attempts;
use crate::store::{AttemptKey, AttemptRecord, AttemptStatus};
use crate::workflow::{OnError, Workflow};

/// The attempts to delete and the next attempts to queue.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub remove: Vec<AttemptKey>,
    pub requeue: Vec<AttemptKey>,
}

pub fn plan(workflow: &Workflow, attempts: &[AttemptRecord]) -> Plan {
    let latest = latest_attempts(attempts);
    let mut plan = Plan::default();
    for node in workflow.nodes.values() {
        let Some(attempt) = latest.get(node.id.as_str()) else {
            continue;
        };
        let placeholder = attempt
            .error
            .as_ref()
            .is_some_and(|error| error.kind == UNREACHED);
        let rerun = match attempt.status {
            AttemptStatus::Failed => node.on_error == OnError::Fail,
            AttemptStatus::Cancelled => true,
            _ => false,
        };
        if placeholder {
            plan.remove.push(attempt.key.clone());
        } else if rerun {
            plan.requeue.push(AttemptKey {
                attempt: attempt.key.attempt + 1,
                ..attempt.key.clone()
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::store::ErrorInfo;
    use crate::template::Templates;
    use crate::workflow::load_str;

    const WORKFLOW: &str = "
id: w
nodes:
  ok: { type: transform, with: { value: 1 } }
  broken: { type: transform, needs: [ok], with: { value: 2 } }
  tolerated: { type: transform, on_error: continue, with: { value: 3 } }
  parallel: { type: transform, with: { value: 4 } }
  chosen_skip: { type: transform, if: 'false', with: { value: 5 } }
  after: { type: transform, needs: [broken], with: { value: 6 } }
";

    fn attempt(node: &str, number: u32, status: AttemptStatus) -> AttemptRecord {
        AttemptRecord {
            key: AttemptKey {
                run_id: "r".into(),
                node_id: node.into(),
                attempt: number,
            },
            status,
            input: None,
            output: None,
            error: None,
            retryable: false,
            not_before: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            worker: None,
        }
    }

    fn key(node: &str, number: u32) -> AttemptKey {
        attempt(node, number, AttemptStatus::Queued).key
    }

    #[test]
    fn failed_and_cancelled_nodes_run_again_and_unreached_ones_are_reopened() {
        let registry = enrichflow_nodes::Registry::with_builtins();
        let workflow = load_str(
            std::path::Path::new("w.yaml"),
            WORKFLOW,
            &registry,
            &Templates::new(),
        )
        .expect("a valid workflow");
        let attempts = [
            attempt("ok", 1, AttemptStatus::Succeeded),
            attempt("broken", 1, AttemptStatus::Failed),
            attempt("broken", 2, AttemptStatus::Failed),
            attempt("tolerated", 1, AttemptStatus::Failed),
            attempt("parallel", 1, AttemptStatus::Cancelled),
            attempt("chosen_skip", 1, AttemptStatus::Skipped),
            AttemptRecord {
                error: Some(ErrorInfo::new(UNREACHED, "the run ended")),
                ..attempt("after", 1, AttemptStatus::Skipped)
            },
        ];
        let mut plan = plan(&workflow, &attempts);
        plan.requeue.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        assert_eq!(
            plan,
            Plan {
                remove: vec![key("after", 1)],
                requeue: vec![key("broken", 3), key("parallel", 2)],
            }
        );
    }
}
