//! The attempts contract (`Attempts`) as checks over `&dyn Store`, run on both stores by
//! `tests.rs`'s `store_checks!`, and Postgres' version check under concurrency.

use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};

use super::tests::*;
use super::{
    AttemptKey, AttemptOutcome, AttemptRecord, AttemptStatus, ErrorInfo, PostgresStore, RunStatus,
    Store,
};
use super::{Attempts, Completed, Dispatch, Json, RunEnd, Runs};

pub(super) async fn insert_attempt_only_once(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    store.create_run(&run(2, "w", RunStatus::Running)).await?;
    let first = AttemptRecord {
        input: Some(Json::from(json!({ "email": "ada@example.com" }))),
        ..attempt(key(1, "company", 2), AttemptStatus::Queued)
    };
    assert!(store.insert_attempt(&first).await?);
    let duplicate = AttemptRecord {
        status: AttemptStatus::Skipped,
        ..attempt(key(1, "company", 2), AttemptStatus::Queued)
    };
    assert!(!store.insert_attempt(&duplicate).await?);
    assert_eq!(stored_attempt(store, &first.key).await?, first);

    // Ordered by node id, then by attempt as a number (10 after 2).
    for key in [
        key(1, "company", 10),
        key(1, "alert", 1),
        key(1, "company", 1),
        key(2, "a", 1),
    ] {
        assert!(
            store
                .insert_attempt(&attempt(key, AttemptStatus::Pending))
                .await?
        );
    }
    let order: Vec<AttemptKey> = store
        .attempts(&run_id(1))
        .await?
        .into_iter()
        .map(|attempt| attempt.key)
        .collect();
    let expected = [
        key(1, "alert", 1),
        key(1, "company", 1),
        key(1, "company", 2),
        key(1, "company", 10),
    ];
    assert_eq!(order, expected);
    assert_eq!(store.attempts(&run_id(99)).await?, []);
    Ok(())
}

pub(super) async fn attempts_need_their_run(store: &dyn Store) -> Result<()> {
    let orphan = attempt(key(99, "node", 1), AttemptStatus::Queued);
    ensure!(
        store.insert_attempt(&orphan).await.is_err(),
        "an attempt of no run is refused"
    );
    Ok(())
}

pub(super) async fn start_attempt_transitions(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    let input = json!({ "domain": "example.com" });
    for (n, from) in (1..).zip(ALL_ATTEMPT_STATUSES) {
        let before = attempt(key(1, "node", n), from);
        store.insert_attempt(&before).await?;
        let started = store
            .start_attempt(&before.key, Some(&Json::from(&input)), "w1", at(150))
            .await?;
        let may_start = matches!(from, AttemptStatus::Queued | AttemptStatus::Running);
        let expected = if may_start {
            AttemptRecord {
                status: AttemptStatus::Running,
                input: Some(Json::from(&input)),
                started_at: Some(at(150)),
                worker: Some("w1".to_owned()),
                ..before.clone()
            }
        } else {
            before.clone()
        };
        assert_eq!(started, may_start, "start_attempt from {from}");
        assert_eq!(
            stored_attempt(store, &before.key).await?,
            expected,
            "from {from}"
        );
    }
    assert!(
        !store
            .start_attempt(&key(1, "missing", 1), None, "w1", at(150))
            .await?
    );
    Ok(())
}

pub(super) async fn finish_attempt_transitions(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    let failure = AttemptOutcome {
        status: AttemptStatus::Failed,
        output: None,
        error: Some(ErrorInfo::new("http", "429 Too Many Requests")),
        retryable: true,
        not_before: Some(at_micros(250_000_001)),
        finished_at: at(200),
        started: None,
    };
    for (n, from) in (1..).zip(ALL_ATTEMPT_STATUSES) {
        let before = AttemptRecord {
            not_before: Some(at(50)),
            ..attempt(key(1, "node", n), from)
        };
        store.insert_attempt(&before).await?;
        let finished = store.finish_attempt(&before.key, &failure).await?;
        let expected = if from.is_finished() {
            before.clone()
        } else {
            AttemptRecord {
                status: AttemptStatus::Failed,
                error: failure.error.clone(),
                retryable: true,
                not_before: failure.not_before,
                finished_at: Some(at(200)),
                ..before.clone()
            }
        };
        assert_eq!(finished, !from.is_finished(), "finish_attempt from {from}");
        assert_eq!(
            stored_attempt(store, &before.key).await?,
            expected,
            "from {from}"
        );
        let success = outcome(AttemptStatus::Succeeded, Some(json!(1)));
        assert!(
            !store.finish_attempt(&before.key, &success).await?,
            "twice from {from}"
        );
        assert_eq!(
            stored_attempt(store, &before.key).await?,
            expected,
            "twice from {from}"
        );
    }
    let success = outcome(AttemptStatus::Succeeded, None);
    assert!(
        !store
            .finish_attempt(&key(1, "missing", 1), &success)
            .await?
    );
    Ok(())
}

/// Whether a write took (the attempt, the run).
fn wrote(completed: Completed) -> (bool, bool) {
    (completed.attempt, completed.run)
}

pub(super) async fn finish_attempt_then_inserts_only_with_the_outcome(
    store: &dyn Store,
) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    let parent = attempt(key(1, "a", 1), AttemptStatus::Queued);
    store.insert_attempt(&parent).await?;
    let skipped = AttemptRecord {
        finished_at: Some(at(150)),
        error: Some(ErrorInfo::new("unreached", "never ran")),
        ..attempt(key(1, "c", 1), AttemptStatus::Skipped)
    };
    let next = [
        attempt(key(1, "b", 1), AttemptStatus::Queued),
        skipped,
        AttemptRecord {
            not_before: Some(at(300)),
            input: Some(Json::from(json!({"deep": [1, null]}))),
            ..attempt(key(1, "d", 2), AttemptStatus::Pending)
        },
    ];
    let success = outcome(AttemptStatus::Succeeded, Some(json!({"n": 1})));
    // (the attempt, the run) written.
    let only_attempt = (true, false);
    assert_eq!(
        wrote(
            store
                .finish_attempt_then(&parent.key, &success, &next, None)
                .await?
        ),
        only_attempt
    );
    let mut expected = parent.clone();
    expected.apply(&success);
    let mut all = vec![expected];
    all.extend(next.iter().cloned());
    assert_eq!(store.attempts(&run_id(1)).await?, all);
    // A second outcome is refused, and then nothing it carries is written.
    let later = [attempt(key(1, "e", 1), AttemptStatus::Queued)];
    let end = RunEnd {
        status: RunStatus::Succeeded,
        output: Some(json!({"done": true})),
        error: None,
        finished_at: at(400),
    };
    assert_eq!(
        wrote(
            store
                .finish_attempt_then(&parent.key, &success, &later, Some(&end))
                .await?
        ),
        (false, false)
    );
    assert_eq!(store.attempts(&run_id(1)).await?, all);
    assert_eq!(
        stored_run(store, &run_id(1)).await?.status,
        RunStatus::Running
    );
    // An attempt that exists already is kept as it is; the rest still goes in.
    let open = attempt(key(1, "b", 2), AttemptStatus::Queued);
    store.insert_attempt(&open).await?;
    let again = [
        attempt(key(1, "b", 1), AttemptStatus::Failed),
        attempt(key(1, "f", 1), AttemptStatus::Queued),
    ];
    assert_eq!(
        wrote(
            store
                .finish_attempt_then(&open.key, &success, &again, None)
                .await?
        ),
        only_attempt
    );
    let attempts = store.attempts(&run_id(1)).await?;
    assert_eq!(attempts.len(), 6);
    assert_eq!(
        attempts.iter().find(|a| a.key == key(1, "b", 1)),
        Some(&next[0])
    );
    // The last outcome ends the run in the same write, once.
    let both = (true, true);
    assert_eq!(
        wrote(
            store
                .finish_attempt_then(&key(1, "f", 1), &success, &[], Some(&end))
                .await?
        ),
        both
    );
    let ended = stored_run(store, &run_id(1)).await?;
    assert_eq!(
        (ended.status, ended.output, ended.finished_at),
        (RunStatus::Succeeded, end.output.clone(), Some(at(400)))
    );
    // An open attempt of an ended run still takes its outcome; the run is not ended twice.
    let straggler = attempt(key(1, "g", 1), AttemptStatus::Running);
    store.insert_attempt(&straggler).await?;
    assert_eq!(
        wrote(
            store
                .finish_attempt_then(&straggler.key, &success, &[], Some(&end))
                .await?
        ),
        only_attempt
    );
    Ok(())
}

pub(super) async fn promote_due_attempts_respects_not_before(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    store.create_run(&run(2, "w", RunStatus::Running)).await?;
    assert_eq!(store.next_due_at().await?, None);
    assert_eq!(store.promote_due_attempts(at(1_000)).await?, []);
    let waiting = |key, status, not_before| AttemptRecord {
        not_before,
        ..attempt(key, status)
    };
    let attempts = [
        waiting(key(2, "early", 1), AttemptStatus::Pending, Some(at(-10))),
        waiting(key(1, "exact", 2), AttemptStatus::Pending, Some(at(0))),
        waiting(key(1, "later", 1), AttemptStatus::Pending, Some(at(10))),
        // One microsecond is enough to wait.
        waiting(
            key(1, "just-later", 1),
            AttemptStatus::Pending,
            Some(at_micros(1)),
        ),
        waiting(key(1, "queued", 1), AttemptStatus::Queued, Some(at(-20))),
        waiting(key(1, "failed", 1), AttemptStatus::Failed, Some(at(-30))),
    ];
    for attempt in &attempts {
        store.insert_attempt(attempt).await?;
    }
    assert_eq!(store.next_due_at().await?, Some(at(-10)));

    let promoted = store.promote_due_attempts(at(0)).await?;
    assert_eq!(promoted, [key(1, "exact", 2), key(2, "early", 1)]);
    for key in &promoted {
        assert_eq!(
            stored_attempt(store, key).await?.status,
            AttemptStatus::Queued
        );
    }
    assert_eq!(store.promote_due_attempts(at(0)).await?, []);
    assert_eq!(store.next_due_at().await?, Some(at_micros(1)));

    assert_eq!(
        store.promote_due_attempts(at_micros(1)).await?,
        [key(1, "just-later", 1)]
    );
    assert_eq!(store.next_due_at().await?, Some(at(10)));
    assert_eq!(
        store.promote_due_attempts(at(3_600)).await?,
        [key(1, "later", 1)]
    );
    assert_eq!(store.next_due_at().await?, None);

    // Nothing else moved.
    for (attempt, status) in attempts[4..]
        .iter()
        .zip([AttemptStatus::Queued, AttemptStatus::Failed])
    {
        assert_eq!(stored_attempt(store, &attempt.key).await?.status, status);
    }
    Ok(())
}

pub(super) async fn pending_without_not_before_is_due(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    store
        .insert_attempt(&attempt(key(1, "n", 1), AttemptStatus::Pending))
        .await?;
    assert_eq!(store.next_due_at().await?, None);
    assert_eq!(store.promote_due_attempts(at(0)).await?, [key(1, "n", 1)]);
    Ok(())
}

pub(super) async fn open_attempts_of_unfinished_runs(store: &dyn Store) -> Result<()> {
    assert_eq!(store.open_attempts().await?, []);
    for (n, status) in (1..).zip(ALL_RUN_STATUSES) {
        store.create_run(&run(n, "w", status)).await?;
        for (node, attempt_status) in ["a", "b", "c", "d", "e", "f", "g"]
            .into_iter()
            .zip(ALL_ATTEMPT_STATUSES)
        {
            store
                .insert_attempt(&attempt(key(n, node, 1), attempt_status))
                .await?;
        }
    }
    // Runs 1 and 2 are queued and running; nodes b and c hold their queued and running attempts.
    let expected = [
        key(1, "b", 1),
        key(1, "c", 1),
        key(2, "b", 1),
        key(2, "c", 1),
    ];
    assert_eq!(store.open_attempts().await?, expected);
    Ok(())
}

pub(super) async fn cancel_open_attempts_of_one_run(store: &dyn Store) -> Result<()> {
    for n in [1, 2] {
        store.create_run(&run(n, "w", RunStatus::Running)).await?;
        for (number, status) in (1..).zip(ALL_ATTEMPT_STATUSES) {
            store
                .insert_attempt(&attempt(key(n, "node", number), status))
                .await?;
        }
    }
    assert_eq!(store.cancel_open_attempts(&run_id(1), at(300)).await?, 3);
    for (before, after) in store
        .attempts(&run_id(1))
        .await?
        .iter()
        .zip(ALL_ATTEMPT_STATUSES)
    {
        let expected = if after.is_finished() {
            attempt(before.key.clone(), after)
        } else {
            AttemptRecord {
                finished_at: Some(at(300)),
                ..attempt(before.key.clone(), AttemptStatus::Cancelled)
            }
        };
        assert_eq!(before, &expected, "cancel from {after}");
    }
    assert_eq!(store.cancel_open_attempts(&run_id(1), at(400)).await?, 0);
    let untouched: Vec<AttemptStatus> = store
        .attempts(&run_id(2))
        .await?
        .iter()
        .map(|attempt| attempt.status)
        .collect();
    assert_eq!(untouched, ALL_ATTEMPT_STATUSES);
    Ok(())
}

pub(super) async fn json_null_and_absent_stay_apart(store: &dyn Store) -> Result<()> {
    let values = [
        None,
        Some(Value::Null),
        Some(json!({})),
        Some(json!([])),
        Some(json!("")),
        Some(json!("null")),
        Some(json!(0)),
        Some(json!({ "a": null, "b": [null, { "c": 1.5e-7 }] })),
    ];
    for (n, value) in (1..).zip(&values) {
        let key = key(n, "node", 1);
        store.create_run(&run(n, "w", RunStatus::Running)).await?;
        store
            .finish_run(
                &run_id(n),
                RunStatus::Succeeded,
                value.as_ref(),
                None,
                at(9),
            )
            .await?;
        assert_eq!(&stored_run(store, &run_id(n)).await?.output, value);

        let shared = value.clone().map(Json::from);
        let record = AttemptRecord {
            input: shared.clone(),
            output: shared.clone(),
            ..attempt(key.clone(), AttemptStatus::Queued)
        };
        store.insert_attempt(&record).await?;
        assert_eq!(stored_attempt(store, &key).await?, record);
        store
            .start_attempt(&key, shared.as_ref(), "w1", at(150))
            .await?;
        assert_eq!(&stored_attempt(store, &key).await?.input, &shared);
        store
            .finish_attempt(&key, &outcome(AttemptStatus::Succeeded, value.clone()))
            .await?;
        assert_eq!(&stored_attempt(store, &key).await?.output, &shared);
    }
    Ok(())
}

#[tokio::test]
async fn postgres_promotes_each_attempt_once_under_concurrency() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    database
        .run_check(async |store: &PostgresStore| {
            store.create_run(&run(1, "w", RunStatus::Running)).await?;
            let n_attempts = 200;
            for number in 1..=n_attempts {
                let pending = AttemptRecord {
                    not_before: Some(at(0)),
                    ..attempt(key(1, "node", number), AttemptStatus::Pending)
                };
                store.insert_attempt(&pending).await?;
            }
            // Several schedulers promoting at once, each on its own pooled connection.
            let promotions =
                futures::future::try_join_all((0..4).map(|_| store.promote_due_attempts(at(1))))
                    .await?;
            let mut promoted: Vec<u32> = promotions
                .into_iter()
                .flatten()
                .map(|key| key.attempt)
                .collect();
            promoted.sort_unstable();
            assert_eq!(promoted, (1..=n_attempts).collect::<Vec<_>>());
            Ok(())
        })
        .await
}

/// The version a worker continuing a run writes against: its own writes return the next one,
/// and every other write that changes what deciding the run depends on makes it stale, after
/// which nothing of a write against it goes in.
#[tokio::test]
async fn postgres_writes_against_a_stale_run_version_are_refused() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    database
        .run_check(async |store: &PostgresStore| {
            let success = outcome(AttemptStatus::Succeeded, Some(json!(1)));
            store.create_run(&run(1, "w", RunStatus::Running)).await?;
            for node in ["a", "b", "c", "d"] {
                store
                    .insert_attempt(&attempt(key(1, node, 1), AttemptStatus::Queued))
                    .await?;
            }
            // A write without a version (under the run's lock) returns the run's version.
            let first = store
                .finish_attempt_then(&key(1, "a", 1), &success, &[], None)
                .await?;
            let Some(version) = first.version else {
                bail!("Postgres keeps versions: {first:?}");
            };
            let next = [attempt(key(1, "e", 1), AttemptStatus::Queued)];
            let current = store
                .finish_attempt_if_current(version, &key(1, "b", 1), &success, &next, None)
                .await?;
            ensure!(
                current
                    == Some(Completed {
                        attempt: true,
                        run: false,
                        version: Some(version + 1)
                    }),
                "{current:?}"
            );
            // What leases and dispatch do leaves the version alone.
            store
                .start_attempt(&key(1, "c", 1), None, "w1", at(100))
                .await?;
            store.heartbeat("w1", at(110)).await?;
            store.mark_dispatched(&[key(1, "e", 1)]).await?;
            let version = version + 1;
            // Each of these changes the run under a continuing worker's feet: a write against
            // the version before it is refused.
            let refused = async |change: &str, version: i64| -> Result<()> {
                let stale = store
                    .finish_attempt_if_current(version, &key(1, "d", 1), &success, &next, None)
                    .await?;
                ensure!(stale.is_none(), "after {change}: {stale:?}");
                Ok(())
            };
            store.finish_attempt(&key(1, "c", 1), &success).await?;
            refused("an outcome", version).await?;
            let f = attempt(key(1, "f", 1), AttemptStatus::Queued);
            store.insert_attempt(&f).await?;
            refused("a new attempt", version + 1).await?;
            store.request_cancel(&run_id(1)).await?;
            refused("a cancel request", version + 2).await?;
            store.cancel_open_attempts(&run_id(1), at(200)).await?;
            refused("cancelled attempts", version + 3).await?;
            let mut version = version + 4;
            let d = stored_attempt(store, &key(1, "d", 1)).await?;
            ensure!(
                d.status == AttemptStatus::Cancelled,
                "nothing was written: {d:?}"
            );
            // A run's end counts too, and a stale write cannot end it.
            let end = RunEnd {
                status: RunStatus::Succeeded,
                output: None,
                error: None,
                finished_at: at(300),
            };
            store
                .insert_attempt(&attempt(key(1, "g", 1), AttemptStatus::Queued))
                .await?;
            version += 1;
            store
                .finish_run(&run_id(1), RunStatus::Failed, None, None, at(250))
                .await?;
            let stale = store
                .finish_attempt_if_current(version, &key(1, "g", 1), &success, &[], Some(&end))
                .await?;
            ensure!(stale.is_none(), "after the run's end: {stale:?}");
            ensure!(stored_run(store, &run_id(1)).await?.status == RunStatus::Failed);
            Ok(())
        })
        .await
}

store_checks!(
    insert_attempt_only_once,
    attempts_need_their_run,
    start_attempt_transitions,
    finish_attempt_transitions,
    finish_attempt_then_inserts_only_with_the_outcome,
    promote_due_attempts_respects_not_before,
    pending_without_not_before_is_due,
    open_attempts_of_unfinished_runs,
    cancel_open_attempts_of_one_run,
    json_null_and_absent_stay_apart,
);
