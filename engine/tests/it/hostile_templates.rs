//! Hostile templates and nodes against a running server: a quadratic template over large
//! bodies must not stall the server, and a node that panics fails only its own attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use enrichflow::store::RunStatus;
use enrichflow::template::{Limits, Templates};
use enrichflow_nodes::{ConfigError, Node, NodeContext, NodeError, Registry};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestOptions, TestServer, fixtures};

/// Generous: two cores shared by parallel tests.
const FINISH: Duration = Duration::from_secs(60);

/// A node type that panics in every attempt.
struct Panics;

#[async_trait]
impl Node for Panics {
    fn check_config(&self, _: &Value) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn execute(&self, _: &NodeContext, _: Value) -> Result<Value, NodeError> {
        panic!("a test node that always panics")
    }
}

/// The fixtures with `test.panic` registered, `templates` and `workers` engine workers.
async fn start(templates: Templates, workers: usize) -> TestServer {
    let mut registry = Registry::with_builtins();
    registry.register("test.panic", Arc::new(Panics));
    let mut options = TestOptions::default();
    options.engine.workers = workers;
    TestServer::start_with_parts(
        &fixtures("hostile_templates"),
        options,
        registry,
        templates,
        |store| store,
    )
    .await
}

async fn post(server: &TestServer, hook: &str, body: &Value) -> String {
    let answer = server
        .client
        .post(server.url(&format!("/hooks/{hook}")))
        .json(body)
        .send()
        .await
        .expect("POST webhook");
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let accepted: Value = answer.json().await.expect("202 body");
    accepted["run_id"].as_str().expect("a run id").to_owned()
}

async fn run_json(server: &TestServer, run_id: &str) -> Value {
    server
        .engine
        .wait(run_id, FINISH)
        .await
        .expect("the store answers")
        .expect("the run finished in time");
    server
        .engine
        .run_json(run_id)
        .await
        .expect("the store answers")
        .expect("the run exists")
}

async fn is_finished(server: &TestServer, run_id: &str) -> bool {
    let run = server
        .engine
        .run_json(run_id)
        .await
        .expect("the store answers");
    let status = run.as_ref().and_then(|run| run["status"].as_str());
    matches!(status, Some("succeeded" | "failed" | "cancelled"))
}

/// Two ~600 kB bodies into a template that visits every pair of items (150,000² pairs), on a
/// runtime of one thread: `/healthz` keeps answering promptly while both render, both attempts
/// fail with a timeout (1 s in the fixture) or budget error, and the next normal run succeeds.
/// Rendered on the runtime's thread, each render would hold it for its whole budget (~2 s in a
/// debug build) and `/healthz` would wait that long.
#[tokio::test]
async fn a_runaway_template_does_not_freeze_the_server() {
    const PROMPT: Duration = Duration::from_secs(1);
    let server = start(
        Templates::with_limits(Limits {
            fuel: 10_000_000,
            ..Limits::default()
        }),
        4,
    )
    .await;
    let items: Vec<String> = (0..150_000).map(|n| (n % 10).to_string()).collect();
    let body = json!({ "items": items });
    assert!(serde_json::to_vec(&body).expect("JSON").len() > 590_000);
    let runs = [
        post(&server, "nested", &body).await,
        post(&server, "nested", &body).await,
    ];

    let mut answered_while_rendering = 0;
    loop {
        let rendering =
            !is_finished(&server, &runs[0]).await || !is_finished(&server, &runs[1]).await;
        let asked = Instant::now();
        let answer = server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("/healthz answers while templates render");
        assert_eq!(answer.status(), StatusCode::OK);
        let waited = asked.elapsed();
        assert!(
            waited < PROMPT,
            "/healthz took {waited:?} while templates rendered"
        );
        if !rendering {
            break;
        }
        answered_while_rendering += 1;
    }
    assert!(answered_while_rendering > 0);

    for run_id in &runs {
        let run = run_json(&server, run_id).await;
        assert_eq!(run["status"], "failed", "{run:#}");
        let error = &run["nodes"]["pairs"]["error"];
        let message = error["message"].as_str().expect("an error message");
        assert!(
            message.contains("rendering the inputs took longer than 1s")
                || message.contains("exhausted its budget"),
            "{error:#}"
        );
        assert_eq!(run["nodes"]["pairs"]["attempts"], 1, "not retried: {run:#}");
    }

    let normal = post(&server, "echo", &json!({ "name": "Ada" })).await;
    let run = run_json(&server, &normal).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["output"], "da");
}

/// The run's deadline ends a render that the node's own limits would let go on: the run fails
/// with kind `timeout` long before the render could have spent its fuel.
#[tokio::test]
async fn the_run_deadline_stops_a_render() {
    let server = start(
        Templates::with_limits(Limits {
            fuel: 10_000_000,
            ..Limits::default()
        }),
        4,
    )
    .await;
    let items: Vec<String> = (0..150_000).map(|n| (n % 10).to_string()).collect();
    let run_id = post(&server, "run-deadline", &json!({ "items": items })).await;
    let run = run_json(&server, &run_id).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["error"]["kind"], "timeout", "{run:#}");
    assert_eq!(run["nodes"]["pairs"]["status"], "cancelled", "{run:#}");
}

/// A panic inside a node is that attempt's permanent `internal` failure: the run follows
/// `on_error: continue`, and the single worker (a worker lost to the panic would stop every
/// later run) goes on to serve the next runs.
#[tokio::test]
async fn a_panicking_node_fails_its_attempt_and_the_worker_keeps_serving() {
    let server = start(Templates::new(), 1).await;
    for _ in 0..2 {
        let run_id = post(&server, "panics", &json!({})).await;
        let run = run_json(&server, &run_id).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        assert_eq!(run["output"], "boom failed");
        let boom = &run["nodes"]["boom"];
        assert_eq!(boom["status"], "failed");
        assert_eq!(
            boom["error"],
            json!({"kind": "internal", "message": "the node panicked: a test node that always panics"})
        );
        assert_eq!(boom["attempts"], 1, "a panic is not retried: {run:#}");
    }

    let run_id = post(&server, "panics-in-foreach", &json!({})).await;
    let run = run_json(&server, &run_id).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["nodes"]["boom"]["error"]["kind"], "internal");

    let run_id = post(&server, "echo", &json!({ "name": "Bob" })).await;
    let run = server
        .engine
        .wait(&run_id, FINISH)
        .await
        .expect("the store answers")
        .expect("the run finished in time");
    assert_eq!(run.status, RunStatus::Succeeded);
}
