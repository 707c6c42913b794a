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
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, SqlitePool};

use super::connect::{Durability, without_credentials};
use super::rows;
use super::sqlite_checkpoint;
use super::sqlite_native::{Statement, statement};
pub(super) use super::sqlite_writer::Submit;
use super::sqlite_writer::{Lent, Writer};
use super::{Error, LeadDetail, LeadQuery, LeadView, Result, Store};

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

#[async_trait]
impl Store for SqliteStore {
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

/// A write of this store: a statement the writer thread runs natively.
pub(super) type Write = Statement;

/// A write of `sql`, already in SQLite's words (see [`dialect::shared`](super::dialect)).
pub(super) fn write(sql: &'static str) -> Write {
    statement(sql)
}

/// A write of a statement shared with Postgres and built at run time, translated each time.
pub(super) fn built(sql: &str) -> Write {
    statement(super::dialect::sqlite_text(sql))
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
