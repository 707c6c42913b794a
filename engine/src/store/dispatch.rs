//! What keeps attempts moving when a process or a message is lost, written once for both
//! stores in the shape of [`runs`](super::runs): the outbox (which queued attempts the broker
//! confirmed), leases (heartbeats and their takeover), and the sweep's questions (overdue and
//! stalled runs). Nothing here differs between the stores.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{shared, translated};
use super::rows;
use super::{AttemptKey, PostgresStore, Result, SqliteStore};

/// The outbox, the leases and the sweep's reads.
#[async_trait]
pub trait Dispatch {
    /// Records that the broker confirmed the messages of these queued attempts (the outbox).
    async fn mark_dispatched(&self, keys: &[AttemptKey]) -> Result<()>;
    /// Queued attempts whose message the broker never confirmed, queued before `before`.
    async fn undispatched_attempts(&self, before: DateTime<Utc>) -> Result<Vec<AttemptKey>>;
    /// Running attempts whose heartbeat is older than `stale_before`: their lease is renewed to
    /// `now` for whoever is about to take them, and they are returned to be dispatched again.
    /// One statement, so two servers never both claim one attempt.
    async fn claim_stale_attempts(
        &self,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AttemptKey>>;
    /// Renews the lease of every attempt `worker` is running; returns how many.
    async fn heartbeat(&self, worker: &str, now: DateTime<Utc>) -> Result<u64>;
    /// Ids of running runs whose deadline has passed.
    async fn overdue_runs(&self, now: DateTime<Utc>) -> Result<Vec<String>>;
    /// Ids of running runs with no open attempt and nothing finished since `quiet_before`: the
    /// process that should have advanced them lost its database at that moment (at most 100).
    async fn stalled_runs(&self, quiet_before: DateTime<Utc>) -> Result<Vec<String>>;
}

/// Keys one `UPDATE` marks: three parameters each stay far below SQLite's 32,766 and
/// Postgres' 65,535.
const KEYS_PER_MARK: usize = 1_000;

const UNDISPATCHED: &str = "SELECT run_id, node_id, attempt FROM node_attempts
     WHERE status = 'queued' AND NOT dispatched AND COALESCE(not_before, created_at) < ?
     ORDER BY created_at LIMIT 1000";
const CLAIM_STALE: &str = "UPDATE node_attempts SET heartbeat_at = ?
     WHERE status = 'running' AND heartbeat_at < ?
     RETURNING run_id, node_id, attempt";
const HEARTBEAT: &str =
    "UPDATE node_attempts SET heartbeat_at = ? WHERE status = 'running' AND worker = ?";
const OVERDUE: &str =
    "SELECT id FROM runs WHERE status = 'running' AND deadline_at <= ? ORDER BY id";
const STALLED: &str = "SELECT r.id FROM runs r
     WHERE r.status = 'running'
       AND NOT EXISTS (SELECT 1 FROM node_attempts a WHERE a.run_id = r.id
                       AND a.status IN ('pending', 'queued', 'running'))
       AND COALESCE((SELECT max(a.finished_at) FROM node_attempts a
                     WHERE a.run_id = r.id), r.started_at) < ?
     ORDER BY r.id LIMIT 100";

/// `UPDATE … SET dispatched = true` for `n` keys.
fn mark_sql(n: usize) -> String {
    let tuples = vec!["(?, ?, ?)"; n].join(", ");
    format!(
        "UPDATE node_attempts SET dispatched = true WHERE (run_id, node_id, attempt) IN \
         (VALUES {tuples})"
    )
}

/// `Dispatch` for one store, as [`runs`](super::runs) expands `Runs`.
macro_rules! dispatch {
    (
        store: $store:ident,
        dialect: $dialect:ident,
        writes: $writes:ident $(,)?
    ) => {
        const _: () = {
            use super::$dialect::{Columns, Submit as _, built, timestamp};

            #[async_trait]
            impl Dispatch for $store {
                async fn mark_dispatched(&self, keys: &[AttemptKey]) -> Result<()> {
                    for chunk in keys.chunks(KEYS_PER_MARK) {
                        let mut update = built(&mark_sql(chunk.len()));
                        for key in chunk {
                            update = update
                                .bind(&key.run_id)
                                .bind(&key.node_id)
                                .bind(i64::from(key.attempt));
                        }
                        update.submit(&self.$writes).await?;
                    }
                    Ok(())
                }

                async fn undispatched_attempts(
                    &self,
                    before: DateTime<Utc>,
                ) -> Result<Vec<AttemptKey>> {
                    let rows = sqlx::query(translated!($dialect, UNDISPATCHED))
                        .bind(timestamp(before))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|row| rows::attempt_key(&Columns(row)))
                        .collect()
                }

                async fn claim_stale_attempts(
                    &self,
                    stale_before: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<Vec<AttemptKey>> {
                    shared!($dialect, CLAIM_STALE)
                        .bind(timestamp(now))
                        .bind(timestamp(stale_before))
                        .submit_fetch_keys(&self.$writes)
                        .await
                }

                async fn heartbeat(&self, worker: &str, now: DateTime<Utc>) -> Result<u64> {
                    shared!($dialect, HEARTBEAT)
                        .bind(timestamp(now))
                        .bind(worker)
                        .submit(&self.$writes)
                        .await
                }

                async fn overdue_runs(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
                    Ok(sqlx::query_scalar(translated!($dialect, OVERDUE))
                        .bind(timestamp(now))
                        .fetch_all(&self.pool)
                        .await?)
                }

                async fn stalled_runs(&self, quiet_before: DateTime<Utc>) -> Result<Vec<String>> {
                    Ok(sqlx::query_scalar(translated!($dialect, STALLED))
                        .bind(timestamp(quiet_before))
                        .fetch_all(&self.pool)
                        .await?)
                }
            }
        };
    };
}

dispatch! {
    store: SqliteStore,
    dialect: sqlite,
    writes: writes,
}

dispatch! {
    store: PostgresStore,
    dialect: postgres,
    writes: pool,
}
