//! The store failing under the engine: a write that fails because the database is unavailable
//! is retried rather than leaving the run stuck, one that can never pass fails the attempt, and
//! `/readyz` reports the database as down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use enrichflow::store::{
    self, AttemptKey, AttemptOutcome, AttemptRecord, AttemptStatus, Attempts, Dispatch, ErrorInfo,
    Progress, ProgressStore, Revisions, RunLock, RunQuery, RunRecord, RunStatus, Runs, Store,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::{TestOptions, TestServer, fixtures};

/// Delegates to a real store, failing on demand.
struct FaultyStore {
    inner: Arc<dyn Store>,
    /// How many `finish_attempt` calls still fail as if the database were unreachable.
    failing_finishes: AtomicU32,
    /// How many `finish_attempt` calls still fail in a way no retry fixes.
    corrupt_finishes: AtomicU32,
    /// Every read of runs fails while set.
    down: AtomicBool,
    /// How many `finish_attempt` calls still panic (a bug in the engine's path).
    panicking_finishes: AtomicU32,
}

/// A passing fault: the pool found no connection in time.
fn injected() -> store::Error {
    store::Error::Database(sqlx::Error::PoolTimedOut)
}

/// A fault no retry fixes.
fn corrupt() -> store::Error {
    store::Error::Corrupt("injected corruption".into())
}

/// Takes one from `counter` if it is above zero.
fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl ProgressStore for FaultyStore {
    async fn set_progress(&self, key: &AttemptKey, progress: Progress) -> store::Result<()> {
        self.inner.set_progress(key, progress).await
    }
    async fn progress(&self, run_id: &str) -> store::Result<Vec<(AttemptKey, Progress)>> {
        self.inner.progress(run_id).await
    }
}

#[async_trait]
impl Revisions for FaultyStore {
    async fn save_revision(
        &self,
        workflow_id: &str,
        hash: &str,
        source: &str,
    ) -> store::Result<()> {
        self.inner.save_revision(workflow_id, hash, source).await
    }

    async fn revision(&self, hash: &str) -> store::Result<Option<String>> {
        self.inner.revision(hash).await
    }
}

#[async_trait]
impl Runs for FaultyStore {
    async fn create_run(&self, run: &RunRecord) -> store::Result<()> {
        self.inner.create_run(run).await
    }

    async fn create_run_then(
        &self,
        run: &RunRecord,
        fresh_since: DateTime<Utc>,
        first: &[AttemptRecord],
    ) -> store::Result<store::Created> {
        self.inner.create_run_then(run, fresh_since, first).await
    }

    async fn run(&self, run_id: &str) -> store::Result<Option<RunRecord>> {
        self.inner.run(run_id).await
    }

    async fn list_runs(&self, query: &RunQuery) -> store::Result<Vec<RunRecord>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.list_runs(query).await
    }

    async fn list_run_summaries(&self, query: &RunQuery) -> store::Result<Vec<store::Listed>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.list_run_summaries(query).await
    }

    async fn unfinished_runs(&self) -> store::Result<Vec<store::Listed>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.unfinished_runs().await
    }

    async fn count_running(&self, workflow_id: &str) -> store::Result<u64> {
        self.inner.count_running(workflow_id).await
    }

    async fn oldest_queued(&self, workflow_id: &str, limit: u32) -> store::Result<Vec<String>> {
        self.inner.oldest_queued(workflow_id, limit).await
    }

    async fn start_run(
        &self,
        run_id: &str,
        started_at: DateTime<Utc>,
        deadline_at: Option<DateTime<Utc>>,
    ) -> store::Result<bool> {
        self.inner.start_run(run_id, started_at, deadline_at).await
    }

    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        output: Option<&Value>,
        error: Option<&ErrorInfo>,
        finished_at: DateTime<Utc>,
    ) -> store::Result<bool> {
        self.inner
            .finish_run(run_id, status, output, error, finished_at)
            .await
    }

    async fn request_cancel(&self, run_id: &str) -> store::Result<bool> {
        self.inner.request_cancel(run_id).await
    }

    async fn lock_run(&self, run_id: &str) -> store::Result<RunLock> {
        self.inner.lock_run(run_id).await
    }

    async fn reopen_run(
        &self,
        run_id: &str,
        deadline_at: Option<DateTime<Utc>>,
        remove: &[store::AttemptKey],
        requeue: &[store::AttemptKey],
        now: DateTime<Utc>,
    ) -> store::Result<bool> {
        self.inner
            .reopen_run(run_id, deadline_at, remove, requeue, now)
            .await
    }

    async fn listen_finished(
        &self,
        finished: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> store::Result<()> {
        self.inner.listen_finished(finished).await
    }
}

#[async_trait]
impl Attempts for FaultyStore {
    async fn attempts(&self, run_id: &str) -> store::Result<Vec<AttemptRecord>> {
        self.inner.attempts(run_id).await
    }

    async fn insert_attempt(&self, attempt: &AttemptRecord) -> store::Result<bool> {
        self.inner.insert_attempt(attempt).await
    }

    async fn start_attempt(
        &self,
        key: &AttemptKey,
        input: Option<&store::Json>,
        worker: &str,
        started_at: DateTime<Utc>,
    ) -> store::Result<bool> {
        self.inner
            .start_attempt(key, input, worker, started_at)
            .await
    }

    async fn finish_attempt_then(
        &self,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&store::RunEnd>,
    ) -> store::Result<store::Completed> {
        // Only the node's own outcome: the engine's record of the panic must get through.
        if outcome.status == AttemptStatus::Succeeded {
            assert!(!take_one(&self.panicking_finishes), "injected panic");
        }
        if take_one(&self.failing_finishes) {
            return Err(injected());
        }
        if take_one(&self.corrupt_finishes) {
            return Err(corrupt());
        }
        self.inner
            .finish_attempt_then(key, outcome, next, end)
            .await
    }

    async fn promote_due_attempts(&self, now: DateTime<Utc>) -> store::Result<Vec<AttemptKey>> {
        self.inner.promote_due_attempts(now).await
    }

    async fn next_due_at(&self) -> store::Result<Option<DateTime<Utc>>> {
        self.inner.next_due_at().await
    }

    async fn open_attempts(&self) -> store::Result<Vec<AttemptKey>> {
        self.inner.open_attempts().await
    }

    async fn cancel_open_attempts(
        &self,
        run_id: &str,
        finished_at: DateTime<Utc>,
    ) -> store::Result<u64> {
        self.inner.cancel_open_attempts(run_id, finished_at).await
    }
}

#[async_trait]
impl Dispatch for FaultyStore {
    async fn mark_dispatched(&self, keys: &[AttemptKey]) -> store::Result<()> {
        self.inner.mark_dispatched(keys).await
    }

    async fn undispatched_attempts(&self, before: DateTime<Utc>) -> store::Result<Vec<AttemptKey>> {
        self.inner.undispatched_attempts(before).await
    }

    async fn claim_stale_attempts(
        &self,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> store::Result<Vec<AttemptKey>> {
        self.inner.claim_stale_attempts(stale_before, now).await
    }

    async fn heartbeat(&self, worker: &str, now: DateTime<Utc>) -> store::Result<u64> {
        self.inner.heartbeat(worker, now).await
    }

    async fn overdue_runs(&self, now: DateTime<Utc>) -> store::Result<Vec<String>> {
        self.inner.overdue_runs(now).await
    }

    async fn stalled_runs(&self, quiet_before: DateTime<Utc>) -> store::Result<Vec<String>> {
        self.inner.stalled_runs(quiet_before).await
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn services(&self) -> enrichflow_nodes::Services {
        self.inner.services()
    }

    async fn list_leads(&self, query: &store::LeadQuery) -> store::Result<Vec<store::LeadView>> {
        self.inner.list_leads(query).await
    }

    async fn lead(&self, lead_id: &str) -> store::Result<Option<store::LeadDetail>> {
        self.inner.lead(lead_id).await
    }

    async fn stats(&self, query: &store::StatsQuery) -> store::Result<store::StoreStats> {
        self.inner.stats(query).await
    }
}

async fn server(failing_finishes: u32) -> (TestServer, Arc<FaultyStore>) {
    server_with(failing_finishes, 0, false).await
}

/// A server whose store is down from the start, so that start-up recovery fails.
pub async fn server_with_store_down() -> TestServer {
    server_with(0, 0, true).await.0
}

async fn server_with(
    failing_finishes: u32,
    corrupt_finishes: u32,
    down: bool,
) -> (TestServer, Arc<FaultyStore>) {
    let mut faulty = None;
    let server =
        TestServer::start_with_store(&fixtures("faults"), TestOptions::default(), |inner| {
            let store = Arc::new(FaultyStore {
                inner,
                failing_finishes: AtomicU32::new(failing_finishes),
                corrupt_finishes: AtomicU32::new(corrupt_finishes),
                down: AtomicBool::new(down),
                panicking_finishes: AtomicU32::new(0),
            });
            faulty = Some(store.clone());
            store
        })
        .await;
    (server, faulty.expect("the store was wrapped"))
}

/// Posts `{}` to the two-step workflow, which waits for the run.
async fn two_steps(server: &TestServer) -> reqwest::Response {
    server
        .client
        .post(server.url("/hooks/two-steps"))
        .json(&json!({}))
        .send()
        .await
        .expect("POST")
}

/// The run JSON behind an on-complete answer that says the run failed.
async fn failed_run(server: &TestServer, response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.expect("JSON");
    let run_id = body["run_id"].as_str().expect("a run id");
    let run = server
        .engine
        .run_json(run_id)
        .await
        .expect("the store answers")
        .expect("the run");
    assert_eq!(run["status"], json!("failed"), "{run:#}");
    run
}

#[tokio::test]
async fn a_failed_write_of_an_outcome_is_retried_and_the_run_completes() {
    let (server, store) = server(2).await;
    let response = two_steps(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.expect("JSON"), json!(2));
    assert_eq!(
        store.failing_finishes.load(Ordering::SeqCst),
        0,
        "both faults were hit"
    );
}

/// The first outcome cannot be written and never will be: the attempt fails with the engine's
/// reason (once, not queued again), and the run fails per `on_error: fail`.
#[tokio::test]
async fn a_write_no_retry_fixes_fails_the_attempt_and_the_run() {
    let (server, store) = server_with(0, 1, false).await;
    let response = two_steps(&server).await;
    let run = failed_run(&server, response).await;
    let first = &run["nodes"]["first"];
    assert_eq!(first["status"], json!("failed"), "{run:#}");
    assert_eq!(first["attempts"], json!(1), "{run:#}");
    assert_eq!(first["error"]["kind"], json!("engine"));
    assert_eq!(
        first["error"]["message"],
        json!(
            "the engine cannot execute this attempt: stored data is unreadable: injected corruption"
        )
    );
    assert_eq!(store.corrupt_finishes.load(Ordering::SeqCst), 0);
}

/// A panic in the engine's own path fails that attempt; the worker that met it goes on. As many
/// panics as there are workers would leave none if a panic ended its worker.
#[tokio::test]
async fn a_panic_in_the_engine_fails_the_attempt_and_the_worker_goes_on() {
    let (server, store) = server(0).await;
    let workers = u32::try_from(TestOptions::default().engine.workers).expect("a few workers");
    store.panicking_finishes.store(workers, Ordering::SeqCst);
    for _ in 0..workers {
        let response = two_steps(&server).await;
        let run = failed_run(&server, response).await;
        let first = &run["nodes"]["first"];
        assert_eq!(first["error"]["kind"], json!("engine"), "{first:#}");
        let message = first["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("panicked: injected panic"), "{message}");
    }
    let response = two_steps(&server).await;
    assert_eq!(response.status(), StatusCode::OK, "the workers still serve");
}

#[tokio::test]
async fn readyz_says_the_database_is_down() {
    let (server, store) = server(0).await;
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("GET");
    assert_eq!(ready.status(), StatusCode::OK);
    store.down.store(true, Ordering::SeqCst);
    let down = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("GET");
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = down.json().await.expect("JSON");
    assert_eq!(body["down"], json!(["database"]));
}

/// A run left `running` with nothing open (an advance whose write failed) is found by the
/// embedded engine's sweep and carried on, without a restart.
#[tokio::test]
async fn a_run_nothing_was_left_to_advance_is_advanced_by_the_sweep() {
    let mut options = TestOptions::default();
    options.engine.sweep_interval = std::time::Duration::from_millis(100);
    let server = TestServer::start_with(&fixtures("faults"), options).await;
    // A first run stores the workflow's revision.
    let response = two_steps(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    let first = response
        .headers()
        .get("x-enrichflow-run-id")
        .and_then(|id| id.to_str().ok())
        .expect("the run id")
        .to_owned();
    // Its twin, as a failed write would leave it: running, nothing open, quiet for long.
    let stalled = uuid::Uuid::now_v7().to_string();
    let url = format!("sqlite://{}", server.database.display());
    let mut sql = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connection");
    sqlx::query(
        r#"INSERT INTO runs (id, workflow_id, revision, status, "trigger", created_at, started_at,
               cancel_requested)
           SELECT ?, workflow_id, revision, 'running', "trigger", created_at,
               '2020-01-01T00:00:00.000000Z', 0
           FROM runs WHERE id = ?"#,
    )
    .bind(&stalled)
    .bind(&first)
    .execute(&mut sql)
    .await
    .expect("the stalled run");
    for _ in 0..100 {
        let run = server
            .engine
            .run_json(&stalled)
            .await
            .expect("the store answers")
            .expect("the run");
        if run["status"] == json!("succeeded") {
            assert_eq!(run["output"], json!(2), "{run:#}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the stalled run was not advanced within 10 s");
}
