//! The one writer of the SQLite file, with group commit.
//!
//! Every write of the store is a job on one queue. The writer takes whatever is queued (up to
//! [`MAX_BATCH`] jobs, no timer: a lone job goes at once, and jobs that arrive while a commit is
//! in flight form the next batch), runs the jobs in one transaction and commits, and only then
//! answers each caller. So a caller's write is durable when its call returns, exactly as with one
//! transaction per write, while concurrent runs share each commit: the commit, not the
//! statement, is what costs on disk.
//!
//! Jobs run in the order they were queued, so an answer also proves every job queued before it
//! is durable. A job whose statement is refused (a constraint) fails alone; a job of several
//! statements runs in a savepoint, so it applies whole or not at all — or, on the hot path,
//! where a savepoint's two extra statements would double the cost, without one: such a job
//! that fails fails its whole batch ([`Writer::write_in_batch`]). Any other failure (the disk is
//! full, the file cannot be written) rolls the whole batch back and fails every job in it:
//! nothing is answered as written that is not on disk. The job that broke the batch gets its
//! error ([`Error::Commit`]); the others [`Error::RolledBack`], which callers retry: a write
//! refused for its own data never fails another's for good.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteArguments, SqliteQueryResult, SqliteRow};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{Error, Result};

/// The most jobs one transaction holds; more wait for the next commit.
const MAX_BATCH: usize = 256;
/// Jobs queued before callers wait for room: backpressure instead of unbounded memory.
const QUEUE: usize = 4096;

/// A statement with its parameters bound, owning them.
pub(super) type Query = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// The handle callers write through; cloning is cheap.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer on `pool` (the one connection that writes). It stops when every handle
    /// is dropped.
    pub(super) fn start(pool: SqlitePool) -> Writer {
        let (jobs, queued) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queued));
        Writer { jobs }
    }

    /// A writer that starts taking jobs when `gate` opens: a test queues jobs first, so they
    /// are sure to share one batch.
    #[cfg(test)]
    fn start_gated(pool: SqlitePool, gate: oneshot::Receiver<()>) -> Writer {
        let (jobs, queued) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let _ = gate.await;
            run(pool, queued).await;
        });
        Writer { jobs }
    }

    /// Runs `work` in the next batch; returns its result once the batch has committed. `work`
    /// runs in a savepoint: it applies whole or not at all.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
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
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.answered(work, Guard::Batch).await
    }

    /// As [`Writer::write`], without a savepoint: for `work` of one statement, which SQLite
    /// applies whole or not at all by itself.
    pub(super) async fn write_single<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.answered(work, Guard::Statement).await
    }

    /// Executes one statement in the next batch; its result once the batch has committed.
    pub(super) async fn execute(&self, query: Query) -> Result<SqliteQueryResult> {
        self.write_single(move |connection| {
            Box::pin(async move { Ok(query.execute(&mut *connection).await?) })
        })
        .await
    }

    /// Executes one statement that returns rows (`RETURNING`), once the batch has committed.
    pub(super) async fn fetch_all(&self, query: Query) -> Result<Vec<SqliteRow>> {
        self.write_single(move |connection| {
            Box::pin(async move { Ok(query.fetch_all(&mut *connection).await?) })
        })
        .await
    }

    async fn answered<T, F>(&self, work: F, guard: Guard) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = typed(work, guard, Some(reply));
        self.submit(Box::new(job)).await?;
        answer.await.unwrap_or(Err(gone()))
    }

    async fn submit(&self, job: Box<dyn Job>) -> Result<()> {
        self.jobs.send(job).await.map_err(|_| gone())
    }
}

/// An error of a [`Writer::write_in_batch`] job after its first statement: part of the job
/// is written, so its batch is rolled back.
pub(super) fn partial(error: sqlx::Error) -> Error {
    Error::Commit(Arc::new(error))
}

/// `query.submit(&writer)`: a statement executed by the writer, read like sqlx's `execute`.
pub(super) trait Submit {
    async fn submit(self, writer: &Writer) -> Result<SqliteQueryResult>;
    async fn submit_fetch(self, writer: &Writer) -> Result<Vec<SqliteRow>>;
}

impl Submit for Query {
    async fn submit(self, writer: &Writer) -> Result<SqliteQueryResult> {
        writer.execute(self).await
    }

    async fn submit_fetch(self, writer: &Writer) -> Result<Vec<SqliteRow>> {
        writer.fetch_all(self).await
    }
}

/// The error every caller sees once the writer is gone (the store was closed).
fn gone() -> Error {
    Error::Database(sqlx::Error::PoolClosed)
}

/// A queued write, type-erased so one queue carries writes with any result type.
trait Job: Send {
    /// Runs the write inside the batch's transaction. `Err` means the batch cannot commit.
    fn apply<'c>(
        &'c mut self,
        connection: &'c mut SqliteConnection,
    ) -> BoxFuture<'c, Result<(), Arc<sqlx::Error>>>;
    /// Answers the caller once the batch committed (`Ok`) or failed.
    fn answer(self: Box<Self>, committed: Result<(), Arc<sqlx::Error>>);
    /// One statement: alone in a batch, it is its own transaction.
    fn single(&self) -> bool;
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

/// A job of `work`; naming the bound here lets closures be general over the connection's
/// lifetime.
fn typed<T, F>(work: F, guard: Guard, reply: Option<oneshot::Sender<Result<T>>>) -> Typed<T, F>
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    Typed {
        work: Some(work),
        guard,
        result: None,
        reply,
    }
}

struct Typed<T, F> {
    work: Option<F>,
    guard: Guard,
    result: Option<Result<T>>,
    /// None for a write nobody waits for.
    reply: Option<oneshot::Sender<Result<T>>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    fn apply<'c>(
        &'c mut self,
        connection: &'c mut SqliteConnection,
    ) -> BoxFuture<'c, Result<(), Arc<sqlx::Error>>> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return Ok(());
            };
            let savepoint = self.guard == Guard::Savepoint;
            if savepoint {
                statement(connection, "SAVEPOINT job").await?;
            }
            let result = work(connection).await;
            let broke = |result: &mut Option<Result<T>>, error: sqlx::Error| {
                let error = Arc::new(error);
                // This job's caller learns what it did; the rest of the batch is rolled back.
                *result = Some(Err(Error::Commit(error.clone())));
                Err(error)
            };
            match result {
                Err(Error::Database(error)) if !refused(&error) => broke(&mut self.result, error),
                // Part of the job is written (see `partial`), and nothing can undo that part
                // alone.
                Err(Error::Commit(error)) if self.guard == Guard::Batch => {
                    self.result = Some(Err(Error::Commit(error.clone())));
                    Err(error)
                }
                Err(error) => {
                    if savepoint {
                        statement(connection, "ROLLBACK TO job").await?;
                        statement(connection, "RELEASE job").await?;
                    }
                    self.result = Some(Err(error));
                    Ok(())
                }
                Ok(value) => {
                    if savepoint {
                        statement(connection, "RELEASE job").await?;
                    }
                    self.result = Some(Ok(value));
                    Ok(())
                }
            }
        })
    }

    fn single(&self) -> bool {
        self.guard == Guard::Statement
    }

    fn answer(self: Box<Self>, committed: Result<(), Arc<sqlx::Error>>) {
        let result = match (committed, self.result) {
            // The job that broke the batch.
            (Err(_), Some(Err(own @ Error::Commit(_)))) => Err(own),
            (Err(error), _) => Err(Error::RolledBack(error)),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(gone()),
        };
        match self.reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(error) = result {
                    tracing::warn!(%error, "a deferred write failed");
                }
            }
        }
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

async fn statement(
    connection: &mut SqliteConnection,
    sql: &'static str,
) -> Result<(), Arc<sqlx::Error>> {
    sqlx::query(sql)
        .execute(&mut *connection)
        .await
        .map(|_| ())
        .map_err(Arc::new)
}

async fn run(pool: SqlitePool, mut queued: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let size = batch.len();
        let started = Instant::now();
        let committed = match pool.acquire().await {
            Ok(mut connection) => commit(&mut connection, &mut batch).await,
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

/// One transaction for the whole batch; rolled back if any job cannot be applied.
async fn commit(
    connection: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
) -> Result<(), Arc<sqlx::Error>> {
    // A lone statement commits by itself: BEGIN and COMMIT would cost two more round trips to
    // SQLite's thread for nothing (the common case with one client).
    if let [job] = batch
        && job.single()
    {
        return job.apply(connection).await;
    }
    statement(connection, "BEGIN IMMEDIATE").await?;
    for job in batch.iter_mut() {
        if let Err(error) = job.apply(connection).await {
            if let Err(rollback) = statement(connection, "ROLLBACK").await {
                tracing::warn!(error = %rollback, "rolling back a failed batch failed");
            }
            return Err(error);
        }
    }
    if let Err(error) = statement(connection, "COMMIT").await {
        // A failed COMMIT may leave the transaction open: end it, or the next batch's BEGIN fails.
        let _ = statement(connection, "ROLLBACK").await;
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

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

    fn insert(k: i64, parent: Option<i64>) -> Query {
        sqlx::query("INSERT INTO t (k, parent) VALUES (?, ?)")
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
        let writer = Writer::start_gated(pool.clone(), gate);
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

    fn inserting(k: i64) -> impl FnOnce(Writer) -> BoxFuture<'static, Result<SqliteQueryResult>> {
        move |writer| Box::pin(async move { writer.execute(insert(k, None)).await })
    }

    #[tokio::test]
    async fn queued_writes_commit_together_and_each_caller_gets_its_own_answer()
    -> anyhow::Result<()> {
        let pool = database().await?;
        let (_, results) = in_one_batch(&pool, (1..=20).map(inserting).collect()).await?;
        for result in results {
            assert_eq!(result?.rows_affected(), 1);
        }
        assert_eq!(stored(&pool).await?, (1..=20).collect::<Vec<_>>());
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_statement_fails_alone() -> anyhow::Result<()> {
        let pool = database().await?;
        let (_, results) = in_one_batch(&pool, [1, 1, 2].map(inserting).into()).await?;
        let failed: Vec<bool> = results.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, true, false]);
        assert_eq!(stored(&pool).await?, [1, 2]);
        Ok(())
    }

    #[tokio::test]
    async fn a_job_of_several_statements_applies_whole_or_not_at_all() -> anyhow::Result<()> {
        let pool = database().await?;
        let writer = Writer::start(pool.clone());
        let both = writer
            .write(|connection| {
                Box::pin(async move {
                    insert(1, None).execute(&mut *connection).await?;
                    insert(1, None).execute(&mut *connection).await?;
                    Ok(())
                })
            })
            .await;
        assert!(both.is_err());
        writer.execute(insert(2, None)).await?;
        assert_eq!(stored(&pool).await?, [2]);
        Ok(())
    }

    type TestJob = Box<dyn FnOnce(Writer) -> BoxFuture<'static, Result<()>>>;

    /// Without a savepoint, a job that fails half-way cannot be undone alone: its batch is.
    #[tokio::test]
    async fn a_job_without_a_savepoint_that_fails_fails_its_batch() -> anyhow::Result<()> {
        let pool = database().await?;
        let half = |writer: Writer| -> BoxFuture<'static, Result<()>> {
            Box::pin(async move {
                writer
                    .write_in_batch(|connection| {
                        Box::pin(async move {
                            insert(20, None).execute(&mut *connection).await?;
                            insert(20, None)
                                .execute(&mut *connection)
                                .await
                                .map_err(partial)?;
                            Ok(())
                        })
                    })
                    .await
            })
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
        let alone = writer
            .write_in_batch(|connection| {
                Box::pin(async move {
                    insert(22, None).execute(&mut *connection).await?;
                    insert(22, None)
                        .execute(&mut *connection)
                        .await
                        .map_err(partial)?;
                    Ok(())
                })
            })
            .await;
        assert!(matches!(alone, Err(Error::Commit(_))), "{alone:?}");
        writer
            .write_in_batch(|connection| {
                Box::pin(async move {
                    insert(23, None).execute(&mut *connection).await?;
                    insert(24, Some(23)).execute(&mut *connection).await?;
                    Ok(())
                })
            })
            .await?;
        assert_eq!(stored(&pool).await?, [23, 24]);
        // Refused at its first statement, nothing of it is written: it fails alone.
        let (_, results) = in_one_batch(
            &pool,
            vec![
                Box::new(move |writer: Writer| -> BoxFuture<'static, Result<()>> {
                    Box::pin(async move {
                        writer
                            .write_in_batch(|connection| {
                                Box::pin(async move {
                                    insert(23, None).execute(&mut *connection).await?;
                                    Ok(())
                                })
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
                        Box::pin(async move {
                            sqlx::query("PRAGMA defer_foreign_keys = ON")
                                .execute(&mut *connection)
                                .await?;
                            insert(10, Some(99)).execute(&mut *connection).await?;
                            Ok(())
                        })
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
