//! `Idempotency-Key` on webhooks and manual runs, against the workflows of `tests/fixtures/api`:
//! one run per key and workflow, the replay marked `Idempotent-Replayed: true`, bad keys 400.

use std::time::Duration;

use enrichflow::store::{RunQuery, RunRecord};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, fixtures};

const KEY_HEADER: &str = "Idempotency-Key";
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Long enough for any fixture run on a loaded CI machine; a healthy run takes milliseconds.
const FINISH: Duration = Duration::from_secs(20);

/// What the server answered: status, whether it was a replay, the run it names and the body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    replayed: bool,
    run_id: Option<String>,
    body: Value,
}

async fn send(request: RequestBuilder) -> Answer {
    let response: Response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let replayed = match headers.get(REPLAYED_HEADER) {
        None => false,
        Some(value) => {
            assert_eq!(value, "true", "the replay header is `true` or absent");
            true
        }
    };
    // 202 and errors name the run in the body, 201 as `id`, an on-complete 200 in a header.
    let run_id = body["run_id"]
        .as_str()
        .or_else(|| body["id"].as_str())
        .or_else(|| {
            headers
                .get("x-enrichflow-run-id")
                .and_then(|value| value.to_str().ok())
        })
        .map(str::to_owned);
    Answer {
        status,
        replayed,
        run_id,
        body,
    }
}

fn hook(server: &TestServer, path: &str, key: &str) -> RequestBuilder {
    server
        .client
        .post(server.url(&format!("/hooks/{path}")))
        .header(KEY_HEADER, key)
        .json(&json!({ "email": "ada@example.com" }))
}

fn manual(server: &TestServer, workflow: &str, key: &str) -> RequestBuilder {
    server
        .client
        .post(server.url(&format!("/api/v1/workflows/{workflow}/runs")))
        .header(KEY_HEADER, key)
        .json(&json!({ "email": "ada@example.com" }))
}

async fn stored_runs(server: &TestServer, workflow: &str) -> Vec<RunRecord> {
    let query = RunQuery {
        workflow_id: Some(workflow.to_owned()),
        ..RunQuery::default()
    };
    server
        .engine
        .list_runs(&query)
        .await
        .expect("the store answers")
}

/// Sends `request` twice: the first answer is a new run, the second the same run, replayed.
async fn twice(request: impl Fn() -> RequestBuilder, status: StatusCode) -> (Answer, Answer) {
    let first = send(request()).await;
    let second = send(request()).await;
    assert_eq!(first.status, status, "{:#}", first.body);
    assert_eq!(second.status, status, "{:#}", second.body);
    assert!(!first.replayed, "the first request created the run");
    assert!(second.replayed, "the second request is a replay");
    assert!(first.run_id.is_some(), "{:#}", first.body);
    assert_eq!(first.run_id, second.run_id);
    (first, second)
}

#[tokio::test]
async fn a_webhook_with_the_same_key_twice_starts_one_run() {
    let server = TestServer::start(&fixtures("api")).await;
    twice(|| hook(&server, "intake", "order-42"), StatusCode::ACCEPTED).await;
    assert_eq!(stored_runs(&server, "intake").await.len(), 1);
    // Without a key nothing is deduplicated.
    let plain = || {
        server
            .client
            .post(server.url("/hooks/intake"))
            .json(&json!({}))
    };
    let (first, second) = (send(plain()).await, send(plain()).await);
    assert_ne!(first.run_id, second.run_id);
    assert!(!first.replayed && !second.replayed);
    assert_eq!(stored_runs(&server, "intake").await.len(), 3);
}

#[tokio::test]
async fn an_on_complete_replay_answers_with_the_same_result() {
    let server = TestServer::start(&fixtures("api")).await;
    let (first, second) = twice(|| hook(&server, "echo/lead", "lead-7"), StatusCode::OK).await;
    assert_eq!(
        first.body,
        json!({ "email": "ada@example.com", "type": "webhook" })
    );
    assert_eq!(second.body, first.body);
    // A failed run is answered as a failure again, naming the same run.
    let (failed, _) = twice(
        || hook(&server, "fails", "lead-7"),
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    assert_eq!(failed.body["error"]["code"], "run_failed");
    assert_eq!(stored_runs(&server, "echo").await.len(), 1);
    assert_eq!(stored_runs(&server, "fails").await.len(), 1);
}

#[tokio::test]
async fn manual_runs_share_a_key_per_workflow_only() {
    let server = TestServer::start(&fixtures("api")).await;
    let (intake, _) = twice(|| manual(&server, "intake", "batch-1"), StatusCode::CREATED).await;
    // The same key on another workflow is another run; the webhook of the first workflow
    // shares the first workflow's keys.
    let echo = send(manual(&server, "echo", "batch-1")).await;
    assert_eq!(echo.status, StatusCode::CREATED, "{:#}", echo.body);
    assert!(!echo.replayed);
    assert_ne!(echo.run_id, intake.run_id);
    let via_hook = send(hook(&server, "intake", "batch-1")).await;
    assert_eq!(via_hook.status, StatusCode::ACCEPTED);
    assert!(via_hook.replayed);
    assert_eq!(via_hook.run_id, intake.run_id);
    assert_eq!(stored_runs(&server, "intake").await.len(), 1);
    assert_eq!(stored_runs(&server, "echo").await.len(), 1);
    for run_id in [intake.run_id, echo.run_id].into_iter().flatten() {
        let run = server.engine.wait(&run_id, FINISH).await.expect("store");
        assert!(run.is_some(), "run {run_id} finished");
    }
}

#[tokio::test]
async fn concurrent_requests_with_one_key_start_one_run() {
    let server = TestServer::start(&fixtures("api")).await;
    let answers =
        futures::future::join_all((0..16).map(|_| send(hook(&server, "intake", "burst")))).await;
    let fresh = answers.iter().filter(|answer| !answer.replayed).count();
    assert_eq!(fresh, 1, "{answers:#?}");
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(answer.run_id, answers[0].run_id);
    }
    assert_eq!(stored_runs(&server, "intake").await.len(), 1);
}

#[tokio::test]
async fn malformed_keys_are_400_and_start_nothing() {
    let server = TestServer::start(&fixtures("api")).await;
    let too_long = "k".repeat(256);
    let bad_keys: [&[u8]; 5] = [
        b"",
        too_long.as_bytes(),
        b"two words",
        b"tab\tkey",
        "clé".as_bytes(),
    ];
    for key in bad_keys {
        let value = reqwest::header::HeaderValue::from_bytes(key).expect("a header value");
        for request in [
            server.client.post(server.url("/hooks/intake")),
            server
                .client
                .post(server.url("/api/v1/workflows/intake/runs")),
        ] {
            let answer = send(request.header(KEY_HEADER, value.clone()).json(&json!({}))).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{key:?}");
            assert_eq!(answer.body["error"]["code"], "bad_request", "{key:?}");
            assert!(answer.body["error"]["message"].is_string());
        }
    }
    let longest = "k".repeat(255);
    let accepted = send(hook(&server, "intake", &longest)).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:#}", accepted.body);
    assert_eq!(stored_runs(&server, "intake").await.len(), 1);
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_422_and_starts_nothing() {
    let server = TestServer::start(&fixtures("api")).await;
    let first = send(hook(&server, "intake", "order-9")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:#}", first.body);
    let with_body = |url: &str, body: Value| {
        server
            .client
            .post(server.url(url))
            .header(KEY_HEADER, "order-9")
            .json(&body)
    };
    for url in ["/hooks/intake", "/api/v1/workflows/intake/runs"] {
        let other = send(with_body(url, json!({ "email": "eve@example.com" }))).await;
        assert_eq!(
            other.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:#}",
            other.body
        );
        assert_eq!(other.body["error"]["code"], "idempotency_key_reused");
        assert!(!other.replayed);
    }
    // The same body, laid out differently, is still the same request.
    let same = server
        .client
        .post(server.url("/hooks/intake"))
        .header(KEY_HEADER, "order-9")
        .header("content-type", "application/json")
        .body(r#"{ "email" : "ada@example.com" }"#);
    let same = send(same).await;
    assert_eq!(same.status, StatusCode::ACCEPTED, "{:#}", same.body);
    assert!(same.replayed);
    assert_eq!(same.run_id, first.run_id);
    assert_eq!(stored_runs(&server, "intake").await.len(), 1);
}
