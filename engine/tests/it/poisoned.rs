//! Poisoned rows in the store: a run whose stored JSON is nested past serde_json's default
//! limit, or cannot be decoded at all, fails alone (or, when it can be read, resumes), while
//! `GET /api/v1/runs`, start-up recovery and every other run go on. Rows are poisoned with SQL,
//! as an older version or a bug could have left them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use enrichflow::store::{
    AttemptKey, AttemptRecord, AttemptStatus, Attempts, Revisions, RunQuery, RunRecord, RunStatus,
    Runs, SqliteStore,
};
use enrichflow::template::Templates;
use enrichflow::workflow;
use enrichflow_nodes::{Registry, Secrets};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{TestOptions, TestServer, fixtures};

/// `levels` nested arrays around `1`.
fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

/// A SQLite store in a folder of its own, with runs of `quick` poisoned in different ways.
struct Poisoned {
    folder: PathBuf,
    store: Arc<SqliteStore>,
    /// Running, its trigger 128 levels deep: readable, so it resumes and succeeds.
    deep: String,
    /// Running, its trigger 600 levels deep: unreadable, so recovery fails it.
    too_deep: String,
    /// Running, its `error` not a readable value: listed apart, then failed by recovery.
    bad_error: String,
    /// Failed, its `error` not a readable value: it stays listed apart.
    bad_finished: String,
}

impl Drop for Poisoned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

impl Poisoned {
    async fn create(workflows: &Path) -> Poisoned {
        let folder =
            std::env::temp_dir().join(format!("enrichflow-poisoned-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        let url = format!("sqlite://{}", folder.join("enrichflow.db").display());
        let store = Arc::new(SqliteStore::connect(&url).await.expect("store"));
        let file = workflows.join("quick.yaml");
        let text = std::fs::read_to_string(&file).expect("fixture");
        let quick = workflow::load_str(&file, &text, &Registry::with_builtins(), &Templates::new())
            .expect("valid");
        store
            .save_revision("quick", &quick.source.hash, &text)
            .await
            .expect("revision");
        let mut ids = Vec::new();
        for status in [
            RunStatus::Running,
            RunStatus::Running,
            RunStatus::Running,
            RunStatus::Failed,
        ] {
            let run = run(&quick.source.hash, status);
            store.create_run(&run).await.expect("run");
            if status == RunStatus::Running {
                store
                    .insert_attempt(&queued(&run.id))
                    .await
                    .expect("attempt");
            }
            ids.push(run.id);
        }
        let [deep, too_deep, bad_error, bad_finished] = <[String; 4]>::try_from(ids).expect("4");
        let mut sql = SqliteConnection::connect(&url).await.expect("connection");
        let deep_trigger = format!(r#"{{"type": "webhook", "body": {}}}"#, nested(127));
        for (id, column, text) in [
            (&deep, "trigger", deep_trigger.as_str()),
            (&too_deep, "trigger", &nested(600)),
            (&bad_error, "error", r#"{"kind": 1e400}"#),
            (&bad_finished, "error", r#"{"kind": 1e400}"#),
        ] {
            let update = format!(r#"UPDATE runs SET "{column}" = ? WHERE id = ?"#);
            sqlx::query(AssertSqlSafe(update))
                .bind(text)
                .bind(id)
                .execute(&mut sql)
                .await
                .expect("poisoned");
        }
        sql.close().await.expect("closed");
        Poisoned {
            folder,
            store,
            deep,
            too_deep,
            bad_error,
            bad_finished,
        }
    }
}

fn run(revision: &str, status: RunStatus) -> RunRecord {
    RunRecord {
        id: uuid::Uuid::now_v7().to_string(),
        workflow_id: "quick".into(),
        revision: revision.into(),
        status,
        trigger: json!({ "type": "webhook", "body": {} }).into(),
        output: None,
        error: None,
        created_at: Utc::now(),
        started_at: Some(Utc::now()),
        finished_at: None,
        deadline_at: None,
        cancel_requested: false,
        idempotency_key: None,
        idempotency_body_hash: None,
    }
}

fn queued(run_id: &str) -> AttemptRecord {
    AttemptRecord {
        key: AttemptKey {
            run_id: run_id.into(),
            node_id: "only".into(),
            attempt: 1,
        },
        status: AttemptStatus::Queued,
        input: None,
        output: None,
        error: None,
        retryable: false,
        not_before: None,
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        worker: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_runs_break_neither_the_list_nor_recovery_nor_other_runs() {
    let workflows = fixtures("poisoned");
    let poisoned = Poisoned::create(&workflows).await;
    let store = poisoned.store.clone();
    let server =
        TestServer::start_with_store(&workflows, TestOptions::default(), move |_| store).await;

    // A webhook is only served once recovery is done: the new run runs as usual.
    let response = server
        .client
        .post(server.url("/hooks/quick"))
        .json(&json!({ "n": 1 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::OK);
    let resumed = server
        .engine
        .wait(&poisoned.deep, Duration::from_secs(10))
        .await
        .expect("readable now")
        .expect("the deep run finishes");
    assert_eq!(resumed.status, RunStatus::Succeeded, "{:?}", resumed.error);
    assert_eq!(resumed.output, Some(json!(poisoned.deep)));

    let response = server
        .client
        .get(server.url("/api/v1/runs?limit=500"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    let runs: BTreeMap<&str, &Value> = body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| (run["id"].as_str().expect("id"), run))
        .collect();
    assert_eq!(runs.len(), 4, "{body:#}");
    assert!(runs.values().all(|run| run.get("trigger").is_none()));
    assert_eq!(runs[poisoned.deep.as_str()]["status"], "succeeded");
    for id in [&poisoned.too_deep, &poisoned.bad_error] {
        let run = runs[id.as_str()];
        assert_eq!(run["status"], "failed", "{run:#}");
        assert_eq!(run["error"]["kind"], "store", "{run:#}");
        let message = run["error"]["message"].as_str().expect("message");
        assert!(
            message.starts_with("stored row cannot be read: "),
            "{message}"
        );
    }
    assert!(
        runs[poisoned.too_deep.as_str()]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("trigger: JSON nested 600 levels deep")),
        "{body:#}"
    );
    assert_eq!(
        body["unreadable"]
            .as_array()
            .map(|items| items.iter().map(|item| &item["id"]).collect::<Vec<_>>()),
        Some(vec![&json!(poisoned.bad_finished)]),
        "{body:#}"
    );
    assert_eq!(body["unreadable"][0]["error"]["kind"], "store");
}

#[tokio::test]
async fn a_recovery_that_cannot_read_the_store_stops_start_up() {
    let server = crate::faults::server_with_store_down().await;
    // The engine's recovery fails at once and cancels the server's shutdown token itself.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown.cancelled())
        .await
        .expect("recovery stopped the server");
}

/// The one run of `workflow` as the API shows it.
async fn only_run(server: &TestServer, workflow: &str) -> Value {
    let query = RunQuery {
        workflow_id: Some(workflow.to_owned()),
        ..RunQuery::default()
    };
    let runs = server.engine.list_runs(&query).await.expect("store");
    assert_eq!(runs.len(), 1, "{workflow}");
    let run = server
        .engine
        .run_json(&runs[0].id)
        .await
        .expect("store")
        .expect("the run");
    assert_eq!(run["status"], "failed", "{run:#}");
    run
}

#[tokio::test]
async fn inputs_and_outputs_nested_deeper_than_the_store_keeps_fail_their_attempt() {
    let upstream = MockServer::start().await;
    let deep_answer: Value = serde_json::from_str(&nested(101)).expect("JSON");
    Mock::given(path("/deep"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&deep_answer))
        .mount(&upstream)
        .await;
    let mut options = TestOptions::default();
    options.engine.secrets =
        Secrets::new(BTreeMap::from([("BASE_URL".to_owned(), upstream.uri())]));
    // The API's own limit (64 by default, at most 100) would refuse these bodies first; raised
    // to its maximum, the store's bound is what stops them.
    options.api.json.max_depth = 100;
    let server = TestServer::start_with(&fixtures("poisoned"), options).await;

    for hook in ["deep", "upstream"] {
        let body: Value = serde_json::from_str(&nested(99)).expect("JSON");
        let response = server
            .client
            .post(server.url(&format!("/hooks/{hook}")))
            .json(&body)
            .send()
            .await
            .expect("POST");
        // The run failed, and said so at once rather than hanging or retrying.
        assert!(response.status().is_server_error(), "{hook}");
    }
    let wrap = &only_run(&server, "deep").await["nodes"]["wrap"];
    assert_eq!(wrap["attempts"], 1, "permanent: {wrap:#}");
    assert_eq!(
        wrap["error"],
        json!({
            "kind": "template",
            "message": "the rendered input nests 101 levels deep; the store keeps at most 100"
        })
    );
    let fetch = &only_run(&server, "upstream").await["nodes"]["fetch"];
    assert_eq!(fetch["attempts"], 1, "permanent: {fetch:#}");
    assert_eq!(fetch["error"]["kind"], "node", "{fetch:#}");
    let message = fetch["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("the node's output nests 10")
            && message.ends_with("levels deep; the store keeps at most 100"),
        "{message}"
    );
}
