//! The HTTP API end to end: a real server on a free port, real HTTP requests, the workflows of
//! `tests/fixtures/api`, and every status code the API documents.

use std::collections::BTreeMap;
use std::time::Duration;

use enrichflow::store::RunStatus;
use enrichflow_nodes::Secrets;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{TestOptions, TestServer, fixtures};

/// Long enough for any fixture run on a loaded CI machine; a healthy run takes milliseconds.
const FINISH: Duration = Duration::from_secs(20);

/// What the server answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as JSON, or as a JSON string when it is not JSON.
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts the status and, for errors, the `error.code`.
    fn check(&self, status: StatusCode, code: Option<&str>) -> &Self {
        assert_eq!(self.status, status, "{:#}", self.body);
        if let Some(code) = code {
            assert_eq!(self.body["error"]["code"], code, "{:#}", self.body);
            assert!(self.body["error"]["message"].is_string(), "{:#}", self.body);
        }
        self
    }

    fn run_id(&self) -> String {
        self.body["run_id"]
            .as_str()
            .or_else(|| self.body["id"].as_str())
            .expect("a run id in the body")
            .to_owned()
    }
}

async fn send(request: RequestBuilder) -> Answer {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a readable body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

async fn start() -> TestServer {
    TestServer::start(&fixtures("api")).await
}

async fn start_with(options: TestOptions) -> TestServer {
    TestServer::start_with(&fixtures("api"), options).await
}

fn with_secrets(mut options: TestOptions, secrets: &[(&str, &str)]) -> TestOptions {
    let secrets: BTreeMap<String, String> = secrets
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    options.engine.secrets = Secrets::new(secrets);
    options
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

#[tokio::test]
async fn an_accepted_webhook_answers_202_and_records_body_headers_and_query() {
    let server = start().await;
    let answer = send(
        server
            .client
            .post(server.url("/hooks/intake?source=crm&page=2"))
            .header("X-Source", "crm")
            .header("Authorization", "Bearer hidden")
            .header("Cookie", "session=hidden")
            .json(&json!({ "email": "ada@example.com" })),
    )
    .await;
    answer.check(StatusCode::ACCEPTED, None);
    let run_id = answer.run_id();
    assert!(answer.body["status"].is_string(), "{:#}", answer.body);
    let location = format!("/api/v1/runs/{run_id}");
    assert_eq!(answer.header("location"), Some(location.as_str()));

    assert_eq!(finished(&server, &run_id).await, RunStatus::Succeeded);
    let run = send(server.client.get(server.url(&location))).await;
    run.check(StatusCode::OK, None);
    let trigger = &run.body["trigger"];
    assert_eq!(trigger["type"], "webhook");
    assert_eq!(trigger["body"], json!({ "email": "ada@example.com" }));
    assert_eq!(trigger["query"], json!({ "source": "crm", "page": "2" }));
    assert_eq!(trigger["headers"]["x-source"], "crm");
    for hidden in ["authorization", "cookie", "x-enrichflow-signature"] {
        assert!(trigger["headers"].get(hidden).is_none(), "{hidden} leaked");
    }
    assert_eq!(run.body["output"], json!({ "email": "ada@example.com" }));
    assert_eq!(run.body["nodes"]["keep"]["status"], "succeeded");
}

#[tokio::test]
async fn an_on_complete_webhook_answers_with_the_run_output() {
    let server = start().await;
    let answer = send(
        server
            .client
            .post(server.url("/hooks/echo/lead"))
            .json(&json!({ "email": "ada@example.com" })),
    )
    .await;
    answer.check(StatusCode::OK, None);
    assert_eq!(
        answer.body,
        json!({ "email": "ada@example.com", "type": "webhook" })
    );
    assert!(answer.header("x-enrichflow-run-id").is_some());

    let silent = send(server.client.post(server.url("/hooks/silent"))).await;
    silent.check(StatusCode::OK, None);
    assert_eq!(
        silent.body,
        Value::Null,
        "a run without output answers null"
    );
}

#[tokio::test]
async fn an_on_complete_webhook_whose_run_fails_answers_500_with_the_run_id() {
    let server = start().await;
    let answer = send(
        server
            .client
            .post(server.url("/hooks/fails"))
            .json(&json!({})),
    )
    .await;
    answer.check(StatusCode::INTERNAL_SERVER_ERROR, Some("run_failed"));
    let run_id = answer.run_id();
    let location = format!("/api/v1/runs/{run_id}");
    assert_eq!(answer.header("location"), Some(location.as_str()));
    let run = send(server.client.get(server.url(&location))).await;
    assert_eq!(run.body["status"], "failed");
}

/// Answers after a minute, and reports each request as it arrives.
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
    Mock::given(method("GET"))
        .and(path("/slow"))
        .respond_with(Slow(arrived))
        .mount(&mock)
        .await;
    (mock, arrivals)
}

#[tokio::test]
async fn an_on_complete_webhook_answers_504_when_the_run_outlasts_the_wait_and_can_be_cancelled() {
    let (mock, _arrivals) = slow_mock().await;
    let mut options = with_secrets(TestOptions::default(), &[("BASE_URL", &mock.uri())]);
    options.api.on_complete_timeout = Duration::from_millis(200);
    let server = start_with(options).await;

    let answer = send(server.client.post(server.url("/hooks/slow"))).await;
    answer.check(StatusCode::GATEWAY_TIMEOUT, Some("timeout"));
    let run_id = answer.run_id();
    let location = format!("/api/v1/runs/{run_id}");
    assert_eq!(answer.header("location"), Some(location.as_str()));

    let cancel_url = server.url(&format!("{location}/cancel"));
    let cancelled = send(server.client.post(&cancel_url)).await;
    cancelled.check(StatusCode::ACCEPTED, None);
    assert_eq!(cancelled.body["id"], run_id.as_str());
    assert_eq!(finished(&server, &run_id).await, RunStatus::Cancelled);

    let again = send(server.client.post(&cancel_url)).await;
    again.check(StatusCode::CONFLICT, Some("conflict"));
}

#[tokio::test]
async fn an_on_complete_webhook_whose_run_is_cancelled_answers_409() {
    let (mock, mut arrivals) = slow_mock().await;
    let options = with_secrets(TestOptions::default(), &[("BASE_URL", &mock.uri())]);
    let server = start_with(options).await;

    let webhook = tokio::spawn(send(server.client.post(server.url("/hooks/slow"))));
    arrivals
        .recv()
        .await
        .expect("the slow node called the server");
    let runs = send(server.client.get(server.url("/api/v1/runs?workflow=slow"))).await;
    let run_id = runs.body["runs"][0]["id"]
        .as_str()
        .expect("the run")
        .to_owned();
    let cancel_url = server.url(&format!("/api/v1/runs/{run_id}/cancel"));
    send(server.client.post(cancel_url))
        .await
        .check(StatusCode::ACCEPTED, None);

    let answer = webhook.await.expect("the webhook request completes");
    answer.check(StatusCode::CONFLICT, Some("run_cancelled"));
    assert_eq!(answer.run_id(), run_id);
}

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_signed_webhook_needs_the_hmac_of_its_body() {
    let options = with_secrets(TestOptions::default(), &[("HOOK_SECRET", "s3cr3t-key")]);
    let server = start_with(options).await;
    let body = br#"{"lead": 1}"#.to_vec();
    let hook = server.url("/hooks/signed");

    let unsigned = send(server.client.post(&hook).body(body.clone())).await;
    unsigned.check(StatusCode::UNAUTHORIZED, Some("unauthorized"));
    for wrong in [
        signature("another-key", &body),
        signature("s3cr3t-key", b"{\"lead\": 2}"),
        "sha256=not-hex".to_owned(),
        "md5=abc".to_owned(),
    ] {
        let request = server.client.post(&hook).body(body.clone());
        let answer = send(request.header("X-Enrichflow-Signature", wrong)).await;
        answer.check(StatusCode::UNAUTHORIZED, Some("unauthorized"));
    }

    let signed = server
        .client
        .post(&hook)
        .header("X-Enrichflow-Signature", signature("s3cr3t-key", &body))
        .body(body.clone());
    let answer = send(signed).await;
    answer.check(StatusCode::OK, None);
    assert_eq!(answer.body, json!({ "lead": 1 }));
}

#[tokio::test]
async fn payloads_that_fail_the_schema_are_422_with_details_and_bad_json_is_400() {
    let server = start().await;
    for (url, body) in [
        ("/hooks/echo/lead", "{}"),
        ("/hooks/echo/lead", ""),
        ("/hooks/echo/lead", r#"{"email": 7}"#),
        ("/api/v1/workflows/echo/runs", "[1, 2]"),
    ] {
        let answer = send(server.client.post(server.url(url)).body(body)).await;
        answer.check(StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_input"));
        let details = answer.body["error"]["details"].as_array().expect("details");
        assert!(!details.is_empty(), "{url} {body}");
        assert!(details.iter().all(Value::is_string), "{details:?}");
    }
    for url in [
        "/hooks/echo/lead",
        "/hooks/intake",
        "/api/v1/workflows/echo/runs",
    ] {
        let answer = send(server.client.post(server.url(url)).body(r#"{"email":"#)).await;
        answer.check(StatusCode::BAD_REQUEST, Some("invalid_json"));
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let mut options = TestOptions::default();
    options.api.body_limit = 1024;
    let server = start_with(options).await;
    let large = json!({ "padding": "x".repeat(4096) }).to_string();
    for url in ["/hooks/intake", "/api/v1/workflows/intake/runs"] {
        let answer = send(server.client.post(server.url(url)).body(large.clone())).await;
        answer.check(StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"));
    }
    let small = send(server.client.post(server.url("/hooks/intake")).body("{}")).await;
    small.check(StatusCode::ACCEPTED, None);
}

#[tokio::test]
async fn unknown_hooks_runs_workflows_and_routes_are_404_and_wrong_methods_405() {
    let server = start().await;
    let unknown_run = uuid::Uuid::now_v7();
    let client = &server.client;
    for request in [
        client.post(server.url("/hooks/nope")),
        client.get(server.url(&format!("/api/v1/runs/{unknown_run}"))),
        client.post(server.url(&format!("/api/v1/runs/{unknown_run}/cancel"))),
        client.get(server.url("/api/v1/workflows/nope")),
        client
            .post(server.url("/api/v1/workflows/nope/runs"))
            .body("{}"),
        client.get(server.url("/api/v1/nothing")),
    ] {
        send(request)
            .await
            .check(StatusCode::NOT_FOUND, Some("not_found"));
    }
    let wrong_method = send(client.get(server.url("/hooks/intake"))).await;
    wrong_method.check(StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"));
}

#[tokio::test]
async fn hook_paths_are_matched_undecoded_so_an_escaped_slash_reaches_no_hook() {
    let server = start().await;
    for escaped in [
        "/hooks/echo%2Flead",
        "/hooks/echo%2flead",
        "/hooks/%65cho/lead",
    ] {
        let request = server.client.post(server.url(escaped)).body("{}");
        send(request)
            .await
            .check(StatusCode::NOT_FOUND, Some("not_found"));
    }
    let plain = server
        .client
        .post(server.url("/hooks/echo/lead"))
        .json(&json!({ "email": "ada@example.com" }));
    send(plain).await.check(StatusCode::OK, None);
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_are_503_with_retry_after_but_health_answers() {
    let (mock, mut arrivals) = slow_mock().await;
    let mut options = with_secrets(TestOptions::default(), &[("BASE_URL", &mock.uri())]);
    options.api.max_concurrent_requests = 1;
    let server = start_with(options).await;

    // An on-complete webhook holds the one slot while its run waits on the slow server.
    let webhook = tokio::spawn(send(server.client.post(server.url("/hooks/slow"))));
    arrivals
        .recv()
        .await
        .expect("the slow node called the server");
    let busy = send(server.client.get(server.url("/api/v1/runs"))).await;
    busy.check(StatusCode::SERVICE_UNAVAILABLE, Some("overloaded"));
    assert_eq!(busy.header("retry-after"), Some("1"));
    for probe in ["/healthz", "/metrics"] {
        let answer = send(server.client.get(server.url(probe))).await;
        answer.check(StatusCode::OK, None);
    }
    webhook.abort();
}

#[tokio::test]
async fn workflows_are_listed_and_shown_with_their_dag() {
    let server = start().await;
    let list = send(server.client.get(server.url("/api/v1/workflows"))).await;
    list.check(StatusCode::OK, None);
    let ids: Vec<&str> = list.body["workflows"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|workflow| workflow["id"].as_str())
        .collect();
    assert_eq!(ids, ["echo", "fails", "intake", "signed", "silent", "slow"]);
    let echo = &list.body["workflows"][0];
    assert_eq!(echo["name"], "Echo");
    assert_eq!(echo["node_count"], 2);
    assert_eq!(
        echo["triggers"],
        json!([{ "type": "webhook", "path": "echo/lead", "url": "/hooks/echo/lead",
                 "respond": "on_complete", "signed": false }])
    );
    let signed = &list.body["workflows"][3];
    assert_eq!(signed["triggers"][0]["signed"], true);
    assert!(
        !signed.to_string().contains("HOOK_SECRET"),
        "the secret template leaked"
    );

    let show = send(server.client.get(server.url("/api/v1/workflows/echo"))).await;
    show.check(StatusCode::OK, None);
    assert_eq!(show.body["inputs"]["required"], json!(["email"]));
    let dag = &show.body["dag"];
    let nodes: Vec<(&str, &str)> = dag["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| {
            (
                node["id"].as_str().unwrap_or(""),
                node["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(nodes, [("shape", "transform"), ("answer", "transform")]);
    assert_eq!(dag["nodes"][1]["needs"], json!(["shape"]));
    assert_eq!(dag["edges"], json!([{ "from": "shape", "to": "answer" }]));
    assert_eq!(dag["order"], json!(["shape", "answer"]));
}

#[tokio::test]
async fn a_manual_run_answers_201_with_the_run_summary() {
    let server = start().await;
    let answer = send(
        server
            .client
            .post(server.url("/api/v1/workflows/echo/runs"))
            .json(&json!({ "email": "ada@example.com" })),
    )
    .await;
    answer.check(StatusCode::CREATED, None);
    let run_id = answer.run_id();
    let location = format!("/api/v1/runs/{run_id}");
    assert_eq!(answer.header("location"), Some(location.as_str()));
    assert_eq!(answer.body["workflow"], "echo");
    assert_eq!(
        answer.body["trigger"],
        json!({ "type": "manual", "body": { "email": "ada@example.com" } })
    );

    assert_eq!(finished(&server, &run_id).await, RunStatus::Succeeded);
    let run = send(server.client.get(server.url(&location))).await;
    assert_eq!(run.body["output"]["type"], "manual");
}

async fn manual_run(server: &TestServer, workflow: &str) -> String {
    let url = server.url(&format!("/api/v1/workflows/{workflow}/runs"));
    let body = json!({ "email": "ada@example.com" });
    let answer = send(server.client.post(url).json(&body)).await;
    answer.check(StatusCode::CREATED, None);
    let run_id = answer.run_id();
    finished(server, &run_id).await;
    run_id
}

fn run_ids(answer: &Answer) -> Vec<&str> {
    answer.body["runs"]
        .as_array()
        .expect("a list of runs")
        .iter()
        .filter_map(|run| run["id"].as_str())
        .collect()
}

#[tokio::test]
async fn a_full_page_of_the_largest_size_still_says_whether_more_follow() {
    let server = start().await;
    let store = server.engine.store();
    let largest = enrichflow::store::RunQuery::MAX_LIMIT;
    let mut ids = Vec::new();
    for _ in 0..=largest {
        let id = uuid::Uuid::now_v7().to_string();
        store
            .create_run(&enrichflow::store::RunRecord {
                id: id.clone(),
                workflow_id: "bulk".into(),
                revision: "r".into(),
                status: RunStatus::Succeeded,
                trigger: json!({"type": "manual"}).into(),
                output: None,
                error: None,
                created_at: chrono::Utc::now(),
                started_at: None,
                finished_at: None,
                deadline_at: None,
                cancel_requested: false,
                idempotency_key: None,
                idempotency_body_hash: None,
            })
            .await
            .expect("stored");
        ids.push(id);
    }
    let get = |query: String| {
        send(
            server
                .client
                .get(server.url(&format!("/api/v1/runs{query}"))),
        )
    };

    let first = get(format!("?workflow=bulk&limit={largest}")).await;
    assert_eq!(run_ids(&first).len(), largest as usize);
    let cursor = ids[1].as_str();
    assert_eq!(first.body["next_cursor"], cursor, "one more run follows");
    let last = get(format!("?workflow=bulk&limit={largest}&cursor={cursor}")).await;
    assert_eq!(run_ids(&last), [ids[0].as_str()]);
    assert_eq!(last.body["next_cursor"], Value::Null);

    // A page that is exactly full and the last one: nothing follows.
    let exact = get(format!("?workflow=bulk&limit=1&cursor={cursor}")).await;
    assert_eq!(run_ids(&exact), [ids[0].as_str()]);
    assert_eq!(exact.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn runs_are_listed_newest_first_filtered_and_paged() {
    let server = start().await;
    let mut intake = Vec::new();
    for _ in 0..3 {
        intake.push(manual_run(&server, "intake").await);
    }
    let echo = manual_run(&server, "echo").await;
    let failed = manual_run(&server, "fails").await;
    let list = |query: &str| {
        send(
            server
                .client
                .get(server.url(&format!("/api/v1/runs{query}"))),
        )
    };

    let all = list("").await;
    all.check(StatusCode::OK, None);
    let expected = [&failed, &echo, &intake[2], &intake[1], &intake[0]];
    assert_eq!(run_ids(&all), expected.map(String::as_str));
    assert_eq!(all.body["next_cursor"], Value::Null);
    assert!(
        all.body["runs"][0].get("nodes").is_none(),
        "lists hold summaries"
    );

    let first = list("?workflow=intake&limit=2").await;
    assert_eq!(
        run_ids(&first),
        [&intake[2], &intake[1]].map(String::as_str)
    );
    assert_eq!(first.body["next_cursor"], intake[1].as_str());
    let second = list(&format!("?workflow=intake&limit=2&cursor={}", intake[1])).await;
    assert_eq!(run_ids(&second), [intake[0].as_str()]);
    assert_eq!(second.body["next_cursor"], Value::Null);

    let failures = list("?status=failed").await;
    assert_eq!(run_ids(&failures), [failed.as_str()]);
    let succeeded = list("?status=succeeded&workflow=echo").await;
    assert_eq!(run_ids(&succeeded), [echo.as_str()]);

    for query in [
        "?status=done",
        "?limit=0",
        "?limit=many",
        "?limit=100000",
        "?cursor=x",
    ] {
        list(query)
            .await
            .check(StatusCode::BAD_REQUEST, Some("bad_request"));
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = start().await;
    let health = send(server.client.get(format!("http://{}/healthz", server.addr))).await;
    health.check(StatusCode::OK, None);
    assert_eq!(health.body, json!({ "status": "ok" }));
    let ready = send(server.client.get(server.url("/readyz"))).await;
    ready.check(StatusCode::OK, None);
    assert_eq!(ready.body["status"], "ready");

    send(server.client.post(server.url("/hooks/silent")))
        .await
        .check(StatusCode::OK, None);
    let metrics = send(server.client.get(server.url("/metrics"))).await;
    metrics.check(StatusCode::OK, None);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    let text = metrics.body.as_str().expect("Prometheus text");
    for series in [
        "enrichflow_runs_started_total",
        "enrichflow_webhook_requests_total",
        "enrichflow_queue_depth",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
}

#[tokio::test]
async fn metrics_are_503_without_a_recorder() {
    let options = TestOptions {
        metrics: false,
        ..TestOptions::default()
    };
    let server = start_with(options).await;
    let answer = send(server.client.get(server.url("/metrics"))).await;
    answer.check(StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"));
}
