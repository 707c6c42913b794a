//! Crash safety and graceful shutdown of the real binary: SIGKILL in the middle of a run, then
//! restart on the same database; SIGTERM lets the in-flight attempt finish.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::process::{
    Delayed, ServeProcess, finished_run, remove_database, sqlite_url, temp_database, trigger,
};

struct Mocks {
    server: MockServer,
    first_calls: Arc<AtomicUsize>,
    slow_calls: Arc<AtomicUsize>,
    slow_arrived: mpsc::UnboundedReceiver<()>,
}

async fn mocks(slow_delays: Vec<Duration>) -> Mocks {
    let server = MockServer::start().await;
    let first_calls = Arc::new(AtomicUsize::new(0));
    let slow_calls = Arc::new(AtomicUsize::new(0));
    let (ignored, _) = mpsc::unbounded_channel();
    let (arrived, slow_arrived) = mpsc::unbounded_channel();
    let first = Delayed {
        calls: first_calls.clone(),
        delays: Vec::new(),
        arrived: ignored,
    };
    let slow = Delayed {
        calls: slow_calls.clone(),
        delays: slow_delays,
        arrived,
    };
    Mock::given(method("GET"))
        .and(path("/first"))
        .respond_with(first)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/slow"))
        .respond_with(slow)
        .mount(&server)
        .await;
    Mocks {
        server,
        first_calls,
        slow_calls,
        slow_arrived,
    }
}

fn workflows() -> PathBuf {
    crate::support::fixtures("restart")
}

/// Kills the server while `slow` waits on its first call, restarts it on the same database, and
/// checks the run finishes with no succeeded node run again.
async fn killed_server_resumes(database_url: &str) {
    crate::support::install_crypto();
    // The first call of `slow` hangs far longer than the test; the retry after restart is quick.
    let mut mocks = mocks(vec![Duration::from_secs(300)]).await;
    let client = reqwest::Client::new();
    let server = ServeProcess::start(&workflows(), database_url, &mocks.server.uri());
    let run_id = trigger(&client, &server.base_url, "slow-chain").await;

    mocks
        .slow_arrived
        .recv()
        .await
        .expect("the slow node called the server");
    drop(server); // SIGKILL

    let server = ServeProcess::start(&workflows(), database_url, &mocks.server.uri());
    let run = finished_run(&client, &server.base_url, &run_id).await;

    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["output"], json!({"ok": 1}));
    assert_eq!(
        mocks.first_calls.load(Ordering::SeqCst),
        1,
        "a succeeded node ran again"
    );
    assert_eq!(run["nodes"]["first"]["attempts"], 1);
    assert_eq!(
        mocks.slow_calls.load(Ordering::SeqCst),
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
    let mut mocks = mocks(vec![Duration::from_millis(500)]).await;
    let database = temp_database("sigterm");
    let client = reqwest::Client::new();
    let server = ServeProcess::start(&workflows(), &sqlite_url(&database), &mocks.server.uri());
    let run_id = trigger(&client, &server.base_url, "slow-chain").await;

    mocks
        .slow_arrived
        .recv()
        .await
        .expect("the slow node called the server");
    let status = server.terminate();
    assert!(
        status.success(),
        "serve exits cleanly on SIGTERM: {status:?}"
    );

    // The attempt finished before exit, so after a restart `slow` is not called again.
    let server = ServeProcess::start(&workflows(), &sqlite_url(&database), &mocks.server.uri());
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        mocks.slow_calls.load(Ordering::SeqCst),
        1,
        "the drained attempt ran again"
    );
    assert_eq!(run["nodes"]["slow"]["attempts"], 1);
    drop(server);
    remove_database(&database);
}
