//! The progress contract as checks over `&dyn Store`, run by `tests.rs`'s `store_checks!`:
//! against a fresh SQLite file, and against a fresh Postgres database when
//! `ENRICHFLOW_TEST_DATABASE_URL` is set.

use anyhow::Result;

use super::tests::{attempt, key, run, store_checks};
use super::{AttemptKey, AttemptStatus, Progress, RunStatus, Store};

async fn running_attempt(store: &dyn Store, n: u128, node_id: &str) -> Result<AttemptKey> {
    let key = key(n, node_id, 1);
    store
        .insert_attempt(&attempt(key.clone(), AttemptStatus::Running))
        .await?;
    Ok(key)
}

pub(super) async fn progress_is_replaced_and_kept_per_run(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    store.create_run(&run(2, "w", RunStatus::Running)).await?;
    let each = running_attempt(store, 1, "each").await?;
    let other = running_attempt(store, 2, "each").await?;
    assert!(store.progress(&each.run_id).await?.is_empty());

    let total = 1_000_000;
    store
        .set_progress(&each, Progress { done: 10, total })
        .await?;
    store
        .set_progress(&each, Progress { done: 1234, total })
        .await?;
    store
        .set_progress(&other, Progress { done: 1, total: 2 })
        .await?;
    assert_eq!(
        store.progress(&each.run_id).await?,
        vec![(each.clone(), Progress { done: 1234, total })]
    );
    assert_eq!(
        store.progress(&other.run_id).await?,
        vec![(other, Progress { done: 1, total: 2 })]
    );
    Ok(())
}

pub(super) async fn progress_needs_its_attempt(store: &dyn Store) -> Result<()> {
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    let missing = key(1, "never", 1);
    let written = store
        .set_progress(&missing, Progress { done: 1, total: 2 })
        .await;
    assert!(
        written.is_err(),
        "progress of an attempt that does not exist"
    );
    Ok(())
}

store_checks!(
    progress_is_replaced_and_kept_per_run,
    progress_needs_its_attempt,
);
