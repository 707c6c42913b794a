//! The one writer of the SQLite file, with group commit.
//!
//! Every write of the store is a job on one queue. The writer takes whatever is queued (up to
//! [`MAX_BATCH`] jobs, no timer: a lone job goes at once, and jobs that arrive while a commit is
//! in flight form the next batch), runs the jobs in one transaction and commits, and only then
//! answers each caller. So a caller's write is durable when its call returns, exactly as with one
//! transaction per write, while concurrent runs share each commit: the commit, not the
//! statement, is what costs on disk.
//!
//! The writer's thread owns the one writer connection. It holds the connection's handle,
//! taken from sqlx's thread ([`sqlx::sqlite::SqliteConnection::lock_handle`]), and drives it
//! through rusqlite with its statements prepared once: a statement, a savepoint, a COMMIT is a
//! plain C call, where through sqlx each would be a hand-off to sqlx's thread and back (two
//! thread wake-ups, most of a statement's cost). A job costs two wake-ups: the caller's queueing
//! and its answer. Its own thread keeps a COMMIT waiting for the disk off the async workers.
//! The leads, the cache, progress and the migrations are written with sqlx code shared with
//! Postgres: for them the writer lends the connection itself ([`Writer::lend`]), in queue
//! order, and takes the handle back when it returns.
//!
//! Jobs run in the order they were queued, so an answer also proves every job queued before it
//! is durable. A job whose statement is refused (a constraint) fails alone; a job of several
//! statements runs in a savepoint, so it applies whole or not at all — or, on the hot path,
//! without one: such a job that fails fails its whole batch ([`Writer::write_in_batch`]). Any
//! other failure (the disk is full, the file cannot be written) rolls the whole batch back and
//! fails every job in it: nothing is answered as written that is not on disk. The job that
//! broke the batch gets its error ([`Error::Commit`]); the others [`Error::RolledBack`], which
//! callers retry: a write refused for its own data never fails another's for good.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Instant;

use sqlx::SqliteConnection;
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
    jobs: mpsc::Sender<Queued>,
}

/// What waits in the writer's queue.
enum Queued {
    /// A write of runs and attempts, run in the next batch.
    Job(Box<dyn Job>),
    /// A caller waiting for the connection itself.
    Lend(oneshot::Sender<Lent>),
    /// Close the connection once what was queued before is written.
    Close(oneshot::Sender<()>),
}

impl Writer {
    /// Starts the writer's thread on `connection` (the one that writes). It stops, closing
    /// the connection, when every handle is dropped.
    pub(super) fn start(connection: SqliteConnection) -> Result<Writer> {
        Self::start_after(connection, None)
    }

    /// A writer that starts taking jobs when `gate` opens, if there is one: a test queues jobs
    /// first, so they are sure to share one batch.
    fn start_after(
        connection: SqliteConnection,
        gate: Option<oneshot::Receiver<()>>,
    ) -> Result<Writer> {
        let (jobs, queued) = mpsc::channel(QUEUE);
        // sqlx's connection needs a runtime to wait on; one of the thread's own keeps the
        // blocking batches off the caller's workers.
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
                    run(connection, queued).await;
                });
            })
            .map_err(sqlx::Error::Io)?;
        Ok(Writer { jobs })
    }

    /// The writer connection itself, once every write queued before is done, for sqlx code
    /// shared with Postgres (the leads, the cache, progress, migrations). Batches wait until it
    /// is dropped, so hold it for a few statements only. What it runs is its own: it commits
    /// as it says (autocommit, or its own transaction), not with a batch.
    pub(super) async fn lend(&self) -> Result<Lent> {
        let (reply, lent) = oneshot::channel();
        self.jobs
            .send(Queued::Lend(reply))
            .await
            .map_err(|_| gone())?;
        lent.await.map_err(|_| gone())
    }

    /// Writes what is queued, then closes the connection; later writes fail.
    pub(super) async fn close(&self) {
        let (reply, closed) = oneshot::channel();
        if self.jobs.send(Queued::Close(reply)).await.is_ok() {
            let _ = closed.await;
        }
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
        let queued = Queued::Job(Box::new(job));
        self.jobs.send(queued).await.map_err(|_| gone())?;
        answer.await.unwrap_or(Err(gone()))
    }
}

/// The writer connection, lent by [`Writer::lend`]; dropping it gives it back.
#[derive(Debug)]
pub(super) struct Lent {
    connection: Option<SqliteConnection>,
    back: Option<oneshot::Sender<SqliteConnection>>,
}

impl Deref for Lent {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        // Present until dropped.
        self.connection.as_ref().expect("a lent connection")
    }
}

impl DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.connection.as_mut().expect("a lent connection")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(connection), Some(back)) = (self.connection.take(), self.back.take()) {
            // The writer is gone if nobody takes it back: then it closes as it drops.
            let _ = back.send(connection);
        }
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

/// Executes `sql`, which takes no parameter and returns no row.
fn execute(connection: &Connection, sql: &str) -> Result<(), Arc<sqlx::Error>> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(|error| Arc::new(into_sqlx(error)))
}

async fn run(mut connection: SqliteConnection, mut queued: mpsc::Receiver<Queued>) {
    let mut waiting = VecDeque::new();
    let closed = loop {
        let lend = match batches(&mut connection, &mut queued, &mut waiting).await {
            Ok(Next::Lend(lend)) => lend,
            Ok(Next::Close(closed)) => break closed,
            Err(error) => {
                // Only when sqlx's thread for the connection is gone: nothing can be written.
                tracing::error!(%error, "the SQLite writer lost its connection");
                break None;
            }
        };
        match lent_and_back(connection, lend).await {
            Some(back) => connection = back,
            None => {
                tracing::error!("the SQLite writer's connection was not given back");
                return;
            }
        }
    };
    // Jobs still queued, and queued from now on, are answered `gone` as they drop.
    drop(waiting);
    drop(queued);
    let _ = sqlx::Connection::close(connection).await;
    if let Some(closed) = closed {
        let _ = closed.send(());
    }
}

/// Why the writer put the handle down.
enum Next {
    /// A caller asked for the connection.
    Lend(oneshot::Sender<Lent>),
    /// Closing: asked (answered once closed), or every [`Writer`] was dropped.
    Close(Option<oneshot::Sender<()>>),
}

/// Holds the connection's handle and commits batches of queued jobs on it until a caller asks
/// for the connection itself or the writer closes.
async fn batches(
    connection: &mut SqliteConnection,
    queued: &mut mpsc::Receiver<Queued>,
    waiting: &mut VecDeque<Queued>,
) -> Result<Next, sqlx::Error> {
    let mut handle = connection.lock_handle().await?;
    let native = Native::on(handle.as_raw_handle()).map_err(into_sqlx)?;
    // A caller's transaction that was dropped unfinished is not this batch's.
    if !native.0.is_autocommit()
        && let Err(error) = execute(&native.0, "ROLLBACK")
    {
        tracing::warn!(%error, "ending a lent connection's transaction failed");
    }
    let mut received = Vec::with_capacity(MAX_BATCH);
    loop {
        if waiting.is_empty() {
            if queued.recv_many(&mut received, MAX_BATCH).await == 0 {
                return Ok(Next::Close(None));
            }
            waiting.extend(received.drain(..));
        }
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH
            && let Some(Queued::Job(_)) = waiting.front()
            && let Some(Queued::Job(job)) = waiting.pop_front()
        {
            batch.push(job);
        }
        if batch.is_empty() {
            match waiting.pop_front() {
                Some(Queued::Lend(lend)) => return Ok(Next::Lend(lend)),
                Some(Queued::Close(closed)) => return Ok(Next::Close(Some(closed))),
                Some(Queued::Job(job)) => batch.push(job),
                None => continue,
            }
        }
        let started = Instant::now();
        let committed = commit(&native.0, &mut batch);
        if let Err(error) = &committed {
            let size = batch.len();
            tracing::error!(%error, jobs = size, "a batch of writes failed; none of it is stored");
        }
        metrics::histogram!("enrichflow_store_batch_size").record(batch.len() as f64);
        metrics::histogram!("enrichflow_store_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        for job in batch {
            job.answer(committed.clone());
        }
    }
}

/// Lends `connection` through `lend` and waits for it to come back (`None` if it never does).
async fn lent_and_back(
    connection: SqliteConnection,
    lend: oneshot::Sender<Lent>,
) -> Option<SqliteConnection> {
    let (back, returned) = oneshot::channel();
    let lent = Lent {
        connection: Some(connection),
        back: Some(back),
    };
    match lend.send(lent) {
        Ok(()) => returned.await.ok(),
        // The caller stopped waiting: the connection comes straight back.
        Err(mut lent) => lent.connection.take(),
    }
}

/// rusqlite on the handle of sqlx's connection, with its own statement cache.
struct Native(Connection);

impl Native {
    /// Wraps `handle`. The caller holds sqlx's lock on it while this lives.
    #[expect(
        unsafe_code,
        reason = "rusqlite on sqlx's locked handle: the one unsafe call of the workspace"
    )]
    fn on(handle: std::ptr::NonNull<rusqlite::ffi::sqlite3>) -> rusqlite::Result<Native> {
        // SAFETY: the caller holds sqlx's lock on the handle for as long as this value lives
        // (it is dropped first), so sqlx's thread makes no call on it meanwhile; the connection
        // made here does not own the handle (it never closes it), and dropping it finalizes
        // its cached statements, so sqlx closes a handle with none of ours left open.
        let connection = unsafe { Connection::from_handle(handle.as_ptr()) }?;
        connection.set_prepared_statement_cache_capacity(64);
        Ok(Native(connection))
    }
}

/// One transaction for the whole batch; rolled back if any job cannot be applied.
fn commit(connection: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), Arc<sqlx::Error>> {
    execute(connection, "BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        if let Err(error) = job.apply(connection) {
            if let Err(rollback) = execute(connection, "ROLLBACK") {
                tracing::warn!(error = %rollback, "rolling back a failed batch failed");
            }
            return Err(error);
        }
    }
    if let Err(error) = execute(connection, "COMMIT") {
        // A failed COMMIT may leave the transaction open: end it, or the next batch's BEGIN fails.
        let _ = execute(connection, "ROLLBACK");
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use sqlx::ConnectOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::{Sqlite, SqlitePool};

    use super::*;
    use crate::store::sqlite::Scratch;
    use crate::store::sqlite_native::statement;

    /// A database file with a table `t(k PRIMARY KEY, parent REFERENCES t)`: a pool to read
    /// it, and the options of a connection for the writer.
    struct Database {
        options: SqliteConnectOptions,
        pool: SqlitePool,
        _scratch: Scratch,
    }

    impl Database {
        async fn writer_connection(&self) -> anyhow::Result<SqliteConnection> {
            Ok(self.options.connect().await?)
        }

        async fn writer(&self) -> anyhow::Result<Writer> {
            Ok(Writer::start(self.writer_connection().await?)?)
        }
    }

    async fn database() -> anyhow::Result<Database> {
        let scratch = Scratch::create()?;
        let options = SqliteConnectOptions::new()
            .filename(scratch.database())
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, parent INTEGER REFERENCES t (k))")
            .execute(&pool)
            .await?;
        Ok(Database {
            options,
            pool,
            _scratch: scratch,
        })
    }

    fn insert(k: i64, parent: Option<i64>) -> Statement {
        statement("INSERT INTO t (k, parent) VALUES (?, ?)")
            .bind(k)
            .bind(parent)
    }

    async fn stored(database: &Database) -> anyhow::Result<Vec<i64>> {
        Ok(
            sqlx::query_scalar::<Sqlite, i64>("SELECT k FROM t ORDER BY k")
                .fetch_all(&database.pool)
                .await?,
        )
    }

    /// Runs `jobs` (each given a writer on `database`) so that they commit together, as one
    /// batch: they are all queued before the writer starts.
    async fn in_one_batch<T, J>(
        database: &Database,
        jobs: Vec<J>,
    ) -> anyhow::Result<(Writer, Vec<T>)>
    where
        T: Send + 'static,
        J: FnOnce(Writer) -> BoxFuture<'static, T>,
    {
        let (open, gate) = oneshot::channel();
        let writer = Writer::start_after(database.writer_connection().await?, Some(gate))?;
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
        let database = database().await?;
        let (_, results) = in_one_batch(&database, (1..=20).map(inserting).collect()).await?;
        for result in results {
            assert_eq!(result?, 1);
        }
        assert_eq!(stored(&database).await?, (1..=20).collect::<Vec<_>>());
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_statement_fails_alone() -> anyhow::Result<()> {
        let database = database().await?;
        let (_, results) = in_one_batch(&database, [1, 1, 2].map(inserting).into()).await?;
        let failed: Vec<bool> = results.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, true, false]);
        assert_eq!(stored(&database).await?, [1, 2]);
        Ok(())
    }

    #[tokio::test]
    async fn a_job_of_several_statements_applies_whole_or_not_at_all() -> anyhow::Result<()> {
        let database = database().await?;
        let writer = database.writer().await?;
        let both = writer
            .write(|connection| {
                insert(1, None).execute(connection)?;
                insert(1, None).execute(connection)?;
                Ok(())
            })
            .await;
        assert!(both.is_err());
        writer.execute(insert(2, None)).await?;
        assert_eq!(stored(&database).await?, [2]);
        Ok(())
    }

    #[tokio::test]
    async fn returned_rows_are_read_once_committed() -> anyhow::Result<()> {
        let database = database().await?;
        sqlx::query("CREATE TABLE a (run_id TEXT, node_id TEXT, attempt INTEGER)")
            .execute(&database.pool)
            .await?;
        let writer = database.writer().await?;
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

    /// Lending keeps queue order: the lent connection sees every write queued before, and a
    /// write queued while it is lent waits for it to come back.
    #[tokio::test]
    async fn a_lent_connection_takes_its_turn_in_the_queue() -> anyhow::Result<()> {
        let database = database().await?;
        let writer = database.writer().await?;
        let before = tokio::spawn({
            let writer = writer.clone();
            async move { writer.execute(insert(1, None)).await }
        });
        before.await??;
        let mut lent = writer.lend().await?;
        let seen: Vec<i64> = sqlx::query_scalar("SELECT k FROM t")
            .fetch_all(&mut *lent)
            .await?;
        assert_eq!(seen, [1]);
        let after = tokio::spawn({
            let writer = writer.clone();
            async move { writer.execute(insert(3, None)).await }
        });
        sqlx::query("INSERT INTO t (k) VALUES (2)")
            .execute(&mut *lent)
            .await?;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !after.is_finished(),
            "a batch ran while the connection was lent"
        );
        // An unfinished transaction of the borrower does not reach the next batch.
        sqlx::query("BEGIN").execute(&mut *lent).await?;
        sqlx::query("INSERT INTO t (k) VALUES (4)")
            .execute(&mut *lent)
            .await?;
        drop(lent);
        assert_eq!(after.await??, 1);
        assert_eq!(stored(&database).await?, [1, 2, 3]);
        writer.close().await;
        assert!(writer.execute(insert(5, None)).await.is_err());
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
        let database = database().await?;
        let half = |writer: Writer| -> BoxFuture<'static, Result<()>> {
            Box::pin(async move { writer.write_in_batch(twice(20)).await })
        };
        let fine = |writer: Writer| -> BoxFuture<'static, Result<()>> {
            Box::pin(async move { writer.execute(insert(21, None)).await.map(|_| ()) })
        };
        let jobs: Vec<TestJob> = vec![Box::new(fine), Box::new(half)];
        let (writer, results) = in_one_batch(&database, jobs).await?;
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
        assert_eq!(stored(&database).await?, Vec::<i64>::new());
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
        assert_eq!(stored(&database).await?, [23, 24]);
        // Refused at its first statement, nothing of it is written: it fails alone.
        let (_, results) = in_one_batch(
            &database,
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
        assert_eq!(stored(&database).await?, [23, 24, 31]);
        Ok(())
    }

    /// The poison rule's base: a commit that fails answers no job of its batch as written.
    #[tokio::test]
    async fn a_failed_commit_fails_every_job_of_its_batch_and_stores_none() -> anyhow::Result<()> {
        let database = database().await?;
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
        let (writer, results) = in_one_batch(&database, jobs).await?;
        // Which job the commit refused is not known: all are rolled back, to be written again.
        assert!(
            results
                .iter()
                .all(|result| matches!(result, Err(Error::RolledBack(_)))),
            "{results:?}"
        );
        assert_eq!(stored(&database).await?, Vec::<i64>::new());
        // The writer goes on with the next batch.
        writer.execute(insert(12, None)).await?;
        assert_eq!(stored(&database).await?, [12]);
        Ok(())
    }
}
