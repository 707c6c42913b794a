//! Property test of the body path (issue 8): arbitrary bytes, JSON-like byte soup, arbitrary JSON
//! and JSON nested up to 200 levels, posted to a webhook and to the manual-run endpoint of a real
//! server, never produce a 5xx, and every run they start finishes and reads back through
//! `GET /api/v1/runs/{id}` and `GET /api/v1/runs`.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{TestServer, fixtures};

/// Long enough for any fixture run on a loaded CI machine; a healthy run takes milliseconds.
const FINISH: Duration = Duration::from_secs(20);

/// Cases per strategy: enough to reach every branch of the scanner, few enough for a fast test.
const CASES: u32 = 48;

/// Any JSON value of modest size.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Arrays and objects nested `depth` levels (0–200), the kind of each level from `kinds`.
fn deeply_nested() -> impl Strategy<Value = Vec<u8>> {
    (0usize..=200, any::<u64>()).prop_map(|(depth, kinds)| {
        let mut open = String::new();
        let mut close = String::new();
        for level in 0..depth {
            if kinds.rotate_left(u32::try_from(level % 64).unwrap_or(0)) & 1 == 1 {
                open.push_str("{\"k\\\"[\":");
                close.insert(0, '}');
            } else {
                open.push_str("[0,");
                close.insert(0, ']');
            }
        }
        format!("{open}\"leaf\"{close}").into_bytes()
    })
}

/// Bytes made of JSON's punctuation, to reach the scanner's corners (escapes, unclosed strings).
fn json_soup() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = b"[]{}\":,\\ 1ae-.".to_vec();
    prop::collection::vec(prop::sample::select(alphabet), 0..400)
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json_soup(),
        json_value().prop_map(|value| value.to_string().into_bytes()),
        deeply_nested(),
    ]
}

/// Posts `body`, then checks the answer and the run it started, if any.
async fn check(server: &TestServer, body: Vec<u8>, manual: bool) -> Result<(), TestCaseError> {
    let path = if manual {
        "/api/v1/workflows/intake/runs"
    } else {
        "/hooks/intake"
    };
    let response = server
        .client
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|error| TestCaseError::fail(format!("no answer: {error}")))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    prop_assert!(!status.is_server_error(), "{status}: {answer:#}");
    if !status.is_success() {
        prop_assert!(answer["error"]["code"].is_string(), "{status}: {answer:#}");
        return Ok(());
    }
    let run_id = answer["run_id"]
        .as_str()
        .or_else(|| answer["id"].as_str())
        .ok_or_else(|| TestCaseError::fail(format!("no run id: {answer:#}")))?
        .to_owned();
    let finished = server.engine.wait(&run_id, FINISH).await;
    prop_assert!(matches!(finished, Ok(Some(_))), "{finished:?}");
    for url in [format!("/api/v1/runs/{run_id}"), "/api/v1/runs".to_owned()] {
        let response = server.client.get(server.url(&url)).send().await;
        let response = response.map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(response.status(), StatusCode::OK, "{}", url);
        let read: Result<Value, _> = response.json().await;
        prop_assert!(read.is_ok(), "{url} is not readable JSON: {read:?}");
    }
    Ok(())
}

#[test]
fn no_body_breaks_the_webhook_path_or_leaves_an_unreadable_run() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let server = runtime.block_on(TestServer::start(&fixtures("api")));
    let config = Config {
        cases: CASES * 4,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&(bodies(), any::<bool>()), |(body, manual)| {
        runtime.block_on(check(&server, body, manual))
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    drop(server);
}
