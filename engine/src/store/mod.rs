//! Durable state: workflow revisions, runs and node attempts, the leads nodes write and the
//! cache they keep, and the figures of the stats endpoint. Only this module writes SQL.
//!
//! The database is the source of truth: the queue carries only ids, and every transition is a
//! conditional update that reports whether it happened, so a duplicate delivery or a second
//! scheduler acting on the same run changes nothing.

mod attempts;
#[cfg(test)]
mod attempts_tests;
mod cache;
mod connect;
#[cfg(test)]
mod depth_tests;
mod dialect;
mod dispatch;
#[cfg(test)]
mod dispatch_tests;
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
mod revisions;
mod rows;
mod runs;
#[cfg(test)]
mod runs_tests;
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

pub use attempts::Attempts;
pub use connect::{Durability, PoolOptions, connect, connect_with};
pub use dispatch::Dispatch;
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
pub use revisions::Revisions;
pub use runs::Runs;
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

/// How a run ends, as [`Runs::finish_run`] records it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub finished_at: DateTime<Utc>,
}

/// What [`Attempts::finish_attempt_then`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completed {
    /// The attempt was open and now has its outcome (and nothing else was written if not).
    pub attempt: bool,
    /// The run was unfinished and has now ended as asked.
    pub run: bool,
    /// The run's version after this write, in a store that keeps versions (Postgres), for
    /// [`Attempts::finish_attempt_if_current`].
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
    /// The attempt as [`Attempts::finish_attempt`] leaves it: `outcome` recorded, with its start
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

/// How an attempt started: what [`Attempts::start_attempt`] writes.
#[derive(Debug, Clone)]
pub struct Started {
    /// The rendered input; none when rendering failed.
    pub input: Option<Json>,
    pub worker: String,
    pub started_at: DateTime<Utc>,
}

/// What [`Runs::create_run_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The run was inserted.
    New,
    /// A fresh run of the same workflow already holds the key; it is returned as stored.
    Existing(Box<RunRecord>),
}

/// Everything the engine persists, one trait per concern (each in its own module, written once
/// for both stores), plus what nodes and the API read. Implementations: SQLite (embedded),
/// Postgres (distributed), and the `LiveStore` that keeps SQLite's runs in progress in memory.
#[async_trait]
pub trait Store:
    Runs + Attempts + Dispatch + Revisions + ProgressStore + Send + Sync + 'static
{
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
