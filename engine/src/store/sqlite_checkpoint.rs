//! Checkpoints of the SQLite WAL, off the writer's path.
//!
//! Left to itself, SQLite checkpoints in the connection whose commit takes the WAL past 1,000
//! pages: that commit, and every write queued behind it, then waits while the WAL is copied
//! into the database file and the file is flushed. Under load that is a stall every fraction
//! of a second, and it is what the slowest 1 % of runs wait on. So the writer's automatic
//! checkpoint is pushed far out ([`WRITER_AUTOCHECKPOINT`], a backstop only) and this task
//! checkpoints from a reader connection instead, `PASSIVE`: it never waits for the writer or
//! the readers, nor makes them wait, and the writer starts the WAL over once it is all copied.

use std::sync::Weak;
use std::time::Duration;

use sqlx::SqlitePool;

/// How often the WAL is copied into the database.
const EVERY: Duration = Duration::from_millis(250);

/// The writer's own automatic checkpoint, in WAL pages (4 KiB): only if this task falls far
/// behind (or is not running) does a commit checkpoint, so the WAL stays bounded all the same.
pub(super) const WRITER_AUTOCHECKPOINT: &str = "10000";

/// Checkpoints the WAL of `readers`' database every [`EVERY`] until the store is dropped (no
/// `alive` left) or closed.
pub(super) fn start(readers: SqlitePool, alive: Weak<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 || readers.is_closed() {
                return;
            }
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&readers)
                .await
            {
                tracing::warn!(%error, "checkpointing the SQLite WAL failed; trying again");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::store::tests::{TempDatabase, run};
    use crate::store::{RunStatus, Runs};

    /// The WAL reaches the database file without any commit checkpointing: the writer's own
    /// threshold (40 MB) is far above what is written here.
    #[tokio::test]
    async fn the_wal_is_copied_into_the_database_in_the_background() -> anyhow::Result<()> {
        let database = TempDatabase::create().await?;
        let before = std::fs::metadata(database.path())?.len();
        let filler = "x".repeat(4096);
        for n in 0..500 {
            let mut record = run(n, "w", RunStatus::Queued);
            record.trigger = json!({ "type": "manual", "body": { "filler": filler } }).into();
            database.store.create_run(&record).await?;
        }
        let written = 500 * 4096;
        for _ in 0..40 {
            if std::fs::metadata(database.path())?.len() >= before + written {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::bail!("the database file did not grow within 4 s: no checkpoint ran")
    }
}
