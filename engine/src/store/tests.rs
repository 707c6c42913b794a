//! What the store's contract checks share: records to store, fresh databases of both kinds, and
//! `store_checks!`, which turns each check over `&dyn Store` into one test on SQLite and, when
//! `ENRICHFLOW_TEST_DATABASE_URL` names a server, one on Postgres. The checks live by concern
//! (`runs_tests.rs`, `attempts_tests.rs`, `dispatch_tests.rs`, `leads_tests.rs`, …); what is
//! here tests connecting.
//!
//! Every check expects an empty store of its own.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::{
    AttemptKey, AttemptOutcome, AttemptRecord, AttemptStatus, PostgresStore, RunRecord, RunStatus,
    SqliteStore, Store,
};
use super::{Json, Runs};

/// 2026-03-04T05:06:07.123456Z: a full microsecond fraction, which must survive a round trip.
const BASE_MICROS: i64 = 1_772_600_767_123_456;

/// `seconds` after the base instant.
pub(super) fn at(seconds: i64) -> DateTime<Utc> {
    at_micros(seconds * 1_000_000)
}

pub(super) fn at_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(BASE_MICROS + micros).expect("a representable instant")
}

/// Ids sort like the engine's UUIDv7s: a higher `n` is a newer run.
pub(super) fn run_id(n: u128) -> String {
    uuid::Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0000 + n).to_string()
}

pub(crate) fn run(n: u128, workflow_id: &str, status: RunStatus) -> RunRecord {
    RunRecord {
        id: run_id(n),
        workflow_id: workflow_id.to_owned(),
        revision: format!("rev-{workflow_id}"),
        status,
        trigger: json!({ "type": "manual", "body": { "n": n as u64 } }).into(),
        output: None,
        error: None,
        created_at: at(n as i64),
        started_at: None,
        finished_at: None,
        deadline_at: None,
        cancel_requested: false,
        idempotency_key: None,
        idempotency_body_hash: None,
    }
}

pub(crate) fn key(run: u128, node_id: &str, attempt: u32) -> AttemptKey {
    AttemptKey {
        run_id: run_id(run),
        node_id: node_id.to_owned(),
        attempt,
    }
}

pub(crate) fn attempt(key: AttemptKey, status: AttemptStatus) -> AttemptRecord {
    AttemptRecord {
        key,
        status,
        input: None,
        output: None,
        error: None,
        retryable: false,
        not_before: None,
        created_at: at(100),
        started_at: None,
        finished_at: None,
        worker: None,
    }
}

pub(super) fn outcome(status: AttemptStatus, output: Option<Value>) -> AttemptOutcome {
    AttemptOutcome {
        status,
        output: output.map(Json::from),
        error: None,
        retryable: false,
        not_before: None,
        finished_at: at(200),
        started: None,
    }
}

pub(super) async fn create_runs(store: &dyn Store, runs: &[RunRecord]) -> Result<()> {
    for run in runs {
        store.create_run(run).await?;
    }
    Ok(())
}

pub(super) async fn stored_run(store: &dyn Store, run_id: &str) -> Result<RunRecord> {
    store
        .run(run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} is missing"))
}

pub(super) async fn stored_attempt(store: &dyn Store, key: &AttemptKey) -> Result<AttemptRecord> {
    store
        .attempts(&key.run_id)
        .await?
        .into_iter()
        .find(|attempt| &attempt.key == key)
        .ok_or_else(|| anyhow::anyhow!("attempt {key:?} is missing"))
}

pub(super) fn ids(runs: &[RunRecord]) -> Vec<String> {
    runs.iter().map(|run| run.id.clone()).collect()
}

pub(super) const ALL_RUN_STATUSES: [RunStatus; 5] = [
    RunStatus::Queued,
    RunStatus::Running,
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Cancelled,
];

pub(super) const ALL_ATTEMPT_STATUSES: [AttemptStatus; 7] = [
    AttemptStatus::Pending,
    AttemptStatus::Queued,
    AttemptStatus::Running,
    AttemptStatus::Succeeded,
    AttemptStatus::Failed,
    AttemptStatus::Skipped,
    AttemptStatus::Cancelled,
];

/// A SQLite store in a fresh file, deleted (with its WAL) when dropped.
pub(super) struct TempDatabase {
    path: PathBuf,
    pub(super) store: SqliteStore,
}

impl TempDatabase {
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(super) async fn create() -> Result<TempDatabase> {
        let name = format!("enrichflow-store-{}.db", uuid::Uuid::now_v7());
        let path = std::env::temp_dir().join(name);
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await?;
        Ok(TempDatabase { path, store })
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The admin URL of the Postgres server tests may create databases on; `.ci/run` sets it.
const POSTGRES_URL_VARIABLE: &str = "ENRICHFLOW_TEST_DATABASE_URL";

/// A fresh Postgres database of one test, created through the admin URL and dropped (with
/// `FORCE`, in case a connection lingers) by `run_check`, so tests run in parallel and leave
/// nothing behind.
pub(super) struct PostgresDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database: the admin URL with its database name replaced.
    url: String,
}

impl PostgresDatabase {
    /// A new empty database, or `None` (saying so) when no server is configured.
    pub(super) async fn create() -> Result<Option<PostgresDatabase>> {
        let Ok(admin_url) = std::env::var(POSTGRES_URL_VARIABLE) else {
            println!("skipped: {POSTGRES_URL_VARIABLE} is not set");
            return Ok(None);
        };
        let name = format!("enrichflow_test_{}", uuid::Uuid::now_v7().simple());
        let url = database_url(&admin_url, &name)?;
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {POSTGRES_URL_VARIABLE}"))?;
        // The name is ours (a prefix and hex digits), so it is safe to splice into SQL.
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Some(PostgresDatabase {
            admin_url,
            name,
            url,
        }))
    }

    /// Runs `check` on a store connected to this database, closes the store, drops the
    /// database, and only then reports the check's panic or error.
    pub(super) async fn run_check<F>(self, check: F) -> Result<()>
    where
        F: AsyncFnOnce(&PostgresStore) -> Result<()>,
    {
        let outcome = match PostgresStore::connect(&self.url).await {
            Ok(store) => {
                let outcome = AssertUnwindSafe(check(&store)).catch_unwind().await;
                store.close().await;
                outcome
            }
            Err(error) => Ok(Err(error.into())),
        };
        let dropped = self.drop_database().await;
        match outcome {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(result) => result.and(dropped),
        }
    }

    async fn drop_database(&self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        let name = &self.name;
        sqlx::raw_sql(AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

/// `admin_url` with its database (the path) replaced by `database`, keeping any `?parameters`.
pub(super) fn database_url(admin_url: &str, database: &str) -> Result<String> {
    let (base, parameters) = match admin_url.split_once('?') {
        Some((base, parameters)) => (base, Some(parameters)),
        None => (admin_url, None),
    };
    let authority = base
        .find("://")
        .map(|scheme_end| scheme_end + 3)
        .with_context(|| format!("{POSTGRES_URL_VARIABLE} is not a URL"))?;
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |slash| authority + slash);
    let mut url = format!("{}/{database}", &base[..path]);
    if let Some(parameters) = parameters {
        url.push('?');
        url.push_str(parameters);
    }
    Ok(url)
}

/// One test per store for each named check: `store_checks!(a, b)` in a module that defines the
/// checks `a` and `b` adds `sqlite::a`, `sqlite::b`, `postgres::a` and `postgres::b`.
macro_rules! store_checks {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    let database = $crate::store::tests::TempDatabase::create().await?;
                    super::$check(&database.store).await?;
                    database.store.close().await;
                    Ok(())
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    let database = $crate::store::tests::PostgresDatabase::create().await?;
                    let Some(database) = database else {
                        return Ok(());
                    };
                    database
                        .run_check(async |store: &$crate::store::PostgresStore| {
                            super::$check(store).await
                        })
                        .await
                }
            )*
        }
    };
}

pub(super) use store_checks;

#[tokio::test]
async fn sqlite_memory_urls_give_private_databases() -> Result<()> {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let first = SqliteStore::connect(url).await?;
        let second = SqliteStore::connect(url).await?;
        first.create_run(&run(1, "w", RunStatus::Queued)).await?;
        // The single connection keeps the database alive between statements.
        assert!(first.run(&run_id(1)).await?.is_some(), "{url}");
        assert_eq!(second.run(&run_id(1)).await?, None, "{url}");
        first.migrate().await?;
    }
    Ok(())
}

#[tokio::test]
async fn sqlite_file_persists_across_connections() -> Result<()> {
    let database = TempDatabase::create().await?;
    let url = format!("sqlite://{}", database.path.display());
    database
        .store
        .create_run(&run(1, "w", RunStatus::Queued))
        .await?;
    let mut wal = database.path.clone().into_os_string();
    wal.push("-wal");
    ensure!(PathBuf::from(wal).exists(), "the database is in WAL mode");
    let reopened = SqliteStore::connect(&url).await?;
    reopened.migrate().await?;
    assert_eq!(
        reopened.run(&run_id(1)).await?,
        database.store.run(&run_id(1)).await?
    );
    reopened.close().await;
    database.store.close().await;
    Ok(())
}

#[tokio::test]
async fn sqlite_refuses_other_urls_without_echoing_credentials() {
    for url in [
        "postgres://user:secret@localhost/db",
        "enrichflow.db",
        "mysql://h/db",
    ] {
        let error = SqliteStore::connect(url).await.map(|_| ()).expect_err(url);
        let message = error.to_string();
        assert!(
            matches!(error, super::Error::UnsupportedUrl(_)),
            "{url}: {message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }
}

#[test]
pub(super) fn database_url_replaces_only_the_database() -> Result<()> {
    let cases = [
        (
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/t",
        ),
        (
            "postgresql://u:p@h/db?sslmode=disable",
            "postgresql://u:p@h/t?sslmode=disable",
        ),
        ("postgres://h:5432", "postgres://h:5432/t"),
        ("postgres://h?user=u", "postgres://h/t?user=u"),
    ];
    for (admin_url, expected) in cases {
        assert_eq!(database_url(admin_url, "t")?, expected);
    }
    Ok(())
}

#[tokio::test]
async fn postgres_persists_across_connections() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    let url = database.url.clone();
    database
        .run_check(async |store: &PostgresStore| {
            // The URL-chosen store is the same database: what one writes the other reads.
            let chosen = super::connect(&url).await?;
            chosen.create_run(&run(1, "w", RunStatus::Queued)).await?;
            store.migrate().await?;
            assert_eq!(
                store.run(&run_id(1)).await?,
                Some(run(1, "w", RunStatus::Queued))
            );
            Ok(())
        })
        .await
}

#[tokio::test]
async fn postgres_pool_size_bounds_the_connections_of_a_process() -> Result<()> {
    let Some(database) = PostgresDatabase::create().await? else {
        return Ok(());
    };
    let url = database.url.clone();
    database
        .run_check(async |_: &PostgresStore| {
            let pool = super::PoolOptions {
                max_connections: 2,
                ..super::PoolOptions::default()
            };
            let small = PostgresStore::connect_with(&url, pool).await?;
            // Five queries at once: the pool opens what it may and the rest wait their turn.
            let queries = (0..5).map(|_| sqlx::query("SELECT pg_sleep(0.05)").execute(&small.pool));
            futures::future::try_join_all(queries).await?;
            assert_eq!(small.pool.size(), 2);
            small.close().await;
            Ok(())
        })
        .await
}
