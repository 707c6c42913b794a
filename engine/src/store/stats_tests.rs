//! The stats contract as checks over `&dyn Store`, run by `tests.rs`'s `store_checks!`: against
//! a fresh SQLite file, and against a fresh Postgres database when
//! `ENRICHFLOW_TEST_DATABASE_URL` is set.

use anyhow::{Context, Result};
use chrono::{DateTime, TimeDelta, Utc};
use enrichflow_nodes::leads::{LeadScore, LeadUpsert};
use serde_json::json;

use super::tests::{at, attempt, key, run, store_checks};
use super::{
    AttemptStatus, Durations, FinishedRuns, RunRecord, RunStatus, StatsQuery, Store, StoreStats,
    WorkflowStats,
};

/// The window of every check but the leads': from 50 s after the tests' base instant.
fn since() -> DateTime<Utc> {
    at(50)
}

async fn stats(store: &dyn Store, workflow_ids: &[&str]) -> Result<StoreStats> {
    let query = StatsQuery {
        since: since(),
        workflow_ids: workflow_ids.iter().map(|id| (*id).to_owned()).collect(),
    };
    Ok(store.stats(&query).await?)
}

/// Run `n` of `workflow_id`, started at `started` seconds and finished `duration_ms` later.
fn finished(
    n: u128,
    workflow_id: &str,
    status: RunStatus,
    started: i64,
    duration_ms: i64,
) -> RunRecord {
    let started_at = at(started);
    RunRecord {
        started_at: Some(started_at),
        finished_at: Some(started_at + TimeDelta::milliseconds(duration_ms)),
        ..run(n, workflow_id, status)
    }
}

fn workflow<'s>(stats: &'s StoreStats, workflow_id: &str) -> Result<&'s WorkflowStats> {
    stats
        .workflows
        .iter()
        .find(|workflow| workflow.workflow_id == workflow_id)
        .with_context(|| format!("no entry for {workflow_id}: {stats:#?}"))
}

pub(super) async fn stats_of_an_empty_store_are_zero(store: &dyn Store) -> Result<()> {
    let stats = stats(store, &["idle"]).await?;
    let idle = WorkflowStats {
        workflow_id: "idle".into(),
        ..WorkflowStats::default()
    };
    assert_eq!(stats.workflows, [idle]);
    assert_eq!(
        stats,
        StoreStats {
            workflows: stats.workflows.clone(),
            ..StoreStats::default()
        }
    );
    Ok(())
}

pub(super) async fn stats_count_open_runs_and_runs_finished_in_the_window(
    store: &dyn Store,
) -> Result<()> {
    let runs = [
        run(1, "a", RunStatus::Queued),
        run(2, "a", RunStatus::Queued),
        RunRecord {
            started_at: Some(at(3)),
            ..run(3, "a", RunStatus::Running)
        },
        run(4, "b", RunStatus::Running),
        // Finished before the window: only the creation of `old`'s newest run shows.
        finished(5, "old", RunStatus::Failed, 5, 1_000),
        finished(60, "a", RunStatus::Succeeded, 60, 2_000),
        finished(61, "a", RunStatus::Failed, 61, 3_000),
        finished(62, "b", RunStatus::Succeeded, 62, 4_000),
        // Cancelled while queued: finished, but never started.
        RunRecord {
            finished_at: Some(at(63)),
            ..run(63, "b", RunStatus::Cancelled)
        },
    ];
    for run in &runs {
        store.create_run(run).await?;
    }
    let stats = stats(store, &["a", "idle", "old"]).await?;
    let ids: Vec<_> = stats
        .workflows
        .iter()
        .map(|w| w.workflow_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["a", "b", "idle", "old"],
        "the served ones and those with recent runs"
    );
    let a = workflow(&stats, "a")?;
    assert_eq!((a.queued, a.running), (2, 1));
    assert_eq!(a.oldest_queued_at, Some(at(1)));
    let expected = FinishedRuns {
        succeeded: 1,
        failed: 1,
        cancelled: 0,
    };
    assert_eq!(a.finished, expected);
    assert_eq!(a.last_run_at, Some(at(61)));
    let b = workflow(&stats, "b")?;
    assert_eq!((b.queued, b.running, b.oldest_queued_at), (0, 1, None));
    assert_eq!((b.finished.succeeded, b.finished.cancelled), (1, 1));
    let old = workflow(&stats, "old")?;
    assert_eq!(
        (old.finished, old.last_run_at),
        (FinishedRuns::default(), Some(at(5)))
    );
    assert_eq!(workflow(&stats, "idle")?.last_run_at, None);
    assert_eq!((stats.queued(), stats.running()), (2, 2));
    assert_eq!(stats.finished().total(), 4);
    Ok(())
}

pub(super) async fn stats_take_nearest_rank_duration_percentiles(store: &dyn Store) -> Result<()> {
    // Durations 1..=20 s, stored out of order; one before the window is left out.
    for n in 1..=20u128 {
        let seconds = ((n * 7) % 20 + 1) as i64;
        let run = finished(100 + n, "a", RunStatus::Succeeded, 60, seconds * 1_000 + 5);
        store.create_run(&run).await?;
    }
    store
        .create_run(&finished(1, "a", RunStatus::Succeeded, 1, 30_000))
        .await?;
    let durations = stats(store, &[]).await?.durations;
    let expected = Durations {
        sample: 20,
        // Rank 10 of 20 and rank 19 of 20.
        p50_ms: Some(10_005),
        p95_ms: Some(19_005),
    };
    assert_eq!(durations, expected);

    store
        .create_run(&finished(200, "b", RunStatus::Failed, 70, 250))
        .await?;
    let durations = stats(store, &[]).await?.durations;
    // 21 runs: rank 11 and rank 20.
    assert_eq!(
        (durations.sample, durations.p50_ms, durations.p95_ms),
        (21, Some(10_005), Some(19_005))
    );
    Ok(())
}

pub(super) async fn stats_count_attempts_that_ended_in_the_window(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "a", RunStatus::Running)).await?;
    let ended = |node: &str, number: u32, status: AttemptStatus, seconds: i64| {
        let mut record = attempt(key(1, node, number), status);
        record.finished_at = Some(at(seconds));
        record
    };
    for record in [
        ended("early", 1, AttemptStatus::Failed, 10),
        ended("early", 2, AttemptStatus::Succeeded, 10),
        ended("flaky", 1, AttemptStatus::Failed, 60),
        ended("flaky", 2, AttemptStatus::Failed, 61),
        ended("flaky", 3, AttemptStatus::Succeeded, 62),
        ended("fine", 1, AttemptStatus::Succeeded, 60),
        // Still going: not counted until it ends.
        attempt(key(1, "slow", 2), AttemptStatus::Running),
    ] {
        store.insert_attempt(&record).await?;
    }
    let attempts = stats(store, &[]).await?.attempts;
    assert_eq!((attempts.failed, attempts.retried), (2, 2));
    Ok(())
}

fn lead(email: &str, tier: Option<&str>) -> LeadUpsert {
    LeadUpsert {
        email: email.to_owned(),
        contact: Default::default(),
        organization: None,
        source: None,
        status: None,
        tags: Vec::new(),
        score: tier.map(|tier| LeadScore {
            total: 50.0,
            tier: Some(tier.to_owned()),
            breakdown: json!({}),
        }),
        run_id: "r1".to_owned(),
    }
}

pub(super) async fn stats_count_leads_by_tier(store: &dyn Store) -> Result<()> {
    let leads = store.services().leads;
    for (email, tier) in [
        ("ada@acme.com", Some("hot")),
        ("bob@acme.com", Some("warm")),
        ("cy@acme.com", Some("warm")),
        ("dee@acme.com", Some("platinum")),
        ("eve@acme.com", None),
    ] {
        leads.upsert_lead(&lead(email, tier)).await?;
    }
    let hour = TimeDelta::hours(1);
    let mut query = StatsQuery {
        since: Utc::now() - hour,
        workflow_ids: Vec::new(),
    };
    let stats = store.stats(&query).await?.leads;
    assert_eq!((stats.total, stats.unscored, stats.created), (5, 1, 5));
    let by_tier: Vec<_> = stats
        .by_tier
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    assert_eq!(by_tier, [("hot", 1), ("platinum", 1), ("warm", 2)]);
    query.since = Utc::now() + hour;
    let later = store.stats(&query).await?.leads;
    assert_eq!((later.total, later.created), (5, 0));
    Ok(())
}

store_checks!(
    stats_of_an_empty_store_are_zero,
    stats_count_open_runs_and_runs_finished_in_the_window,
    stats_take_nearest_rank_duration_percentiles,
    stats_count_attempts_that_ended_in_the_window,
    stats_count_leads_by_tier,
);
