//! The store's contract as checks over `&dyn Store`, run against SQLite and, when
//! `ENRICHFLOW_TEST_DATABASE_URL` names a server, against Postgres: `store_checks!` turns each
//! check into one test per store.
//!
//! Every check expects an empty store of its own.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::{
    AttemptKey, AttemptOutcome, AttemptRecord, AttemptStatus, ErrorInfo, Listed, PostgresStore,
    RunQuery, RunRecord, RunStatus, SqliteStore, Store,
};
use super::{Attempts, Completed, Created, Dispatch, Json, RunEnd, Runs};

/// 2026-03-04T05:06:07.123456Z: a full microsecond fraction, which must survive a round trip.
const BASE_MICROS: i64 = 1_772_600_767_123_456;

/// `seconds` after the base instant.
pub(super) fn at(seconds: i64) -> DateTime<Utc> {
    at_micros(seconds * 1_000_000)
}

fn at_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(BASE_MICROS + micros).expect("a representable instant")
}

/// Ids sort like the engine's UUIDv7s: a higher `n` is a newer run.
pub(super) fn run_id(n: u128) -> String {
    uuid::Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0000 + n).to_string()
}

pub(crate) fn run(n: u128, workflow_id: &str, status: RunStatus) -> RunRecord {
    RunRecord {
        id: run_id(n),
        workflow_id: workflow_id.to_owned(),
        revision: format!("rev-{workflow_id}"),
        status,
        trigger: json!({ "type": "manual", "body": { "n": n as u64 } }).into(),
        output: None,
        error: None,
        created_at: at(n as i64),
        started_at: None,
        finished_at: None,
        deadline_at: None,
        cancel_requested: false,
        idempotency_key: None,
        idempotency_body_hash: None,
    }
}

pub(crate) fn key(run: u128, node_id: &str, attempt: u32) -> AttemptKey {
    AttemptKey {
        run_id: run_id(run),
        node_id: node_id.to_owned(),
        attempt,
    }
}

pub(crate) fn attempt(key: AttemptKey, status: AttemptStatus) -> AttemptRecord {
    AttemptRecord {
        key,
        status,
        input: None,
        output: None,
        error: None,
        retryable: false,
        not_before: None,
        created_at: at(100),
        started_at: None,
        finished_at: None,
        worker: None,
    }
}

pub(super) fn outcome(status: AttemptStatus, output: Option<Value>) -> AttemptOutcome {
    AttemptOutcome {
        status,
        output: output.map(Json::from),
        error: None,
        retryable: false,
        not_before: None,
        finished_at: at(200),
        started: None,
    }
}

async fn create_runs(store: &dyn Store, runs: &[RunRecord]) -> Result<()> {
    for run in runs {
        store.create_run(run).await?;
    }
    Ok(())
}

async fn stored_run(store: &dyn Store, run_id: &str) -> Result<RunRecord> {
    store
        .run(run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} is missing"))
}

async fn stored_attempt(store: &dyn Store, key: &AttemptKey) -> Result<AttemptRecord> {
    store
        .attempts(&key.run_id)
        .await?
        .into_iter()
        .find(|attempt| &attempt.key == key)
        .ok_or_else(|| anyhow::anyhow!("attempt {key:?} is missing"))
}

fn ids(runs: &[RunRecord]) -> Vec<String> {
    runs.iter().map(|run| run.id.clone()).collect()
}

const ALL_RUN_STATUSES: [RunStatus; 5] = [
    RunStatus::Queued,
    RunStatus::Running,
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Cancelled,
];

const ALL_ATTEMPT_STATUSES: [AttemptStatus; 7] = [
    AttemptStatus::Pending,
    AttemptStatus::Queued,
    AttemptStatus::Running,
    AttemptStatus::Succeeded,
    AttemptStatus::Failed,
    AttemptStatus::Skipped,
    AttemptStatus::Cancelled,
];

pub(super) async fn revisions_are_saved_once(store: &dyn Store) -> Result<()> {
    assert_eq!(store.revision("h1").await?, None);
    store.save_revision("leads", "h1", "id: leads\n").await?;
    store.save_revision("leads", "h1", "id: leads\n").await?;
    // A hash names exactly one text; a second save under it changes nothing.
    store.save_revision("leads", "h1", "something else").await?;
    store
        .save_revision("leads", "h2", "id: leads # v2\n")
        .await?;
    assert_eq!(store.revision("h1").await?.as_deref(), Some("id: leads\n"));
    assert_eq!(
        store.revision("h2").await?.as_deref(),
        Some("id: leads # v2\n")
    );
    Ok(())
}

pub(super) async fn runs_round_trip_every_field(store: &dyn Store) -> Result<()> {
    let full = RunRecord {
        id: run_id(1),
        workflow_id: "lead-enrichment".to_owned(),
        revision: "9f86d081884c7d65".to_owned(),
        status: RunStatus::Failed,
        trigger: json!({
            "type": "webhook",
            "body": { "email": "ada@example.com", "tags": ["a", "b"], "score": 0.1,
                      "big": u64::MAX, "none": null, "ünïcode": "✓ \"quoted\"\n" },
            "headers": {},
        })
        .into(),
        output: Some(json!([1, 2.5, "x", { "deep": { "k": true } }])),
        error: Some(ErrorInfo::new("http", "503 from provider")),
        created_at: at(0),
        started_at: Some(at_micros(1)),
        finished_at: Some(at(2)),
        deadline_at: Some(at(300)),
        cancel_requested: true,
        idempotency_key: Some("key-1".to_owned()),
        idempotency_body_hash: Some("body-hash-1".to_owned()),
    };
    let minimal = run(2, "lead-enrichment", RunStatus::Queued);
    let null_output = RunRecord {
        output: Some(Value::Null),
        trigger: Value::Null.into(),
        ..run(3, "lead-enrichment", RunStatus::Succeeded)
    };
    for record in [&full, &minimal, &null_output] {
        store.create_run(record).await?;
        assert_eq!(&stored_run(store, &record.id).await?, record);
    }
    assert_eq!(store.run(&run_id(99)).await?, None);
    ensure!(
        store.create_run(&minimal).await.is_err(),
        "a duplicate id is refused"
    );
    Ok(())
}

pub(super) async fn idempotency_keys_are_unique_per_workflow(store: &dyn Store) -> Result<()> {
    let keyed = |n, workflow_id, key: Option<&str>| RunRecord {
        idempotency_key: key.map(str::to_owned),
        idempotency_body_hash: None,
        ..run(n, workflow_id, RunStatus::Queued)
    };
    store.create_run(&keyed(1, "a", Some("k"))).await?;
    store.create_run(&keyed(2, "b", Some("k"))).await?;
    store.create_run(&keyed(3, "a", None)).await?;
    store.create_run(&keyed(4, "a", None)).await?;
    ensure!(
        store.create_run(&keyed(5, "a", Some("k"))).await.is_err(),
        "a second run with the same key in the same workflow is refused"
    );
    assert_eq!(store.run(&run_id(5)).await?, None);
    Ok(())
}

fn keyed(n: u128, workflow_id: &str, key: Option<&str>) -> RunRecord {
    RunRecord {
        idempotency_key: key.map(str::to_owned),
        idempotency_body_hash: None,
        ..run(n, workflow_id, RunStatus::Queued)
    }
}

pub(super) async fn create_run_once_replays_a_fresh_key(store: &dyn Store) -> Result<()> {
    let first = keyed(1, "a", Some("k"));
    assert_eq!(store.create_run_once(&first, at(0)).await?, Created::New);
    // The same key in the same workflow: the stored run comes back and nothing is written.
    assert_eq!(
        store
            .create_run_once(&keyed(2, "a", Some("k")), at(0))
            .await?,
        Created::Existing(Box::new(first.clone()))
    );
    assert_eq!(store.run(&run_id(2)).await?, None);
    // Keys are per workflow, and runs without a key never collide.
    for record in [
        keyed(3, "b", Some("k")),
        keyed(4, "a", None),
        keyed(5, "a", None),
    ] {
        assert_eq!(store.create_run_once(&record, at(0)).await?, Created::New);
    }
    ensure!(
        store
            .create_run_once(&keyed(5, "a", Some("other")), at(0))
            .await
            .is_err(),
        "a duplicate run id is still refused"
    );
    Ok(())
}

/// A new run's first attempts are written with it; a run that is not inserted (its key is
/// held) writes none.
pub(super) async fn create_run_then_inserts_first_attempts_only_with_a_new_run(
    store: &dyn Store,
) -> Result<()> {
    let first = |run| {
        vec![
            attempt(key(run, "a", 1), AttemptStatus::Queued),
            attempt(key(run, "b", 1), AttemptStatus::Skipped),
        ]
    };
    let new = keyed(1, "a", Some("k"));
    assert_eq!(
        store.create_run_then(&new, at(0), &first(1)).await?,
        Created::New
    );
    assert_eq!(stored_run(store, &run_id(1)).await?, new);
    assert_eq!(store.attempts(&run_id(1)).await?, first(1));
    let held = keyed(2, "a", Some("k"));
    assert_eq!(
        store.create_run_then(&held, at(0), &first(2)).await?,
        Created::Existing(Box::new(new))
    );
    assert!(store.attempts(&run_id(2)).await?.is_empty());
    // Without a key, and with many first attempts (more than one insert's worth).
    let wide: Vec<_> = (0..1200)
        .map(|n| attempt(key(3, &format!("n{n:04}"), 1), AttemptStatus::Queued))
        .collect();
    let unkeyed = keyed(3, "a", None);
    assert_eq!(
        store.create_run_then(&unkeyed, at(0), &wide).await?,
        Created::New
    );
    assert_eq!(store.attempts(&run_id(3)).await?.len(), wide.len());
    Ok(())
}

pub(super) async fn create_run_once_takes_a_stale_key(store: &dyn Store) -> Result<()> {
    // Run 1 was created at(1); a window starting at(2) no longer protects it.
    store
        .create_run_once(&keyed(1, "a", Some("k")), at(0))
        .await?;
    let taker = keyed(6, "a", Some("k"));
    assert_eq!(store.create_run_once(&taker, at(2)).await?, Created::New);
    assert_eq!(stored_run(store, &run_id(1)).await?.idempotency_key, None);
    assert_eq!(
        store
            .create_run_once(&keyed(7, "a", Some("k")), at(2))
            .await?,
        Created::Existing(Box::new(taker))
    );
    Ok(())
}

/// Many callers at once with one key, first with no holder, then with a stale one: exactly one
/// run is created each time and every other caller gets that run.
pub(super) async fn create_run_once_is_race_free(store: &dyn Store) -> Result<()> {
    for (round, fresh_since) in [(0u128, at(0)), (100, at(50))] {
        let records: Vec<RunRecord> = (1..=20).map(|n| keyed(round + n, "a", Some("k"))).collect();
        let outcomes = futures::future::try_join_all(
            records
                .iter()
                .map(|record| store.create_run_once(record, fresh_since)),
        )
        .await?;
        let created: Vec<_> = (1..=20)
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == Created::New)
            .map(|(n, _)| run_id(round + n))
            .collect();
        let [winner] = created.as_slice() else {
            anyhow::bail!("round {round}: created {created:?}");
        };
        for outcome in &outcomes {
            if let Created::Existing(existing) = outcome {
                assert_eq!(&existing.id, winner);
            }
        }
        let holders = store
            .list_runs(&RunQuery {
                workflow_id: Some("a".to_owned()),
                ..RunQuery::default()
            })
            .await?
            .into_iter()
            .filter(|run| run.idempotency_key.as_deref() == Some("k"))
            .count();
        assert_eq!(holders, 1, "round {round}");
    }
    Ok(())
}

pub(super) async fn start_run_only_from_queued(store: &dyn Store) -> Result<()> {
    for (n, from) in (1..).zip(ALL_RUN_STATUSES) {
        let before = run(n, "w", from);
        store.create_run(&before).await?;
        let started = store.start_run(&before.id, at(10), Some(at(70))).await?;
        let expected = if from == RunStatus::Queued {
            RunRecord {
                status: RunStatus::Running,
                started_at: Some(at(10)),
                deadline_at: Some(at(70)),
                ..before.clone()
            }
        } else {
            before.clone()
        };
        assert_eq!(started, from == RunStatus::Queued, "start_run from {from}");
        assert_eq!(
            stored_run(store, &before.id).await?,
            expected,
            "start_run from {from}"
        );
        assert!(
            !store.start_run(&before.id, at(20), None).await?,
            "second start from {from}"
        );
    }
    assert!(!store.start_run(&run_id(99), at(10), None).await?);
    Ok(())
}

pub(super) async fn finish_run_only_once(store: &dyn Store) -> Result<()> {
    let error = ErrorInfo::new("timeout", "the run took longer than 5m");
    let output = json!({ "tier": "hot" });
    for (n, from) in (1..).zip(ALL_RUN_STATUSES) {
        let before = run(n, "w", from);
        store.create_run(&before).await?;
        let finished = store
            .finish_run(
                &before.id,
                RunStatus::Failed,
                Some(&output),
                Some(&error),
                at(30),
            )
            .await?;
        let expected = if from.is_finished() {
            before.clone()
        } else {
            RunRecord {
                status: RunStatus::Failed,
                output: Some(output.clone()),
                error: Some(error.clone()),
                finished_at: Some(at(30)),
                ..before.clone()
            }
        };
        assert_eq!(finished, !from.is_finished(), "finish_run from {from}");
        assert_eq!(
            stored_run(store, &before.id).await?,
            expected,
            "finish_run from {from}"
        );
        let again = store
            .finish_run(&before.id, RunStatus::Succeeded, None, None, at(40))
            .await?;
        assert!(!again, "second finish from {from}");
        assert_eq!(stored_run(store, &before.id).await?, expected);
    }
    Ok(())
}

pub(super) async fn request_cancel_only_unfinished(store: &dyn Store) -> Result<()> {
    for (n, from) in (1..).zip(ALL_RUN_STATUSES) {
        let before = run(n, "w", from);
        store.create_run(&before).await?;
        let requested = store.request_cancel(&before.id).await?;
        let after = stored_run(store, &before.id).await?;
        assert_eq!(requested, !from.is_finished(), "request_cancel on {from}");
        assert_eq!(
            after.cancel_requested,
            !from.is_finished(),
            "request_cancel on {from}"
        );
        assert_eq!(
            after.status, from,
            "request_cancel leaves the status to the driver"
        );
    }
    assert!(!store.request_cancel(&run_id(99)).await?);
    Ok(())
}

pub(super) async fn list_runs_filters_and_pages(store: &dyn Store) -> Result<()> {
    create_runs(
        store,
        &[
            run(1, "a", RunStatus::Queued),
            run(2, "b", RunStatus::Running),
            run(3, "a", RunStatus::Succeeded),
            run(4, "a", RunStatus::Running),
            run(5, "b", RunStatus::Failed),
            run(6, "a", RunStatus::Queued),
        ],
    )
    .await?;
    let query = |workflow: Option<&str>, status, limit, cursor: Option<u128>| RunQuery {
        workflow_id: workflow.map(str::to_owned),
        status,
        limit,
        cursor: cursor.map(run_id),
    };
    let cases: [(RunQuery, &[u128]); 10] = [
        (query(None, None, 0, None), &[6, 5, 4, 3, 2, 1]),
        (query(Some("a"), None, 0, None), &[6, 4, 3, 1]),
        (query(None, Some(RunStatus::Queued), 0, None), &[6, 1]),
        (query(Some("a"), Some(RunStatus::Running), 0, None), &[4]),
        (query(Some("c"), None, 0, None), &[]),
        (query(None, None, 2, None), &[6, 5]),
        (query(None, None, 0, Some(4)), &[3, 2, 1]),
        (query(Some("a"), None, 1, Some(4)), &[3]),
        (query(None, None, 0, Some(1)), &[]),
        (query(None, None, 0, Some(99)), &[6, 5, 4, 3, 2, 1]),
    ];
    for (query, expected) in cases {
        let expected: Vec<String> = expected.iter().map(|&n| run_id(n)).collect();
        assert_eq!(ids(&store.list_runs(&query).await?), expected, "{query:?}");
    }

    // Paging with the last id of each page visits every run once, newest first.
    let mut paged = Vec::new();
    let mut page = RunQuery {
        limit: 4,
        ..RunQuery::default()
    };
    loop {
        let runs = store.list_runs(&page).await?;
        let Some(last) = runs.last() else { break };
        page.cursor = Some(last.id.clone());
        paged.extend(ids(&runs));
    }
    assert_eq!(paged, (1..=6).rev().map(run_id).collect::<Vec<_>>());
    Ok(())
}

pub(super) async fn list_runs_clamps_limit(store: &dyn Store) -> Result<()> {
    let total = u128::from(RunQuery::MAX_LIMIT) + 5;
    let runs: Vec<RunRecord> = (1..=total)
        .map(|n| run(n, "w", RunStatus::Succeeded))
        .collect();
    create_runs(store, &runs).await?;
    for (limit, expected) in [
        (0, 50),
        (1, 1),
        (499, 499),
        (500, 500),
        (501, 500),
        (u32::MAX, 500),
    ] {
        let query = RunQuery {
            limit,
            ..RunQuery::default()
        };
        assert_eq!(
            store.list_runs(&query).await?.len(),
            expected,
            "limit {limit}"
        );
    }
    Ok(())
}

pub(super) async fn count_running_and_oldest_queued(store: &dyn Store) -> Result<()> {
    create_runs(
        store,
        &[
            run(1, "a", RunStatus::Succeeded),
            run(2, "a", RunStatus::Queued),
            run(3, "a", RunStatus::Running),
            run(4, "b", RunStatus::Queued),
            run(5, "a", RunStatus::Queued),
            run(6, "a", RunStatus::Running),
            run(7, "b", RunStatus::Running),
            run(8, "a", RunStatus::Queued),
        ],
    )
    .await?;
    for (workflow, running) in [("a", 2), ("b", 1), ("c", 0)] {
        assert_eq!(
            store.count_running(workflow).await?,
            running,
            "workflow {workflow}"
        );
    }
    let cases: [(&str, u32, &[u128]); 5] = [
        ("a", 2, &[2, 5]),
        ("a", 10, &[2, 5, 8]),
        ("a", 0, &[]),
        ("b", 10, &[4]),
        ("c", 10, &[]),
    ];
    for (workflow, limit, expected) in cases {
        let expected: Vec<String> = expected.iter().map(|&n| run_id(n)).collect();
        assert_eq!(
            store.oldest_queued(workflow, limit).await?,
            expected,
            "{workflow} {limit}"
        );
    }
    Ok(())
}

pub(super) async fn unfinished_runs_oldest_first(store: &dyn Store) -> Result<()> {
    assert_eq!(store.unfinished_runs().await?, []);
    let runs = [
        run(1, "a", RunStatus::Running),
        run(2, "b", RunStatus::Succeeded),
        run(3, "b", RunStatus::Queued),
        run(4, "a", RunStatus::Cancelled),
        run(5, "a", RunStatus::Queued),
        run(6, "a", RunStatus::Failed),
    ];
    create_runs(store, &runs).await?;
    let unfinished: Vec<(String, RunStatus)> = store
        .unfinished_runs()
        .await?
        .into_iter()
        .map(|listed| match listed {
            Listed::Run(run) => (run.id, run.status),
            Listed::Unreadable { id, error } => panic!("{id}: {error}"),
        })
        .collect();
    let expected: Vec<(String, RunStatus)> = [&runs[0], &runs[2], &runs[4]]
        .iter()
        .map(|run| (run.id.clone(), run.status))
        .collect();
    assert_eq!(unfinished, expected);
    Ok(())
}

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

/// A SQLite store in a fresh file, deleted (with its WAL) when dropped.
pub(super) struct TempDatabase {
    path: PathBuf,
    pub(super) store: SqliteStore,
}

impl TempDatabase {
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(super) async fn create() -> Result<TempDatabase> {
        let name = format!("enrichflow-store-{}.db", uuid::Uuid::now_v7());
        let path = std::env::temp_dir().join(name);
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await?;
        Ok(TempDatabase { path, store })
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The admin URL of the Postgres server tests may create databases on; `.ci/run` sets it.
const POSTGRES_URL_VARIABLE: &str = "ENRICHFLOW_TEST_DATABASE_URL";

/// A fresh Postgres database of one test, created through the admin URL and dropped (with
/// `FORCE`, in case a connection lingers) by `run_check`, so tests run in parallel and leave
/// nothing behind.
pub(super) struct PostgresDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database: the admin URL with its database name replaced.
    url: String,
}

impl PostgresDatabase {
    /// A new empty database, or `None` (saying so) when no server is configured.
    pub(super) async fn create() -> Result<Option<PostgresDatabase>> {
        let Ok(admin_url) = std::env::var(POSTGRES_URL_VARIABLE) else {
            println!("skipped: {POSTGRES_URL_VARIABLE} is not set");
            return Ok(None);
        };
        let name = format!("enrichflow_test_{}", uuid::Uuid::now_v7().simple());
        let url = database_url(&admin_url, &name)?;
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {POSTGRES_URL_VARIABLE}"))?;
        // The name is ours (a prefix and hex digits), so it is safe to splice into SQL.
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Some(PostgresDatabase {
            admin_url,
            name,
            url,
        }))
    }

    /// Runs `check` on a store connected to this database, closes the store, drops the
    /// database, and only then reports the check's panic or error.
    pub(super) async fn run_check<F>(self, check: F) -> Result<()>
    where
        F: AsyncFnOnce(&PostgresStore) -> Result<()>,
    {
        let outcome = match PostgresStore::connect(&self.url).await {
            Ok(store) => {
                let outcome = AssertUnwindSafe(check(&store)).catch_unwind().await;
                store.close().await;
                outcome
            }
            Err(error) => Ok(Err(error.into())),
        };
        let dropped = self.drop_database().await;
        match outcome {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(result) => result.and(dropped),
        }
    }

    async fn drop_database(&self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        let name = &self.name;
        sqlx::raw_sql(AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

/// `admin_url` with its database (the path) replaced by `database`, keeping any `?parameters`.
fn database_url(admin_url: &str, database: &str) -> Result<String> {
    let (base, parameters) = match admin_url.split_once('?') {
        Some((base, parameters)) => (base, Some(parameters)),
        None => (admin_url, None),
    };
    let authority = base
        .find("://")
        .map(|scheme_end| scheme_end + 3)
        .with_context(|| format!("{POSTGRES_URL_VARIABLE} is not a URL"))?;
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |slash| authority + slash);
    let mut url = format!("{}/{database}", &base[..path]);
    if let Some(parameters) = parameters {
        url.push('?');
        url.push_str(parameters);
    }
    Ok(url)
}

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

pub(super) async fn reopen_run_only_from_failed_or_cancelled(store: &dyn Store) -> Result<()> {
    let failed = RunRecord {
        started_at: Some(at(0)),
        finished_at: Some(at(10)),
        output: Some(json!("old")),
        error: Some(ErrorInfo::new("node", "boom")),
        ..run(1, "w", RunStatus::Failed)
    };
    create_runs(store, &[failed, run(2, "w", RunStatus::Succeeded)]).await?;
    store
        .insert_attempt(&attempt(key(1, "a", 1), AttemptStatus::Failed))
        .await?;
    store
        .insert_attempt(&attempt(key(1, "b", 1), AttemptStatus::Skipped))
        .await?;
    let remove = [key(1, "b", 1)];
    let requeue = [key(1, "a", 2)];
    assert!(
        !store.reopen_run(&run_id(2), None, &[], &[], at(20)).await?,
        "a succeeded run stays as it is"
    );
    assert!(
        store
            .reopen_run(&run_id(1), Some(at(99)), &remove, &requeue, at(20))
            .await?
    );
    let reopened = stored_run(store, &run_id(1)).await?;
    assert_eq!(reopened.status, RunStatus::Running);
    assert_eq!(
        (reopened.output, reopened.error, reopened.finished_at),
        (None, None, None)
    );
    assert_eq!(reopened.deadline_at, Some(at(99)));
    assert_eq!(reopened.started_at, Some(at(0)));
    let attempts = store.attempts(&run_id(1)).await?;
    let keys: Vec<(&str, u32, AttemptStatus)> = attempts
        .iter()
        .map(|a| (a.key.node_id.as_str(), a.key.attempt, a.status))
        .collect();
    assert_eq!(
        keys,
        [
            ("a", 1, AttemptStatus::Failed),
            ("a", 2, AttemptStatus::Queued)
        ]
    );
    assert!(
        !store.reopen_run(&run_id(1), None, &[], &[], at(30)).await?,
        "a running run is not reopened twice"
    );
    Ok(())
}

/// One test per store for each named check: `store_checks!(a, b)` in a module that defines the
/// checks `a` and `b` adds `sqlite::a`, `sqlite::b`, `postgres::a` and `postgres::b`.
macro_rules! store_checks {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    let database = $crate::store::tests::TempDatabase::create().await?;
                    super::$check(&database.store).await?;
                    database.store.close().await;
                    Ok(())
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    let database = $crate::store::tests::PostgresDatabase::create().await?;
                    let Some(database) = database else {
                        return Ok(());
                    };
                    database
                        .run_check(async |store: &$crate::store::PostgresStore| {
                            super::$check(store).await
                        })
                        .await
                }
            )*
        }
    };
}

pub(super) use store_checks;

store_checks!(
    revisions_are_saved_once,
    runs_round_trip_every_field,
    idempotency_keys_are_unique_per_workflow,
    create_run_once_replays_a_fresh_key,
    create_run_once_takes_a_stale_key,
    create_run_then_inserts_first_attempts_only_with_a_new_run,
    create_run_once_is_race_free,
    start_run_only_from_queued,
    finish_run_only_once,
    request_cancel_only_unfinished,
    list_runs_filters_and_pages,
    list_runs_clamps_limit,
    count_running_and_oldest_queued,
    unfinished_runs_oldest_first,
    insert_attempt_only_once,
    attempts_need_their_run,
    start_attempt_transitions,
    finish_attempt_transitions,
    finish_attempt_then_inserts_only_with_the_outcome,
    promote_due_attempts_respects_not_before,
    pending_without_not_before_is_due,
    open_attempts_of_unfinished_runs,
    cancel_open_attempts_of_one_run,
    outbox_lists_queued_attempts_the_broker_never_confirmed,
    leases_run_out_unless_renewed,
    a_claimed_attempt_is_leased_from_its_parents_commit,
    overdue_runs_are_running_past_their_deadline,
    stalled_runs_have_nothing_open_and_nothing_recent,
    reopen_run_only_from_failed_or_cancelled,
    json_null_and_absent_stay_apart,
);

#[tokio::test]
async fn sqlite_memory_urls_give_private_databases() -> Result<()> {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let first = SqliteStore::connect(url).await?;
        let second = SqliteStore::connect(url).await?;
        first.create_run(&run(1, "w", RunStatus::Queued)).await?;
        // The single connection keeps the database alive between statements.
        assert!(first.run(&run_id(1)).await?.is_some(), "{url}");
        assert_eq!(second.run(&run_id(1)).await?, None, "{url}");
        first.migrate().await?;
    }
    Ok(())
}

#[tokio::test]
async fn sqlite_file_persists_across_connections() -> Result<()> {
    let database = TempDatabase::create().await?;
    let url = format!("sqlite://{}", database.path.display());
    database
        .store
        .create_run(&run(1, "w", RunStatus::Queued))
        .await?;
    let mut wal = database.path.clone().into_os_string();
    wal.push("-wal");
    ensure!(PathBuf::from(wal).exists(), "the database is in WAL mode");
    let reopened = SqliteStore::connect(&url).await?;
    reopened.migrate().await?;
    assert_eq!(
        reopened.run(&run_id(1)).await?,
        database.store.run(&run_id(1)).await?
    );
    reopened.close().await;
    database.store.close().await;
    Ok(())
}

#[tokio::test]
async fn sqlite_refuses_other_urls_without_echoing_credentials() {
    for url in [
        "postgres://user:secret@localhost/db",
        "enrichflow.db",
        "mysql://h/db",
    ] {
        let error = SqliteStore::connect(url).await.map(|_| ()).expect_err(url);
        let message = error.to_string();
        assert!(
            matches!(error, super::Error::UnsupportedUrl(_)),
            "{url}: {message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }
}

#[test]
fn database_url_replaces_only_the_database() -> Result<()> {
    let cases = [
        (
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/t",
        ),
        (
            "postgresql://u:p@h/db?sslmode=disable",
            "postgresql://u:p@h/t?sslmode=disable",
        ),
        ("postgres://h:5432", "postgres://h:5432/t"),
        ("postgres://h?user=u", "postgres://h/t?user=u"),
    ];
    for (admin_url, expected) in cases {
        assert_eq!(database_url(admin_url, "t")?, expected);
    }
    Ok(())
}

#[tokio::test]
async fn postgres_persists_across_connections() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    let url = database.url.clone();
    database
        .run_check(async |store: &PostgresStore| {
            // The URL-chosen store is the same database: what one writes the other reads.
            let chosen = super::connect(&url).await?;
            chosen.create_run(&run(1, "w", RunStatus::Queued)).await?;
            store.migrate().await?;
            assert_eq!(
                store.run(&run_id(1)).await?,
                Some(run(1, "w", RunStatus::Queued))
            );
            Ok(())
        })
        .await
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

#[tokio::test]
async fn postgres_run_locks_exclude_other_holders_until_released() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    database
        .run_check(async |store: &PostgresStore| {
            let held = store.lock_run("run-1").await?;
            let wait = std::time::Duration::from_millis(300);
            let second = tokio::time::timeout(wait, store.lock_run("run-1")).await;
            assert!(second.is_err(), "a second holder waits");
            let other = tokio::time::timeout(wait, store.lock_run("run-2")).await;
            other.expect("another run's lock is free")?.release().await;
            held.release().await;
            let again = tokio::time::timeout(wait, store.lock_run("run-1")).await;
            again.expect("released")?.release().await;
            Ok(())
        })
        .await
}

#[tokio::test]
async fn postgres_pool_size_bounds_the_connections_of_a_process() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    let url = database.url.clone();
    database
        .run_check(async |_: &PostgresStore| {
            let pool = super::PoolOptions {
                max_connections: 2,
                ..super::PoolOptions::default()
            };
            let small = PostgresStore::connect_with(&url, pool).await?;
            // Five queries at once: the pool opens what it may and the rest wait their turn.
            let queries = (0..5).map(|_| sqlx::query("SELECT pg_sleep(0.05)").execute(&small.pool));
            futures::future::try_join_all(queries).await?;
            assert_eq!(small.pool.size(), 2);
            small.close().await;
            Ok(())
        })
        .await
}

#[tokio::test]
async fn postgres_run_lock_of_a_silent_holder_is_released_by_the_server() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    database
        .run_check(async |store: &PostgresStore| {
            // A holder that stops talking (a stopped process) keeps its connection open.
            let _silent = store.lock_run("run-1").await?;
            let wait = std::time::Duration::from_secs(30);
            let taken = tokio::time::timeout(wait, store.lock_run("run-1")).await;
            taken
                .expect("the server ends the idle transaction holding the lock")?
                .release()
                .await;
            Ok(())
        })
        .await
}

#[tokio::test]
async fn postgres_announces_finished_runs_to_listeners() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    database
        .run_check(async |store: &PostgresStore| {
            let (sender, mut finished) = tokio::sync::mpsc::unbounded_channel();
            let listener = store.clone();
            let listening = tokio::spawn(async move { listener.listen_finished(sender).await });
            // LISTEN is issued inside the task, at a moment the test cannot observe: finish one
            // run after another until one is announced; it must be one of those finished.
            let mut announced = None;
            for n in 1..=50 {
                store.create_run(&run(n, "w", RunStatus::Running)).await?;
                store
                    .finish_run(&run_id(n), RunStatus::Succeeded, None, None, at(200))
                    .await?;
                let wait = std::time::Duration::from_millis(100);
                if let Ok(id) = tokio::time::timeout(wait, finished.recv()).await {
                    announced = id.map(|id| (n, id));
                    break;
                }
            }
            let (last, id) = announced.expect("a finished run was announced within 5 s");
            assert!((1..=last).any(|n| run_id(n) == id), "announced {id}");
            // Finishing a finished run changes nothing (and so announces nothing).
            assert!(
                !store
                    .finish_run(&run_id(1), RunStatus::Failed, None, None, at(300))
                    .await?
            );
            listening.abort();
            Ok(())
        })
        .await
}
