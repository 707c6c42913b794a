//! Cron triggers in the real server: a schedule fires runs with `trigger.scheduled_at` and
//! `trigger.input` in scope.

use std::time::Duration;

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
