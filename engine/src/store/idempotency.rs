//! `create_run_once`, written once for both stores: each store supplies three statements, and
//! the unique index on `(workflow_id, idempotency_key)` makes the decision, never a read taken
//! before the insert, so two processes inserting one key at once store exactly one run.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{AttemptRecord, Created, Error, Result, RunRecord};

/// How often the insert is tried. A second try is needed when the key's holder was stale (or
/// another process released it between our insert and our read); more mean other processes keep
/// taking and releasing the key, which only clocks far apart could cause.
const TRIES: usize = 3;

/// The statements `create_run_once` is made of.
#[async_trait]
pub(super) trait KeyedRuns {
    /// Inserts the run, and with it `first`, unless its (workflow, key) is taken; whether it
    /// was inserted. A primary key conflict is still an error.
    async fn insert_unless_key_taken(
        &self,
        run: &RunRecord,
        first: &[AttemptRecord],
    ) -> Result<bool>;
    /// The run of `workflow_id` that holds `key`, if any.
    async fn key_holder(&self, workflow_id: &str, key: &str) -> Result<Option<RunRecord>>;
    /// Clears the key of `run_id`.
    async fn release_key(&self, run_id: &str) -> Result<()>;
}

/// See [`super::Runs::create_run_then`].
pub(super) async fn create_run_then(
    store: &(impl KeyedRuns + Sync),
    run: &RunRecord,
    fresh_since: DateTime<Utc>,
    first: &[AttemptRecord],
) -> Result<Created> {
    let Some(key) = run.idempotency_key.as_deref() else {
        store.insert_unless_key_taken(run, first).await?;
        return Ok(Created::New);
    };
    for _ in 0..TRIES {
        if store.insert_unless_key_taken(run, first).await? {
            return Ok(Created::New);
        }
        match store.key_holder(&run.workflow_id, key).await? {
            Some(holder) if holder.created_at >= fresh_since => {
                return Ok(Created::Existing(Box::new(holder)));
            }
            // Released by id, so a process that raced us here cannot take the key from a run
            // that has replaced the stale one meanwhile.
            Some(stale) => store.release_key(&stale.id).await?,
            // Released by another process since our insert: try again.
            None => {}
        }
    }
    Err(Error::KeyContended(key.to_owned()))
}
