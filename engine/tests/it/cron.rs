//! Cron triggers in the real server: a schedule fires runs with `trigger.scheduled_at` and
//! `trigger.input` in scope.

use std::collections::BTreeMap;
use std::time::Duration;

use enrichflow::store::{PostgresStore, RunQuery, RunRecord, Runs};
use serde_json::Value;

use crate::process::{ServeProcess, remove_database, sqlite_url, temp_database};

#[tokio::test]
async fn a_cron_trigger_starts_runs_on_schedule() {
    crate::support::install_crypto();
    let database = temp_database("cron");
    let server = ServeProcess::start(
        &crate::support::fixtures("cron-live"),
        &sqlite_url(&database),
        "",
    );
    let client = reqwest::Client::new();
    let url = format!(
        "{}/api/v1/runs?workflow=every-second&status=succeeded",
        server.base_url
    );
    // The schedule belongs to the server process; its API is the only thing to wait on.
    let mut runs = Vec::new();
    for _ in 0..100 {
        let page: Value = client
            .get(&url)
            .send()
            .await
            .expect("GET runs")
            .json()
            .await
            .expect("JSON");
        runs = page["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(runs.len() >= 2, "two ticks within 10 s, got {runs:?}");
    // Lists show summaries; each run's trigger and output are in its own JSON.
    let mut details = Vec::new();
    for run in &runs {
        let id = run["id"].as_str().expect("id");
        let detail: Value = client
            .get(format!("{}/api/v1/runs/{id}", server.base_url))
            .send()
            .await
            .expect("GET run")
            .json()
            .await
            .expect("JSON");
        details.push(detail);
    }
    let runs = details;
    let run = &runs[0];
    assert_eq!(run["trigger"]["type"], "cron");
    assert_eq!(run["trigger"]["input"]["source"], "tick");
    assert_eq!(run["output"]["source"], "tick");
    let at = run["output"]["at"]
        .as_str()
        .expect("scheduled_at is a string");
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    let ticks: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["trigger"]["scheduled_at"].as_str())
        .collect();
    let mut unique = ticks.clone();
    unique.dedup();
    assert_eq!(ticks.len(), unique.len(), "a tick fired twice: {ticks:?}");
    drop(server);
    remove_database(&database);
}

/// The workflow of the replica test, in the fixture folder of its own.
const REPLICATED: &str = "replicated-tick";

#[tokio::test]
async fn two_replicas_on_one_postgres_run_each_tick_once() {
    let Some(database) =
        crate::postgres::database("two_replicas_on_one_postgres_run_each_tick_once").await
    else {
        return;
    };
    // The database is dropped with `database`, also when an assertion fails.
    replicas_fire_each_tick_once(&database.url).await;
}

async fn replicas_fire_each_tick_once(database_url: &str) {
    crate::support::install_crypto();
    // Both replicas start on an empty folder and pick the workflow up together: a run created
    // before the second replica started would be "open" to its start-up recovery, which is
    // another matter than exactly-once ticks.
    let folder = std::env::temp_dir().join(format!("enrichflow-replicas-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&folder).expect("a workflow folder");
    let first = ServeProcess::start(&folder, database_url, "");
    let second = ServeProcess::start(&folder, database_url, "");
    let fixture = crate::support::fixtures("cron-replicas").join("every-second.yaml");
    std::fs::copy(&fixture, folder.join("every-second.yaml")).expect("copy the fixture");
    let client = reqwest::Client::new();
    for server in [&first, &second] {
        wait_for_workflow(&client, &server.base_url).await;
    }
    // The schedule belongs to the server processes; letting it run is the test.
    wait_for_ticks(database_url, 3).await;
    for server in [first, second] {
        let status = server.terminate();
        assert!(
            status.success(),
            "serve exits cleanly on SIGTERM: {status:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&folder);

    let runs = stored_runs(database_url).await;
    let mut per_tick: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for run in &runs {
        let trigger = run.trigger.value().expect("readable");
        let tick = trigger["scheduled_at"].as_str().expect("scheduled_at");
        per_tick.entry(tick.to_owned()).or_default().push(run);
    }
    assert!(per_tick.len() >= 3, "at least 3 ticks: {per_tick:#?}");
    for (tick, runs) in &per_tick {
        assert_eq!(runs.len(), 1, "tick {tick} ran {} times", runs.len());
        let key = format!("cron@{tick}");
        assert_eq!(runs[0].idempotency_key.as_deref(), Some(key.as_str()));
    }
}

/// Polls the replica's API until the workflow folder watcher has loaded the workflow.
async fn wait_for_workflow(client: &reqwest::Client, base_url: &str) {
    let url = format!("{base_url}/api/v1/workflows/{REPLICATED}");
    for _ in 0..100 {
        let response = client.get(&url).send().await.expect("GET workflow");
        if response.status().is_success() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base_url} did not load {REPLICATED} within 10 s");
}

/// Polls the database until runs of `n` distinct ticks are stored.
async fn wait_for_ticks(database_url: &str, n: usize) {
    let store = PostgresStore::connect(database_url)
        .await
        .expect("the test database");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let runs = replicated_runs(&store).await;
        let ticks: std::collections::BTreeSet<String> = runs
            .iter()
            .filter_map(|run| run.trigger.value().ok())
            .filter_map(|trigger| trigger["scheduled_at"].as_str().map(str::to_owned))
            .collect();
        if ticks.len() >= n {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} ticks fired within 30 s",
            ticks.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await;
}

async fn stored_runs(database_url: &str) -> Vec<RunRecord> {
    let store = PostgresStore::connect(database_url)
        .await
        .expect("the test database");
    let runs = replicated_runs(&store).await;
    store.close().await;
    runs
}

async fn replicated_runs(store: &PostgresStore) -> Vec<RunRecord> {
    let query = RunQuery {
        workflow_id: Some(REPLICATED.to_owned()),
        limit: RunQuery::MAX_LIMIT,
        ..RunQuery::default()
    };
    store.list_runs(&query).await.expect("list runs")
}
