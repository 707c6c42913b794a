//! The cache nodes keep provider answers in (`enrichflow_nodes::Cache`), on both stores: one
//! row per `(namespace, key)` with an expiry. Expired rows are never returned; each write also
//! deletes a few of them, so the table stays as large as what is alive.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use enrichflow_nodes::{Cache, ServiceError};
use serde_json::Value;

use super::{PostgresStore, Result, SqliteStore, postgres, sqlite};

/// How many expired rows one write deletes: enough to outpace the writes that expire, small
/// enough to keep a write cheap.
const PURGE_BATCH: i64 = 100;

/// Longer lifetimes are cut to this, so the expiry stays a representable instant (and, on
/// SQLite, four-digit-year text that compares in time order).
const MAX_TTL: TimeDelta = TimeDelta::days(365 * 100);

fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    let ttl = TimeDelta::from_std(ttl).unwrap_or(MAX_TTL).min(MAX_TTL);
    now + ttl
}

fn service_error(error: super::Error) -> ServiceError {
    ServiceError(format!("cache: {error}"))
}

#[async_trait]
impl Cache for SqliteStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, ServiceError> {
        sqlite_get(self, namespace, key)
            .await
            .map_err(service_error)
    }

    async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        ttl: Duration,
    ) -> Result<(), ServiceError> {
        sqlite_put(self, namespace, key, value, ttl)
            .await
            .map_err(service_error)
    }
}

async fn sqlite_get(store: &SqliteStore, namespace: &str, key: &str) -> Result<Option<Value>> {
    let text: Option<String> = sqlx::query_scalar(
        "SELECT value FROM cache_entries WHERE namespace = ? AND key = ? AND expires_at > ?",
    )
    .bind(namespace)
    .bind(key)
    .bind(sqlite::timestamp(Utc::now()))
    .fetch_optional(&store.pool)
    .await?;
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|error| super::Error::Corrupt(format!("cache: {error}")))
    })
    .transpose()
}

async fn sqlite_put(
    store: &SqliteStore,
    namespace: &str,
    key: &str,
    value: &Value,
    ttl: Duration,
) -> Result<()> {
    let now = Utc::now();
    sqlx::query(
        "INSERT INTO cache_entries (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (namespace, key)
         DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
    )
    .bind(namespace)
    .bind(key)
    .bind(value.to_string())
    .bind(sqlite::timestamp(expiry(now, ttl)))
    .execute(&store.writer)
    .await?;
    sqlx::query(
        "DELETE FROM cache_entries WHERE rowid IN
             (SELECT rowid FROM cache_entries WHERE expires_at <= ? LIMIT ?)",
    )
    .bind(sqlite::timestamp(now))
    .bind(PURGE_BATCH)
    .execute(&store.writer)
    .await?;
    Ok(())
}

#[async_trait]
impl Cache for PostgresStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, ServiceError> {
        postgres_get(self, namespace, key)
            .await
            .map_err(service_error)
    }

    async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        ttl: Duration,
    ) -> Result<(), ServiceError> {
        postgres_put(self, namespace, key, value, ttl)
            .await
            .map_err(service_error)
    }
}

async fn postgres_get(store: &PostgresStore, namespace: &str, key: &str) -> Result<Option<Value>> {
    Ok(sqlx::query_scalar(
        "SELECT value FROM cache_entries WHERE namespace = $1 AND key = $2 AND expires_at > $3",
    )
    .bind(namespace)
    .bind(key)
    .bind(postgres::timestamp(Utc::now()))
    .fetch_optional(&store.pool)
    .await?)
}

async fn postgres_put(
    store: &PostgresStore,
    namespace: &str,
    key: &str,
    value: &Value,
    ttl: Duration,
) -> Result<()> {
    let now = Utc::now();
    sqlx::query(
        "INSERT INTO cache_entries (namespace, key, value, expires_at)
         VALUES ($1, $2, $3::json, $4)
         ON CONFLICT (namespace, key)
         DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
    )
    .bind(namespace)
    .bind(key)
    .bind(value.to_string())
    .bind(postgres::timestamp(expiry(now, ttl)))
    .execute(&store.pool)
    .await?;
    // SKIP LOCKED: replicas purging at the same moment take different rows instead of
    // waiting for, or deadlocking on, each other's.
    sqlx::query(
        "DELETE FROM cache_entries WHERE (namespace, key) IN
             (SELECT namespace, key FROM cache_entries WHERE expires_at <= $1
              LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(postgres::timestamp(now))
    .bind(PURGE_BATCH)
    .execute(&store.pool)
    .await?;
    Ok(())
}
