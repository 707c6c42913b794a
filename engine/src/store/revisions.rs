//! Workflow revisions: the exact YAML a run was started from, kept under its content hash so
//! a run is advanced by the revision it started with. Written once for both stores.

use async_trait::async_trait;
use chrono::Utc;

use super::dialect::{shared, translated};
use super::{PostgresStore, Result, SqliteStore};

/// The YAML of every revision a run was started from.
#[async_trait]
pub trait Revisions {
    /// Stores a workflow's exact YAML under its content hash; storing it again is a no-op.
    async fn save_revision(&self, workflow_id: &str, hash: &str, source: &str) -> Result<()>;
    /// The YAML text stored under `hash`.
    async fn revision(&self, hash: &str) -> Result<Option<String>>;
}

const SAVE: &str = "INSERT INTO workflow_revisions (hash, workflow_id, source, created_at)
     VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING";
const SOURCE: &str = "SELECT source FROM workflow_revisions WHERE hash = ?";

/// `Revisions` for one store, as [`runs`](super::runs) expands `Runs`.
macro_rules! revisions {
    (store: $store:ident, dialect: $dialect:ident, writes: $writes:ident $(,)?) => {
        const _: () = {
            use super::$dialect::{Submit as _, timestamp};

            #[async_trait]
            impl Revisions for $store {
                async fn save_revision(
                    &self,
                    workflow_id: &str,
                    hash: &str,
                    source: &str,
                ) -> Result<()> {
                    shared!($dialect, SAVE)
                        .bind(hash)
                        .bind(workflow_id)
                        .bind(source)
                        .bind(timestamp(Utc::now()))
                        .submit(&self.$writes)
                        .await?;
                    Ok(())
                }

                async fn revision(&self, hash: &str) -> Result<Option<String>> {
                    Ok(sqlx::query_scalar(translated!($dialect, SOURCE))
                        .bind(hash)
                        .fetch_optional(&self.pool)
                        .await?)
                }
            }
        };
    };
}

revisions! { store: SqliteStore, dialect: sqlite, writes: writes }
revisions! { store: PostgresStore, dialect: postgres, writes: pool }
