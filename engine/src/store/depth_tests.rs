//! Stored JSON at the edges, on both stores: rows nested deeper than serde_json reads by default
//! are read, rows that cannot be decoded fail alone (never a list), and values nested deeper
//! than the store keeps are never written. Poisoned rows are written with SQL, as a bug or an
//! older version could have left them.

use anyhow::{Result, ensure};
use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;

use super::json::{MAX_DEPTH, depth, text_depth};
use super::tests::{attempt, key, outcome, run, run_id, store_checks};
use super::{
    AttemptStatus, Error, Json, Listed, PostgresStore, RunQuery, RunStatus, SqliteStore, Store,
};

/// Writes JSON text into a column behind the store's back.
#[async_trait]
trait Poison: Store {
    /// Sets `column` of the rows of `table` whose `id_column` is `run_id` to `text`.
    async fn poison(&self, table: &str, id_column: &str, column: &str, run_id: &str, text: &str);
}

#[async_trait]
impl Poison for SqliteStore {
    async fn poison(&self, table: &str, id_column: &str, column: &str, run_id: &str, text: &str) {
        let sql = format!(r#"UPDATE {table} SET "{column}" = ? WHERE {id_column} = ?"#);
        sqlx::query(AssertSqlSafe(sql))
            .bind(text)
            .bind(run_id)
            .execute(&mut *self.write_connection().await.expect("the writer"))
            .await
            .expect("poisoned");
    }
}

#[async_trait]
impl Poison for PostgresStore {
    async fn poison(&self, table: &str, id_column: &str, column: &str, run_id: &str, text: &str) {
        let sql = format!(r#"UPDATE {table} SET "{column}" = $1::json WHERE {id_column} = $2"#);
        sqlx::query(AssertSqlSafe(sql))
            .bind(text)
            .bind(run_id)
            .execute(&self.pool)
            .await
            .expect("poisoned");
    }
}

/// `levels` nested arrays around `1`.
fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

/// The rows of the issue: a 127-deep webhook body inside the trigger wrapper, and a 126-deep
/// body inside a node's stored input, both 128 deep, one past serde_json's default limit.
async fn deep_rows_of_older_versions_are_read(store: &impl Poison) -> Result<()> {
    let poisoned = run_id(1);
    store.create_run(&run(1, "w", RunStatus::Running)).await?;
    store
        .insert_attempt(&attempt(key(1, "a", 1), AttemptStatus::Running))
        .await?;
    let trigger = format!(r#"{{"type": "webhook", "body": {}}}"#, nested(127));
    let input = format!(r#"{{"with": {{"body": {}}}}}"#, nested(126));
    store
        .poison("runs", "id", "trigger", &poisoned, &trigger)
        .await;
    store
        .poison("node_attempts", "run_id", "input", &poisoned, &input)
        .await;

    let stored = store.run(&poisoned).await?.expect("stored");
    assert_eq!(depth(&stored.trigger.value()?), 128);
    let attempts = store.attempts(&poisoned).await?;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0]
            .input
            .as_ref()
            .map(|input| text_depth(input.text())),
        Some(128)
    );
    let listed = store.list_run_summaries(&RunQuery::default()).await?;
    ensure!(matches!(&listed[..], [Listed::Run(run)] if run.id == poisoned));
    ensure!(matches!(
        &store.unfinished_runs().await?[..],
        [Listed::Run(_)]
    ));
    Ok(())
}

/// A run whose trigger is deeper than the store reads, one whose `error` is not a readable
/// JSON value and an attempt whose input holds a number out of range: each read of that run
/// fails, naming it, while lists and the other runs are fine.
async fn undecodable_rows_fail_alone(store: &impl Poison) -> Result<()> {
    for n in 1..=4 {
        store.create_run(&run(n, "w", RunStatus::Running)).await?;
        store
            .insert_attempt(&attempt(key(n, "a", 1), AttemptStatus::Queued))
            .await?;
    }
    let (too_deep, bad_error, bad_input) = (run_id(2), run_id(3), run_id(4));
    store
        .poison("runs", "id", "trigger", &too_deep, &nested(600))
        .await;
    store
        .poison("runs", "id", "error", &bad_error, r#"{"kind": 1e400}"#)
        .await;
    store
        .poison("node_attempts", "run_id", "input", &bad_input, "[1e400]")
        .await;

    // A trigger is read as text and parsed where it is used: then it fails.
    let stored = store.run(&too_deep).await?.expect("stored");
    let error = stored.trigger.value().expect_err("too deep to read");
    ensure!(error.is_unreadable(), "{error}");
    let message = error.to_string();
    ensure!(
        message.contains("trigger: JSON nested 600 levels"),
        "{message}"
    );
    let error = store.attempts(&bad_input).await.expect_err("out of range");
    ensure!(error.is_unreadable(), "{error}");
    ensure!(
        error
            .to_string()
            .contains(&format!("attempt of run {bad_input}: input: ")),
        "{error}"
    );
    ensure!(
        store
            .run(&bad_error)
            .await
            .is_err_and(|e| e.is_unreadable())
    );
    assert_eq!(
        store.run(&run_id(1)).await?.map(|run| run.id),
        Some(run_id(1))
    );

    // Lists leave the trigger and the inputs alone: only the unreadable `error` shows.
    let listed = store.list_run_summaries(&RunQuery::default()).await?;
    let ids: Vec<(&str, bool)> = listed
        .iter()
        .map(|item| (item.id(), matches!(item, Listed::Unreadable { .. })))
        .collect();
    let expected = [
        (bad_input.as_str(), false),
        (bad_error.as_str(), true),
        (too_deep.as_str(), false),
    ];
    assert_eq!(&ids[..3], &expected);
    let unfinished = store.unfinished_runs().await?;
    assert_eq!(unfinished.len(), 4);
    ensure!(
        matches!(&unfinished[2], Listed::Unreadable { id, error }
            if *id == bad_error && error.contains("error: ")),
        "{unfinished:?}"
    );
    // Failing such a run needs none of its unreadable columns.
    let failed = super::ErrorInfo::new("store", "unreadable");
    for id in [&too_deep, &bad_input] {
        store.cancel_open_attempts(id, super::tests::at(5)).await?;
        let finished = store
            .finish_run(
                id,
                RunStatus::Failed,
                None,
                Some(&failed),
                super::tests::at(5),
            )
            .await?;
        ensure!(finished, "{id} failed");
    }
    Ok(())
}

/// Nothing nested deeper than [`MAX_DEPTH`] is written, by any write.
async fn values_too_deep_are_not_written(store: &impl Poison) -> Result<()> {
    let deep: Value = serde_json::from_str(&nested(MAX_DEPTH + 1))?;
    let fits: Value = serde_json::from_str(&nested(MAX_DEPTH))?;
    let refused = |result: super::Result<bool>| match result {
        Err(Error::TooDeep { depth, limit, .. }) => depth > MAX_DEPTH && limit == MAX_DEPTH,
        _ => false,
    };

    let mut too_deep = run(1, "w", RunStatus::Queued);
    too_deep.trigger = json!({ "type": "webhook", "body": deep.clone() }).into();
    ensure!(refused(store.create_run(&too_deep).await.map(|()| true)));
    assert_eq!(store.run(&run_id(1)).await?, None, "nothing written");
    ensure!(refused(
        store
            .create_run_once(&too_deep, super::tests::at(0))
            .await
            .map(|_| true)
    ));

    store.create_run(&run(2, "w", RunStatus::Running)).await?;
    let key = key(2, "a", 1);
    store
        .insert_attempt(&attempt(key.clone(), AttemptStatus::Queued))
        .await?;
    let mut deep_attempt = attempt(super::tests::key(2, "b", 1), AttemptStatus::Queued);
    deep_attempt.output = Some(Json::from(&deep));
    ensure!(refused(store.insert_attempt(&deep_attempt).await));
    let now = super::tests::at(3);
    ensure!(refused(
        store
            .start_attempt(&key, Some(&Json::from(&deep)), "w1", now)
            .await
    ));
    ensure!(
        store
            .start_attempt(&key, Some(&Json::from(&fits)), "w1", now)
            .await?
    );
    let deep_outcome = outcome(AttemptStatus::Succeeded, Some(deep.clone()));
    ensure!(refused(store.finish_attempt(&key, &deep_outcome).await));
    let stored = store.attempts(&run_id(2)).await?;
    assert_eq!(stored.len(), 1, "the deep attempt was not inserted");
    assert_eq!(stored[0].status, AttemptStatus::Running, "unchanged");
    assert_eq!(
        stored[0]
            .input
            .as_ref()
            .map(|input| text_depth(input.text())),
        Some(MAX_DEPTH)
    );
    let finish = store
        .finish_run(&run_id(2), RunStatus::Succeeded, Some(&deep), None, now)
        .await;
    ensure!(refused(finish));
    assert_eq!(
        store.run(&run_id(2)).await?.map(|run| run.status),
        Some(RunStatus::Running)
    );
    Ok(())
}

store_checks!(
    deep_rows_of_older_versions_are_read,
    undecodable_rows_fail_alone,
    values_too_deep_are_not_written,
);
