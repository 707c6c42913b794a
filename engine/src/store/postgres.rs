//! Postgres implementation of the store (distributed mode): a connection pool shared by every
//! replica, migrations built in.
//!
//! Timestamps are `timestamptz`, truncated to microseconds before they are written, exactly as the
//! SQLite store's text keeps them. JSON values are `json` written from the engine's own text: SQL
//! NULL is an absent value, the JSON `null` a JSON null. Ids and node ids are `COLLATE "C"`, so
//! ordering and cursors compare bytes like SQLite.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use enrichflow_nodes::Services;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::mpsc;

use super::connect::{PoolOptions, without_credentials};
use super::json::{check_text_depth, checked_text, to_optional_text};
use super::record::Json;
use super::rows::{self, error_json, summary_columns};
use super::{
    AttemptKey, AttemptOutcome, AttemptRecord, Completed, Error, ErrorInfo, LeadDetail, LeadQuery,
    LeadView, Listed, Result, RunEnd, RunLock, RunQuery, RunRecord, RunStatus, Store,
};

/// The schema, compiled into the binary.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections per process held by run locks, apart from the main pool: a lock is held while
/// the run's queries go through the main pool, so sharing one pool could exhaust it with locks.
const LOCK_CONNECTIONS: u32 = 4;

/// How long a query waits for a connection: while the server is down, webhooks answer 503
/// after this rather than hanging for sqlx's default 30 s.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the server lets a run lock's transaction sit idle before it ends the session, and
/// with it the lock. A lock holder only runs the run's queries meanwhile, so a lock idle this
/// long belongs to a process that is stopped (SIGSTOP, a frozen VM, a partition) and would
/// otherwise block every process advancing that run for as long as its connection stays open.
const RUN_LOCK_IDLE_TIMEOUT: &str = "10s";

/// The `LISTEN` channel carrying the ids of finished runs.
const FINISHED_CHANNEL: &str = "enrichflow_run_finished";

/// The Postgres store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
    /// Connections holding run locks (transaction-scoped advisory locks).
    locks: PgPool,
}

impl PostgresStore {
    /// Connects to `postgres://…` or `postgresql://…` and applies missing migrations. Several
    /// processes may do this at once: the migrator serialises them with an advisory lock.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        Self::connect_with(url, PoolOptions::default()).await
    }

    /// As [`PostgresStore::connect`], with a pool of the given size.
    pub async fn connect_with(url: &str, pool_options: PoolOptions) -> Result<PostgresStore> {
        if !is_postgres_url(url) {
            return Err(Error::UnsupportedUrl(without_credentials(url)));
        }
        let mut options = PgConnectOptions::from_str(url)?;
        if options.get_application_name().is_none() {
            options = options.application_name("enrichflow");
        }
        // No ping before each statement (sqlx's default): it is one more round trip on every
        // statement. A connection the server dropped fails its next statement instead, which
        // every caller already handles as a passing database error (retried, or swept).
        let pool = PgPoolOptions::new()
            .max_connections(pool_options.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let lock_options =
            options.options([("idle_in_transaction_session_timeout", RUN_LOCK_IDLE_TIMEOUT)]);
        // Unlike the query pool, lock connections keep sqlx's ping before use: the server ends
        // the session of a lock held idle too long (above), and the ping discards such a
        // connection instead of failing the next advance of some run.
        let locks = PgPoolOptions::new()
            .max_connections(LOCK_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(lock_options);
        let store = PostgresStore { pool, locks };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations this binary carries that the database has not seen yet.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// [`Store::finish_attempt_then`], only if the run's version is `version` when given;
    /// `None` when it is not (then nothing was written).
    ///
    /// One statement, one round trip: the run's row locked (and its version checked), the
    /// outcome, and only if it was recorded, the attempts it made ready and the run's end,
    /// whose notification goes out at commit as in `finish_run`, and the version raised.
    /// (Data-modifying CTEs run whole or not at all; the run's row is updated once.)
    async fn finish_attempt(
        &self,
        version: Option<i64>,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&RunEnd>,
    ) -> Result<Option<Completed>> {
        debug_assert!(
            outcome.status.is_finished(),
            "finish_attempt with status {}",
            outcome.status
        );
        let started = outcome.started.as_ref();
        let next = NextAttempts::of(next)?;
        let query = sqlx::query(
            "WITH current AS (
                 SELECT status IN ('queued', 'running') AS open FROM runs
                 WHERE id = $7 AND ($31::int8 IS NULL OR version = $31)
                 FOR UPDATE
             ), finished AS (
                 UPDATE node_attempts
                 SET status = $1, output = $2::json, error = $3::json, retryable = $4,
                     not_before = $5, finished_at = $6, input = COALESCE($10::json, input),
                     started_at = COALESCE(started_at, $11), worker = COALESCE($12, worker)
                 WHERE run_id = $7 AND node_id = $8 AND attempt = $9
                   AND status IN ('pending', 'queued', 'running')
                   AND EXISTS (SELECT 1 FROM current)
                 RETURNING 1
             ), inserted AS (
                 INSERT INTO node_attempts (run_id, node_id, attempt, status, input, output,
                     error, retryable, not_before, created_at, started_at, finished_at,
                     worker, heartbeat_at)
                 SELECT $7, next.node_id, next.attempt, next.status, next.input::json,
                     next.output::json, next.error::json, next.retryable, next.not_before,
                     next.created_at, next.started_at, next.finished_at, next.worker,
                     CASE WHEN next.status = 'running' THEN next.started_at END
                 FROM UNNEST($13::text[], $14::int8[], $15::text[], $16::text[], $17::text[],
                     $18::text[], $19::bool[], $20::timestamptz[], $21::timestamptz[],
                     $22::timestamptz[], $23::timestamptz[], $24::text[])
                     AS next (node_id, attempt, status, input, output, error, retryable,
                         not_before, created_at, started_at, finished_at, worker)
                 WHERE EXISTS (SELECT 1 FROM finished)
                 ON CONFLICT (run_id, node_id, attempt) DO NOTHING
             ), changed AS (
                 UPDATE runs SET version = version + 1,
                     status = CASE WHEN ending THEN $25 ELSE status END,
                     output = CASE WHEN ending THEN $26::json ELSE output END,
                     error = CASE WHEN ending THEN $27::json ELSE error END,
                     finished_at = CASE WHEN ending THEN $28 ELSE finished_at END
                 FROM (SELECT $29 AND open AS ending FROM current) AS asked
                 WHERE id = $7 AND EXISTS (SELECT 1 FROM finished)
                 RETURNING version, ending
             ), notified AS (
                 SELECT pg_notify($30, $7) FROM changed WHERE ending
             )
             SELECT EXISTS (SELECT 1 FROM current), EXISTS (SELECT 1 FROM finished),
                 (SELECT count(*) FROM notified) > 0, (SELECT version FROM changed)",
        )
        .bind(outcome.status.as_str())
        .bind(checked_text("the node's output", outcome.output.as_ref())?)
        .bind(outcome.error.as_ref().map(error_json))
        .bind(outcome.retryable)
        .bind(outcome.not_before.map(timestamp))
        .bind(timestamp(outcome.finished_at))
        .bind(&key.run_id)
        .bind(&key.node_id)
        .bind(i64::from(key.attempt))
        .bind(outcome.started_input()?)
        .bind(started.map(|started| timestamp(started.started_at)))
        .bind(started.map(|started| started.worker.clone()));
        let row = next
            .bound(query)
            .bind(end.map(|end| end.status.as_str()))
            .bind(
                end.and_then(|end| {
                    to_optional_text("the run's output", end.output.as_ref()).transpose()
                })
                .transpose()?,
            )
            .bind(end.and_then(|end| end.error.as_ref().map(error_json)))
            .bind(end.map(|end| timestamp(end.finished_at)))
            .bind(end.is_some())
            .bind(FINISHED_CHANNEL)
            .bind(version)
            .fetch_one(&self.pool)
            .await?;
        let current: bool = row.try_get(0)?;
        if version.is_some() && !current {
            return Ok(None);
        }
        Ok(Some(Completed {
            attempt: row.try_get(1)?,
            run: row.try_get(2)?,
            version: row.try_get(3)?,
        }))
    }

    /// A connection to write on, for code written once for both stores (SQLite's is its one
    /// writer connection).
    pub(super) async fn write_connection(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// Closes every connection; the store is unusable afterwards.
    pub async fn close(&self) {
        self.locks.close().await;
        self.pool.close().await;
    }
}

/// Whether `url` names a Postgres server (the two schemes libpq accepts).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `INSERT INTO runs` with every column, as a literal so that `concat!` can extend it.
macro_rules! insert_run_sql {
    () => {
        r#"INSERT INTO runs (id, workflow_id, revision, status, "trigger", output, error,
             created_at, started_at, finished_at, deadline_at, cancel_requested, idempotency_key,
             idempotency_body_hash)
           VALUES ($1, $2, $3, $4, $5::json, $6::json, $7::json, $8, $9, $10, $11, $12, $13, $14)"#
    };
}

/// Binds every column of `run` to `sql`, an [`insert_run_sql`] statement; refuses a trigger
/// or output nested too deeply to store.
fn bind_run(
    sql: &'static str,
    run: &RunRecord,
) -> Result<sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>> {
    Ok(sqlx::query(sql)
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
impl super::idempotency::KeyedRuns for PostgresStore {
    async fn insert_unless_key_taken(
        &self,
        run: &RunRecord,
        first: &[AttemptRecord],
    ) -> Result<bool> {
        // The conflict target names the partial unique index (its predicate included), so a
        // clash on the primary key is still an error. A concurrent insert of the same key waits
        // for the other transaction and then does nothing if it committed.
        // One statement: the run, and only if it was inserted, its first attempts, if any
        // (their foreign key is checked at the statement's end, when the run is there).
        let sql = concat!(
            "WITH created AS (",
            insert_run_sql!(),
            " ON CONFLICT (workflow_id, idempotency_key) WHERE idempotency_key IS NOT NULL
              DO NOTHING RETURNING 1
             ), first AS (
                 INSERT INTO node_attempts (run_id, node_id, attempt, status, input, output,
                     error, retryable, not_before, created_at, started_at, finished_at,
                     worker, heartbeat_at)
                 SELECT $1, next.node_id, next.attempt, next.status, next.input::json,
                     next.output::json, next.error::json, next.retryable, next.not_before,
                     next.created_at, next.started_at, next.finished_at, next.worker,
                     CASE WHEN next.status = 'running' THEN next.started_at END
                 FROM UNNEST($15::text[], $16::int8[], $17::text[], $18::text[], $19::text[],
                     $20::text[], $21::bool[], $22::timestamptz[], $23::timestamptz[],
                     $24::timestamptz[], $25::timestamptz[], $26::text[])
                     AS next (node_id, attempt, status, input, output, error, retryable,
                         not_before, created_at, started_at, finished_at, worker)
                 WHERE EXISTS (SELECT 1 FROM created)
                 ON CONFLICT (run_id, node_id, attempt) DO NOTHING
             )
             SELECT EXISTS (SELECT 1 FROM created)"
        );
        let next = NextAttempts::of(first)?;
        let row = next
            .bound(bind_run(sql, run)?)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn key_holder(&self, workflow_id: &str, key: &str) -> Result<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM runs WHERE workflow_id = $1 AND idempotency_key = $2")
            .bind(workflow_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn release_key(&self, run_id: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET idempotency_key = NULL WHERE id = $1")
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn save_revision(&self, workflow_id: &str, hash: &str, source: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO workflow_revisions (hash, workflow_id, source, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(workflow_id)
        .bind(source)
        .bind(timestamp(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revision(&self, hash: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT source FROM workflow_revisions WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        bind_run(insert_run_sql!(), run)?
            .execute(&self.pool)
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
        Ok(self.run_versioned(run_id).await?.map(|(run, _)| run))
    }

    async fn run_versioned(&self, run_id: &str) -> Result<Option<(RunRecord, Option<i64>)>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some((run_from_row(&row)?, Some(row.try_get("version")?))))
    }

    async fn run_version(&self, run_id: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT version FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?)
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
            "SELECT COUNT(*) FROM runs WHERE workflow_id = $1 AND status = 'running'",
        )
        .bind(workflow_id)
        .fetch_one(&self.pool)
        .await?;
        u64::try_from(count).map_err(|_| Error::Corrupt(format!("negative count {count}")))
    }

    async fn oldest_queued(&self, workflow_id: &str, limit: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE workflow_id = $1 AND status = 'queued'
             ORDER BY id LIMIT $2",
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
        let result = sqlx::query(
            "UPDATE runs SET status = 'running', started_at = $1, deadline_at = $2,
                 version = version + 1
             WHERE id = $3 AND status = 'queued'",
        )
        .bind(timestamp(started_at))
        .bind(deadline_at.map(timestamp))
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        output: Option<&Value>,
        error: Option<&ErrorInfo>,
        finished_at: DateTime<Utc>,
    ) -> Result<bool> {
        debug_assert!(status.is_finished(), "finish_run with status {status}");
        // The notification goes out when the update commits, to every replica waiting on the run
        // (a webhook answering `on_complete` while workers elsewhere ran the nodes).
        let finished = sqlx::query(
            "WITH finished AS (
                 UPDATE runs SET status = $1, output = $2::json, error = $3::json, finished_at = $4,
                     version = version + 1
                 WHERE id = $5 AND status IN ('queued', 'running')
                 RETURNING id
             )
             SELECT pg_notify($6, id) FROM finished",
        )
        .bind(status.as_str())
        .bind(to_optional_text("the run's output", output)?)
        .bind(error.map(error_json))
        .bind(timestamp(finished_at))
        .bind(run_id)
        .bind(FINISHED_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        Ok(finished.is_some())
    }

    async fn request_cancel(&self, run_id: &str) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE runs SET cancel_requested = true, version = version + 1
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn reopen_run(
        &self,
        run_id: &str,
        deadline_at: Option<DateTime<Utc>>,
        remove: &[AttemptKey],
        requeue: &[AttemptKey],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut transaction = self.pool.begin().await?;
        let reopened = sqlx::query(
            "UPDATE runs SET status = 'running', output = NULL, error = NULL, finished_at = NULL,
                 deadline_at = $1, cancel_requested = false, version = version + 1
             WHERE id = $2 AND status IN ('failed', 'cancelled')",
        )
        .bind(deadline_at.map(timestamp))
        .bind(run_id)
        .execute(&mut *transaction)
        .await?;
        if reopened.rows_affected() == 0 {
            return Ok(false);
        }
        for key in remove {
            sqlx::query(
                "DELETE FROM node_attempts WHERE run_id = $1 AND node_id = $2 AND attempt = $3",
            )
            .bind(&key.run_id)
            .bind(&key.node_id)
            .bind(i64::from(key.attempt))
            .execute(&mut *transaction)
            .await?;
        }
        for key in requeue {
            sqlx::query(
                "INSERT INTO node_attempts (run_id, node_id, attempt, status, retryable, created_at)
                 VALUES ($1, $2, $3, 'queued', false, $4)",
            )
            .bind(&key.run_id)
            .bind(&key.node_id)
            .bind(i64::from(key.attempt))
            .bind(timestamp(now))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(true)
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let rows =
            sqlx::query("SELECT * FROM node_attempts WHERE run_id = $1 ORDER BY node_id, attempt")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<bool> {
        let inserted: bool = sqlx::query_scalar(
            "WITH inserted AS (
                 INSERT INTO node_attempts (run_id, node_id, attempt, status, input, output,
                     error, retryable, not_before, created_at, started_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5::json, $6::json, $7::json, $8, $9, $10, $11, $12)
                 ON CONFLICT (run_id, node_id, attempt) DO NOTHING
                 RETURNING run_id
             ), bumped AS (
                 UPDATE runs SET version = version + 1 WHERE id IN (SELECT run_id FROM inserted)
             )
             SELECT EXISTS (SELECT 1 FROM inserted)",
        )
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
        .fetch_one(&self.pool)
        .await?;
        Ok(inserted)
    }

    async fn start_attempt(
        &self,
        key: &AttemptKey,
        input: Option<&Json>,
        worker: &str,
        started_at: DateTime<Utc>,
    ) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE node_attempts
             SET status = 'running', input = $1::json, started_at = $2, heartbeat_at = $2,
                 worker = $6
             WHERE run_id = $3 AND node_id = $4 AND attempt = $5
               AND status IN ('queued', 'running')",
        )
        .bind(checked_text("the attempt's input", input)?)
        .bind(timestamp(started_at))
        .bind(&key.run_id)
        .bind(&key.node_id)
        .bind(i64::from(key.attempt))
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn finish_attempt_then(
        &self,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&RunEnd>,
    ) -> Result<Completed> {
        let written = self.finish_attempt(None, key, outcome, next, end).await?;
        Ok(written.unwrap_or_default())
    }

    async fn finish_attempt_if_current(
        &self,
        version: i64,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&RunEnd>,
    ) -> Result<Option<Completed>> {
        self.finish_attempt(Some(version), key, outcome, next, end)
            .await
    }

    async fn promote_due_attempts(&self, now: DateTime<Utc>) -> Result<Vec<AttemptKey>> {
        // One statement, so two schedulers never both promote (and enqueue) the same attempt: a
        // concurrent update waits for the row lock, re-checks `status = 'pending'` and skips it.
        // A pending attempt without a `not_before` has nothing to wait for.
        let rows = sqlx::query(
            "UPDATE node_attempts SET status = 'queued', dispatched = false
             WHERE status = 'pending' AND (not_before IS NULL OR not_before <= $1)
             RETURNING run_id, node_id, attempt",
        )
        .bind(timestamp(now))
        .fetch_all(&self.pool)
        .await?;
        let mut keys = rows.iter().map(key_from_row).collect::<Result<Vec<_>>>()?;
        keys.sort_by(|a, b| {
            (&a.run_id, &a.node_id, a.attempt).cmp(&(&b.run_id, &b.node_id, b.attempt))
        });
        Ok(keys)
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar(
                "SELECT MIN(not_before) FROM node_attempts WHERE status = 'pending'",
            )
            .fetch_one(&self.pool)
            .await?,
        )
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
        let cancelled: i64 = sqlx::query_scalar(
            "WITH cancelled AS (
                 UPDATE node_attempts SET status = 'cancelled', finished_at = $1
                 WHERE run_id = $2 AND status IN ('pending', 'queued', 'running')
                 RETURNING 1
             ), bumped AS (
                 UPDATE runs SET version = version + 1
                 WHERE id = $2 AND EXISTS (SELECT 1 FROM cancelled)
             )
             SELECT count(*) FROM cancelled",
        )
        .bind(timestamp(finished_at))
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(cancelled).unwrap_or(0))
    }

    async fn lock_run(&self, run_id: &str) -> Result<RunLock> {
        let mut transaction = self.locks.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(run_id)
            .execute(&mut *transaction)
            .await?;
        Ok(RunLock(Some(transaction)))
    }

    async fn mark_dispatched(&self, keys: &[AttemptKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<Postgres>::new(
            "UPDATE node_attempts SET dispatched = true WHERE (run_id, node_id, attempt) IN ",
        );
        query.push_tuples(keys, |mut row, key| {
            row.push_bind(&key.run_id)
                .push_bind(&key.node_id)
                .push_bind(i64::from(key.attempt));
        });
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn undispatched_attempts(&self, before: DateTime<Utc>) -> Result<Vec<AttemptKey>> {
        let rows = sqlx::query(
            "SELECT run_id, node_id, attempt FROM node_attempts
             WHERE status = 'queued' AND NOT dispatched
               AND COALESCE(not_before, created_at) < $1
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
        let rows = sqlx::query(
            "UPDATE node_attempts SET heartbeat_at = $2
             WHERE status = 'running' AND heartbeat_at < $1
             RETURNING run_id, node_id, attempt",
        )
        .bind(timestamp(stale_before))
        .bind(timestamp(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn heartbeat(&self, worker: &str, now: DateTime<Utc>) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE node_attempts SET heartbeat_at = $1 WHERE status = 'running' AND worker = $2",
        )
        .bind(timestamp(now))
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn overdue_runs(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE status = 'running' AND deadline_at <= $1 ORDER BY id",
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
                             WHERE a.run_id = r.id), r.started_at) < $1
             ORDER BY r.id LIMIT 100",
        )
        .bind(timestamp(quiet_before))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn listen_finished(&self, finished: mpsc::UnboundedSender<String>) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(FINISHED_CHANNEL).await?;
        loop {
            let notification = listener.recv().await?;
            if finished.send(notification.payload().to_owned()).is_err() {
                return Ok(());
            }
        }
    }

    fn services(&self) -> Services {
        Services {
            cache: Arc::new(self.clone()),
            leads: Arc::new(self.clone()),
        }
    }

    async fn list_leads(&self, query: &LeadQuery) -> Result<Vec<LeadView>> {
        super::leads_postgres::list(self, query).await
    }

    async fn lead(&self, lead_id: &str) -> Result<Option<LeadDetail>> {
        super::leads_postgres::detail(self, lead_id).await
    }

    async fn stats(&self, query: &super::StatsQuery) -> Result<super::StoreStats> {
        self.stats_of(query).await
    }
}

/// The stored form of an instant: whole microseconds, truncated like the SQLite store's text
/// (rounding could move an instant past a `not_before` it has not reached).
pub(super) fn timestamp(instant: DateTime<Utc>) -> DateTime<Utc> {
    instant.trunc_subsecs(6)
}

/// Attempts to insert, a column each, for `UNNEST`.
#[derive(Default)]
struct NextAttempts {
    node_id: Vec<String>,
    attempt: Vec<i64>,
    status: Vec<&'static str>,
    input: Vec<Option<String>>,
    output: Vec<Option<String>>,
    error: Vec<Option<String>>,
    retryable: Vec<bool>,
    not_before: Vec<Option<DateTime<Utc>>>,
    created_at: Vec<DateTime<Utc>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    worker: Vec<Option<String>>,
}

/// A statement of this store with its parameters.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

impl NextAttempts {
    /// `query` with the twelve arrays bound next, in the column order of the `UNNEST` that
    /// reads them.
    fn bound(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.node_id)
            .bind(self.attempt)
            .bind(self.status)
            .bind(self.input)
            .bind(self.output)
            .bind(self.error)
            .bind(self.retryable)
            .bind(self.not_before)
            .bind(self.created_at)
            .bind(self.started_at)
            .bind(self.finished_at)
            .bind(self.worker)
    }

    fn of(attempts: &[AttemptRecord]) -> Result<NextAttempts> {
        let mut next = NextAttempts::default();
        for attempt in attempts {
            next.node_id.push(attempt.key.node_id.clone());
            next.attempt.push(i64::from(attempt.key.attempt));
            next.status.push(attempt.status.as_str());
            next.input.push(
                checked_text("the attempt's input", attempt.input.as_ref())?
                    .map(|text| text.to_string()),
            );
            next.output.push(
                checked_text("the node's output", attempt.output.as_ref())?
                    .map(|text| text.to_string()),
            );
            next.error.push(attempt.error.as_ref().map(error_json));
            next.retryable.push(attempt.retryable);
            next.not_before.push(attempt.not_before.map(timestamp));
            next.created_at.push(timestamp(attempt.created_at));
            next.started_at.push(attempt.started_at.map(timestamp));
            next.finished_at.push(attempt.finished_at.map(timestamp));
            next.worker.push(attempt.worker.clone());
        }
        Ok(next)
    }
}

/// `SELECT columns FROM runs` with the query's filters, newest first, one page.
fn page_of_runs(columns: &str, query: &RunQuery) -> QueryBuilder<Postgres> {
    let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {columns} FROM runs WHERE true"));
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

/// The columns of one Postgres row.
pub(super) struct Columns<'r>(pub(super) &'r PgRow);

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
        Ok(self.0.try_get(column)?)
    }

    fn optional_time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.0.try_get(column)?)
    }

    /// The text of a `json` column as the server keeps it, read without sqlx's JSON decoding
    /// (serde_json with its 128-level limit): `rows` parses it at any depth.
    fn json_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.0.try_get_unchecked(column)?)
    }

    fn attempt_number(&self, column: &str) -> Result<u32> {
        let number: i32 = self.0.try_get(column)?;
        u32::try_from(number).map_err(|_| Error::Corrupt(format!("{column} {number}")))
    }

    fn optional_integer(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.0.try_get(column)?)
    }

    fn optional_real(&self, column: &str) -> Result<Option<f64>> {
        Ok(self.0.try_get(column)?)
    }
}

fn run_from_row(row: &PgRow) -> Result<RunRecord> {
    rows::run(&Columns(row))
}

fn key_from_row(row: &PgRow) -> Result<AttemptKey> {
    rows::attempt_key(&Columns(row))
}

fn attempt_from_row(row: &PgRow) -> Result<AttemptRecord> {
    rows::attempt(&Columns(row))
}
