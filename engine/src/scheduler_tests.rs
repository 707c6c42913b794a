//! Table tests of the scheduler: each case is a run state and the actions it must produce.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use enrichflow_nodes::Registry;
use serde_json::json;

use super::*;
use crate::store::AttemptKey;
use crate::template::Templates;

fn fixture(name: &str) -> Workflow {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scheduler")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    crate::workflow::load_str(&path, &text, &Registry::with_builtins(), &Templates::new())
        .expect("fixture is valid")
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn running() -> RunRecord {
    RunRecord {
        id: "run-1".into(),
        workflow_id: "w".into(),
        revision: "h".into(),
        status: RunStatus::Running,
        trigger: json!({}).into(),
        output: None,
        error: None,
        created_at: now(),
        started_at: Some(now()),
        finished_at: None,
        deadline_at: None,
        cancel_requested: false,
        idempotency_key: None,
        idempotency_body_hash: None,
    }
}

fn attempt(node: &str, n: u32, status: AttemptStatus) -> AttemptRecord {
    AttemptRecord {
        key: AttemptKey {
            run_id: "run-1".into(),
            node_id: node.into(),
            attempt: n,
        },
        status,
        input: None,
        output: Some(crate::store::Json::from(json!(n))),
        error: (status == AttemptStatus::Failed).then(|| ErrorInfo::new("http", "boom")),
        retryable: false,
        not_before: None,
        created_at: now(),
        started_at: Some(now()),
        finished_at: status.is_finished().then(now),
        worker: None,
    }
}

fn retryable(mut record: AttemptRecord) -> AttemptRecord {
    record.retryable = true;
    record
}

fn enqueue(node: &str, attempt: u32) -> Action {
    Action::Enqueue {
        node: NodeId::parse(node).expect("valid id"),
        attempt,
    }
}

fn skip(node: &str) -> Action {
    Action::Skip {
        node: NodeId::parse(node).expect("valid id"),
    }
}

use AttemptStatus::{Cancelled, Failed, Running, Skipped, Succeeded};

#[test]
fn nodes_start_when_all_needs_are_done() {
    let diamond = fixture("diamond.yaml");
    let cases: Vec<(Vec<AttemptRecord>, Vec<Action>)> = vec![
        (vec![], vec![enqueue("a", 1)]),
        (vec![attempt("a", 1, Running)], vec![]),
        (
            vec![attempt("a", 1, Succeeded)],
            vec![enqueue("b", 1), enqueue("c", 1)],
        ),
        (
            vec![
                attempt("a", 1, Succeeded),
                attempt("b", 1, Succeeded),
                attempt("c", 1, Running),
            ],
            vec![],
        ),
        (
            vec![
                attempt("a", 1, Succeeded),
                attempt("b", 1, Succeeded),
                attempt("c", 1, Skipped),
            ],
            vec![enqueue("d", 1)],
        ),
        (
            vec![
                attempt("a", 1, Succeeded),
                attempt("b", 1, Skipped),
                attempt("c", 1, Skipped),
            ],
            vec![skip("d")],
        ),
        (
            vec![
                attempt("a", 1, Succeeded),
                attempt("b", 1, Succeeded),
                attempt("c", 1, Succeeded),
                attempt("d", 1, Succeeded),
            ],
            vec![Action::Succeed],
        ),
        (vec![attempt("a", 1, Skipped)], vec![skip("b"), skip("c")]),
        (
            vec![
                attempt("a", 1, Skipped),
                attempt("b", 1, Skipped),
                attempt("c", 1, Skipped),
                attempt("d", 1, Skipped),
            ],
            vec![Action::Succeed],
        ),
    ];
    for (attempts, expected) in cases {
        let actions = decide(&diamond, &running(), &attempts, now());
        assert_eq!(actions, expected, "attempts: {attempts:?}");
    }
}

#[test]
fn a_final_failure_fails_the_run_and_names_the_node() {
    let diamond = fixture("diamond.yaml");
    let actions = decide(&diamond, &running(), &[attempt("a", 1, Failed)], now());
    assert_eq!(
        actions,
        vec![Action::Fail {
            error: ErrorInfo::new("http", "node `a` failed: boom")
        }]
    );
    // The retry budget (3 attempts) is spent.
    let actions = decide(
        &diamond,
        &running(),
        &[retryable(attempt("a", 3, Failed))],
        now(),
    );
    assert!(
        matches!(actions.as_slice(), [Action::Fail { .. }]),
        "{actions:?}"
    );
}

#[test]
fn retryable_failures_retry_after_a_growing_backoff() {
    let diamond = fixture("diamond.yaml");
    let actions = decide(
        &diamond,
        &running(),
        &[retryable(attempt("a", 1, Failed))],
        now(),
    );
    let [
        Action::Retry {
            node,
            attempt,
            not_before,
        },
    ] = actions.as_slice()
    else {
        panic!("expected one retry, got {actions:?}");
    };
    assert_eq!((node.as_str(), *attempt), ("a", 2));
    let wait = (*not_before - now()).to_std().expect("in the future");
    assert!(
        wait >= Duration::from_millis(500) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );

    let policy = diamond.nodes["a"].retry;
    for failed in 1..40 {
        let delay = backoff(&policy, failed, "run-1");
        assert!(delay <= policy.max_backoff, "attempt {failed}: {delay:?}");
        assert!(
            delay >= (policy.backoff * 2u32.saturating_pow(failed - 1)).min(policy.max_backoff) / 2
        );
    }
}

#[test]
fn retry_after_from_the_remote_side_is_honoured() {
    let diamond = fixture("diamond.yaml");
    let mut failed = retryable(attempt("a", 1, Failed));
    let asked = now() + chrono::Duration::seconds(30);
    failed.not_before = Some(asked);
    let actions = decide(&diamond, &running(), &[failed], now());
    assert!(
        matches!(actions.as_slice(), [Action::Retry { not_before, .. }] if *not_before == asked),
        "{actions:?}"
    );
}

#[test]
fn on_error_continue_lets_dependents_run() {
    let workflow = fixture("continue.yaml");
    let actions = decide(&workflow, &running(), &[attempt("a", 1, Failed)], now());
    assert_eq!(actions, vec![enqueue("b", 1)]);
    let done = [attempt("a", 1, Failed), attempt("b", 1, Succeeded)];
    assert_eq!(
        decide(&workflow, &running(), &done, now()),
        vec![Action::Succeed]
    );
}

#[test]
fn cancellation_timeout_and_finished_runs() {
    let diamond = fixture("diamond.yaml");
    let mut cancelled = running();
    cancelled.cancel_requested = true;
    assert_eq!(
        decide(&diamond, &cancelled, &[], now()),
        vec![Action::Cancel]
    );

    let mut late = running();
    late.deadline_at = Some(now() - chrono::Duration::seconds(1));
    let actions = decide(&diamond, &late, &[attempt("a", 1, Running)], now());
    assert!(
        matches!(actions.as_slice(), [Action::Fail { error }] if error.kind == "timeout"),
        "{actions:?}"
    );

    let mut finished = running();
    finished.status = RunStatus::Succeeded;
    assert!(decide(&diamond, &finished, &[], now()).is_empty());
    let mut queued = running();
    queued.status = RunStatus::Queued;
    assert!(decide(&diamond, &queued, &[], now()).is_empty());
    queued.cancel_requested = true;
    assert_eq!(decide(&diamond, &queued, &[], now()), vec![Action::Cancel]);
}

#[test]
fn a_cancelled_need_skips_its_dependents() {
    let diamond = fixture("diamond.yaml");
    let attempts = [
        attempt("a", 1, Succeeded),
        attempt("b", 1, Cancelled),
        attempt("c", 1, Succeeded),
    ];
    assert_eq!(
        decide(&diamond, &running(), &attempts, now()),
        vec![skip("d")]
    );
}

/// The largest policy a file can hold: no exponent, attempt count or stored time overflows.
#[test]
fn backoff_never_overflows_and_stays_within_its_ceiling() {
    let day = Duration::from_secs(24 * 60 * 60);
    let policies = [
        RetryPolicy {
            attempts: u32::MAX,
            backoff: day,
            max_backoff: day,
        },
        // Not loadable from a file, but the arithmetic must hold for any value.
        RetryPolicy {
            attempts: u32::MAX,
            backoff: Duration::MAX,
            max_backoff: Duration::MAX,
        },
    ];
    for policy in policies {
        for failed in [1, 2, 31, 32, 33, 64, u32::MAX - 1, u32::MAX] {
            let delay = backoff(&policy, failed, "run-1");
            assert!(delay <= policy.max_backoff, "attempt {failed}: {delay:?}");
            assert!(delay >= policy.max_backoff.min(policy.backoff) / 2);
        }
    }
}

#[test]
fn time_sums_out_of_range_do_not_panic() {
    let max = DateTime::<Utc>::MAX_UTC;
    let day = Duration::from_secs(24 * 60 * 60);
    let cases = [
        (
            now(),
            Duration::from_secs(30),
            now() + chrono::Duration::seconds(30),
        ),
        (now(), Duration::MAX, now()),
        (max, day, max),
        (max, Duration::ZERO, max),
    ];
    for (time, delay, expected) in cases {
        assert_eq!(later_by(time, delay), expected, "{time} + {delay:?}");
    }
}

#[test]
fn a_retry_from_the_last_possible_attempt_or_time_is_still_decided() {
    let text = "id: many\nnodes:\n  a: { type: transform, with: { value: 1 }, \
        retry: { attempts: 4294967295, backoff: 24h, max_backoff: 24h } }\n";
    let workflow = crate::workflow::load_str(
        Path::new("many.yaml"),
        text,
        &Registry::with_builtins(),
        &Templates::new(),
    )
    .expect("valid");
    let mut failed = retryable(attempt("a", u32::MAX - 1, Failed));
    failed.finished_at = Some(DateTime::<Utc>::MAX_UTC);
    let actions = decide(&workflow, &running(), &[failed], now());
    assert_eq!(
        actions,
        vec![Action::Retry {
            node: NodeId::parse("a").expect("valid id"),
            attempt: u32::MAX,
            not_before: DateTime::<Utc>::MAX_UTC,
        }]
    );
    // The last attempt allowed failed: the node is done and the run fails.
    let last = retryable(attempt("a", u32::MAX, Failed));
    let actions = decide(&workflow, &running(), &[last], now());
    assert!(
        matches!(actions.as_slice(), [Action::Fail { .. }]),
        "{actions:?}"
    );
}
