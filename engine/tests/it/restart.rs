//! Crash safety and graceful shutdown of the real binary: SIGKILL in the middle of a run, then
//! restart on the same database; SIGTERM lets the in-flight attempt finish.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use wiremock::MockServer;

use crate::process::{
    ServeProcess, SlowChain, finished_run, remove_database, sqlite_url, temp_database,
};

/// The `slow-chain` workflow, shared with the distributed tests.
fn workflows() -> PathBuf {
    crate::support::fixtures("distributed")
}

/// Kills the server while `slow` waits on its first call, restarts it on the same database, and
/// checks the run finishes with no succeeded node run again.
async fn killed_server_resumes(database_url: &str) {
    crate::support::install_crypto();
    // The first call of `slow` hangs far longer than the test; the retry after restart is quick.
    let mocks = MockServer::start().await;
    let mut chain = SlowChain::mount(&mocks, Duration::from_secs(300)).await;
    let client = reqwest::Client::new();
    let server = ServeProcess::start(&workflows(), database_url, &mocks.uri());
    let run_id = chain.start(&client, &server.base_url).await;
    drop(server); // SIGKILL

    let server = ServeProcess::start(&workflows(), database_url, &mocks.uri());
    let run = finished_run(&client, &server.base_url, &run_id).await;

    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["output"], json!({"ok": 1}));
    assert_eq!(
        chain.first_calls.load(Ordering::SeqCst),
        1,
        "a succeeded node ran again"
    );
    assert_eq!(run["nodes"]["first"]["attempts"], 1);
    assert_eq!(
        chain.slow_calls.load(Ordering::SeqCst),
        2,
        "the interrupted attempt runs again"
    );
}

#[tokio::test]
async fn a_killed_server_resumes_its_runs_without_repeating_succeeded_nodes() {
    let database = temp_database("restart");
    killed_server_resumes(&sqlite_url(&database)).await;
    remove_database(&database);
}

#[tokio::test]
async fn a_killed_server_resumes_its_runs_on_postgres() {
    let Some(database) =
        crate::postgres::database("a_killed_server_resumes_its_runs_on_postgres").await
    else {
        return;
    };
    // The database is dropped with `database`, also when an assertion fails.
    killed_server_resumes(&database.url).await;
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_attempt_finish() {
    crate::support::install_crypto();
    let mocks = MockServer::start().await;
    let mut chain = SlowChain::mount(&mocks, Duration::from_millis(500)).await;
    let database = temp_database("sigterm");
    let client = reqwest::Client::new();
    let server = ServeProcess::start(&workflows(), &sqlite_url(&database), &mocks.uri());
    let run_id = chain.start(&client, &server.base_url).await;
    let status = server.terminate();
    assert!(
        status.success(),
        "serve exits cleanly on SIGTERM: {status:?}"
    );

    // The attempt finished before exit, so after a restart `slow` is not called again.
    let server = ServeProcess::start(&workflows(), &sqlite_url(&database), &mocks.uri());
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        chain.slow_calls.load(Ordering::SeqCst),
        1,
        "the drained attempt ran again"
    );
    assert_eq!(run["nodes"]["slow"]["attempts"], 1);
    drop(server);
    remove_database(&database);
}
