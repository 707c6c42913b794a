//! The cache nodes keep provider answers in (`enrichflow_nodes::Cache`), on both stores: one
//! row per `(namespace, key)` with an expiry. Expired rows are never returned; each write also
//! deletes a few of them, so the table stays as large as what is alive.
//!
//! The statements are written once (see [`dialect`]) and so is the code, in a
//! `macro_rules!` expanded for each store, as in [`leads_sql`](super::leads_sql): the stores
//! share the text of the code but not its sqlx types. Only the purge differs per database.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use enrichflow_nodes::{Cache, ServiceError};
use serde_json::Value;

use super::dialect::translated;
use super::{PostgresStore, Result, SqliteStore, postgres, sqlite};

/// How many expired rows one write deletes: enough to outpace the writes that expire, small
/// enough to keep a write cheap.
const PURGE_BATCH: i64 = 100;

/// Longer lifetimes are cut to this, so the expiry stays a representable instant (and, on
/// SQLite, four-digit-year text that compares in time order).
const MAX_TTL: TimeDelta = TimeDelta::days(365 * 100);

/// The live value as text: a `json` column on Postgres, `TEXT` on SQLite.
const GET: &str = "SELECT CAST(value AS TEXT) FROM cache_entries
     WHERE namespace = ? AND key = ? AND expires_at > ?";

const PUT: &str = "INSERT INTO cache_entries (namespace, key, value, expires_at)
     VALUES (?, ?, ?::json, ?)
     ON CONFLICT (namespace, key)
     DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";

/// Deletes up to a batch of expired rows; SQLite has one writer, so nothing contends.
const SQLITE_PURGE: &str = "DELETE FROM cache_entries WHERE rowid IN
     (SELECT rowid FROM cache_entries WHERE expires_at <= ? LIMIT ?)";

/// Deletes up to a batch of expired rows. SKIP LOCKED: replicas purging at the same moment take
/// different rows instead of waiting for, or deadlocking on, each other's.
const POSTGRES_PURGE: &str = "DELETE FROM cache_entries WHERE (namespace, key) IN
     (SELECT namespace, key FROM cache_entries WHERE expires_at <= ?
      LIMIT ? FOR UPDATE SKIP LOCKED)";

fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    let ttl = TimeDelta::from_std(ttl).unwrap_or(MAX_TTL).min(MAX_TTL);
    now + ttl
}

fn parse(text: Option<String>) -> Result<Option<Value>> {
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|error| super::Error::Corrupt(format!("cache: {error}")))
    })
    .transpose()
}

fn service_error(error: impl Into<super::Error>) -> ServiceError {
    ServiceError(format!("cache: {}", error.into()))
}

/// `Cache` for one store: `dialect` names the store's module (`timestamp`) and its
/// [`dialect`] function; reads run on `read_pool`, writes on the store's `write_connection()`.
macro_rules! cache {
    (
        store: $store:ident,
        dialect: $dialect:ident,
        read_pool: $read_pool:ident,
        purge: $purge:ident $(,)?
    ) => {
        #[async_trait]
        impl Cache for $store {
            async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, ServiceError> {
                let text: Option<String> = sqlx::query_scalar(translated!($dialect, GET))
                    .bind(namespace)
                    .bind(key)
                    .bind($dialect::timestamp(Utc::now()))
                    .fetch_optional(&self.$read_pool)
                    .await
                    .map_err(service_error)?;
                parse(text).map_err(service_error)
            }

            async fn put(
                &self,
                namespace: &str,
                key: &str,
                value: &Value,
                ttl: Duration,
            ) -> Result<(), ServiceError> {
                let now = Utc::now();
                // Serialised before the writer is borrowed: other writes wait while it is.
                let text = value.to_string();
                let mut writer = self.write_connection().await.map_err(service_error)?;
                sqlx::query(translated!($dialect, PUT))
                    .bind(namespace)
                    .bind(key)
                    .bind(text)
                    .bind($dialect::timestamp(expiry(now, ttl)))
                    .execute(&mut *writer)
                    .await
                    .map_err(service_error)?;
                sqlx::query(translated!($dialect, $purge))
                    .bind($dialect::timestamp(now))
                    .bind(PURGE_BATCH)
                    .execute(&mut *writer)
                    .await
                    .map_err(service_error)?;
                Ok(())
            }
        }
    };
}

cache! {
    store: SqliteStore,
    dialect: sqlite,
    read_pool: pool,
    purge: SQLITE_PURGE,
}

cache! {
    store: PostgresStore,
    dialect: postgres,
    read_pool: pool,
    purge: POSTGRES_PURGE,
}
