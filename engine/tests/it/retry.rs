//! `POST /api/v1/runs/{id}/retry`: a failed run goes on from the node that failed, without
//! repeating what succeeded, and reaches the nodes it never got to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use enrichflow_nodes::Secrets;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::process::{finished_run, history, trigger};
use crate::support::{TestOptions, TestServer, fixtures};

/// Refuses the first call with a 400 (not retried), then answers 200.
struct FailsOnce(Arc<AtomicUsize>);

impl Respond for FailsOnce {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        match self.0.fetch_add(1, Ordering::SeqCst) {
            0 => ResponseTemplate::new(400).set_body_string("not yet"),
            _ => ResponseTemplate::new(200).set_body_json(json!({"ok": true})),
        }
    }
}

struct Setup {
    server: TestServer,
    first_calls: Arc<AtomicUsize>,
    flaky_calls: Arc<AtomicUsize>,
    _mocks: MockServer,
}

async fn setup() -> Setup {
    let mocks = MockServer::start().await;
    let first_calls = Arc::new(AtomicUsize::new(0));
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let counted = first_calls.clone();
    Mock::given(method("GET"))
        .and(path("/first"))
        .respond_with(move |_: &Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_json(json!({"n": 1}))
        })
        .mount(&mocks)
        .await;
    Mock::given(method("GET"))
        .and(path("/flaky"))
        .respond_with(FailsOnce(flaky_calls.clone()))
        .mount(&mocks)
        .await;
    let mut options = TestOptions::default();
    options.engine.secrets = Secrets::new(BTreeMap::from([("BASE_URL".into(), mocks.uri())]));
    let server = TestServer::start_with(&fixtures("retry"), options).await;
    Setup {
        server,
        first_calls,
        flaky_calls,
        _mocks: mocks,
    }
}

async fn finished(server: &TestServer, run_id: &str) -> Value {
    finished_run(&server.client, &server.base_url, run_id).await
}

async fn retry(server: &TestServer, run_id: &str) -> reqwest::Response {
    server
        .client
        .post(server.url(&format!("/api/v1/runs/{run_id}/retry")))
        .send()
        .await
        .expect("POST retry")
}

#[tokio::test]
async fn a_failed_run_goes_on_from_its_failed_node() {
    let setup = setup().await;
    let server = &setup.server;
    let run_id = trigger(&server.client, &server.base_url, "flaky").await;
    let failed = finished(server, &run_id).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["nodes"]["last"]["error"]["kind"], "unreached");

    let response = retry(server, &run_id).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["location"],
        format!("/api/v1/runs/{run_id}").as_str()
    );
    let retried = finished(server, &run_id).await;
    assert_eq!(retried["status"], "succeeded", "{retried:#}");
    assert_eq!(retried["output"], json!({"ok": true}));
    assert_eq!(retried["error"], Value::Null);
    assert_eq!(history(&retried, "first"), ["succeeded"]);
    assert_eq!(history(&retried, "flaky"), ["failed", "succeeded"]);
    assert_eq!(history(&retried, "last"), ["succeeded"]);
    assert_eq!(setup.first_calls.load(Ordering::SeqCst), 1, "not repeated");
    assert_eq!(setup.flaky_calls.load(Ordering::SeqCst), 2);

    let again = retry(server, &run_id).await;
    assert_eq!(again.status(), 409, "a succeeded run is not retried");
    let body: Value = again.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "conflict");
}

#[tokio::test]
async fn retrying_an_unknown_run_is_a_404() {
    let setup = setup().await;
    let response = retry(&setup.server, "no-such-run").await;
    assert_eq!(response.status(), 404);
}
