//! The one writer of the SQLite file, with group commit.
//!
//! Every write of the store is a job on one queue. The writer takes whatever is queued (up to
//! [`MAX_BATCH`] jobs, no timer: a lone job goes at once, and jobs that arrive while a commit is
//! in flight form the next batch), runs the jobs in one transaction and commits, and only then
//! answers each caller. So a caller's write is durable when its call returns, exactly as with one
//! transaction per write, while concurrent runs share each commit: the commit, not the
//! statement, is what costs on disk.
//!
//! The batch runs on the handle of sqlx's one writer connection, taken from sqlx's thread once
//! per batch ([`sqlx::sqlite::SqliteConnection::lock_handle`]) and driven through rusqlite: its
//! statements, savepoints and COMMIT are plain C calls, where through sqlx each would be a
//! hand-off to sqlx's thread and back (two thread wake-ups, most of a statement's cost). The
//! writer has a thread of its own, so a COMMIT waiting for the disk holds no async worker. The
//! leads, the cache and the migrations still write through sqlx on the same connection; the
//! pool of one connection takes turns between them and the writer.
//!
//! Jobs run in the order they were queued, so an answer also proves every job queued before it
//! is durable. A job whose statement is refused (a constraint) fails alone; a job of several
//! statements runs in a savepoint, so it applies whole or not at all — or, on the hot path,
//! without one: such a job that fails fails its whole batch ([`Writer::write_in_batch`]). Any
//! other failure (the disk is full, the file cannot be written) rolls the whole batch back and
//! fails every job in it: nothing is answered as written that is not on disk. The job that
//! broke the batch gets its error ([`Error::Commit`]); the others [`Error::RolledBack`], which
//! callers retry: a write refused for its own data never fails another's for good.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Instant;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::sqlite_native::{Statement, into_sqlx};
use super::{AttemptKey, Error, Result};

/// The most jobs one transaction holds; more wait for the next commit.
const MAX_BATCH: usize = 256;
/// Jobs queued before callers wait for room: backpressure instead of unbounded memory.
const QUEUE: usize = 4096;

/// The connection a job writes on: the writer's, inside the batch's transaction.
pub(super) type Connection = rusqlite::Connection;

/// The handle callers write through; cloning is cheap.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer's thread on `pool` (the one connection that writes). It stops when
    /// every handle is dropped.
    pub(super) fn start(pool: SqlitePool) -> Result<Writer> {
        Self::start_after(pool, None)
    }

    /// A writer that starts taking jobs when `gate` opens, if there is one: a test queues jobs
    /// first, so they are sure to share one batch.
    fn start_after(pool: SqlitePool, gate: Option<oneshot::Receiver<()>>) -> Result<Writer> {
        let (jobs, queued) = mpsc::channel(QUEUE);
        // sqlx's pool needs a runtime to wait on; one of the thread's own keeps the blocking
        // batches off the caller's workers.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(sqlx::Error::Io)?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    if let Some(gate) = gate {
                        let _ = gate.await;
                    }
                    run(pool, queued).await;
                });
            })
            .map_err(sqlx::Error::Io)?;
        Ok(Writer { jobs })
    }

    /// Runs `work` in the next batch; returns its result once the batch has committed. `work`
    /// runs in a savepoint: it applies whole or not at all.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.answered(work, Guard::Savepoint).await
    }

    /// As [`Writer::write`], without a savepoint, for the hot path: two statements fewer per
    /// job. `work`'s first statement may be refused like a lone statement (the job fails
    /// alone: nothing of it was written); an error after that must go through [`partial`],
    /// and then the whole batch is rolled back and fails. So it suits jobs whose later
    /// statements nothing but a broken database refuses (conditional updates, inserts
    /// `ON CONFLICT DO NOTHING`).
    pub(super) async fn write_in_batch<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.answered(work, Guard::Batch).await
    }

    /// Executes one statement in the next batch; once the batch has committed, how many rows
    /// it changed.
    pub(super) async fn execute(&self, statement: Statement) -> Result<u64> {
        let work = move |connection: &Connection| statement.execute(connection);
        self.answered(work, Guard::Statement).await
    }

    /// Executes one statement that returns attempt keys (`RETURNING run_id, node_id,
    /// attempt`), once the batch has committed.
    pub(super) async fn fetch_keys(&self, statement: Statement) -> Result<Vec<AttemptKey>> {
        let work = move |connection: &Connection| {
            statement.rows(connection, super::sqlite_native::attempt_key)
        };
        self.answered(work, Guard::Statement).await
    }

    async fn answered<T, F>(&self, work: F, guard: Guard) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Typed {
            work: Some(work),
            guard,
            result: None,
            reply,
        };
        self.jobs.send(Box::new(job)).await.map_err(|_| gone())?;
        answer.await.unwrap_or(Err(gone()))
    }
}

/// An error of a [`Writer::write_in_batch`] job after its first statement: part of the job
/// is written, so its batch is rolled back.
pub(super) fn partial(error: Error) -> Error {
    match error {
        Error::Database(error) => Error::Commit(Arc::new(error)),
        other => other,
    }
}

/// `statement.submit(&writer)`: a statement executed by the writer, read like sqlx's `execute`.
pub(super) trait Submit {
    async fn submit(self, writer: &Writer) -> Result<u64>;
    async fn submit_fetch_keys(self, writer: &Writer) -> Result<Vec<AttemptKey>>;
}

impl Submit for Statement {
    async fn submit(self, writer: &Writer) -> Result<u64> {
        writer.execute(self).await
    }

    async fn submit_fetch_keys(self, writer: &Writer) -> Result<Vec<AttemptKey>> {
        writer.fetch_keys(self).await
    }
}

/// The error every caller sees once the writer is gone (the store was closed).
fn gone() -> Error {
    Error::Database(sqlx::Error::PoolClosed)
}

/// A queued write, type-erased so one queue carries writes with any result type.
trait Job: Send {
    /// Runs the write inside the batch's transaction. `Err` means the batch cannot commit.
    fn apply(&mut self, connection: &Connection) -> Result<(), Arc<sqlx::Error>>;
    /// Answers the caller once the batch committed (`Ok`) or failed.
    fn answer(self: Box<Self>, committed: Result<(), Arc<sqlx::Error>>);
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Job")
    }
}

/// What keeps a failed job from leaving half its writes behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// One statement: SQLite applies it whole or not at all.
    Statement,
    /// Several statements in a savepoint: a refused one undoes the job alone.
    Savepoint,
    /// Several statements, no savepoint: any failure fails the whole batch.
    Batch,
}

struct Typed<T, F> {
    work: Option<F>,
    guard: Guard,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn apply(&mut self, connection: &Connection) -> Result<(), Arc<sqlx::Error>> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        let savepoint = self.guard == Guard::Savepoint;
        if savepoint {
            execute(connection, "SAVEPOINT job")?;
        }
        match work(connection) {
            Err(Error::Database(error)) if !refused(&error) => {
                let error = Arc::new(error);
                // This job's caller learns what it did; the rest of the batch is rolled back.
                self.result = Some(Err(Error::Commit(error.clone())));
                Err(error)
            }
            // Part of the job is written (see `partial`), and nothing can undo that part alone.
            Err(Error::Commit(error)) if self.guard == Guard::Batch => {
                self.result = Some(Err(Error::Commit(error.clone())));
                Err(error)
            }
            Err(error) => {
                if savepoint {
                    execute(connection, "ROLLBACK TO job")?;
                    execute(connection, "RELEASE job")?;
                }
                self.result = Some(Err(error));
                Ok(())
            }
            Ok(value) => {
                if savepoint {
                    execute(connection, "RELEASE job")?;
                }
                self.result = Some(Ok(value));
                Ok(())
            }
        }
    }

    fn answer(self: Box<Self>, committed: Result<(), Arc<sqlx::Error>>) {
        let result = match (committed, self.result) {
            // The job that broke the batch.
            (Err(_), Some(Err(own @ Error::Commit(_)))) => Err(own),
            (Err(error), _) => Err(Error::RolledBack(error)),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(gone()),
        };
        // A caller that stopped waiting has nothing to be told.
        let _ = self.reply.send(result);
    }
}

/// A statement SQLite refused for its data (a constraint): that job fails, the batch goes on.
fn refused(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .and_then(|code| code.parse::<u32>().ok())
            .is_some_and(|code| code & 0xff == 19),
        // Errors decoding a returned row: the statement ran, the data is the job's problem.
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::RowNotFound => true,
        _ => false,
    }
}

/// Executes `sql`, which takes no parameter.
fn execute(connection: &Connection, sql: &str) -> Result<(), Arc<sqlx::Error>> {
    connection
        .execute_batch(sql)
        .map_err(|error| Arc::new(into_sqlx(error)))
}

async fn run(pool: SqlitePool, mut queued: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let size = batch.len();
        let started = Instant::now();
        let committed = match pool.acquire().await {
            Ok(mut connection) => match connection.lock_handle().await {
                Ok(mut handle) => commit(handle.as_raw_handle(), &mut batch),
                Err(error) => Err(Arc::new(error)),
            },
            Err(error) => Err(Arc::new(error)),
        };
        if let Err(error) = &committed {
            tracing::error!(%error, jobs = size, "a batch of writes failed; none of it is stored");
        }
        metrics::histogram!("enrichflow_store_batch_size").record(size as f64);
        metrics::histogram!("enrichflow_store_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        for job in batch.drain(..) {
            job.answer(committed.clone());
        }
    }
}

/// One transaction for the whole batch on `handle`; rolled back if any job cannot be applied.
#[expect(
    unsafe_code,
    reason = "rusqlite on sqlx's locked handle: the one unsafe call of the workspace"
)]
fn commit(
    handle: NonNull<rusqlite::ffi::sqlite3>,
    batch: &mut [Box<dyn Job>],
) -> Result<(), Arc<sqlx::Error>> {
    // SAFETY: the caller holds sqlx's lock on the handle for this whole call, so sqlx's thread
    // makes no call on it meanwhile; the connection made here does not own the handle (it does
    // not close it) and is dropped, its statements finalized, before this returns.
    let connection = unsafe { Connection::from_handle(handle.as_ptr()) }
        .map_err(|error| Arc::new(into_sqlx(error)))?;
    execute(&connection, "BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        if let Err(error) = job.apply(&connection) {
            if let Err(rollback) = execute(&connection, "ROLLBACK") {
                tracing::warn!(error = %rollback, "rolling back a failed batch failed");
            }
            return Err(error);
        }
    }
    if let Err(error) = execute(&connection, "COMMIT") {
        // A failed COMMIT may leave the transaction open: end it, or the next batch's BEGIN fails.
        let _ = execute(&connection, "ROLLBACK");
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;
    use crate::store::sqlite_native::statement;

    /// A private in-memory database with a table `t(k PRIMARY KEY, parent REFERENCES t)`.
    async fn database() -> anyhow::Result<SqlitePool> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await?;
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, parent INTEGER REFERENCES t (k))")
            .execute(&pool)
            .await?;
        Ok(pool)
    }

    fn insert(k: i64, parent: Option<i64>) -> Statement {
        statement("INSERT INTO t (k, parent) VALUES (?, ?)")
            .bind(k)
            .bind(parent)
    }

    async fn stored(pool: &SqlitePool) -> anyhow::Result<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(pool)
            .await?)
    }

    /// Runs `jobs` (each given a writer on `pool`) so that they commit together, as one batch:
    /// they are all queued before the writer starts.
    async fn in_one_batch<T, J>(pool: &SqlitePool, jobs: Vec<J>) -> anyhow::Result<(Writer, Vec<T>)>
    where
        T: Send + 'static,
        J: FnOnce(Writer) -> BoxFuture<'static, T>,
    {
        let (open, gate) = oneshot::channel();
        let writer = Writer::start_after(pool.clone(), Some(gate))?;
        let count = jobs.len();
        let spawned: Vec<_> = jobs
            .into_iter()
            .map(|job| tokio::spawn(job(writer.clone())))
            .collect();
        while QUEUE - writer.jobs.capacity() < count {
            tokio::task::yield_now().await;
        }
        let _ = open.send(());
        let mut results = Vec::new();
        for job in spawned {
            results.push(job.await?);
        }
        Ok((writer, results))
    }

    fn inserting(k: i64) -> impl FnOnce(Writer) -> BoxFuture<'static, Result<u64>> {
        move |writer| Box::pin(async move { writer.execute(insert(k, None)).await })
    }

    #[tokio::test]
    async fn queued_writes_commit_together_and_each_caller_gets_its_own_answer()
    -> anyhow::Result<()> {
        let pool = database().await?;
        // The writer lives until the end: its thread's last return of the connection to the
        // pool would be dropped with it, and the in-memory database with that connection.
        let (_writer, results) = in_one_batch(&pool, (1..=20).map(inserting).collect()).await?;
        for result in results {
            assert_eq!(result?, 1);
        }
        assert_eq!(stored(&pool).await?, (1..=20).collect::<Vec<_>>());
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_statement_fails_alone() -> anyhow::Result<()> {
        let pool = database().await?;
        let (_writer, results) = in_one_batch(&pool, [1, 1, 2].map(inserting).into()).await?;
        let failed: Vec<bool> = results.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, true, false]);
        assert_eq!(stored(&pool).await?, [1, 2]);
        Ok(())
    }

    #[tokio::test]
    async fn a_job_of_several_statements_applies_whole_or_not_at_all() -> anyhow::Result<()> {
        let pool = database().await?;
        let writer = Writer::start(pool.clone())?;
        let both = writer
            .write(|connection| {
                insert(1, None).execute(connection)?;
                insert(1, None).execute(connection)?;
                Ok(())
            })
            .await;
        assert!(both.is_err());
        writer.execute(insert(2, None)).await?;
        assert_eq!(stored(&pool).await?, [2]);
        Ok(())
    }

    #[tokio::test]
    async fn returned_rows_are_read_once_committed() -> anyhow::Result<()> {
        let pool = database().await?;
        sqlx::query("CREATE TABLE a (run_id TEXT, node_id TEXT, attempt INTEGER)")
            .execute(&pool)
            .await?;
        let writer = Writer::start(pool.clone())?;
        let keys = writer
            .fetch_keys(statement(
                "INSERT INTO a VALUES ('r', 'n', 2) RETURNING run_id, node_id, attempt",
            ))
            .await?;
        assert_eq!(
            keys,
            [AttemptKey {
                run_id: "r".into(),
                node_id: "n".into(),
                attempt: 2
            }]
        );
        Ok(())
    }

    type TestJob = Box<dyn FnOnce(Writer) -> BoxFuture<'static, Result<()>>>;

    /// Half a job: the first insert of `k` is written, the second refused.
    fn twice(k: i64) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        move |connection| {
            insert(k, None).execute(connection)?;
            insert(k, None).execute(connection).map_err(partial)?;
            Ok(())
        }
    }

    /// Without a savepoint, a job that fails half-way cannot be undone alone: its batch is.
    #[tokio::test]
    async fn a_job_without_a_savepoint_that_fails_fails_its_batch() -> anyhow::Result<()> {
        let pool = database().await?;
        let half = |writer: Writer| -> BoxFuture<'static, Result<()>> {
            Box::pin(async move { writer.write_in_batch(twice(20)).await })
        };
        let fine = |writer: Writer| -> BoxFuture<'static, Result<()>> {
            Box::pin(async move { writer.execute(insert(21, None)).await.map(|_| ()) })
        };
        let jobs: Vec<TestJob> = vec![Box::new(fine), Box::new(half)];
        let (writer, results) = in_one_batch(&pool, jobs).await?;
        // The job that broke the batch learns why; the other is told to write again.
        assert!(
            matches!(
                results.as_slice(),
                [Err(Error::RolledBack(_)), Err(Error::Commit(_))]
            ),
            "{results:?}"
        );
        assert!(results[0].as_ref().is_err_and(Error::is_retryable));
        assert!(!results[1].as_ref().is_err_and(Error::is_retryable));
        assert_eq!(stored(&pool).await?, Vec::<i64>::new());
        // Alone, it is still one transaction; and one that succeeds applies whole.
        let alone = writer.write_in_batch(twice(22)).await;
        assert!(matches!(alone, Err(Error::Commit(_))), "{alone:?}");
        writer
            .write_in_batch(|connection| {
                insert(23, None).execute(connection)?;
                insert(24, Some(23)).execute(connection)?;
                Ok(())
            })
            .await?;
        assert_eq!(stored(&pool).await?, [23, 24]);
        // Refused at its first statement, nothing of it is written: it fails alone.
        let (_other_writer, results) = in_one_batch(
            &pool,
            vec![
                Box::new(move |writer: Writer| -> BoxFuture<'static, Result<()>> {
                    Box::pin(async move {
                        writer
                            .write_in_batch(|connection| {
                                insert(23, None).execute(connection).map(|_| ())
                            })
                            .await
                    })
                }) as TestJob,
                Box::new(|writer: Writer| -> BoxFuture<'static, Result<()>> {
                    Box::pin(async move { writer.execute(insert(31, None)).await.map(|_| ()) })
                }),
            ],
        )
        .await?;
        assert!(
            matches!(results.as_slice(), [Err(Error::Database(_)), Ok(())]),
            "{results:?}"
        );
        assert_eq!(stored(&pool).await?, [23, 24, 31]);
        Ok(())
    }

    /// The poison rule's base: a commit that fails answers no job of its batch as written.
    #[tokio::test]
    async fn a_failed_commit_fails_every_job_of_its_batch_and_stores_none() -> anyhow::Result<()> {
        let pool = database().await?;
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&pool)
            .await?;
        // Checked at COMMIT: the parent is missing, so the whole commit fails.
        let breaking = |writer: Writer| -> BoxFuture<'static, Result<()>> {
            Box::pin(async move {
                writer
                    .write(|connection| {
                        connection.execute_batch("PRAGMA defer_foreign_keys = ON")?;
                        insert(10, Some(99)).execute(connection)?;
                        Ok(())
                    })
                    .await
            })
        };
        let fine = |writer: Writer| -> BoxFuture<'static, Result<()>> {
            Box::pin(async move { writer.execute(insert(11, None)).await.map(|_| ()) })
        };
        let jobs: Vec<TestJob> = vec![Box::new(fine), Box::new(breaking)];
        let (writer, results) = in_one_batch(&pool, jobs).await?;
        // Which job the commit refused is not known: all are rolled back, to be written again.
        assert!(
            results
                .iter()
                .all(|result| matches!(result, Err(Error::RolledBack(_)))),
            "{results:?}"
        );
        assert_eq!(stored(&pool).await?, Vec::<i64>::new());
        // The writer goes on with the next batch.
        writer.execute(insert(12, None)).await?;
        assert_eq!(stored(&pool).await?, [12]);
        Ok(())
    }
}
