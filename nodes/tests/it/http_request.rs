//! The `http.request` node against a wiremock server: what it sends, what it returns, and how its
//! failures are classified.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use enrichflow_nodes::{ErrorKind, NodeContext, NodeError, Registry};
use serde_json::{Value, json};
use tokio::sync::Notify;
use wiremock::matchers::{body_json, body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn context() -> NodeContext {
    crate::support::context("call", 1)
}

async fn execute_in(ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
    let node = Registry::with_builtins()
        .get("http.request")
        .expect("http.request is a built-in");
    node.check_config(&with)
        .expect("the block passes the load-time check");
    node.execute(ctx, with).await
}

async fn execute(with: Value) -> Result<Value, NodeError> {
    execute_in(&context(), with).await
}

async fn fail(with: Value) -> NodeError {
    execute(with).await.expect_err("the request should fail")
}

#[tokio::test]
async fn returns_a_json_body_with_status_and_headers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/people"))
        .and(header("idempotency-key", "run-1:call:1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Request-Id", "abc")
                .set_body_json(json!({"name": "Ada", "tags": [1, 2]})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let output = execute(json!({"url": format!("{}/people", server.uri())}))
        .await
        .expect("the request succeeds");

    assert_eq!(output["status"], 200);
    assert_eq!(output["headers"]["x-request-id"], "abc");
    assert_eq!(output["headers"]["content-type"], "application/json");
    assert_eq!(output["body"], json!({"name": "Ada", "tags": [1, 2]}));
}

#[tokio::test]
async fn returns_a_text_body_as_a_string() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(201).set_body_string("created, not JSON"))
        .mount(&server)
        .await;

    let output = execute(json!({"url": server.uri()}))
        .await
        .expect("the request succeeds");

    assert_eq!(output["status"], 201);
    assert_eq!(output["body"], "created, not JSON");
}

#[tokio::test]
async fn sends_method_headers_query_and_json() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/leads"))
        .and(header("authorization", "Bearer t0ken"))
        .and(header("x-attempt", "1"))
        .and(header("content-type", "application/json"))
        .and(header("idempotency-key", "mine"))
        .and(query_param("source", "crm"))
        .and(query_param("limit", "10"))
        .and(query_param("dry", "true"))
        .and(body_json(json!({"email": "ada@example.com", "score": 88})))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;

    let output = execute(json!({
        "method": "post",
        "url": format!("{}/v1/leads?source=crm", server.uri()),
        "headers": {"Authorization": "Bearer t0ken", "X-Attempt": 1, "Idempotency-Key": "mine"},
        "query": {"limit": 10, "dry": true},
        "json": {"email": "ada@example.com", "score": 88},
    }))
    .await
    .expect("the request succeeds");

    assert_eq!(output["status"], 202);
    assert_eq!(output["body"], "");
}

#[tokio::test]
async fn sends_a_raw_body() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(header("content-type", "text/csv"))
        .and(body_string("a,b\n1,2\n"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let output = execute(json!({
        "method": "PUT",
        "url": server.uri(),
        "headers": {"Content-Type": "text/csv"},
        "body": "a,b\n1,2\n",
    }))
    .await
    .expect("the request succeeds");

    assert_eq!(output["status"], 204);
}

#[tokio::test]
async fn expect_status_accepts_a_404_and_rejects_a_200() {
    let server = MockServer::start().await;
    Mock::given(path("/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "no such lead"})))
        .mount(&server)
        .await;
    Mock::given(path("/found"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let missing = json!({"url": format!("{}/missing", server.uri()), "expect_status": [200, 404]});
    let output = execute(missing).await.expect("404 is expected");
    assert_eq!(output["status"], 404);
    assert_eq!(output["body"]["error"], "no such lead");

    let found = json!({"url": format!("{}/found", server.uri()), "expect_status": [404]});
    let error = fail(found).await;
    assert_eq!(error.kind, ErrorKind::Http);
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_500_is_retryable_and_names_the_request() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database exploded"))
        .mount(&server)
        .await;

    let error = fail(json!({
        "method": "DELETE",
        "url": format!("{}/leads/7?api_key=secret", server.uri()),
    }))
    .await;

    assert_eq!(error.kind, ErrorKind::Http);
    assert!(error.is_retryable());
    assert_eq!(error.retry_after, None);
    let expected = format!(
        "DELETE {}/leads/7 returned 500 Internal Server Error: database exploded",
        server.uri()
    );
    assert_eq!(error.message, expected);
    assert!(!error.message.contains("secret"));
}

#[tokio::test]
async fn a_429_honours_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .mount(&server)
        .await;

    let error = fail(json!({"url": server.uri()})).await;

    assert!(error.is_retryable());
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    assert!(error.message.contains("429"), "{}", error.message);
}

#[tokio::test]
async fn a_400_is_permanent_with_a_short_excerpt() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(400).set_body_string("x".repeat(5_000)))
        .mount(&server)
        .await;

    let error = fail(json!({"url": server.uri()})).await;

    assert_eq!(error.kind, ErrorKind::Http);
    assert!(!error.is_retryable());
    let excerpt = error
        .message
        .split_once("400 Bad Request: ")
        .map(|(_, excerpt)| excerpt)
        .expect("the message quotes the body");
    assert!(excerpt.chars().count() <= 200, "{excerpt}");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    // Bind, note the port, close: nothing listens there afterwards.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();

    let error = fail(json!({"url": format!("http://127.0.0.1:{port}/x?token=secret")})).await;

    assert_eq!(error.kind, ErrorKind::Http);
    assert!(error.is_retryable());
    assert!(
        error
            .message
            .starts_with(&format!("GET http://127.0.0.1:{port}/x failed")),
        "{}",
        error.message
    );
    assert!(!error.message.contains("secret"), "{}", error.message);
}

#[tokio::test]
async fn a_slow_response_times_out_retryably() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;

    let error = fail(json!({"url": server.uri(), "timeout": "100ms"})).await;

    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.is_retryable());
}

/// Tells the test that the request arrived, then answers too late to matter.
struct ArrivalThenStall(Arc<Notify>);

impl Respond for ArrivalThenStall {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        self.0.notify_one();
        ResponseTemplate::new(200).set_delay(Duration::from_secs(60))
    }
}

#[tokio::test]
async fn cancellation_stops_a_request_in_flight() {
    let server = MockServer::start().await;
    let arrived = Arc::new(Notify::new());
    Mock::given(method("GET"))
        .respond_with(ArrivalThenStall(arrived.clone()))
        .expect(1)
        .mount(&server)
        .await;
    let ctx = context();
    let cancel = async {
        arrived.notified().await;
        ctx.cancellation.cancel();
    };

    let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(execute_in(&ctx, json!({"url": server.uri()})), cancel)
    })
    .await
    .expect("cancellation ends the attempt without waiting for the response");

    let error = result.expect_err("a cancelled attempt fails");
    assert_eq!(error.kind, ErrorKind::Cancelled);
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_cancelled_run_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let ctx = context();
    ctx.cancellation.cancel();

    let error = execute_in(&ctx, json!({"url": server.uri()}))
        .await
        .expect_err("a cancelled attempt fails");

    assert_eq!(error.kind, ErrorKind::Cancelled);
}

#[tokio::test]
async fn a_bad_rendered_block_is_a_permanent_config_error() {
    let node = Registry::with_builtins()
        .get("http.request")
        .expect("http.request is a built-in");
    let ctx = context();
    for with in [
        json!({"url": "http://127.0.0.1:9/", "method": "FETCH"}),
        json!({"url": "http://127.0.0.1:9/", "extra": 1}),
        json!({"url": "http://127.0.0.1:9/", "expect_status": [700]}),
        json!({"method": "GET"}),
    ] {
        let error = node
            .execute(&ctx, with.clone())
            .await
            .expect_err("the block is invalid");
        assert_eq!(error.kind, ErrorKind::Config, "for {with}");
        assert!(!error.is_retryable(), "for {with}");
    }
}

#[test]
fn check_config_reports_paths() {
    let node = Registry::with_builtins()
        .get("http.request")
        .expect("http.request is a built-in");
    let path = |with: Value| node.check_config(&with).expect_err("rejected").path;

    assert_eq!(path(json!({"url": "http://x", "retries": 3})), "retries");
    assert_eq!(path(json!({"headers": {}})), "url");
    assert_eq!(path(json!({"url": "http://x", "method": "YEET"})), "method");
    assert_eq!(
        path(json!({"url": "http://x", "timeout": "10 parsecs"})),
        "timeout"
    );
    let templated = json!({
        "method": "{{ inputs.method }}",
        "url": "{{ secrets.CRM_URL }}/leads",
        "expect_status": "{{ inputs.ok }}",
        "timeout": "{{ inputs.timeout }}",
    });
    assert_eq!(node.check_config(&templated), Ok(()));
}
