//! How far running `foreach` attempts are: items done of their total, one row per attempt in
//! `attempt_progress`. The process running an attempt writes it about once a second (see
//! [`crate::foreach`]); the run JSON reads it, so it shows in whichever process answers the API.
//!
//! The statements and the code are written once for both stores, as in [`cache`](super::cache).

use async_trait::async_trait;

use super::{AttemptKey, PostgresStore, Result, SqliteStore, dialect};

/// Items done of the total of one `foreach` attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// The progress rows of the store; a supertrait of [`Store`](super::Store).
#[async_trait]
pub trait ProgressStore: Send + Sync {
    /// Records `progress` for the attempt, replacing what was recorded before. The attempt row
    /// must exist.
    async fn set_progress(&self, key: &AttemptKey, progress: Progress) -> Result<()>;
    /// Every recorded progress of the run's attempts, running or not.
    async fn progress(&self, run_id: &str) -> Result<Vec<(AttemptKey, Progress)>>;
}

const SET: &str = "INSERT INTO attempt_progress (run_id, node_id, attempt, done, total)
     VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (run_id, node_id, attempt)
     DO UPDATE SET done = excluded.done, total = excluded.total";

/// The attempt number widened, so both databases answer a 64-bit integer.
const OF_RUN: &str = "SELECT node_id, CAST(attempt AS BIGINT), done, total FROM attempt_progress
     WHERE run_id = ? ORDER BY node_id, attempt";

/// A count as the database stores it (a signed 64-bit integer); no list is that long.
fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A row back into a key and a progress; the table's checks keep the counts non-negative.
fn decoded(
    run_id: &str,
    (node_id, attempt, done, total): (String, i64, i64, i64),
) -> Result<(AttemptKey, Progress)> {
    let corrupt = || super::Error::Corrupt(format!("attempt_progress of run {run_id}"));
    let key = AttemptKey {
        run_id: run_id.to_owned(),
        node_id,
        attempt: u32::try_from(attempt).map_err(|_| corrupt())?,
    };
    let progress = Progress {
        done: u64::try_from(done).map_err(|_| corrupt())?,
        total: u64::try_from(total).map_err(|_| corrupt())?,
    };
    Ok((key, progress))
}

/// `ProgressStore` for one store: `dialect` names its [`dialect`] function; writes go to the
/// store's `write_connection()`, reads to `read_pool`.
macro_rules! progress_store {
    (store: $store:ident, dialect: $dialect:ident, read_pool: $read_pool:ident $(,)?) => {
        #[async_trait]
        impl ProgressStore for $store {
            async fn set_progress(&self, key: &AttemptKey, progress: Progress) -> Result<()> {
                let mut writer = self.write_connection().await?;
                sqlx::query(dialect::$dialect(SET))
                    .bind(&key.run_id)
                    .bind(&key.node_id)
                    .bind(i64::from(key.attempt))
                    .bind(stored(progress.done))
                    .bind(stored(progress.total))
                    .execute(&mut *writer)
                    .await?;
                Ok(())
            }

            async fn progress(&self, run_id: &str) -> Result<Vec<(AttemptKey, Progress)>> {
                let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(dialect::$dialect(OF_RUN))
                    .bind(run_id)
                    .fetch_all(&self.$read_pool)
                    .await?;
                rows.into_iter().map(|row| decoded(run_id, row)).collect()
            }
        }
    };
}

progress_store! { store: SqliteStore, dialect: sqlite, read_pool: pool }
progress_store! { store: PostgresStore, dialect: postgres, read_pool: pool }
