//! Durable state: workflow revisions, runs and node attempts, the leads nodes write and the
//! cache they keep, and the figures of the stats endpoint. Only this module writes SQL.
//!
//! The database is the source of truth: the queue carries only ids, and every transition is a
//! conditional update that reports whether it happened, so a duplicate delivery or a second
//! scheduler acting on the same run changes nothing.

mod cache;
mod connect;
#[cfg(test)]
mod depth_tests;
mod dialect;
mod idempotency;
pub mod json;
mod leads;
mod leads_postgres;
mod leads_sql;
mod leads_sqlite;
#[cfg(test)]
mod leads_tests;
mod live;
mod postgres;
mod progress;
#[cfg(test)]
mod progress_tests;
mod record;
mod rows;
mod sqlite;
mod sqlite_checkpoint;
mod sqlite_native;
mod sqlite_writer;
mod stats;
mod stats_sql;
#[cfg(test)]
mod stats_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use enrichflow_nodes::Services;
use serde_json::Value;
use tokio::sync::mpsc;

pub use connect::{Durability, PoolOptions, connect, connect_with};
pub use leads::{
    ContactRecord, DEFAULT_STATUS, LeadDetail, LeadQuery, LeadRecord, LeadView, OrganizationRecord,
    ScoreRecord,
};
pub use live::LiveStore;
pub use postgres::{PostgresStore, is_postgres_url};
pub use progress::{Progress, ProgressStore};
pub use record::{
    AttemptKey, AttemptRecord, AttemptStatus, ErrorInfo, Json, Listed, RunQuery, RunRecord,
    RunStatus, RunSummary, Trigger,
};
pub use sqlite::SqliteStore;
pub use stats::{
    AttemptStats, DURATION_SAMPLE, Durations, FinishedRuns, LeadStats, StatsQuery, StoreStats,
    WorkflowStats,
};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// This write broke the batch of writes it shared a transaction with (see
    /// `sqlite_writer`), or the batch's commit failed: nothing of the batch was stored.
    #[error("database error: {0}")]
    Commit(std::sync::Arc<sqlx::Error>),
    /// Rolled back with its batch, which another write broke or which failed to commit: nothing
    /// of it was stored, and writing it again is expected to work.
    #[error("rolled back with its batch: {0}")]
    RolledBack(std::sync::Arc<sqlx::Error>),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// One row (a run or an attempt) cannot be decoded: it fails that one run, never a list,
    /// the recovery or another run.
    #[error("stored row cannot be read: {0}")]
    Unreadable(String),
    /// A value nested too deeply to be stored (see [`json::MAX_DEPTH`]); nothing was written.
    #[error("{what} nests {depth} levels deep; the store keeps at most {limit}")]
    TooDeep {
        what: String,
        depth: usize,
        limit: usize,
    },
    #[error("unsupported database URL `{0}`: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// Other processes kept taking and releasing the key while a run was being created.
    #[error("idempotency key `{0}` is contended; try again")]
    KeyContended(String),
}

impl Error {
    /// True when the database could not be reached or is restarting, rather than refusing what
    /// was asked: the caller may try again shortly.
    pub fn is_unavailable(&self) -> bool {
        if matches!(self, Error::RolledBack(_)) {
            return true;
        }
        match self.database() {
            Some(error) => match error {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_) => true,
                // Class 57 "operator intervention": shutdown, crash recovery, start-up.
                sqlx::Error::Database(database) => {
                    database.code().is_some_and(|code| code.starts_with("57P"))
                }
                _ => false,
            },
            None => false,
        }
    }

    /// The database's error, when that is what this is.
    fn database(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Database(error) => Some(error),
            Error::Commit(error) | Error::RolledBack(error) => Some(error),
            _ => None,
        }
    }

    /// True when a row of the run at hand cannot be decoded: asking again gives the same
    /// answer, so the run is failed rather than retried.
    pub fn is_unreadable(&self) -> bool {
        matches!(self, Error::Unreadable(_))
    }
}

impl Error {
    /// True when the same call may succeed later: the database is unavailable, or it rolled back
    /// a transaction that lost a race (deadlock, serialization, a busy SQLite file). False for
    /// what no retry fixes: a row that cannot be decoded, a refused statement. Decides whether
    /// a worker queues an attempt again or fails it.
    pub fn is_retryable(&self) -> bool {
        if matches!(self, Error::KeyContended(_) | Error::RolledBack(_)) {
            return true;
        }
        match self.database() {
            Some(sqlx::Error::WorkerCrashed) => true,
            Some(sqlx::Error::Database(database)) => {
                let code = database.code().unwrap_or_default();
                let sqlite = database
                    .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                    .is_some()
                    || database
                        .try_downcast_ref::<sqlite_native::Failure>()
                        .is_some();
                let transient = if sqlite {
                    sqlite_transient(&code)
                } else {
                    postgres_transient(&code)
                };
                transient || self.is_unavailable()
            }
            _ => self.is_unavailable(),
        }
    }
}

/// Serialization failure, deadlock, lock not available, connection exceptions, insufficient
/// resources (too many connections, out of memory).
fn postgres_transient(sqlstate: &str) -> bool {
    matches!(sqlstate, "40001" | "40P01" | "55P03")
        || sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
}

/// BUSY and LOCKED, IOERR and FULL (a disk that failed or filled up may recover), with their
/// extended codes (whose low byte is the primary code).
fn sqlite_transient(extended: &str) -> bool {
    extended
        .parse::<u32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a run ends, as [`Store::finish_run`] records it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub finished_at: DateTime<Utc>,
}

/// What [`Store::finish_attempt_then`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completed {
    /// The attempt was open and now has its outcome (and nothing else was written if not).
    pub attempt: bool,
    /// The run was unfinished and has now ended as asked.
    pub run: bool,
    /// The run's version after this write, in a store that keeps versions (Postgres), for
    /// [`Store::finish_attempt_if_current`].
    pub version: Option<i64>,
}

/// How a finished attempt ended, written in one transition.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// `Succeeded`, `Failed`, `Skipped` or `Cancelled`.
    pub status: AttemptStatus,
    pub output: Option<Json>,
    pub error: Option<ErrorInfo>,
    /// For a failure: whether another attempt may help.
    pub retryable: bool,
    /// For a retryable failure: the earliest time of the next attempt the remote side asked for
    /// (`Retry-After`); stored in the attempt's `not_before`.
    pub not_before: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    /// How the attempt started, when that was not written when it started: a node that ends
    /// quickly is written once, with its start folded into its outcome. A start already
    /// written keeps its time.
    pub started: Option<Started>,
}

/// Inserts `attempt` into a run's attempts where the store's order (node, then number) puts it.
pub fn insert_ordered(attempts: &mut Vec<AttemptRecord>, attempt: AttemptRecord) {
    let position = attempts.partition_point(|a| {
        (&a.key.node_id, a.key.attempt) < (&attempt.key.node_id, attempt.key.attempt)
    });
    attempts.insert(position, attempt);
}

impl AttemptRecord {
    /// The attempt as [`Store::finish_attempt`] leaves it: `outcome` recorded, with its start
    /// if that was not written yet.
    pub fn apply(&mut self, outcome: &AttemptOutcome) {
        self.status = outcome.status;
        self.output = outcome.output.clone();
        self.error = outcome.error.clone();
        self.retryable = outcome.retryable;
        self.not_before = outcome.not_before;
        self.finished_at = Some(outcome.finished_at);
        if let Some(started) = &outcome.started {
            if started.input.is_some() {
                self.input = started.input.clone();
            }
            self.started_at = self.started_at.or(Some(started.started_at));
            self.worker = Some(started.worker.clone());
        }
    }
}

impl AttemptOutcome {
    /// The input of the folded start, as stored text; refused when nested too deeply.
    fn started_input(&self) -> Result<Option<Arc<str>>> {
        let input = self
            .started
            .as_ref()
            .and_then(|started| started.input.as_ref());
        json::checked_text("the attempt's input", input)
    }
}

/// How an attempt started: what [`Store::start_attempt`] writes.
#[derive(Debug, Clone)]
pub struct Started {
    /// The rendered input; none when rendering failed.
    pub input: Option<Json>,
    pub worker: String,
    pub started_at: DateTime<Utc>,
}

/// What [`Store::create_run_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The run was inserted.
    New,
    /// A fresh run of the same workflow already holds the key; it is returned as stored.
    Existing(Box<RunRecord>),
}

/// Everything the engine persists. Implementations: SQLite (embedded), Postgres (distributed).
#[async_trait]
pub trait Store: ProgressStore + Send + Sync + 'static {
    /// Stores a workflow's exact YAML under its content hash; storing it again is a no-op.
    async fn save_revision(&self, workflow_id: &str, hash: &str, source: &str) -> Result<()>;
    /// The YAML text stored under `hash`.
    async fn revision(&self, hash: &str) -> Result<Option<String>>;

    /// Inserts a new run (normally `queued`).
    async fn create_run(&self, run: &RunRecord) -> Result<()>;
    /// Inserts `run` unless a run of the same workflow created at or after `fresh_since` holds
    /// the same `idempotency_key`: then nothing is written and that run is returned. A run
    /// created before `fresh_since` gives its key up first, so the new run can take it. Safe
    /// across processes: the unique index on `(workflow_id, idempotency_key)` decides, so two
    /// concurrent calls with one key store exactly one run. A run without a key is inserted.
    async fn create_run_once(
        &self,
        run: &RunRecord,
        fresh_since: DateTime<Utc>,
    ) -> Result<Created> {
        self.create_run_then(run, fresh_since, &[]).await
    }
    /// [`Store::create_run_once`] and, only if it inserted the run, in the same transaction:
    /// inserts `first` (attempts of the run: its first nodes, each unless it exists). A run and
    /// the nodes it starts with are one commit.
    async fn create_run_then(
        &self,
        run: &RunRecord,
        fresh_since: DateTime<Utc>,
        first: &[AttemptRecord],
    ) -> Result<Created>;
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    /// [`Store::run`] with the run's version in a store that keeps versions (Postgres): read
    /// before the run's attempts, it lets the reader record an outcome from what it read with
    /// [`Store::finish_attempt_if_current`], which refuses if anything changed since this read.
    async fn run_versioned(&self, run_id: &str) -> Result<Option<(RunRecord, Option<i64>)>> {
        Ok(self.run(run_id).await?.map(|run| (run, None)))
    }
    /// The run's version alone (see [`Store::run_versioned`]); `None` when the run does not
    /// exist or the store keeps no versions.
    async fn run_version(&self, run_id: &str) -> Result<Option<i64>> {
        let _ = run_id;
        Ok(None)
    }
    /// Runs newest first, whole; `cursor` is the id of the last run of the previous page.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>>;
    /// As [`Store::list_runs`], without triggers and outputs; a row that cannot be decoded is
    /// listed as [`Listed::Unreadable`] instead of failing the list.
    async fn list_run_summaries(&self, query: &RunQuery) -> Result<Vec<Listed>>;
    /// Runs that are `queued` or `running`, oldest first (for recovery after a restart); a row
    /// that cannot be decoded is listed as [`Listed::Unreadable`].
    async fn unfinished_runs(&self) -> Result<Vec<Listed>>;
    /// How many runs of a workflow are `running`.
    async fn count_running(&self, workflow_id: &str) -> Result<u64>;
    /// Ids of the oldest `queued` runs of a workflow.
    async fn oldest_queued(&self, workflow_id: &str, limit: u32) -> Result<Vec<String>>;
    /// `queued` → `running`; false if the run was not queued.
    async fn start_run(
        &self,
        run_id: &str,
        started_at: DateTime<Utc>,
        deadline_at: Option<DateTime<Utc>>,
    ) -> Result<bool>;
    /// `queued`/`running` → a final status; false if it had already finished.
    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        output: Option<&Value>,
        error: Option<&ErrorInfo>,
        finished_at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Marks a run for cancellation; false if it had already finished.
    async fn request_cancel(&self, run_id: &str) -> Result<bool>;
    /// Reopens a failed or cancelled run for a manual retry, in one transaction: the run is
    /// running again with no output, error or end and the given deadline; the `remove` attempts
    /// are deleted (placeholders of nodes the run never reached) and the `requeue` attempts
    /// inserted as queued at `now`. False, changing nothing, unless the run is failed or cancelled.
    async fn reopen_run(
        &self,
        run_id: &str,
        deadline_at: Option<DateTime<Utc>>,
        remove: &[AttemptKey],
        requeue: &[AttemptKey],
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Every attempt of a run, ordered by node id then attempt number.
    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>>;
    /// Inserts an attempt; false (and nothing written) if that (run, node, attempt) exists.
    async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<bool>;
    /// `queued`/`running` → `running` with its rendered input, held by `worker` (its heartbeat
    /// starts at `started_at`); false otherwise. A running attempt is taken over: it is only
    /// delivered again when its previous holder is gone or its lease ran out.
    async fn start_attempt(
        &self,
        key: &AttemptKey,
        input: Option<&Json>,
        worker: &str,
        started_at: DateTime<Utc>,
    ) -> Result<bool>;
    /// `pending`/`queued`/`running` → the outcome's status; false if it had already finished.
    async fn finish_attempt(&self, key: &AttemptKey, outcome: &AttemptOutcome) -> Result<bool> {
        let completed = self.finish_attempt_then(key, outcome, &[], None).await?;
        Ok(completed.attempt)
    }
    /// [`Store::finish_attempt`] and, only if it finished the attempt, in the same transaction:
    /// inserts `next` (attempts of the same run, each unless it exists) and ends the run as
    /// `end` says (as [`Store::finish_run`] would). A node's outcome, the attempts it made
    /// ready and the run's end are one commit.
    async fn finish_attempt_then(
        &self,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&RunEnd>,
    ) -> Result<Completed>;
    /// [`Store::finish_attempt_then`], only if the run's version is still `version`, the one
    /// this process last read ([`Store::run_versioned`]) or wrote ([`Completed::version`]): no
    /// process has changed the run since, so what this one decided from it then still holds,
    /// and it needs neither the run's lock nor a read. `None` (nothing written) when the run changed, or
    /// when the store keeps no versions (SQLite, whose one process has the run in memory).
    async fn finish_attempt_if_current(
        &self,
        version: i64,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&RunEnd>,
    ) -> Result<Option<Completed>> {
        let _ = (version, key, outcome, next, end);
        Ok(None)
    }
    /// Moves `pending` attempts whose `not_before` has passed to `queued` and returns them.
    async fn promote_due_attempts(&self, now: DateTime<Utc>) -> Result<Vec<AttemptKey>>;
    /// The earliest `not_before` of a `pending` attempt.
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>>;
    /// Attempts that are `queued` or `running` in unfinished runs (to re-enqueue after a restart).
    async fn open_attempts(&self) -> Result<Vec<AttemptKey>>;
    /// Every `pending`/`queued`/`running` attempt of a run → `cancelled`; returns how many.
    async fn cancel_open_attempts(&self, run_id: &str, finished_at: DateTime<Utc>) -> Result<u64>;

    /// Holds the run's lock across every process sharing the store until the guard is released
    /// or dropped, so two processes never decide the same run at once.
    async fn lock_run(&self, run_id: &str) -> Result<RunLock>;
    /// Records that the broker confirmed the messages of these queued attempts (the outbox).
    async fn mark_dispatched(&self, keys: &[AttemptKey]) -> Result<()>;
    /// Queued attempts whose message the broker never confirmed, queued before `before`.
    async fn undispatched_attempts(&self, before: DateTime<Utc>) -> Result<Vec<AttemptKey>>;
    /// Running attempts whose heartbeat is older than `stale_before`: their lease is renewed to
    /// `now` for whoever is about to take them, and they are returned to be dispatched again.
    /// One statement, so two servers never both claim one attempt.
    async fn claim_stale_attempts(
        &self,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AttemptKey>>;
    /// Renews the lease of every attempt `worker` is running; returns how many.
    async fn heartbeat(&self, worker: &str, now: DateTime<Utc>) -> Result<u64>;
    /// Ids of running runs whose deadline has passed.
    async fn overdue_runs(&self, now: DateTime<Utc>) -> Result<Vec<String>>;
    /// Ids of running runs with no open attempt and nothing finished since `quiet_before`: the
    /// process that should have advanced them lost its database at that moment (at most 100).
    async fn stalled_runs(&self, quiet_before: DateTime<Utc>) -> Result<Vec<String>>;
    /// Sends the id of every run that any process sharing the store finishes from now on;
    /// returns only on a database error. A store only one process uses never returns.
    async fn listen_finished(&self, finished: mpsc::UnboundedSender<String>) -> Result<()>;

    /// The cache and lead store that nodes use, on this store's database.
    fn services(&self) -> Services;
    /// Leads newest first, with contact and organisation; `cursor` is the id of the last lead
    /// of the previous page.
    async fn list_leads(&self, query: &LeadQuery) -> Result<Vec<LeadView>>;
    /// One lead with its contact, organisation and score history (newest first).
    async fn lead(&self, lead_id: &str) -> Result<Option<LeadDetail>>;

    /// The dashboard's figures: open runs, what finished in the window `query.since`…now, run
    /// durations, attempts and leads (see [`StoreStats`]).
    async fn stats(&self, query: &StatsQuery) -> Result<StoreStats>;
}

/// A run's lock across processes (a Postgres advisory lock held by a transaction); empty for a
/// store only one process uses, where the engine's own lock is enough.
pub struct RunLock(Option<sqlx::Transaction<'static, sqlx::Postgres>>);

impl RunLock {
    /// The lock of a store only one process uses.
    pub fn local() -> Self {
        Self(None)
    }

    /// Releases the lock now rather than when the connection next talks to the server.
    pub async fn release(self) {
        if let Some(transaction) = self.0
            && let Err(error) = transaction.commit().await
        {
            // The server ends the transaction, and the lock, when the connection closes.
            tracing::warn!(%error, "releasing a run lock failed");
        }
    }
}
