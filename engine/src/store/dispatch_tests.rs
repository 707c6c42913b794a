//! The dispatch contract (`Dispatch`: outbox, leases, overdue and stalled runs) as checks over
//! `&dyn Store`, run on both stores by `tests.rs`'s `store_checks!`.

use anyhow::Result;
use serde_json::json;

use super::tests::*;
use super::{AttemptRecord, AttemptStatus, RunRecord, RunStatus, Store};

/// One `#[tokio::test]` per check and store: each on a fresh SQLite file, and each on a fresh
/// Postgres database when `ENRICHFLOW_TEST_DATABASE_URL` is set.
pub(super) async fn outbox_lists_queued_attempts_the_broker_never_confirmed(
    store: &dyn Store,
) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    for node in ["a", "b", "c"] {
        store
            .insert_attempt(&attempt(key(1, node, 1), AttemptStatus::Queued))
            .await?;
    }
    let retry = AttemptRecord {
        not_before: Some(at(120)),
        ..attempt(key(1, "d", 1), AttemptStatus::Pending)
    };
    store.insert_attempt(&retry).await?;
    store.mark_dispatched(&[key(1, "b", 1)]).await?;
    store.mark_dispatched(&[]).await?;
    assert!(
        store
            .start_attempt(&key(1, "c", 1), None, "w1", at(110))
            .await?
    );
    assert_eq!(store.undispatched_attempts(at(50)).await?, [], "too fresh");
    assert_eq!(
        store.undispatched_attempts(at(150)).await?,
        [key(1, "a", 1)]
    );
    // A retry promoted to queued needs publishing, counted from when it became due.
    assert_eq!(store.promote_due_attempts(at(130)).await?, [key(1, "d", 1)]);
    assert_eq!(
        store.undispatched_attempts(at(115)).await?,
        [key(1, "a", 1)]
    );
    let mut due = store.undispatched_attempts(at(150)).await?;
    due.sort_by(|x, y| x.node_id.cmp(&y.node_id));
    assert_eq!(due, [key(1, "a", 1), key(1, "d", 1)]);
    store
        .mark_dispatched(&[key(1, "a", 1), key(1, "d", 1)])
        .await?;
    assert_eq!(store.undispatched_attempts(at(150)).await?, []);
    Ok(())
}

/// Local continuation: an attempt inserted `running` with its parent's outcome is under its
/// worker's lease from that commit on, renewed by that worker's heartbeat and handed on by the
/// sweep once it runs out, like an attempt started the ordinary way.
pub(super) async fn a_claimed_attempt_is_leased_from_its_parents_commit(
    store: &dyn Store,
) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    let parent = attempt(key(1, "a", 1), AttemptStatus::Queued);
    store.insert_attempt(&parent).await?;
    let claimed = AttemptRecord {
        started_at: Some(at(100)),
        worker: Some("w1".into()),
        ..attempt(key(1, "b", 1), AttemptStatus::Running)
    };
    let published = attempt(key(1, "c", 1), AttemptStatus::Queued);
    let next = [claimed.clone(), published];
    let success = outcome(AttemptStatus::Succeeded, Some(json!({"n": 1})));
    store
        .finish_attempt_then(&parent.key, &success, &next, None)
        .await?;
    assert_eq!(stored_attempt(store, &claimed.key).await?, claimed);
    // Not in the outbox: the worker runs it itself.
    assert_eq!(
        store.undispatched_attempts(at(500)).await?,
        [key(1, "c", 1)]
    );
    assert_eq!(store.heartbeat("w1", at(200)).await?, 1);
    assert_eq!(store.claim_stale_attempts(at(150), at(300)).await?, []);
    assert_eq!(
        store.claim_stale_attempts(at(250), at(300)).await?,
        [key(1, "b", 1)]
    );
    Ok(())
}

pub(super) async fn leases_run_out_unless_renewed(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    for node in ["a", "b", "c"] {
        let queued = attempt(key(1, node, 1), AttemptStatus::Queued);
        store.insert_attempt(&queued).await?;
    }
    for (node, worker) in [("a", "w1"), ("b", "w2"), ("c", "w2")] {
        store
            .start_attempt(&key(1, node, 1), None, worker, at(100))
            .await?;
    }
    store
        .finish_attempt(&key(1, "c", 1), &outcome(AttemptStatus::Succeeded, None))
        .await?;
    assert_eq!(store.heartbeat("w1", at(200)).await?, 1);
    assert_eq!(store.heartbeat("nobody", at(200)).await?, 0);
    assert_eq!(
        store.claim_stale_attempts(at(150), at(300)).await?,
        [key(1, "b", 1)]
    );
    // Claimed means renewed: the next sweep leaves it to whoever took it.
    assert_eq!(store.claim_stale_attempts(at(150), at(300)).await?, []);
    let b = stored_attempt(store, &key(1, "b", 1)).await?;
    assert_eq!(b.worker.as_deref(), Some("w2"));
    assert_eq!(b.status, AttemptStatus::Running);
    // Taken over by another worker at its redelivery.
    assert!(
        store
            .start_attempt(&key(1, "b", 1), None, "w3", at(310))
            .await?
    );
    let b = stored_attempt(store, &key(1, "b", 1)).await?;
    assert_eq!(b.worker.as_deref(), Some("w3"));
    Ok(())
}

pub(super) async fn overdue_runs_are_running_past_their_deadline(store: &dyn Store) -> Result<()> {
    let runs = [
        (1, RunStatus::Running, Some(at(100))),
        (2, RunStatus::Running, Some(at(300))),
        (3, RunStatus::Running, None),
        (4, RunStatus::Succeeded, Some(at(100))),
        (5, RunStatus::Running, Some(at(200))),
    ];
    for (n, status, deadline_at) in runs {
        store
            .create_run(&RunRecord {
                deadline_at,
                ..run(n, "w", status)
            })
            .await?;
    }
    assert_eq!(store.overdue_runs(at(200)).await?, [run_id(1), run_id(5)]);
    Ok(())
}

pub(super) async fn stalled_runs_have_nothing_open_and_nothing_recent(
    store: &dyn Store,
) -> Result<()> {
    // (run, status, its attempt: status and finish time)
    let runs = [
        (
            1,
            RunStatus::Running,
            Some((AttemptStatus::Succeeded, Some(at(50)))),
        ),
        (2, RunStatus::Running, Some((AttemptStatus::Queued, None))),
        (
            3,
            RunStatus::Running,
            Some((AttemptStatus::Succeeded, Some(at(150)))),
        ),
        (
            4,
            RunStatus::Succeeded,
            Some((AttemptStatus::Succeeded, Some(at(50)))),
        ),
        (5, RunStatus::Running, None),
        (6, RunStatus::Running, Some((AttemptStatus::Pending, None))),
        (7, RunStatus::Running, Some((AttemptStatus::Running, None))),
    ];
    for (n, status, node) in runs {
        let started = RunRecord {
            started_at: Some(at(0)),
            ..run(n, "w", status)
        };
        store.create_run(&started).await?;
        if let Some((status, finished_at)) = node {
            let record = AttemptRecord {
                finished_at,
                ..attempt(key(n, "a", 1), status)
            };
            store.insert_attempt(&record).await?;
        }
    }
    assert_eq!(store.stalled_runs(at(100)).await?, [run_id(1), run_id(5)]);
    Ok(())
}

store_checks!(
    outbox_lists_queued_attempts_the_broker_never_confirmed,
    a_claimed_attempt_is_leased_from_its_parents_commit,
    leases_run_out_unless_renewed,
    overdue_runs_are_running_past_their_deadline,
    stalled_runs_have_nothing_open_and_nothing_recent,
);
