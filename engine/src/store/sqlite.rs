//! SQLite implementation of the store (embedded mode): one file in WAL mode, migrations built in.
//!
//! Timestamps are UTC RFC 3339 text with exactly six fractional digits, so text order is time
//! order and SQL compares instants with `<=`; like Postgres' `timestamptz`, they keep microseconds.
//! JSON values are text: SQL NULL is an absent value, the text `null` a JSON null.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use enrichflow_nodes::Services;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::mpsc;

use super::connect::{Durability, without_credentials};
use super::json::{check_text_depth, checked_text, to_optional_text};
use super::record::Json;
use super::rows::{self, error_json, summary_columns};
use super::sqlite_checkpoint;
use super::sqlite_native::{Statement, statement};
use super::sqlite_writer::{Lent, Submit, Writer, partial};
use super::{
    AttemptKey, AttemptOutcome, AttemptRecord, AttemptStatus, Completed, Error, ErrorInfo,
    LeadDetail, LeadQuery, LeadView, Listed, Result, RunEnd, RunLock, RunQuery, RunRecord,
    RunStatus, Store,
};

/// The schema, compiled into the binary.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL lets readers run beside the one writer; more connections than this only queue.
const MAX_CONNECTIONS: u32 = 8;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers; WAL lets them run beside the writer.
    pub(super) pool: SqlitePool,
    /// The one connection that writes, on a thread of its own (group commit). Funnelling every
    /// write through it queues writes in async code instead of letting several connections
    /// collide on SQLite's write lock, whose busy handler sleeps.
    pub(super) writes: Writer,
    /// Held by every clone: the WAL checkpointer stops when the last one is dropped.
    _alive: Arc<()>,
    /// Where a private database lives, removed when the last clone is dropped.
    _scratch: Option<Arc<Scratch>>,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `sqlite://path`, or a private
    /// in-memory database for `sqlite::memory:`.
    pub async fn connect(url: &str) -> Result<SqliteStore> {
        Self::connect_with(url, Durability::default()).await
    }

    /// As [`SqliteStore::connect`], with commits as durable as `durability` says.
    pub async fn connect_with(url: &str, durability: Durability) -> Result<SqliteStore> {
        let Some(location) = url.strip_prefix("sqlite:") else {
            return Err(Error::UnsupportedUrl(without_credentials(url)));
        };
        // The writer and the readers are separate connections, and each connection to
        // `:memory:` would open its own empty database: a private database is a file in a
        // directory of its own instead, removed with the store, that nothing needs to survive.
        let scratch = is_in_memory(location).then(Scratch::create).transpose()?;
        let options = match &scratch {
            Some(scratch) => SqliteConnectOptions::new().filename(scratch.database()),
            None => SqliteConnectOptions::from_str(url)?,
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match (durability, &scratch) {
            (_, Some(_)) => SqliteSynchronous::Off,
            (Durability::Process, None) => SqliteSynchronous::Normal,
            (Durability::Power, None) => SqliteSynchronous::Full,
        })
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A local file cannot drop a connection the way a network peer can; the default
            // ping before every acquire would double the cost of each statement.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let writer = options
            .pragma(
                "wal_autocheckpoint",
                sqlite_checkpoint::WRITER_AUTOCHECKPOINT,
            )
            .connect()
            .await?;
        let alive = Arc::new(());
        sqlite_checkpoint::start(pool.clone(), Arc::downgrade(&alive));
        let store = SqliteStore {
            pool,
            writes: Writer::start(writer)?,
            _alive: alive,
            _scratch: scratch.map(Arc::new),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations this binary carries that the database has not seen yet.
    pub async fn migrate(&self) -> Result<()> {
        let mut writer = self.writes.lend().await?;
        MIGRATOR.run(&mut *writer).await?;
        Ok(())
    }

    /// The writer connection, for sqlx code shared with Postgres; see [`Writer::lend`].
    pub(super) async fn write_connection(&self) -> Result<Lent> {
        self.writes.lend().await
    }

    /// Closes every connection (checkpointing the WAL); the store is unusable afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writes.close().await;
    }
}

/// The directory of a private database (`sqlite::memory:`), removed when the store is dropped.
#[derive(Debug)]
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn create() -> Result<Scratch> {
        let directory = std::env::temp_dir().join(format!("enrichflow-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir(&directory).map_err(sqlx::Error::Io)?;
        Ok(Scratch(directory))
    }

    pub(super) fn database(&self) -> PathBuf {
        self.0.join("db.sqlite")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Open connections keep their files until they close; the names go now.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sqlite::memory:`, `sqlite://:memory:` and `…?mode=memory`, after the `sqlite:` prefix.
fn is_in_memory(location: &str) -> bool {
    let location = location.trim_start_matches("//");
    let (database, parameters) = location.split_once('?').unwrap_or((location, ""));
    database == ":memory:" || parameters.split('&').any(|pair| pair == "mode=memory")
}

/// `INSERT INTO runs` with every column, as a literal so that `concat!` can extend it.
macro_rules! insert_run_sql {
    () => {
        r#"INSERT INTO runs (id, workflow_id, revision, status, "trigger", output, error,
             created_at, started_at, finished_at, deadline_at, cancel_requested, idempotency_key,
             idempotency_body_hash)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#
    };
}

/// Binds every column of `run` to `sql`, an [`insert_run_sql`] statement; refuses a trigger
/// or output nested too deeply to store.
fn bind_run(sql: &'static str, run: &RunRecord) -> Result<Statement> {
    Ok(statement(sql)
        .bind(&run.id)
        .bind(&run.workflow_id)
        .bind(&run.revision)
        .bind(run.status.as_str())
        .bind(trigger_text(run)?)
        .bind(to_optional_text("the run's output", run.output.as_ref())?)
        .bind(run.error.as_ref().map(error_json))
        .bind(timestamp(run.created_at))
        .bind(run.started_at.map(timestamp))
        .bind(run.finished_at.map(timestamp))
        .bind(run.deadline_at.map(timestamp))
        .bind(run.cancel_requested)
        .bind(&run.idempotency_key)
        .bind(&run.idempotency_body_hash))
}

/// The trigger's shared text, once its depth is checked.
fn trigger_text(run: &RunRecord) -> Result<std::sync::Arc<str>> {
    check_text_depth("the trigger", run.trigger.text())?;
    Ok(run.trigger.shared_text())
}

#[async_trait]
impl super::idempotency::KeyedRuns for SqliteStore {
    async fn insert_unless_key_taken(
        &self,
        run: &RunRecord,
        first: &[AttemptRecord],
    ) -> Result<bool> {
        // The conflict target names the partial unique index (its predicate included), so a
        // clash on the primary key is still an error.
        let sql = concat!(
            insert_run_sql!(),
            " ON CONFLICT (workflow_id, idempotency_key) WHERE idempotency_key IS NOT NULL
              DO NOTHING"
        );
        let insert = bind_run(sql, run)?;
        if first.is_empty() {
            return Ok(insert.submit(&self.writes).await? > 0);
        }
        let inserts = insert_attempts_queries(first)?;
        // As in `finish_attempt_then`: only the first statement may be refused alone.
        self.writes
            .write_in_batch(move |connection| {
                if insert.execute(connection)? == 0 {
                    return Ok(false);
                }
                for attempts in inserts {
                    attempts.execute(connection).map_err(partial)?;
                }
                Ok(true)
            })
            .await
    }

    async fn key_holder(&self, workflow_id: &str, key: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE workflow_id = ? AND idempotency_key = ?")
            .bind(workflow_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn release_key(&self, run_id: &str) -> Result<()> {
        statement("UPDATE runs SET idempotency_key = NULL WHERE id = ?")
            .bind(run_id)
            .submit(&self.writes)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn save_revision(&self, workflow_id: &str, hash: &str, source: &str) -> Result<()> {
        statement(
            "INSERT INTO workflow_revisions (hash, workflow_id, source, created_at)
             VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(workflow_id)
        .bind(source)
        .bind(timestamp(Utc::now()))
        .submit(&self.writes)
        .await?;
        Ok(())
    }

    async fn revision(&self, hash: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT source FROM workflow_revisions WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("source")).transpose()?)
    }

    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        bind_run(insert_run_sql!(), run)?
            .submit(&self.writes)
            .await?;
        Ok(())
    }

    async fn create_run_then(
        &self,
        run: &RunRecord,
        fresh_since: DateTime<Utc>,
        first: &[AttemptRecord],
    ) -> Result<super::Created> {
        super::idempotency::create_run_then(self, run, fresh_since, first).await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let rows = page_of_runs("*", query)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn list_run_summaries(&self, query: &RunQuery) -> Result<Vec<Listed>> {
        let rows = page_of_runs(summary_columns!(), query)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| rows::listed(&Columns(row))).collect()
    }

    async fn unfinished_runs(&self) -> Result<Vec<Listed>> {
        let sql = concat!(
            "SELECT ",
            summary_columns!(),
            " FROM runs WHERE status IN ('queued', 'running') ORDER BY id"
        );
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(|row| rows::listed(&Columns(row))).collect()
    }

    async fn count_running(&self, workflow_id: &str) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE workflow_id = ? AND status = 'running'",
        )
        .bind(workflow_id)
        .fetch_one(&self.pool)
        .await?;
        u64::try_from(count).map_err(|_| Error::Corrupt(format!("negative count {count}")))
    }

    async fn oldest_queued(&self, workflow_id: &str, limit: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE workflow_id = ? AND status = 'queued' ORDER BY id LIMIT ?",
        )
        .bind(workflow_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn start_run(
        &self,
        run_id: &str,
        started_at: DateTime<Utc>,
        deadline_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let changed = statement(
            "UPDATE runs SET status = 'running', started_at = ?, deadline_at = ?
             WHERE id = ? AND status = 'queued'",
        )
        .bind(timestamp(started_at))
        .bind(deadline_at.map(timestamp))
        .bind(run_id)
        .submit(&self.writes)
        .await?;
        Ok(changed > 0)
    }

    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        output: Option<&Value>,
        error: Option<&ErrorInfo>,
        finished_at: DateTime<Utc>,
    ) -> Result<bool> {
        let changed = finish_run_query(run_id, status, output, error, finished_at)?
            .submit(&self.writes)
            .await?;
        Ok(changed > 0)
    }

    async fn request_cancel(&self, run_id: &str) -> Result<bool> {
        let changed = statement(
            "UPDATE runs SET cancel_requested = 1 WHERE id = ? AND status IN ('queued', 'running')",
        )
        .bind(run_id)
        .submit(&self.writes)
        .await?;
        Ok(changed > 0)
    }

    async fn reopen_run(
        &self,
        run_id: &str,
        deadline_at: Option<DateTime<Utc>>,
        remove: &[AttemptKey],
        requeue: &[AttemptKey],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (run_id, remove, requeue) = (run_id.to_owned(), remove.to_vec(), requeue.to_vec());
        let (deadline_at, now) = (deadline_at.map(timestamp), timestamp(now));
        self.writes
            .write(move |connection| {
                reopen_in(connection, &run_id, deadline_at, &remove, &requeue, &now)
            })
            .await
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows =
            sqlx::query("SELECT * FROM node_attempts WHERE run_id = ? ORDER BY node_id, attempt")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<bool> {
        let changed = insert_attempt_query(attempt)?.submit(&self.writes).await?;
        Ok(changed > 0)
    }

    async fn start_attempt(
        &self,
        key: &AttemptKey,
        input: Option<&Json>,
        worker: &str,
        started_at: DateTime<Utc>,
    ) -> Result<bool> {
        let changed = statement(
            "UPDATE node_attempts
             SET status = 'running', input = ?1, started_at = ?2, heartbeat_at = ?2, worker = ?3
             WHERE run_id = ?4 AND node_id = ?5 AND attempt = ?6
               AND status IN ('queued', 'running')",
        )
        .bind(checked_text("the attempt's input", input)?)
        .bind(timestamp(started_at))
        .bind(worker)
        .bind(&key.run_id)
        .bind(&key.node_id)
        .bind(i64::from(key.attempt))
        .submit(&self.writes)
        .await?;
        Ok(changed > 0)
    }

    async fn finish_attempt_then(
        &self,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&RunEnd>,
    ) -> Result<Completed> {
        if next.is_empty() && end.is_none() {
            // One statement: no job of several to guard.
            let changed = finish_attempt_query(key, outcome)?
                .submit(&self.writes)
                .await?;
            return Ok(Completed {
                attempt: changed > 0,
                ..Completed::default()
            });
        }
        let finish = finish_attempt_query(key, outcome)?;
        let inserts = insert_attempts_queries(next)?;
        let ending = end
            .map(|end| {
                let (output, error) = (end.output.as_ref(), end.error.as_ref());
                finish_run_query(&key.run_id, end.status, output, error, end.finished_at)
            })
            .transpose()?;
        // The first statement may be refused alone; the rest are conditional and refused by
        // nothing but a broken database: no savepoint (see `write_in_batch`).
        self.writes
            .write_in_batch(move |connection| {
                if finish.execute(connection)? == 0 {
                    return Ok(Completed::default());
                }
                for insert in inserts {
                    insert.execute(connection).map_err(partial)?;
                }
                let run = match ending {
                    Some(ending) => ending.execute(connection).map_err(partial)? > 0,
                    None => false,
                };
                Ok(Completed {
                    attempt: true,
                    run,
                    version: None,
                })
            })
            .await
    }

    async fn promote_due_attempts(&self, now: DateTime<Utc>) -> Result<Vec<AttemptKey>> {
        // One statement, so two schedulers never both promote (and enqueue) the same attempt.
        // A pending attempt without a `not_before` has nothing to wait for.
        let mut keys = statement(
            "UPDATE node_attempts SET status = 'queued', dispatched = 0
             WHERE status = 'pending' AND (not_before IS NULL OR not_before <= ?)
             RETURNING run_id, node_id, attempt",
        )
        .bind(timestamp(now))
        .submit_fetch_keys(&self.writes)
        .await?;
        keys.sort_by(|a, b| {
            (&a.run_id, &a.node_id, a.attempt).cmp(&(&b.run_id, &b.node_id, b.attempt))
        });
        Ok(keys)
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let due: Option<String> = sqlx::query_scalar(
            "SELECT MIN(not_before) FROM node_attempts WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        due.as_deref()
            .map(|text| parse_timestamp("not_before", text))
            .transpose()
    }

    async fn open_attempts(&self) -> Result<Vec<AttemptKey>> {
        let rows = sqlx::query(
            "SELECT a.run_id, a.node_id, a.attempt
             FROM runs r JOIN node_attempts a ON a.run_id = r.id
             WHERE r.status IN ('queued', 'running') AND a.status IN ('queued', 'running')
             ORDER BY a.run_id, a.node_id, a.attempt",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn cancel_open_attempts(&self, run_id: &str, finished_at: DateTime<Utc>) -> Result<u64> {
        let changed = statement(
            "UPDATE node_attempts SET status = 'cancelled', finished_at = ?
             WHERE run_id = ? AND status IN ('pending', 'queued', 'running')",
        )
        .bind(timestamp(finished_at))
        .bind(run_id)
        .submit(&self.writes)
        .await?;
        Ok(changed)
    }

    async fn lock_run(&self, _run_id: &str) -> Result<RunLock> {
        Ok(RunLock::local())
    }

    async fn mark_dispatched(&self, keys: &[AttemptKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // Three parameters a key: a chunk stays far below SQLite's 32,766.
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let tuples = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE node_attempts SET dispatched = 1 WHERE (run_id, node_id, attempt) IN \
                 (VALUES {tuples})"
            );
            let mut update = statement(sql);
            for key in chunk {
                update = update
                    .bind(&key.run_id)
                    .bind(&key.node_id)
                    .bind(i64::from(key.attempt));
            }
            update.submit(&self.writes).await?;
        }
        Ok(())
    }

    async fn undispatched_attempts(&self, before: DateTime<Utc>) -> Result<Vec<AttemptKey>> {
        let rows = sqlx::query(
            "SELECT run_id, node_id, attempt FROM node_attempts
             WHERE status = 'queued' AND NOT dispatched
               AND COALESCE(not_before, created_at) < ?
             ORDER BY created_at LIMIT 1000",
        )
        .bind(timestamp(before))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn claim_stale_attempts(
        &self,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AttemptKey>> {
        statement(
            "UPDATE node_attempts SET heartbeat_at = ?2
             WHERE status = 'running' AND heartbeat_at < ?1
             RETURNING run_id, node_id, attempt",
        )
        .bind(timestamp(stale_before))
        .bind(timestamp(now))
        .submit_fetch_keys(&self.writes)
        .await
    }

    async fn heartbeat(&self, worker: &str, now: DateTime<Utc>) -> Result<u64> {
        let changed = statement(
            "UPDATE node_attempts SET heartbeat_at = ? WHERE status = 'running' AND worker = ?",
        )
        .bind(timestamp(now))
        .bind(worker)
        .submit(&self.writes)
        .await?;
        Ok(changed)
    }

    async fn overdue_runs(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE status = 'running' AND deadline_at <= ? ORDER BY id",
        )
        .bind(timestamp(now))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn stalled_runs(&self, quiet_before: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT r.id FROM runs r
             WHERE r.status = 'running'
               AND NOT EXISTS (SELECT 1 FROM node_attempts a WHERE a.run_id = r.id
                               AND a.status IN ('pending', 'queued', 'running'))
               AND COALESCE((SELECT max(a.finished_at) FROM node_attempts a
                             WHERE a.run_id = r.id), r.started_at) < ?
             ORDER BY r.id LIMIT 100",
        )
        .bind(timestamp(quiet_before))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Only this process writes the file, and it learns of its own finished runs directly.
    async fn listen_finished(&self, _finished: mpsc::UnboundedSender<String>) -> Result<()> {
        std::future::pending().await
    }

    fn services(&self) -> Services {
        Services {
            cache: Arc::new(self.clone()),
            leads: Arc::new(self.clone()),
        }
    }

    async fn list_leads(&self, query: &LeadQuery) -> Result<Vec<LeadView>> {
        super::leads_sqlite::list(self, query).await
    }

    async fn lead(&self, lead_id: &str) -> Result<Option<LeadDetail>> {
        super::leads_sqlite::detail(self, lead_id).await
    }

    async fn stats(&self, query: &super::StatsQuery) -> Result<super::StoreStats> {
        self.stats_of(query).await
    }
}

/// Inserts an attempt unless its (run, node, attempt) exists.
fn insert_attempt_query(attempt: &AttemptRecord) -> Result<Statement> {
    insert_attempts_query(std::slice::from_ref(attempt))
}

/// Ends an unfinished run.
fn finish_run_query(
    run_id: &str,
    status: RunStatus,
    output: Option<&Value>,
    error: Option<&ErrorInfo>,
    finished_at: DateTime<Utc>,
) -> Result<Statement> {
    debug_assert!(status.is_finished(), "finish_run with status {status}");
    Ok(statement(
        "UPDATE runs SET status = ?, output = ?, error = ?, finished_at = ?
         WHERE id = ? AND status IN ('queued', 'running')",
    )
    .bind(status.as_str())
    .bind(to_optional_text("the run's output", output)?)
    .bind(error.map(error_json))
    .bind(timestamp(finished_at))
    .bind(run_id))
}

/// Rows one `INSERT` carries: 14 parameters each stay far below SQLite's 32,766 (a workflow
/// may fan out to thousands of nodes).
const ROWS_PER_INSERT: usize = 500;

/// Inserts `attempts`, each unless its (run, node, attempt) exists: one statement per
/// [`ROWS_PER_INSERT`].
fn insert_attempts_queries(attempts: &[AttemptRecord]) -> Result<Vec<Statement>> {
    attempts
        .chunks(ROWS_PER_INSERT)
        .map(insert_attempts_query)
        .collect()
}

/// Inserts attempts (at most [`ROWS_PER_INSERT`]), each unless its (run, node, attempt)
/// exists, in one statement.
fn insert_attempts_query(attempts: &[AttemptRecord]) -> Result<Statement> {
    let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; attempts.len()].join(", ");
    let sql = format!(
        "INSERT INTO node_attempts (run_id, node_id, attempt, status, input, output, error,
             retryable, not_before, created_at, started_at, finished_at, worker, heartbeat_at)
         VALUES {rows}
         ON CONFLICT (run_id, node_id, attempt) DO NOTHING"
    );
    let mut query = statement(sql);
    for attempt in attempts {
        query = bind_attempt(query, attempt)?;
    }
    Ok(query)
}

/// Binds the fourteen columns [`insert_attempts_query`] inserts of one attempt. A running
/// attempt's lease starts with it.
fn bind_attempt(query: Statement, attempt: &AttemptRecord) -> Result<Statement> {
    let heartbeat = (attempt.status == AttemptStatus::Running)
        .then_some(attempt.started_at)
        .flatten();
    Ok(query
        .bind(&attempt.key.run_id)
        .bind(&attempt.key.node_id)
        .bind(i64::from(attempt.key.attempt))
        .bind(attempt.status.as_str())
        .bind(checked_text("the attempt's input", attempt.input.as_ref())?)
        .bind(checked_text("the node's output", attempt.output.as_ref())?)
        .bind(attempt.error.as_ref().map(error_json))
        .bind(attempt.retryable)
        .bind(attempt.not_before.map(timestamp))
        .bind(timestamp(attempt.created_at))
        .bind(attempt.started_at.map(timestamp))
        .bind(attempt.finished_at.map(timestamp))
        .bind(&attempt.worker)
        .bind(heartbeat.map(timestamp)))
}

/// Records an open attempt's outcome (and its start, if not written yet).
fn finish_attempt_query(key: &AttemptKey, outcome: &AttemptOutcome) -> Result<Statement> {
    debug_assert!(
        outcome.status.is_finished(),
        "finish_attempt with status {}",
        outcome.status
    );
    let started = outcome.started.as_ref();
    Ok(statement(
        "UPDATE node_attempts
         SET status = ?, output = ?, error = ?, retryable = ?, not_before = ?, finished_at = ?,
             input = COALESCE(?, input), started_at = COALESCE(started_at, ?),
             worker = COALESCE(?, worker)
         WHERE run_id = ? AND node_id = ? AND attempt = ?
           AND status IN ('pending', 'queued', 'running')",
    )
    .bind(outcome.status.as_str())
    .bind(checked_text("the node's output", outcome.output.as_ref())?)
    .bind(outcome.error.as_ref().map(error_json))
    .bind(outcome.retryable)
    .bind(outcome.not_before.map(timestamp))
    .bind(timestamp(outcome.finished_at))
    .bind(outcome.started_input()?)
    .bind(started.map(|started| timestamp(started.started_at)))
    .bind(started.map(|started| started.worker.clone()))
    .bind(&key.run_id)
    .bind(&key.node_id)
    .bind(i64::from(key.attempt)))
}

/// [`Store::reopen_run`] inside the writer's transaction.
fn reopen_in(
    connection: &super::sqlite_writer::Connection,
    run_id: &str,
    deadline_at: Option<String>,
    remove: &[AttemptKey],
    requeue: &[AttemptKey],
    now: &str,
) -> Result<bool> {
    let reopened = statement(
        "UPDATE runs SET status = 'running', output = NULL, error = NULL, finished_at = NULL,
             deadline_at = ?, cancel_requested = 0
         WHERE id = ? AND status IN ('failed', 'cancelled')",
    )
    .bind(deadline_at)
    .bind(run_id)
    .execute(connection)?;
    if reopened == 0 {
        return Ok(false);
    }
    for key in remove {
        statement("DELETE FROM node_attempts WHERE run_id = ? AND node_id = ? AND attempt = ?")
            .bind(&key.run_id)
            .bind(&key.node_id)
            .bind(i64::from(key.attempt))
            .execute(connection)?;
    }
    for key in requeue {
        statement(
            "INSERT INTO node_attempts (run_id, node_id, attempt, status, retryable, created_at)
             VALUES (?, ?, ?, 'queued', 0, ?)",
        )
        .bind(&key.run_id)
        .bind(&key.node_id)
        .bind(i64::from(key.attempt))
        .bind(now)
        .execute(connection)?;
    }
    Ok(true)
}

/// `SELECT columns FROM runs` with the query's filters, newest first, one page.
fn page_of_runs(columns: &str, query: &RunQuery) -> QueryBuilder<Sqlite> {
    let mut sql = QueryBuilder::<Sqlite>::new(format!("SELECT {columns} FROM runs WHERE 1 = 1"));
    if let Some(workflow_id) = &query.workflow_id {
        sql.push(" AND workflow_id = ")
            .push_bind(workflow_id.clone());
    }
    if let Some(status) = query.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(cursor) = &query.cursor {
        sql.push(" AND id < ").push_bind(cursor.clone());
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(query.page_size()));
    sql
}

/// The stored form of an instant: fixed width, so that text order is time order.
pub(super) fn timestamp(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_timestamp(column: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|error| Error::Corrupt(format!("{column} `{text}`: {error}")))
}

/// The columns of one SQLite row.
pub(super) struct Columns<'r>(pub(super) &'r SqliteRow);

impl rows::Columns for Columns<'_> {
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.0.try_get(column)?)
    }

    fn optional_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.0.try_get(column)?)
    }

    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.0.try_get(column)?)
    }

    fn time(&self, column: &str) -> Result<DateTime<Utc>> {
        parse_timestamp(column, &self.text(column)?)
    }

    fn optional_time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        self.optional_text(column)?
            .map(|text| parse_timestamp(column, &text))
            .transpose()
    }

    fn json_text(&self, column: &str) -> Result<Option<String>> {
        self.optional_text(column)
    }

    fn attempt_number(&self, column: &str) -> Result<u32> {
        let number: i64 = self.0.try_get(column)?;
        u32::try_from(number).map_err(|_| Error::Corrupt(format!("{column} {number}")))
    }

    fn optional_integer(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.0.try_get(column)?)
    }

    fn optional_real(&self, column: &str) -> Result<Option<f64>> {
        Ok(self.0.try_get(column)?)
    }
}

fn run_from_row(row: &SqliteRow) -> Result<RunRecord> {
    rows::run(&Columns(row))
}

fn key_from_row(row: &SqliteRow) -> Result<AttemptKey> {
    rows::attempt_key(&Columns(row))
}

fn attempt_from_row(row: &SqliteRow) -> Result<AttemptRecord> {
    rows::attempt(&Columns(row))
}
