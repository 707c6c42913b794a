//! `GET /api/v1/stats`: after a few runs (two plain successes, one success after a retry, one
//! failure) the figures count them, list the idle workflow, and a bad window is a 400.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use enrichflow_nodes::Secrets;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{TestOptions, TestServer, fixtures};

/// Answers 503 (retried) to the first call, then 200.
struct UnavailableOnce(Arc<AtomicUsize>);

impl Respond for UnavailableOnce {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        match self.0.fetch_add(1, Ordering::SeqCst) {
            0 => ResponseTemplate::new(503),
            _ => ResponseTemplate::new(200).set_body_json(json!({"ok": true})),
        }
    }
}

async fn mocks() -> MockServer {
    let mocks = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&mocks)
        .await;
    Mock::given(method("GET"))
        .and(path("/flaky"))
        .respond_with(UnavailableOnce(Arc::new(AtomicUsize::new(0))))
        .mount(&mocks)
        .await;
    // Not retried: a 4xx other than 429 fails the attempt for good.
    Mock::given(method("GET"))
        .and(path("/broken"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&mocks)
        .await;
    mocks
}

/// Runs `call` with the path `target` and waits for it to finish; returns the status code.
async fn call(server: &TestServer, target: &str) -> u16 {
    server
        .client
        .post(server.url("/hooks/call"))
        .json(&json!({ "path": target }))
        .send()
        .await
        .expect("POST webhook")
        .status()
        .as_u16()
}

async fn stats(server: &TestServer, query: &str) -> (u16, Value) {
    let response = server
        .client
        .get(server.url(&format!("/api/v1/stats{query}")))
        .send()
        .await
        .expect("GET stats");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn stats_count_the_runs_attempts_and_workflows() {
    let mocks = mocks().await;
    let mut options = TestOptions::default();
    options.engine.secrets = Secrets::new(BTreeMap::from([("BASE_URL".into(), mocks.uri())]));
    let server = TestServer::start_with(&fixtures("stats"), options).await;
    for (target, expected) in [("ok", 200), ("ok", 200), ("flaky", 200), ("broken", 500)] {
        assert_eq!(call(&server, target).await, expected, "{target}");
    }

    let (status, body) = stats(&server, "").await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["window"], "24h");
    let runs = &body["runs"];
    assert_eq!((&runs["queued"], &runs["running"]), (&json!(0), &json!(0)));
    assert_eq!(runs["oldest_queued_at"], Value::Null);
    let finished = &runs["last_window"];
    assert_eq!(
        (
            &finished["succeeded"],
            &finished["failed"],
            &finished["cancelled"]
        ),
        (&json!(3), &json!(1), &json!(0)),
        "{body:#}"
    );
    assert_eq!(finished["failure_rate"], 0.25);
    assert_eq!(finished["duration_ms"]["sample"], 4);
    let p50 = finished["duration_ms"]["p50"].as_i64().expect("a p50");
    let p95 = finished["duration_ms"]["p95"].as_i64().expect("a p95");
    assert!(0 <= p50 && p50 <= p95, "{body:#}");
    assert_eq!(
        body["nodes"]["last_window"],
        json!({ "failed_attempts": 2, "retried_attempts": 1 })
    );
    let workflows = body["workflows"].as_array().expect("a list");
    let ids: Vec<_> = workflows.iter().map(|w| w["id"].as_str()).collect();
    assert_eq!(ids, [Some("call"), Some("idle")]);
    assert_eq!(
        workflows[0]["last_window"],
        json!({ "succeeded": 3, "failed": 1, "cancelled": 0 })
    );
    assert!(workflows[0]["last_run_at"].is_string(), "{body:#}");
    assert_eq!(workflows[1]["last_run_at"], Value::Null);
    assert_eq!(body["leads"]["total"], 0);
    assert_eq!(body["leads"]["by_tier"]["hot"], 0);
    assert_eq!(body["queue"], json!({ "depth": 0 }));
}

#[tokio::test]
async fn the_window_is_chosen_by_query_and_checked() {
    let server = TestServer::start(&fixtures("stats")).await;
    let (status, body) = stats(&server, "?window=7d").await;
    assert_eq!((status, &body["window"]), (200, &json!("7d")), "{body:#}");
    for bad in ["31d", "30s", "soon"] {
        let (status, body) = stats(&server, &format!("?window={bad}")).await;
        assert_eq!(status, 400, "{bad}: {body:#}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
}
