//! Node attempts: their rows, written once for both stores, in the shape of
//! [`runs`](super::runs). What differs per store is how an outcome commits with what it made
//! ready and the run's end: on SQLite a batch of the writer's transaction, on Postgres one
//! statement that also checks and raises the run's version.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Row, Sqlite};

use super::dialect::{shared, translated};
use super::json::{checked_text, to_optional_text};
use super::postgres::PgQuery;
use super::record::Json;
use super::rows::{self, error_json};
use super::sqlite_native::Statement;
use super::{
    AttemptKey, AttemptOutcome, AttemptRecord, AttemptStatus, Completed, PostgresStore, Result,
    RunEnd, SqliteStore,
};

/// The attempts of runs: inserted, started, finished with what they made ready, promoted when
/// due, cancelled, and read for a run or for recovery.
#[async_trait]
pub trait Attempts {
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
    /// [`Attempts::finish_attempt`] and, only if it finished the attempt, in the same
    /// transaction: inserts `next` (attempts of the same run, each unless it exists) and ends
    /// the run as `end` says (as [`Runs::finish_run`](super::Runs::finish_run) would). A node's
    /// outcome, the attempts it made ready and the run's end are one commit.
    async fn finish_attempt_then(
        &self,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&RunEnd>,
    ) -> Result<Completed>;
    /// [`Attempts::finish_attempt_then`], only if the run's version is still `version`, the one
    /// this process last read ([`Runs::run_versioned`](super::Runs::run_versioned)) or wrote
    /// ([`Completed::version`]): no process has changed the run since, so what this one decided
    /// from it then still holds, and it needs neither the run's lock nor a read. `None`
    /// (nothing written) when the run changed, or when the store keeps no versions (SQLite,
    /// whose one process has the run in memory).
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
}

const ATTEMPTS: &str = "SELECT * FROM node_attempts WHERE run_id = ? ORDER BY node_id, attempt";
const START_ATTEMPT: &str = "UPDATE node_attempts
     SET status = 'running', input = ?::json, started_at = ?, heartbeat_at = ?, worker = ?
     WHERE run_id = ? AND node_id = ? AND attempt = ? AND status IN ('queued', 'running')";
/// One statement, so two schedulers never both promote (and enqueue) the same attempt: a
/// concurrent update waits for the row lock (Postgres) or the write lock (SQLite) and then
/// finds it no longer pending. A pending attempt without a `not_before` has nothing to wait for.
const PROMOTE_DUE: &str = "UPDATE node_attempts SET status = 'queued', dispatched = false
     WHERE status = 'pending' AND (not_before IS NULL OR not_before <= ?)
     RETURNING run_id, node_id, attempt";
const NEXT_DUE: &str = "SELECT MIN(not_before) AS due FROM node_attempts WHERE status = 'pending'";
const OPEN_ATTEMPTS: &str = "SELECT a.run_id, a.node_id, a.attempt
     FROM runs r JOIN node_attempts a ON a.run_id = r.id
     WHERE r.status IN ('queued', 'running') AND a.status IN ('queued', 'running')
     ORDER BY a.run_id, a.node_id, a.attempt";

/// Records an open attempt's outcome (and its start, if not written yet), as a literal so that
/// `concat!` can extend it.
macro_rules! finish_attempt_sql {
    () => {
        "UPDATE node_attempts
         SET status = ?, output = ?::json, error = ?::json, retryable = ?, not_before = ?,
             finished_at = ?, input = COALESCE(?::json, input),
             started_at = COALESCE(started_at, ?), worker = COALESCE(?, worker)
         WHERE run_id = ? AND node_id = ? AND attempt = ?
           AND status IN ('pending', 'queued', 'running')"
    };
}

macro_rules! cancel_open_sql {
    () => {
        "UPDATE node_attempts SET status = 'cancelled', finished_at = ?
         WHERE run_id = ? AND status IN ('pending', 'queued', 'running')"
    };
}

/// Postgres: inserts the attempts of one run (the first `?`) from twelve arrays, a column
/// each (see [`NextAttempts`]); the caller adds its condition and `ON CONFLICT`. A running
/// attempt's lease starts with it.
macro_rules! insert_next_sql {
    () => {
        "INSERT INTO node_attempts (run_id, node_id, attempt, status, input, output, error,
             retryable, not_before, created_at, started_at, finished_at, worker, heartbeat_at)
         SELECT ?, next.node_id, next.attempt, next.status, next.input::json,
             next.output::json, next.error::json, next.retryable, next.not_before,
             next.created_at, next.started_at, next.finished_at, next.worker,
             CASE WHEN next.status = 'running' THEN next.started_at END
         FROM UNNEST(?::text[], ?::int8[], ?::text[], ?::text[], ?::text[], ?::text[],
             ?::bool[], ?::timestamptz[], ?::timestamptz[], ?::timestamptz[],
             ?::timestamptz[], ?::text[])
             AS next (node_id, attempt, status, input, output, error, retryable, not_before,
                 created_at, started_at, finished_at, worker)"
    };
}
pub(super) use insert_next_sql;

/// `Attempts` for one store, as [`runs`](super::runs) expands `Runs`; `own` holds the methods
/// written for this store alone.
macro_rules! attempts {
    (
        store: $store:ident,
        dialect: $dialect:ident,
        database: $database:ident,
        writes: $writes:ident,
        own: { $($own:tt)* }
        $(, items: { $($items:tt)* })? $(,)?
    ) => {
        const _: () = {
            use super::$dialect::{Columns, Submit as _, Write, timestamp};

            $($($items)*)?

            /// Binds the parameters of [`finish_attempt_sql`].
            fn bind_finish(
                statement: Write,
                key: &AttemptKey,
                outcome: &AttemptOutcome,
            ) -> Result<Write> {
                debug_assert!(
                    outcome.status.is_finished(),
                    "finish_attempt with status {}",
                    outcome.status
                );
                let started = outcome.started.as_ref();
                Ok(statement
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

            fn key_from_row(row: &<$database as sqlx::Database>::Row) -> Result<AttemptKey> {
                rows::attempt_key(&Columns(row))
            }

            #[async_trait]
            impl Attempts for $store {
                async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
                    let rows = sqlx::query(translated!($dialect, ATTEMPTS))
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(|row| rows::attempt(&Columns(row))).collect()
                }

                async fn start_attempt(
                    &self,
                    key: &AttemptKey,
                    input: Option<&Json>,
                    worker: &str,
                    started_at: DateTime<Utc>,
                ) -> Result<bool> {
                    let changed = shared!($dialect, START_ATTEMPT)
                        .bind(checked_text("the attempt's input", input)?)
                        .bind(timestamp(started_at))
                        .bind(timestamp(started_at))
                        .bind(worker)
                        .bind(&key.run_id)
                        .bind(&key.node_id)
                        .bind(i64::from(key.attempt))
                        .submit(&self.$writes)
                        .await?;
                    Ok(changed > 0)
                }

                async fn promote_due_attempts(&self, now: DateTime<Utc>) -> Result<Vec<AttemptKey>> {
                    let mut keys = shared!($dialect, PROMOTE_DUE)
                        .bind(timestamp(now))
                        .submit_fetch_keys(&self.$writes)
                        .await?;
                    keys.sort_by(|a, b| {
                        (&a.run_id, &a.node_id, a.attempt).cmp(&(&b.run_id, &b.node_id, b.attempt))
                    });
                    Ok(keys)
                }

                async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
                    let row = sqlx::query(translated!($dialect, NEXT_DUE)).fetch_one(&self.pool).await?;
                    rows::Columns::optional_time(&Columns(&row), "due")
                }

                async fn open_attempts(&self) -> Result<Vec<AttemptKey>> {
                    let rows = sqlx::query(translated!($dialect, OPEN_ATTEMPTS))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(key_from_row).collect()
                }

                $($own)*
            }
        };
    };
}

attempts! {
    store: SqliteStore,
    dialect: sqlite,
    database: Sqlite,
    writes: writes,
    own: {
        async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<bool> {
            let insert = sqlite_insert(std::slice::from_ref(attempt))?;
            Ok(insert.submit(&self.writes).await? > 0)
        }

        async fn finish_attempt_then(
            &self,
            key: &AttemptKey,
            outcome: &AttemptOutcome,
            next: &[AttemptRecord],
            end: Option<&RunEnd>,
        ) -> Result<Completed> {
            let finish = bind_finish(shared!(sqlite, finish_attempt_sql!()), key, outcome)?;
            if next.is_empty() && end.is_none() {
                // One statement: no job of several to guard.
                let changed = finish.submit(&self.writes).await?;
                return Ok(Completed {
                    attempt: changed > 0,
                    ..Completed::default()
                });
            }
            let inserts = sqlite_inserts(next)?;
            let ending = end
                .map(|end| {
                    let (output, error) = (end.output.as_ref(), end.error.as_ref());
                    super::runs::finish_run_statement(
                        &key.run_id,
                        end.status,
                        output,
                        error,
                        end.finished_at,
                    )
                })
                .transpose()?;
            // The first statement may be refused alone; the rest are conditional and refused
            // by nothing but a broken database: no savepoint (see `write_in_batch`).
            self.writes
                .write_in_batch(move |connection| {
                    if finish.execute(connection)? == 0 {
                        return Ok(Completed::default());
                    }
                    for insert in inserts {
                        insert.execute(connection).map_err(super::sqlite_writer::partial)?;
                    }
                    let run = match ending {
                        Some(ending) => {
                            ending.execute(connection).map_err(super::sqlite_writer::partial)? > 0
                        }
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

        async fn cancel_open_attempts(
            &self,
            run_id: &str,
            finished_at: DateTime<Utc>,
        ) -> Result<u64> {
            shared!(sqlite, cancel_open_sql!())
                .bind(timestamp(finished_at))
                .bind(run_id)
                .submit(&self.writes)
                .await
        }
    },
}

/// Rows one SQLite `INSERT` carries: 14 parameters each stay far below SQLite's 32,766 (a
/// workflow may fan out to thousands of nodes).
const ROWS_PER_INSERT: usize = 500;

/// SQLite: inserts `attempts`, each unless its (run, node, attempt) exists: one statement per
/// [`ROWS_PER_INSERT`].
pub(super) fn sqlite_inserts(attempts: &[AttemptRecord]) -> Result<Vec<Statement>> {
    attempts
        .chunks(ROWS_PER_INSERT)
        .map(sqlite_insert)
        .collect()
}

/// SQLite: inserts attempts (at most [`ROWS_PER_INSERT`]), each unless its (run, node,
/// attempt) exists, in one statement. A running attempt's lease starts with it.
fn sqlite_insert(attempts: &[AttemptRecord]) -> Result<Statement> {
    use super::sqlite::{built, timestamp};
    let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; attempts.len()].join(", ");
    let sql = format!(
        "INSERT INTO node_attempts (run_id, node_id, attempt, status, input, output, error,
             retryable, not_before, created_at, started_at, finished_at, worker, heartbeat_at)
         VALUES {rows}
         ON CONFLICT (run_id, node_id, attempt) DO NOTHING"
    );
    let mut query = built(&sql);
    for attempt in attempts {
        let heartbeat = (attempt.status == AttemptStatus::Running)
            .then_some(attempt.started_at)
            .flatten();
        query = query
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
            .bind(heartbeat.map(timestamp));
    }
    Ok(query)
}

attempts! {
    store: PostgresStore,
    dialect: postgres,
    database: Postgres,
    writes: pool,
    own: {
        async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<bool> {
            const SQL: &str = concat!(
                "WITH inserted AS (",
                insert_next_sql!(),
                " ON CONFLICT (run_id, node_id, attempt) DO NOTHING RETURNING run_id
                 ), bumped AS (
                     UPDATE runs SET version = version + 1
                     WHERE id IN (SELECT run_id FROM inserted)
                 )
                 SELECT EXISTS (SELECT 1 FROM inserted)"
            );
            let next = NextAttempts::of(std::slice::from_ref(attempt))?;
            let insert = shared!(postgres, SQL).bind(&attempt.key.run_id);
            let row = next.bound(insert).fetch_one(&self.pool).await?;
            Ok(row.try_get(0)?)
        }

        async fn finish_attempt_then(
            &self,
            key: &AttemptKey,
            outcome: &AttemptOutcome,
            next: &[AttemptRecord],
            end: Option<&RunEnd>,
        ) -> Result<Completed> {
            let written = finish_attempt_at(self, None, key, outcome, next, end).await?;
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
            finish_attempt_at(self, Some(version), key, outcome, next, end).await
        }

        async fn cancel_open_attempts(
            &self,
            run_id: &str,
            finished_at: DateTime<Utc>,
        ) -> Result<u64> {
            const SQL: &str = concat!(
                "WITH cancelled AS (",
                cancel_open_sql!(),
                " RETURNING 1), bumped AS (
                     UPDATE runs SET version = version + 1
                     WHERE id = ? AND EXISTS (SELECT 1 FROM cancelled)
                 )
                 SELECT count(*) FROM cancelled"
            );
            let row = shared!(postgres, SQL)
                .bind(timestamp(finished_at))
                .bind(run_id)
                .bind(run_id)
                .fetch_one(&self.pool)
                .await?;
            let cancelled: i64 = row.try_get(0)?;
            Ok(u64::try_from(cancelled).unwrap_or(0))
        }
    },
    items: {
        /// [`Attempts::finish_attempt_then`], only if the run's version is `version` when given;
        /// `None` when it is not (then nothing was written).
        ///
        /// One statement, one round trip: the run's row locked (and its version checked), the
        /// outcome, and only if it was recorded, the attempts it made ready and the run's end,
        /// whose notification goes out at commit as in `finish_run`, and the version raised.
        /// (Data-modifying CTEs run whole or not at all; the run's row is updated once.)
        async fn finish_attempt_at(
            store: &PostgresStore,
            version: Option<i64>,
            key: &AttemptKey,
            outcome: &AttemptOutcome,
            next: &[AttemptRecord],
            end: Option<&RunEnd>,
        ) -> Result<Option<Completed>> {
            const SQL: &str = concat!(
                "WITH current AS (
                     SELECT status IN ('queued', 'running') AS open FROM runs
                     WHERE id = ? AND (?::int8 IS NULL OR version = ?)
                     FOR UPDATE
                 ), finished AS (",
                finish_attempt_sql!(),
                " AND EXISTS (SELECT 1 FROM current) RETURNING 1
                 ), inserted AS (",
                insert_next_sql!(),
                " WHERE EXISTS (SELECT 1 FROM finished)
                   ON CONFLICT (run_id, node_id, attempt) DO NOTHING
                 ), changed AS (
                     UPDATE runs SET version = version + 1,
                         status = CASE WHEN ending THEN ? ELSE status END,
                         output = CASE WHEN ending THEN ?::json ELSE output END,
                         error = CASE WHEN ending THEN ?::json ELSE error END,
                         finished_at = CASE WHEN ending THEN ? ELSE finished_at END
                     FROM (SELECT ? AND open AS ending FROM current) AS asked
                     WHERE id = ? AND EXISTS (SELECT 1 FROM finished)
                     RETURNING version, ending
                 ), notified AS (
                     SELECT pg_notify(?, ?) FROM changed WHERE ending
                 )
                 SELECT EXISTS (SELECT 1 FROM current), EXISTS (SELECT 1 FROM finished),
                     (SELECT count(*) FROM notified) > 0, (SELECT version FROM changed)"
            );
            let current = shared!(postgres, SQL).bind(&key.run_id).bind(version).bind(version);
            let finish = bind_finish(current, key, outcome)?.bind(&key.run_id);
            let end_output = end
                .and_then(|end| to_optional_text("the run's output", end.output.as_ref()).transpose())
                .transpose()?;
            let row = NextAttempts::of(next)?
                .bound(finish)
                .bind(end.map(|end| end.status.as_str()))
                .bind(end_output)
                .bind(end.and_then(|end| end.error.as_ref().map(error_json)))
                .bind(end.map(|end| timestamp(end.finished_at)))
                .bind(end.is_some())
                .bind(&key.run_id)
                .bind(super::runs::FINISHED_CHANNEL)
                .bind(&key.run_id)
                .fetch_one(&store.pool)
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
    },
}

/// Attempts to insert, a column each, for the `UNNEST` of [`insert_next_sql`].
#[derive(Default)]
pub(super) struct NextAttempts {
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

impl NextAttempts {
    /// `query` with the twelve arrays bound next, in the column order of the `UNNEST` that
    /// reads them.
    pub(super) fn bound(self, query: PgQuery<'_>) -> PgQuery<'_> {
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

    pub(super) fn of(attempts: &[AttemptRecord]) -> Result<NextAttempts> {
        use super::postgres::timestamp;
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
