//! Every rule of SPEC's "Rules" and the run JSON, end to end through the real engine (SQLite
//! store, in-process queue). Each scenario has its workflow in `tests/fixtures/rules`; single
//! runs go through `oneshot::run_file` (what `enrichflow run` does), and a [`TestServer`] serves
//! the tests that need cancellation, several runs at once or the API's answers. HTTP nodes call
//! a wiremock server whose address is the `BASE_URL` secret, so it reads `[redacted]` in every
//! stored URL and message.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use enrichflow::store::RunStatus;
use enrichflow::{EngineOptions, oneshot};
use enrichflow_nodes::Secrets;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{TestOptions, TestServer, fixtures, install_crypto};

/// Long enough for any run on a loaded CI machine; a healthy one takes milliseconds.
const FINISH: Duration = Duration::from_secs(20);

/// The secret of the secrets test; it must never appear in what the engine stores or answers.
const SECRET: &str = "s3cr3t-value";

fn fixture(name: &str) -> PathBuf {
    fixtures("rules").join(format!("{name}.yaml"))
}

fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    let secrets: BTreeMap<String, String> = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Secrets::new(secrets)
}

/// `BASE_URL`: the address of `mock`.
fn base_url(mock: &MockServer) -> Secrets {
    secrets(&[("BASE_URL", &mock.uri())])
}

/// Runs the fixture `name` once, as `enrichflow run` does; returns the run JSON and status.
async fn run(name: &str, body: Value, secrets: Secrets) -> (Value, RunStatus) {
    install_crypto();
    let options = EngineOptions {
        secrets,
        // The wiremock server listens on loopback.
        egress: enrichflow_nodes::egress::Policy::allow_private_networks(),
        ..EngineOptions::default()
    };
    oneshot::run_file_with(&fixture(name), body, options)
        .await
        .unwrap_or_else(|error| panic!("the run of {name} could not happen: {error:?}"))
}

/// Every node's status, by node id.
fn statuses(run: &Value) -> BTreeMap<String, String> {
    run["nodes"]
        .as_object()
        .unwrap_or_else(|| panic!("a map of nodes in {run:#}"))
        .iter()
        .map(|(id, node)| (id.clone(), node["status"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn expected_statuses(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(id, status)| ((*id).to_owned(), (*status).to_owned()))
        .collect()
}

/// The `status` of each attempt in a node's history, oldest first.
fn history_statuses(node: &Value) -> Vec<&str> {
    node["history"]
        .as_array()
        .unwrap_or_else(|| panic!("a history in {node:#}"))
        .iter()
        .map(|attempt| attempt["status"].as_str().unwrap_or(""))
        .collect()
}

/// An RFC 3339 timestamp in UTC (`…Z`).
fn instant(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a timestamp, got {value}"));
    assert!(text.ends_with('Z'), "`{text}` is not in UTC");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("`{text}` is not RFC 3339: {error}"))
        .with_timezone(&Utc)
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object, got {value:#}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// How many requests `mock` received for `url_path`.
async fn hits(mock: &MockServer, url_path: &str) -> usize {
    mock.received_requests()
        .await
        .expect("request recording is on")
        .iter()
        .filter(|request| request.url.path() == url_path)
        .count()
}

/// Answers call `n` (counting from 0) with `statuses[n]`, later calls with the last status.
/// Successes carry `{"ok": true}`; failures have no body, which keeps error messages short.
struct Sequence {
    statuses: Vec<u16>,
    calls: AtomicUsize,
}

fn sequence(statuses: &[u16]) -> Sequence {
    Sequence {
        statuses: statuses.to_vec(),
        calls: AtomicUsize::new(0),
    }
}

impl Respond for Sequence {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let last = self.statuses.len().saturating_sub(1);
        let status = self.statuses.get(call.min(last)).copied().unwrap_or(200);
        match status {
            200..=299 => ResponseTemplate::new(status).set_body_json(json!({ "ok": true })),
            _ => ResponseTemplate::new(status),
        }
    }
}

async fn mount(
    mock: &MockServer,
    http_method: &str,
    url_path: &str,
    responder: impl Respond + 'static,
) {
    Mock::given(method(http_method))
        .and(path(url_path))
        .respond_with(responder)
        .mount(mock)
        .await;
}

/// A server whose `/lookup` answers 404 with a short body.
async fn lookup_mock() -> MockServer {
    let mock = MockServer::start().await;
    let not_found = ResponseTemplate::new(404).set_body_string("no such lead");
    mount(&mock, "GET", "/lookup", not_found).await;
    mock
}

/// Reports each request as it arrives and answers after a minute: a node calling it is in
/// flight for as long as a test needs.
struct Slow(mpsc::UnboundedSender<()>);

impl Respond for Slow {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let _ = self.0.send(());
        ResponseTemplate::new(200).set_delay(Duration::from_secs(60))
    }
}

async fn slow_mock() -> (MockServer, mpsc::UnboundedReceiver<()>) {
    let mock = MockServer::start().await;
    let (arrived, arrivals) = mpsc::unbounded_channel();
    mount(&mock, "GET", "/slow", Slow(arrived)).await;
    (mock, arrivals)
}

#[tokio::test]
async fn templates_see_the_whole_scope_and_single_expressions_keep_their_json_type() {
    let body = json!({
        "lead": { "name": "Ada", "tags": ["x", "y"] },
        "count": 3, "ratio": 0.75, "vip": true, "nothing": null,
    });
    let greeting = secrets(&[("GREETING", "hello-secret")]);
    let (run, status) = run("scope", body.clone(), greeting).await;
    assert_eq!(status, RunStatus::Succeeded, "{run:#}");
    let run_id = run["id"].as_str().expect("a run id");
    assert_eq!(
        run["output"],
        json!({
            "object": { "name": "Ada", "tags": ["x", "y"] },
            "list": ["x", "y"],
            "integer": 3,
            "float": 0.75,
            "boolean": true,
            "nothing": null,
            "comparison": true,
            "computed": 42,
            "text": "3 leads",
            "two_expressions": "33",
            "trigger_type": "manual",
            "run_id": run_id,
            "workflow_id": "scope",
            "secret_length": 12,
            // Derived from the secret, so shown as the stored input shows it.
            "secret_upper": "[REDACTED]",
            "secret_in_text": "say [redacted]",
            "first_output": { "n": 41, "tags": ["a", "b"] },
            "first_tag": "b",
            "first_status": "succeeded",
        })
    );
    assert_eq!(run["trigger"], json!({ "type": "manual", "body": body }));
}

#[tokio::test]
async fn an_undefined_name_fails_its_node_naming_the_expression_and_skips_dependents() {
    let body = json!({ "lead": { "name": "Ada" } });
    let (run, status) = run("undefined", body, Secrets::default()).await;
    assert_eq!(status, RunStatus::Failed, "{run:#}");
    assert_eq!(
        statuses(&run),
        expected_statuses(&[
            ("in_text", "failed"),
            ("in_condition", "failed"),
            ("broken", "failed"),
            ("after", "skipped"),
            ("last", "skipped"),
        ])
    );
    for (node, expression) in [
        ("in_text", "Hello {{ lead.name }}"),
        ("in_condition", "lead.vip"),
        ("broken", "{{ trigger.body.lead.email }}"),
    ] {
        let error = &run["nodes"][node]["error"];
        assert_eq!(error["kind"], "template", "{node}: {error:#}");
        let message = error["message"].as_str().expect("a message");
        assert!(
            message.contains(&format!("`{expression}`")),
            "{node}: `{message}` does not name `{expression}`"
        );
        assert!(message.contains("undefined"), "{node}: {message}");
        assert_eq!(run["nodes"][node]["output"], Value::Null);
    }
    let broken = &run["nodes"]["broken"];
    let cause = broken["error"]["message"].as_str().expect("a message");
    assert_eq!(
        run["error"],
        json!({ "kind": "template", "message": format!("node `broken` failed: {cause}") })
    );
    assert_eq!(run["output"], Value::Null);
    for node in ["after", "last"] {
        assert_eq!(run["nodes"][node]["attempts"], 0, "{node}");
        assert_eq!(run["nodes"][node]["error"]["kind"], "unreached", "{node}");
    }
    // Rendering `with` is part of the attempt (ARCHITECTURE: `attempt::execute` evaluates `if`
    // and renders `with`), so a node that fails there was attempted once, and started.
    assert_eq!(history_statuses(broken), ["failed"]);
    assert_eq!(broken["attempts"], 1, "{broken:#}");
    instant(&broken["started_at"]);
}

#[tokio::test]
async fn a_false_if_skips_its_node_and_skipping_spreads_only_to_nodes_whose_needs_all_skipped() {
    let (closed, status) = run("skips", json!({ "go": false }), Secrets::default()).await;
    assert_eq!(status, RunStatus::Succeeded, "{closed:#}");
    assert_eq!(
        statuses(&closed),
        expected_statuses(&[
            ("gate", "skipped"),
            ("after_gate", "skipped"),
            ("after_after_gate", "skipped"),
            ("other", "succeeded"),
            ("mixed", "succeeded"),
        ])
    );
    for node in ["gate", "after_gate", "after_after_gate"] {
        let node = &closed["nodes"][node];
        assert_eq!(node["output"], Value::Null, "{node:#}");
        assert_eq!(node["error"], Value::Null, "{node:#}");
        assert_eq!(node["attempts"], 0, "{node:#}");
    }
    assert_eq!(
        closed["output"],
        json!({
            "gate_output": null, "gate_status": "skipped",
            "other_output": "ran", "other_status": "succeeded",
        })
    );

    let (open, status) = run("skips", json!({ "go": true }), Secrets::default()).await;
    assert_eq!(status, RunStatus::Succeeded, "{open:#}");
    assert!(
        statuses(&open).values().all(|status| status == "succeeded"),
        "{open:#}"
    );
    assert_eq!(open["nodes"]["after_gate"]["output"], "opened then after");
    assert_eq!(
        open["output"],
        json!({
            "gate_output": "opened", "gate_status": "succeeded",
            "other_output": "ran", "other_status": "succeeded",
        })
    );
}

#[tokio::test]
async fn on_error_continue_lets_a_node_fail_and_its_dependents_see_the_failure() {
    let mock = lookup_mock().await;
    let (run, status) = run("continue", json!({}), base_url(&mock)).await;
    assert_eq!(status, RunStatus::Succeeded, "{run:#}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["error"], Value::Null);
    let error = json!({
        "kind": "http",
        "message": "GET [redacted]/lookup returned 404 Not Found: no such lead",
    });
    let lookup = &run["nodes"]["lookup"];
    assert_eq!(lookup["status"], "failed");
    assert_eq!(lookup["attempts"], 1);
    assert_eq!(lookup["output"], Value::Null);
    assert_eq!(lookup["error"], error);
    assert_eq!(run["nodes"]["report"]["status"], "succeeded");
    assert_eq!(
        run["output"],
        json!({ "status": "failed", "error": error, "kind": "http", "output": null })
    );
}

#[tokio::test]
async fn a_failed_need_fails_the_run_naming_the_node_and_skips_what_was_never_reached() {
    let mock = lookup_mock().await;
    let (run, status) = run("fail-fast", json!({}), base_url(&mock)).await;
    assert_eq!(status, RunStatus::Failed, "{run:#}");
    assert_eq!(run["status"], "failed");
    assert_eq!(
        run["error"],
        json!({
            "kind": "http",
            "message": "node `lookup` failed: GET [redacted]/lookup returned 404 Not Found: no such lead",
        })
    );
    assert_eq!(run["output"], Value::Null);
    assert_eq!(
        statuses(&run),
        expected_statuses(&[
            ("lookup", "failed"),
            ("enrich", "skipped"),
            ("store", "skipped"),
        ])
    );
    for node in ["enrich", "store"] {
        let node = &run["nodes"][node];
        assert_eq!(node["attempts"], 0, "{node:#}");
        assert_eq!(node["output"], Value::Null, "{node:#}");
        // Marked, so that `POST /runs/{id}/retry` knows to run it.
        assert_eq!(
            node["error"],
            json!({"kind": "unreached", "message": "the run ended before this node ran"}),
            "{node:#}"
        );
        assert_eq!(history_statuses(node), ["skipped"]);
    }
}

/// Milliseconds from `earlier` to `later`.
fn millis_between(earlier: &Value, later: &Value) -> i64 {
    (instant(later) - instant(earlier)).num_milliseconds()
}

#[tokio::test]
async fn retryable_failures_are_retried_with_backoff_until_attempts_run_out() {
    let mock = MockServer::start().await;
    mount(&mock, "GET", "/flaky", sequence(&[500, 500, 200])).await;
    mount(&mock, "GET", "/refused", sequence(&[400])).await;
    mount(&mock, "GET", "/down", sequence(&[503])).await;

    let (flaky, status) = run("retries", json!({ "path": "flaky" }), base_url(&mock)).await;
    assert_eq!(status, RunStatus::Succeeded, "{flaky:#}");
    assert_eq!(flaky["output"], json!({ "ok": true }));
    let call = &flaky["nodes"]["call"];
    assert_eq!(call["status"], "succeeded");
    assert_eq!(call["attempts"], 3);
    assert_eq!(call["error"], Value::Null);
    assert_eq!(history_statuses(call), ["failed", "failed", "succeeded"]);
    let history = &call["history"];
    for (index, attempt) in [1, 2, 3].into_iter().enumerate() {
        assert_eq!(history[index]["attempt"], attempt);
    }
    assert_eq!(
        history[0]["error"],
        json!({ "kind": "http", "message": "GET [redacted]/flaky returned 500 Internal Server Error" })
    );
    // Backoff 10ms doubles per attempt and "equal jitter" keeps at least half of it: the
    // retries wait at least 5ms and 10ms. Timestamps are shown to the millisecond, hence 1ms of
    // slack; the default backoff of 1s would wait 500ms or more.
    for (retry, least) in [(1, 4), (2, 9)] {
        let waited = millis_between(
            &history[retry - 1]["finished_at"],
            &history[retry]["started_at"],
        );
        assert!(
            (least..450).contains(&waited),
            "attempt {} started {waited}ms after the previous one failed",
            retry + 1
        );
    }
    assert_eq!(hits(&mock, "/flaky").await, 3);

    let (refused, status) = run("retries", json!({ "path": "refused" }), base_url(&mock)).await;
    assert_eq!(status, RunStatus::Failed, "{refused:#}");
    let call = &refused["nodes"]["call"];
    assert_eq!(call["attempts"], 1, "a 400 is not retried");
    assert_eq!(history_statuses(call), ["failed"]);
    assert_eq!(
        call["error"],
        json!({ "kind": "http", "message": "GET [redacted]/refused returned 400 Bad Request" })
    );
    assert_eq!(hits(&mock, "/refused").await, 1);

    let (down, status) = run("retries", json!({ "path": "down" }), base_url(&mock)).await;
    assert_eq!(status, RunStatus::Failed, "{down:#}");
    let call = &down["nodes"]["call"];
    assert_eq!(call["status"], "failed");
    assert_eq!(call["attempts"], 3);
    assert_eq!(history_statuses(call), ["failed", "failed", "failed"]);
    assert_eq!(
        down["error"],
        json!({
            "kind": "http",
            "message": "node `call` failed: GET [redacted]/down returned 503 Service Unavailable",
        })
    );
    assert_eq!(hits(&mock, "/down").await, 3);
}

#[tokio::test]
async fn attempt_and_run_timeouts_fail_with_kind_timeout() {
    let (mock, mut arrivals) = slow_mock().await;
    let ((attempt, attempt_status), (whole, whole_status)) = tokio::join!(
        run("attempt-timeout", json!({}), base_url(&mock)),
        run("run-timeout", json!({}), base_url(&mock)),
    );

    // Both runs called the server, so `call` was in flight when each limit struck.
    for _ in 0..2 {
        assert_eq!(arrivals.try_recv(), Ok(()));
    }
    assert_eq!(attempt_status, RunStatus::Failed, "{attempt:#}");
    let call = &attempt["nodes"]["call"];
    assert_eq!(call["status"], "failed");
    assert_eq!(call["attempts"], 1);
    assert_eq!(
        call["error"],
        json!({ "kind": "timeout", "message": "the attempt exceeded its timeout of 100ms" })
    );
    let took = millis_between(&call["started_at"], &call["finished_at"]);
    assert!((100..10_000).contains(&took), "the attempt took {took}ms");
    assert_eq!(
        attempt["error"],
        json!({
            "kind": "timeout",
            "message": "node `call` failed: the attempt exceeded its timeout of 100ms",
        })
    );

    assert_eq!(whole_status, RunStatus::Failed, "{whole:#}");
    assert_eq!(
        whole["error"],
        json!({ "kind": "timeout", "message": "the run exceeded its timeout of 300ms" })
    );
    assert_eq!(
        statuses(&whole),
        expected_statuses(&[("call", "cancelled"), ("after", "skipped")])
    );
    assert_eq!(whole["nodes"]["call"]["attempts"], 1);
    let took = millis_between(&whole["started_at"], &whole["finished_at"]);
    assert!((300..10_000).contains(&took), "the run took {took}ms");
}

#[tokio::test]
async fn foreach_runs_once_per_item_in_order_and_needs_a_list() {
    let items = json!([{ "name": "a" }, { "name": "b" }, { "name": "c" }]);
    let (run_json, status) = run("foreach", json!({ "items": items }), Secrets::default()).await;
    assert_eq!(status, RunStatus::Succeeded, "{run_json:#}");
    let expected = json!([
        { "index": 0, "item": { "name": "a" }, "label": "0-a" },
        { "index": 1, "item": { "name": "b" }, "label": "1-b" },
        { "index": 2, "item": { "name": "c" }, "label": "2-c" },
    ]);
    assert_eq!(run_json["output"], expected);
    let each = &run_json["nodes"]["each"];
    assert_eq!(each["output"], expected);
    assert_eq!(each["attempts"], 1, "a foreach node is one attempt");
    let inputs: Vec<Value> = expected
        .as_array()
        .expect("a list")
        .iter()
        .map(|value| json!({ "value": value }))
        .collect();
    assert_eq!(each["history"][0]["input"], Value::Array(inputs));

    let (empty, status) = run("foreach", json!({ "items": [] }), Secrets::default()).await;
    assert_eq!(status, RunStatus::Succeeded, "{empty:#}");
    assert_eq!(empty["output"], json!([]));

    let (not_a_list, status) = run(
        "foreach",
        json!({ "items": { "name": "a" } }),
        Secrets::default(),
    )
    .await;
    assert_eq!(status, RunStatus::Failed, "{not_a_list:#}");
    let message = "foreach must render to a list, got an object";
    assert_eq!(
        not_a_list["nodes"]["each"]["error"],
        json!({ "kind": "template", "message": message })
    );
    assert_eq!(
        not_a_list["error"],
        json!({ "kind": "template", "message": format!("node `each` failed: {message}") })
    );
}

/// Answers `/items/{id}` with the id and the `position` query parameter, after 80ms for even
/// ids and 40ms for odd ones, and keeps the largest number of requests in flight at once.
///
/// A response leaves no earlier than its delay after `respond` is called, so a request that
/// arrived less than its delay ago is certainly still unanswered: counting those never
/// overstates concurrency, and requests sent at once (what a broken bound does) all count.
#[derive(Default)]
struct Overlap {
    /// When each request so far arrived plus its delay: the earliest its answer can leave.
    answers_leave: Mutex<Vec<Instant>>,
    most_in_flight: AtomicUsize,
}

/// The responder: the counts stay with the test.
struct Counting(Arc<Overlap>);

impl Respond for Counting {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let id: u64 = request
            .url
            .path()
            .rsplit('/')
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_default();
        let position = request
            .url
            .query_pairs()
            .find(|(name, _)| name == "position")
            .map(|(_, value)| value.into_owned());
        let delay = Duration::from_millis(if id.is_multiple_of(2) { 80 } else { 40 });
        let now = Instant::now();
        let overlap = &self.0;
        let mut answers_leave = overlap
            .answers_leave
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let in_flight = 1 + answers_leave.iter().filter(|leaves| **leaves > now).count();
        answers_leave.push(now + delay);
        overlap
            .most_in_flight
            .fetch_max(in_flight, Ordering::SeqCst);
        ResponseTemplate::new(200)
            .set_body_json(json!({ "id": id, "position": position }))
            .set_delay(delay)
    }
}

#[tokio::test]
async fn foreach_parallelism_bounds_the_items_in_flight() {
    let mock = MockServer::start().await;
    let overlap = Arc::new(Overlap::default());
    Mock::given(method("GET"))
        .and(path_regex(r"^/items/\d+$"))
        .respond_with(Counting(overlap.clone()))
        .mount(&mock)
        .await;
    let ids = json!([10, 11, 12, 13, 14, 15]);
    let (run, status) = run("fan-out", json!({ "ids": ids }), base_url(&mock)).await;
    assert_eq!(status, RunStatus::Succeeded, "{run:#}");
    assert_eq!(
        run["output"],
        json!([
            { "id": 10, "position": "0" },
            { "id": 11, "position": "1" },
            { "id": 12, "position": "2" },
            { "id": 13, "position": "3" },
            { "id": 14, "position": "4" },
            { "id": 15, "position": "5" },
        ])
    );
    let requests = mock.received_requests().await.expect("recording is on");
    assert_eq!(requests.len(), 6);
    assert_eq!(overlap.most_in_flight.load(Ordering::SeqCst), 2);
}

/// `/echo` answers with the request's `Authorization` header and JSON body; `/refuse` answers
/// 403, quoting the `token` query parameter.
struct Echo;

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let received: Value = request.body_json().unwrap_or(Value::Null);
        ResponseTemplate::new(200)
            .set_body_json(json!({ "authorization": authorization, "received": received }))
    }
}

struct Refuse;

impl Respond for Refuse {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = request
            .url
            .query_pairs()
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        ResponseTemplate::new(403).set_body_string(format!("rejected token {token}"))
    }
}

/// The status and the body of an answer.
async fn send(request: RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    (status, response.text().await.expect("a readable body"))
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// Starts a manual run through the API; returns the answer's body (201, the run summary).
async fn start_run(server: &TestServer, workflow: &str, body: Value) -> (String, Value) {
    let url = server.url(&format!("/api/v1/workflows/{workflow}/runs"));
    let (status, text) = send(server.client.post(url).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let summary = parse(&text);
    (text, summary)
}

fn id_of(summary: &Value) -> String {
    summary["id"].as_str().expect("a run id").to_owned()
}

async fn finished(server: &TestServer, run_id: &str) -> RunStatus {
    let run = server
        .engine
        .wait(run_id, FINISH)
        .await
        .expect("the store answers")
        .expect("the run finished in time");
    run.status
}

/// Waits until the run JSON shows `node` running: a node is written as running once it has run
/// for a moment (20 ms); one that ends sooner is written once, when it ends.
async fn shown_running(server: &TestServer, run_id: &str, node: &str) {
    let deadline = tokio::time::Instant::now() + FINISH;
    loop {
        let run = parse(&get_ok(server, &format!("/api/v1/runs/{run_id}")).await);
        if run["nodes"][node]["status"] == "running" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{node} never showed as running: {run:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `GET path`, which must answer 200; returns the body as text.
async fn get_ok(server: &TestServer, path: &str) -> String {
    let (status, text) = send(server.client.get(server.url(path))).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
    text
}

async fn rules_server(secrets: Secrets) -> TestServer {
    let mut options = TestOptions::default();
    options.engine.secrets = secrets;
    TestServer::start_with(&fixtures("rules"), options).await
}

#[tokio::test]
async fn secret_values_never_appear_in_runs_or_api_answers() {
    let mock = MockServer::start().await;
    mount(&mock, "POST", "/echo", Echo).await;
    mount(&mock, "GET", "/refuse", Refuse).await;
    let server = rules_server(secrets(&[("BASE_URL", &mock.uri()), ("TOKEN", SECRET)])).await;

    // Client data is stored as sent (see redaction.rs), so the note holds no secret here.
    let note = "a note from the client";
    let (created, summary) =
        start_run(&server, "secrets", json!({ "note": note, "fail": false })).await;
    let succeeded = id_of(&summary);
    assert_eq!(finished(&server, &succeeded).await, RunStatus::Succeeded);
    let (created_failing, summary) =
        start_run(&server, "secrets", json!({ "note": note, "fail": true })).await;
    let failed = id_of(&summary);
    assert_eq!(finished(&server, &failed).await, RunStatus::Failed);

    // The secret did reach the server, so its absence below is redaction.
    let requests = mock.received_requests().await.expect("recording is on");
    let echo = requests
        .iter()
        .find(|request| request.url.path() == "/echo")
        .expect("the echo call");
    let authorization = echo
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    assert_eq!(authorization, Some(format!("Bearer {SECRET}").as_str()));

    let succeeded_text = get_ok(&server, &format!("/api/v1/runs/{succeeded}")).await;
    let failed_text = get_ok(&server, &format!("/api/v1/runs/{failed}")).await;
    let answers = [
        ("POST …/runs", created),
        ("POST …/runs (failing)", created_failing),
        ("GET run", succeeded_text.clone()),
        ("GET failed run", failed_text.clone()),
        ("GET runs", get_ok(&server, "/api/v1/runs").await),
        (
            "GET failed runs",
            get_ok(&server, "/api/v1/runs?workflow=secrets&status=failed").await,
        ),
    ];
    for (what, text) in &answers {
        assert!(!text.contains(SECRET), "{what} leaks the secret: {text}");
        // The answers to POST show the run before any node ran: client data only.
        assert!(
            what.starts_with("POST") || text.contains("[redacted]"),
            "{what} shows no redaction: {text}"
        );
    }

    let run = parse(&succeeded_text);
    assert_eq!(run["trigger"]["body"]["note"], note);
    assert_eq!(
        run["nodes"]["call"]["history"][0]["input"],
        json!({
            "method": "POST",
            "url": "[redacted]/echo",
            "headers": { "Authorization": "Bearer [redacted]" },
            "json": { "token": "[redacted]", "note": note },
        })
    );
    assert_eq!(
        run["nodes"]["refused"]["history"][0]["input"],
        json!({ "url": "[redacted]/refuse", "query": { "token": "[redacted]" } })
    );
    let refusal = "GET [redacted]/refuse returned 403 Forbidden: rejected token [redacted]";
    assert_eq!(
        run["output"],
        json!({
            "echoed": {
                "authorization": "Bearer [redacted]",
                "received": { "token": "[redacted]", "note": note },
            },
            "refused": { "kind": "http", "message": refusal },
            "direct": "token [redacted]",
        })
    );
    assert_eq!(run["nodes"]["must"]["status"], "skipped");

    let run = parse(&failed_text);
    assert_eq!(
        run["error"],
        json!({ "kind": "http", "message": format!("node `must` failed: {refusal}") })
    );
    assert_eq!(run["nodes"]["must"]["error"]["message"], refusal);
}

#[tokio::test]
async fn a_cancelled_run_cancels_its_in_flight_and_unreached_nodes() {
    let (mock, mut arrivals) = slow_mock().await;
    let server = rules_server(base_url(&mock)).await;
    let (_, summary) = start_run(&server, "cancel", json!({})).await;
    let run_id = id_of(&summary);
    arrivals.recv().await.expect("`wait` called the server");
    shown_running(&server, &run_id, "wait").await;

    let cancel = server.url(&format!("/api/v1/runs/{run_id}/cancel"));
    let (status, text) = send(server.client.post(cancel)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert_eq!(parse(&text)["status"], "cancelled");
    assert_eq!(finished(&server, &run_id).await, RunStatus::Cancelled);

    let run = parse(&get_ok(&server, &format!("/api/v1/runs/{run_id}")).await);
    assert_eq!(run["status"], "cancelled");
    assert_eq!(
        run["error"],
        json!({ "kind": "cancelled", "message": "the run was cancelled" })
    );
    assert_eq!(run["output"], Value::Null);
    instant(&run["finished_at"]);
    assert_eq!(
        statuses(&run),
        expected_statuses(&[
            ("wait", "cancelled"),
            ("after", "cancelled"),
            ("last", "cancelled"),
        ])
    );
    let wait = &run["nodes"]["wait"];
    assert_eq!(wait["attempts"], 1);
    instant(&wait["started_at"]);
    instant(&wait["finished_at"]);
    for node in ["after", "last"] {
        assert_eq!(run["nodes"][node]["attempts"], 0, "{node}");
    }
}

/// Reports the number `n` of each `/serial/{n}` request, and holds the answer to `/serial/1`
/// until the test releases it.
///
/// Holding blocks the mock server's own thread (wiremock runs it on a single-threaded runtime
/// of its own), so nothing else may call the mock meanwhile; the test's runtime is untouched.
struct Gate {
    arrived: mpsc::UnboundedSender<u64>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Respond for Gate {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n: u64 = request
            .url
            .path()
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        let _ = self.arrived.send(n);
        if n == 1 {
            let release = self.release.lock().unwrap_or_else(|e| e.into_inner());
            // A test that fails before releasing drops the sender, which ends the wait at once.
            let _ = release.recv_timeout(FINISH);
        }
        ResponseTemplate::new(200).set_body_json(json!({ "n": n }))
    }
}

fn listed_ids(text: &str) -> Vec<String> {
    parse(text)["runs"]
        .as_array()
        .expect("a list of runs")
        .iter()
        .filter_map(|run| run["id"].as_str().map(str::to_owned))
        .collect()
}

/// A server for the `serial` workflow, whose first run is in flight (its call held by the
/// gate) when this returns.
struct Serial {
    server: TestServer,
    /// Keeps the gate's server alive.
    _mock: MockServer,
    arrivals: mpsc::UnboundedReceiver<u64>,
    /// Sending lets the first run's call answer.
    release: std::sync::mpsc::Sender<()>,
    first: String,
}

async fn serial_with_first_run_in_flight() -> Serial {
    let mock = MockServer::start().await;
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let (release, released) = std::sync::mpsc::channel();
    let gate = Gate {
        arrived,
        release: Mutex::new(released),
    };
    Mock::given(method("GET"))
        .and(path_regex(r"^/serial/\d+$"))
        .respond_with(gate)
        .mount(&mock)
        .await;
    let server = rules_server(base_url(&mock)).await;
    let (_, summary) = start_run(&server, "serial", json!({ "n": 1 })).await;
    assert_eq!(arrivals.recv().await, Some(1));
    shown_running(&server, id_of(&summary).as_str(), "call").await;
    Serial {
        server,
        _mock: mock,
        arrivals,
        release,
        first: id_of(&summary),
    }
}

#[tokio::test]
async fn concurrency_one_keeps_a_second_run_queued_until_the_first_finishes() {
    let Serial {
        server,
        _mock,
        mut arrivals,
        release,
        first,
    } = serial_with_first_run_in_flight().await;
    let (_, summary) = start_run(&server, "serial", json!({ "n": 2 })).await;
    let second = id_of(&summary);
    assert_eq!(summary["status"], "queued");

    let queued = parse(&get_ok(&server, &format!("/api/v1/runs/{second}")).await);
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["started_at"], Value::Null);
    assert_eq!(
        queued["nodes"]["call"],
        json!({
            "status": "pending", "attempts": 0, "output": null, "error": null,
            "started_at": null, "finished_at": null, "history": [],
        })
    );
    let running = parse(&get_ok(&server, &format!("/api/v1/runs/{first}")).await);
    assert_eq!(running["status"], "running");
    assert_eq!(running["nodes"]["call"]["status"], "running");
    let listed = get_ok(&server, "/api/v1/runs?workflow=serial&status=queued").await;
    assert_eq!(listed_ids(&listed), std::slice::from_ref(&second));

    release.send(()).expect("the gate waits");
    assert_eq!(finished(&server, &first).await, RunStatus::Succeeded);
    assert_eq!(finished(&server, &second).await, RunStatus::Succeeded);
    assert_eq!(arrivals.recv().await, Some(2));

    let first = parse(&get_ok(&server, &format!("/api/v1/runs/{first}")).await);
    let second = parse(&get_ok(&server, &format!("/api/v1/runs/{second}")).await);
    assert_eq!(first["output"], json!({ "n": 1 }));
    assert_eq!(second["output"], json!({ "n": 2 }));
    assert!(
        instant(&second["started_at"]) >= instant(&first["finished_at"]),
        "the second run started before the first finished"
    );
}

/// Every `error` is null or exactly `{kind, message}`, both strings.
fn check_error(error: &Value, at: &str) {
    if error.is_null() {
        return;
    }
    assert_eq!(keys(error), BTreeSet::from(["kind", "message"]), "{at}");
    assert!(error["kind"].is_string(), "{at}: {error}");
    assert!(error["message"].is_string(), "{at}: {error}");
}

/// A timestamp field is null or RFC 3339 in UTC.
fn check_timestamp(value: &Value, at: &str) {
    if !value.is_null() {
        assert!(value.is_string(), "{at}: {value}");
        instant(value);
    }
}

#[tokio::test]
async fn the_run_json_has_the_documented_shape() {
    let mock = MockServer::start().await;
    mount(&mock, "GET", "/shape", sequence(&[503, 200])).await;
    mount(&mock, "GET", "/refused", sequence(&[400])).await;
    let (run, status) = run("shape", json!({ "open": false }), base_url(&mock)).await;
    assert_eq!(status, RunStatus::Succeeded, "{run:#}");

    // SPEC's keys, plus `created_at` (when the run was queued) and `revision` (the SHA-256 of
    // the workflow file the run executed).
    assert_eq!(
        keys(&run),
        BTreeSet::from([
            "id",
            "workflow",
            "status",
            "trigger",
            "output",
            "error",
            "started_at",
            "finished_at",
            "nodes",
            "created_at",
            "revision",
        ])
    );
    let id = uuid::Uuid::parse_str(run["id"].as_str().expect("a string id")).expect("a UUID");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(run["workflow"], "shape");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["trigger"],
        json!({ "type": "manual", "body": { "open": false } })
    );
    assert_eq!(run["output"], json!({ "ok": true }));
    assert_eq!(run["error"], Value::Null);
    let text = std::fs::read_to_string(fixture("shape")).expect("the fixture");
    assert_eq!(
        run["revision"],
        hex::encode(Sha256::digest(text.as_bytes()))
    );
    let created = instant(&run["created_at"]);
    let started = instant(&run["started_at"]);
    let finished = instant(&run["finished_at"]);
    assert!(created <= started && started <= finished, "{run:#}");

    let nodes = &run["nodes"];
    assert_eq!(
        keys(nodes),
        BTreeSet::from(["fetch", "refused", "gate", "summary"])
    );
    let node_keys = BTreeSet::from([
        "status",
        "attempts",
        "output",
        "error",
        "started_at",
        "finished_at",
        "history",
    ]);
    let attempt_keys = BTreeSet::from([
        "attempt",
        "status",
        "input",
        "output",
        "error",
        "not_before",
        "started_at",
        "finished_at",
        "worker",
    ]);
    for (id, node) in nodes.as_object().expect("a map") {
        assert_eq!(keys(node), node_keys, "nodes.{id}");
        check_error(&node["error"], &format!("nodes.{id}.error"));
        for field in ["started_at", "finished_at"] {
            check_timestamp(&node[field], &format!("nodes.{id}.{field}"));
        }
        assert!(node["attempts"].is_u64(), "nodes.{id}.attempts");
        for (index, attempt) in node["history"]
            .as_array()
            .expect("a list")
            .iter()
            .enumerate()
        {
            let at = format!("nodes.{id}.history[{index}]");
            assert_eq!(keys(attempt), attempt_keys, "{at}");
            assert_eq!(attempt["attempt"], index + 1, "{at}");
            check_error(&attempt["error"], &format!("{at}.error"));
            for field in ["not_before", "started_at", "finished_at"] {
                check_timestamp(&attempt[field], &format!("{at}.{field}"));
            }
            let worker = &attempt["worker"];
            assert!(
                worker.is_null() || worker.as_str().is_some_and(|w| w.contains(':')),
                "{at}.worker is host:pid:n or null: {worker}"
            );
        }
    }

    let fetch = &nodes["fetch"];
    assert_eq!(fetch["status"], "succeeded");
    assert_eq!(fetch["attempts"], 2);
    assert_eq!(fetch["output"]["status"], 200);
    assert_eq!(fetch["output"]["body"], json!({ "ok": true }));
    assert!(fetch["output"]["headers"].is_object(), "{fetch:#}");
    assert_eq!(fetch["error"], Value::Null);
    let history = &fetch["history"];
    assert_eq!(history_statuses(fetch), ["failed", "succeeded"]);
    assert_eq!(history[0]["input"], json!({ "url": "[redacted]/shape" }));
    assert_eq!(history[0]["output"], Value::Null);
    assert_eq!(
        history[0]["error"],
        json!({ "kind": "http", "message": "GET [redacted]/shape returned 503 Service Unavailable" })
    );
    let waited = millis_between(&history[0]["finished_at"], &history[1]["started_at"]);
    assert!(waited >= 4, "the retry waited {waited}ms");
    assert_eq!(history[1]["output"], fetch["output"]);
    assert_eq!(fetch["started_at"], history[0]["started_at"]);
    assert_eq!(fetch["finished_at"], history[1]["finished_at"]);

    let refused = &nodes["refused"];
    assert_eq!(refused["status"], "failed");
    assert_eq!(refused["attempts"], 1);
    assert_eq!(refused["output"], Value::Null);
    assert_eq!(
        refused["error"],
        json!({ "kind": "http", "message": "GET [redacted]/refused returned 400 Bad Request" })
    );

    let gate = &nodes["gate"];
    assert_eq!(gate["status"], "skipped");
    assert_eq!(gate["attempts"], 0);
    assert_eq!(gate["output"], Value::Null);
    assert_eq!(gate["error"], Value::Null);
    assert_eq!(gate["started_at"], Value::Null);
    instant(&gate["finished_at"]);
    assert_eq!(history_statuses(gate), ["skipped"]);

    let summary = &nodes["summary"];
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(summary["attempts"], 1);
    assert_eq!(summary["output"], json!({ "ok": true }));
    assert_eq!(
        summary["history"][0]["input"],
        json!({ "value": { "ok": true } })
    );
    for node in [fetch, refused, summary] {
        let started = instant(&node["started_at"]);
        assert!(started >= instant(&run["started_at"]), "{node:#}");
        assert!(started <= instant(&node["finished_at"]), "{node:#}");
        assert!(instant(&node["finished_at"]) <= finished, "{node:#}");
    }
}

#[tokio::test]
async fn cancelling_a_queued_run_ends_it_at_once() {
    let Serial {
        server,
        _mock,
        mut arrivals,
        release,
        first,
    } = serial_with_first_run_in_flight().await;
    let (_, summary) = start_run(&server, "serial", json!({ "n": 2 })).await;
    let queued = id_of(&summary);
    assert_eq!(summary["status"], "queued");

    let cancel = server.url(&format!("/api/v1/runs/{queued}/cancel"));
    let (status, text) = send(server.client.post(cancel)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    // A queued run has nothing in flight: it need not wait for a free slot to end.
    let run = parse(&get_ok(&server, &format!("/api/v1/runs/{queued}")).await);
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert_eq!(
        run["error"],
        json!({ "kind": "cancelled", "message": "the run was cancelled" })
    );
    assert_eq!(run["nodes"]["call"]["status"], "cancelled");
    assert_eq!(parse(&text)["status"], "cancelled");

    release.send(()).expect("the gate waits");
    assert_eq!(finished(&server, &first).await, RunStatus::Succeeded);
    assert_eq!(finished(&server, &queued).await, RunStatus::Cancelled);
    let extra = arrivals.try_recv();
    assert!(
        extra.is_err(),
        "the cancelled run called the server: {extra:?}"
    );
}
