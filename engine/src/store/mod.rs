//! Durable state: workflow revisions, runs and node attempts. Only this module writes SQL.
//!
//! The database is the source of truth: the queue carries only ids, and every transition is a
//! conditional update that reports whether it happened, so a duplicate delivery or a second
//! scheduler acting on the same run changes nothing.

mod connect;
mod postgres;
mod record;
mod rows;
mod sqlite;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use connect::connect;
pub use postgres::PostgresStore;
pub use record::{
    AttemptKey, AttemptRecord, AttemptStatus, ErrorInfo, RunQuery, RunRecord, RunStatus,
};
pub use sqlite::SqliteStore;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("unsupported database URL `{0}`: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a finished attempt ended, written in one transition.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// `Succeeded`, `Failed`, `Skipped` or `Cancelled`.
    pub status: AttemptStatus,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    /// For a failure: whether another attempt may help.
    pub retryable: bool,
    /// For a retryable failure: the earliest time of the next attempt the remote side asked for
    /// (`Retry-After`); stored in the attempt's `not_before`.
    pub not_before: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

/// Everything the engine persists. Implementations: SQLite (embedded), Postgres (distributed).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a workflow's exact YAML under its content hash; storing it again is a no-op.
    async fn save_revision(&self, workflow_id: &str, hash: &str, source: &str) -> Result<()>;
    /// The YAML text stored under `hash`.
    async fn revision(&self, hash: &str) -> Result<Option<String>>;

    /// Inserts a new run (normally `queued`).
    async fn create_run(&self, run: &RunRecord) -> Result<()>;
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    /// Runs newest first; `cursor` is the id of the last run of the previous page.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>>;
    /// Runs that are `queued` or `running`, oldest first (for recovery after a restart).
    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>>;
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

    /// Every attempt of a run, ordered by node id then attempt number.
    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>>;
    /// Inserts an attempt; false (and nothing written) if that (run, node, attempt) exists.
    async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<bool>;
    /// `queued`/`running` → `running` with its rendered input; false otherwise.
    async fn start_attempt(
        &self,
        key: &AttemptKey,
        input: Option<&Value>,
        started_at: DateTime<Utc>,
    ) -> Result<bool>;
    /// `pending`/`queued`/`running` → the outcome's status; false if it had already finished.
    async fn finish_attempt(&self, key: &AttemptKey, outcome: &AttemptOutcome) -> Result<bool>;
    /// Moves `pending` attempts whose `not_before` has passed to `queued` and returns them.
    async fn promote_due_attempts(&self, now: DateTime<Utc>) -> Result<Vec<AttemptKey>>;
    /// The earliest `not_before` of a `pending` attempt.
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>>;
    /// Attempts that are `queued` or `running` in unfinished runs (to re-enqueue after a restart).
    async fn open_attempts(&self) -> Result<Vec<AttemptKey>>;
    /// Every `pending`/`queued`/`running` attempt of a run → `cancelled`; returns how many.
    async fn cancel_open_attempts(&self, run_id: &str, finished_at: DateTime<Utc>) -> Result<u64>;
}
