//! Runs: their rows, written once for both stores. The statements are shared (see
//! [`dialect`](super::dialect)); the bodies are one `macro_rules!` expanded for each store, as
//! in [`cache`](super::cache); what truly differs is written per store in the expansion's `own`
//! block: a run's end (Postgres tells every replica with `NOTIFY`), reopening (the writer's
//! transaction or a pool's), the run lock and the listener of finished runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder, Row, Sqlite};
use tokio::sync::mpsc;

use super::dialect::{shared, translated};
use super::json::{check_text_depth, to_optional_text};
use super::rows::{self, error_json, summary_columns};
use super::{
    AttemptKey, AttemptRecord, Created, Error, ErrorInfo, Listed, PostgresStore, Result, RunLock,
    RunQuery, RunRecord, RunStatus, SqliteStore,
};

/// The runs a store keeps: created with their first attempts, started, ended, cancelled,
/// reopened, and read by id, by page and for recovery.
#[async_trait]
pub trait Runs {
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
    /// [`Runs::create_run_once`] and, only if it inserted the run, in the same transaction:
    /// inserts `first` (attempts of the run: its first nodes, each unless it exists). A run and
    /// the nodes it starts with are one commit.
    async fn create_run_then(
        &self,
        run: &RunRecord,
        fresh_since: DateTime<Utc>,
        first: &[AttemptRecord],
    ) -> Result<Created>;
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    /// [`Runs::run`] with the run's version in a store that keeps versions (Postgres): read
    /// before the run's attempts, it lets the reader record an outcome from what it read with
    /// [`Attempts::finish_attempt_if_current`](super::Attempts::finish_attempt_if_current),
    /// which refuses if anything changed since this read.
    async fn run_versioned(&self, run_id: &str) -> Result<Option<(RunRecord, Option<i64>)>> {
        Ok(self.run(run_id).await?.map(|run| (run, None)))
    }
    /// The run's version alone (see [`Runs::run_versioned`]); `None` when the run does not
    /// exist or the store keeps no versions.
    async fn run_version(&self, run_id: &str) -> Result<Option<i64>> {
        let _ = run_id;
        Ok(None)
    }
    /// Runs newest first, whole; `cursor` is the id of the last run of the previous page.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>>;
    /// As [`Runs::list_runs`], without triggers and outputs; a row that cannot be decoded is
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
    /// Holds the run's lock across every process sharing the store until the guard is released
    /// or dropped, so two processes never decide the same run at once.
    async fn lock_run(&self, run_id: &str) -> Result<RunLock>;
    /// Sends the id of every run that any process sharing the store finishes from now on;
    /// returns only on a database error. A store only one process uses never returns.
    async fn listen_finished(&self, finished: mpsc::UnboundedSender<String>) -> Result<()>;
}

/// `INSERT INTO runs` with every column, as a literal so that `concat!` can extend it.
macro_rules! insert_run_sql {
    () => {
        r#"INSERT INTO runs (id, workflow_id, revision, status, "trigger", output, error,
             created_at, started_at, finished_at, deadline_at, cancel_requested, idempotency_key,
             idempotency_body_hash)
           VALUES (?, ?, ?, ?, ?::json, ?::json, ?::json, ?, ?, ?, ?, ?, ?, ?)"#
    };
}

/// The conflict target names the partial unique index (its predicate included), so a clash on
/// the primary key is still an error. A concurrent insert of the same key waits for the other
/// transaction and then does nothing if it committed.
macro_rules! insert_run_unless_key_taken_sql {
    () => {
        concat!(
            insert_run_sql!(),
            " ON CONFLICT (workflow_id, idempotency_key) WHERE idempotency_key IS NOT NULL
              DO NOTHING"
        )
    };
}

const RUN: &str = "SELECT * FROM runs WHERE id = ?";
const KEY_HOLDER: &str = "SELECT * FROM runs WHERE workflow_id = ? AND idempotency_key = ?";
const RELEASE_KEY: &str = "UPDATE runs SET idempotency_key = NULL WHERE id = ?";
const UNFINISHED: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM runs WHERE status IN ('queued', 'running') ORDER BY id"
);
const COUNT_RUNNING: &str =
    "SELECT COUNT(*) FROM runs WHERE workflow_id = ? AND status = 'running'";
const OLDEST_QUEUED: &str =
    "SELECT id FROM runs WHERE workflow_id = ? AND status = 'queued' ORDER BY id LIMIT ?";
const START_RUN: &str = "UPDATE runs SET status = 'running', started_at = ?, deadline_at = ?
         /*raise version*/
     WHERE id = ? AND status = 'queued'";
const REQUEST_CANCEL: &str = "UPDATE runs SET cancel_requested = true /*raise version*/
     WHERE id = ? AND status IN ('queued', 'running')";
/// Ends an unfinished run (on Postgres inside the statement that also notifies), as a
/// literal so that `concat!` can extend it.
macro_rules! finish_run_sql {
    () => {
        "UPDATE runs SET status = ?, output = ?::json, error = ?::json, finished_at = ?
             /*raise version*/
         WHERE id = ? AND status IN ('queued', 'running')"
    };
}
const REOPEN_RUN: &str =
    "UPDATE runs SET status = 'running', output = NULL, error = NULL, finished_at = NULL,
         deadline_at = ?, cancel_requested = false /*raise version*/
     WHERE id = ? AND status IN ('failed', 'cancelled')";
const REMOVE_ATTEMPT: &str =
    "DELETE FROM node_attempts WHERE run_id = ? AND node_id = ? AND attempt = ?";
const REQUEUE_ATTEMPT: &str =
    "INSERT INTO node_attempts (run_id, node_id, attempt, status, retryable, created_at)
     VALUES (?, ?, ?, 'queued', false, ?)";

/// The `LISTEN` channel carrying the ids of finished runs.
pub(super) const FINISHED_CHANNEL: &str = "enrichflow_run_finished";

/// The trigger's shared text, once its depth is checked.
pub(super) fn trigger_text(run: &RunRecord) -> Result<std::sync::Arc<str>> {
    check_text_depth("the trigger", run.trigger.text())?;
    Ok(run.trigger.shared_text())
}

fn count(count: i64) -> Result<u64> {
    u64::try_from(count).map_err(|_| Error::Corrupt(format!("negative count {count}")))
}

/// `Runs` and the statements of `create_run_once` for one store: `dialect` names the store's
/// module (`write`, `timestamp`, `Columns`, `Submit`) and its [`dialect`] function, `database`
/// sqlx's type of it; writes go to `writes`, reads to `pool`; `own` holds the methods written
/// for this store alone, `insert_unless_key_taken` the insert of a keyed run with its first
/// attempts.
macro_rules! runs {
    (
        store: $store:ident,
        dialect: $dialect:ident,
        database: $database:ident,
        writes: $writes:ident,
        own: { $($own:tt)* },
        insert_unless_key_taken: { $($insert:tt)* } $(,)?
    ) => {
        const _: () = {
            use super::$dialect::{Columns, Submit as _, Write, timestamp};

            /// Binds every column of `run` to `statement`, an [`insert_run_sql`] statement;
            /// refuses a trigger or output nested too deeply to store.
            fn bind_run(statement: Write, run: &RunRecord) -> Result<Write> {
                Ok(statement
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

            fn run_from_row(row: &<$database as sqlx::Database>::Row) -> Result<RunRecord> {
                rows::run(&Columns(row))
            }

            /// `SELECT columns FROM runs` with the query's filters, newest first, one page.
            fn page_of_runs(columns: &str, query: &RunQuery) -> QueryBuilder<$database> {
                let mut sql =
                    QueryBuilder::<$database>::new(format!("SELECT {columns} FROM runs WHERE true"));
                if let Some(workflow_id) = &query.workflow_id {
                    sql.push(" AND workflow_id = ").push_bind(workflow_id.clone());
                }
                if let Some(status) = query.status {
                    sql.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(cursor) = &query.cursor {
                    sql.push(" AND id < ").push_bind(cursor.clone());
                }
                sql.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(query.page_size()));
                sql
            }

            #[async_trait]
            impl super::idempotency::KeyedRuns for $store {
                $($insert)*

                async fn key_holder(&self, workflow_id: &str, key: &str) -> Result<Option<RunRecord>> {
                    let row = sqlx::query(translated!($dialect, KEY_HOLDER))
                        .bind(workflow_id)
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(run_from_row).transpose()
                }

                async fn release_key(&self, run_id: &str) -> Result<()> {
                    shared!($dialect, RELEASE_KEY).bind(run_id).submit(&self.$writes).await?;
                    Ok(())
                }
            }

            #[async_trait]
            impl Runs for $store {
                async fn create_run(&self, run: &RunRecord) -> Result<()> {
                    bind_run(shared!($dialect, insert_run_sql!()), run)?.submit(&self.$writes).await?;
                    Ok(())
                }

                async fn create_run_then(
                    &self,
                    run: &RunRecord,
                    fresh_since: DateTime<Utc>,
                    first: &[AttemptRecord],
                ) -> Result<Created> {
                    super::idempotency::create_run_then(self, run, fresh_since, first).await
                }

                async fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
                    let row = sqlx::query(translated!($dialect, RUN))
                        .bind(run_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(run_from_row).transpose()
                }

                async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
                    let rows = page_of_runs("*", query).build().fetch_all(&self.pool).await?;
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
                    let rows = sqlx::query(translated!($dialect, UNFINISHED))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(|row| rows::listed(&Columns(row))).collect()
                }

                async fn count_running(&self, workflow_id: &str) -> Result<u64> {
                    let row = sqlx::query(translated!($dialect, COUNT_RUNNING))
                        .bind(workflow_id)
                        .fetch_one(&self.pool)
                        .await?;
                    count(row.try_get(0)?)
                }

                async fn oldest_queued(&self, workflow_id: &str, limit: u32) -> Result<Vec<String>> {
                    Ok(sqlx::query_scalar(translated!($dialect, OLDEST_QUEUED))
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
                    let changed = shared!($dialect, START_RUN)
                        .bind(timestamp(started_at))
                        .bind(deadline_at.map(timestamp))
                        .bind(run_id)
                        .submit(&self.$writes)
                        .await?;
                    Ok(changed > 0)
                }

                async fn request_cancel(&self, run_id: &str) -> Result<bool> {
                    let changed = shared!($dialect, REQUEST_CANCEL).bind(run_id).submit(&self.$writes).await?;
                    Ok(changed > 0)
                }

                $($own)*
            }
        };
    };
}

runs! {
    store: SqliteStore,
    dialect: sqlite,
    database: Sqlite,
    writes: writes,
    own: {
        async fn finish_run(
            &self,
            run_id: &str,
            status: RunStatus,
            output: Option<&Value>,
            error: Option<&ErrorInfo>,
            finished_at: DateTime<Utc>,
        ) -> Result<bool> {
            let changed = finish_run_statement(run_id, status, output, error, finished_at)?
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
            let reopen = shared!(sqlite, REOPEN_RUN).bind(deadline_at.map(timestamp)).bind(run_id);
            let removes = remove.iter().map(|key| bind_key(shared!(sqlite, REMOVE_ATTEMPT), key));
            let requeues = requeue
                .iter()
                .map(|key| bind_key(shared!(sqlite, REQUEUE_ATTEMPT), key).bind(timestamp(now)));
            let (removes, requeues): (Vec<_>, Vec<_>) = (removes.collect(), requeues.collect());
            self.writes
                .write(move |connection| {
                    if reopen.execute(connection)? == 0 {
                        return Ok(false);
                    }
                    for statement in removes.iter().chain(&requeues) {
                        statement.execute(connection)?;
                    }
                    Ok(true)
                })
                .await
        }

        async fn lock_run(&self, _run_id: &str) -> Result<RunLock> {
            Ok(RunLock::local())
        }

        /// Only this process writes the file, and it learns of its own finished runs directly.
        async fn listen_finished(&self, _finished: mpsc::UnboundedSender<String>) -> Result<()> {
            std::future::pending().await
        }
    },
    insert_unless_key_taken: {
        async fn insert_unless_key_taken(
            &self,
            run: &RunRecord,
            first: &[AttemptRecord],
        ) -> Result<bool> {
            let insert = bind_run(shared!(sqlite, insert_run_unless_key_taken_sql!()), run)?;
            if first.is_empty() {
                return Ok(insert.submit(&self.writes).await? > 0);
            }
            let inserts = super::attempts::sqlite_inserts(first)?;
            // As in `finish_attempt_then`: only the first statement may be refused alone.
            self.writes
                .write_in_batch(move |connection| {
                    if insert.execute(connection)? == 0 {
                        return Ok(false);
                    }
                    for attempts in inserts {
                        attempts.execute(connection).map_err(super::sqlite_writer::partial)?;
                    }
                    Ok(true)
                })
                .await
        }
    },
}

/// SQLite's end of a run, alone or in the batch of the outcome that ends it.
pub(super) fn finish_run_statement(
    run_id: &str,
    status: RunStatus,
    output: Option<&Value>,
    error: Option<&ErrorInfo>,
    finished_at: DateTime<Utc>,
) -> Result<super::sqlite_native::Statement> {
    use super::sqlite::timestamp;
    debug_assert!(status.is_finished(), "finish_run with status {status}");
    Ok(shared!(sqlite, finish_run_sql!())
        .bind(status.as_str())
        .bind(to_optional_text("the run's output", output)?)
        .bind(error.map(error_json))
        .bind(timestamp(finished_at))
        .bind(run_id))
}

fn bind_key(
    statement: super::sqlite_native::Statement,
    key: &AttemptKey,
) -> super::sqlite_native::Statement {
    statement
        .bind(&key.run_id)
        .bind(&key.node_id)
        .bind(i64::from(key.attempt))
}

runs! {
    store: PostgresStore,
    dialect: postgres,
    database: Postgres,
    writes: pool,
    own: {
        async fn run_versioned(&self, run_id: &str) -> Result<Option<(RunRecord, Option<i64>)>> {
            let row = sqlx::query(translated!(postgres, RUN))
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

        async fn finish_run(
            &self,
            run_id: &str,
            status: RunStatus,
            output: Option<&Value>,
            error: Option<&ErrorInfo>,
            finished_at: DateTime<Utc>,
        ) -> Result<bool> {
            debug_assert!(status.is_finished(), "finish_run with status {status}");
            // The notification goes out when the update commits, to every replica waiting on
            // the run (a webhook answering `on_complete` while workers elsewhere ran the nodes).
            let finished = sqlx::query(translated!(postgres, concat!(
                "WITH finished AS (",
                finish_run_sql!(),
                " RETURNING id) SELECT pg_notify(?, id) FROM finished"
            )))
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

        async fn reopen_run(
            &self,
            run_id: &str,
            deadline_at: Option<DateTime<Utc>>,
            remove: &[AttemptKey],
            requeue: &[AttemptKey],
            now: DateTime<Utc>,
        ) -> Result<bool> {
            let mut transaction = self.pool.begin().await?;
            let reopened = shared!(postgres, REOPEN_RUN)
                .bind(deadline_at.map(timestamp))
                .bind(run_id)
                .execute(&mut *transaction)
                .await?;
            if reopened.rows_affected() == 0 {
                return Ok(false);
            }
            for key in remove {
                shared!(postgres, REMOVE_ATTEMPT)
                    .bind(&key.run_id)
                    .bind(&key.node_id)
                    .bind(i64::from(key.attempt))
                    .execute(&mut *transaction)
                    .await?;
            }
            for key in requeue {
                shared!(postgres, REQUEUE_ATTEMPT)
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

        async fn lock_run(&self, run_id: &str) -> Result<RunLock> {
            self.lock(run_id).await
        }

        async fn listen_finished(&self, finished: mpsc::UnboundedSender<String>) -> Result<()> {
            self.listen(FINISHED_CHANNEL, finished).await
        }
    },
    insert_unless_key_taken: {
        /// One statement: the run, and only if it was inserted, its first attempts, if any
        /// (their foreign key is checked at the statement's end, when the run is there).
        async fn insert_unless_key_taken(
            &self,
            run: &RunRecord,
            first: &[AttemptRecord],
        ) -> Result<bool> {
            const SQL: &str = concat!(
                "WITH created AS (",
                insert_run_unless_key_taken_sql!(),
                " RETURNING 1), first AS (",
                super::attempts::insert_next_sql!(),
                " WHERE EXISTS (SELECT 1 FROM created)
                  ON CONFLICT (run_id, node_id, attempt) DO NOTHING)
                 SELECT EXISTS (SELECT 1 FROM created)"
            );
            let next = super::attempts::NextAttempts::of(first)?;
            let insert = bind_run(shared!(postgres, SQL), run)?.bind(&run.id);
            let row = next.bound(insert).fetch_one(&self.pool).await?;
            Ok(row.try_get(0)?)
        }
    },
}
