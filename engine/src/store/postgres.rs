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
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row};
use tokio::sync::mpsc;

use super::connect::{PoolOptions, without_credentials};
use super::rows;
use super::{AttemptKey, Error, LeadDetail, LeadQuery, LeadView, Result, RunLock, Store};

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

#[async_trait]
impl Store for PostgresStore {
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

impl PostgresStore {
    /// Holds the run's lock (a transaction-scoped advisory lock on a connection of its own).
    pub(super) async fn lock(&self, run_id: &str) -> Result<RunLock> {
        let mut transaction = self.locks.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(run_id)
            .execute(&mut *transaction)
            .await?;
        Ok(RunLock(Some(transaction)))
    }

    /// Sends the payload of every notification on `channel` until the receiver is gone.
    pub(super) async fn listen(
        &self,
        channel: &str,
        payloads: mpsc::UnboundedSender<String>,
    ) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(channel).await?;
        loop {
            let notification = listener.recv().await?;
            if payloads.send(notification.payload().to_owned()).is_err() {
                return Ok(());
            }
        }
    }
}

/// A statement of this store with its parameters.
pub(super) type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// A write of this store: a statement run on the pool.
pub(super) type Write = PgQuery<'static>;

/// A write of `sql`, already in Postgres' words (see [`dialect::shared`](super::dialect)).
pub(super) fn write(sql: &'static str) -> Write {
    sqlx::query(sql)
}

/// A write of a statement shared with SQLite and built at run time, translated each time.
pub(super) fn built(sql: &str) -> Write {
    sqlx::query(super::dialect::postgres(sql))
}

/// Runs a write as the SQLite writer's `Submit` does, so that a body written once for both
/// stores reads the same.
pub(super) trait Submit {
    /// How many rows it changed.
    async fn submit(self, pool: &PgPool) -> Result<u64>;
    /// The attempt keys it returned (`RETURNING run_id, node_id, attempt`).
    async fn submit_fetch_keys(self, pool: &PgPool) -> Result<Vec<AttemptKey>>;
}

impl Submit for PgQuery<'_> {
    async fn submit(self, pool: &PgPool) -> Result<u64> {
        Ok(self.execute(pool).await?.rows_affected())
    }

    async fn submit_fetch_keys(self, pool: &PgPool) -> Result<Vec<AttemptKey>> {
        let rows = self.fetch_all(pool).await?;
        rows.iter()
            .map(|row| rows::attempt_key(&Columns(row)))
            .collect()
    }
}

/// The stored form of an instant: whole microseconds, truncated like the SQLite store's text
/// (rounding could move an instant past a `not_before` it has not reached).
pub(super) fn timestamp(instant: DateTime<Utc>) -> DateTime<Utc> {
    instant.trunc_subsecs(6)
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
