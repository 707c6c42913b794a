//! `notify.slack` and `notify.webhook` against wiremock servers standing in for Slack and for a
//! receiving system: what they send, and how each answer is classified.

use std::time::Duration;

use enrichflow_nodes::{ErrorKind, NodeContext, NodeError, Registry};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The secret part of a Slack webhook URL; no error may show it.
const SLACK_TOKEN: &str = "XXXXsecretTOKEN";

fn context() -> NodeContext {
    crate::support::context("alert", 2)
}

async fn execute(kind: &str, with: Value) -> Result<Value, NodeError> {
    let node = Registry::with_builtins()
        .get(kind)
        .expect("the node type is a built-in");
    node.check_config(&with)
        .expect("the block passes the load-time check");
    node.execute(&context(), with).await
}

fn slack_path() -> String {
    format!("/services/T000/B000/{SLACK_TOKEN}")
}

fn slack_block(server: &MockServer) -> Value {
    json!({
        "webhook_url": format!("{}{}", server.uri(), slack_path()),
        "text": "Hot lead ada@example.com",
    })
}

/// A Slack fake that answers every POST with `response`.
async fn slack_answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(slack_path()))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

/// Fails unless the message hides the webhook URL.
fn assert_hides_url(error: &NodeError, server: &MockServer) {
    assert!(!error.message.contains(SLACK_TOKEN), "{}", error.message);
    assert!(!error.message.contains(&server.uri()), "{}", error.message);
}

#[tokio::test]
async fn slack_gets_text_blocks_and_the_idempotency_key() {
    let server = MockServer::start().await;
    let blocks = json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Hot lead* ada@example.com"}},
        {"type": "divider"},
    ]);
    Mock::given(method("POST"))
        .and(path(slack_path()))
        .and(header("content-type", "application/json"))
        .and(header("x-enrichflow-idempotency-key", "run-1:alert:2"))
        .and(body_json(json!({
            "text": "Hot lead ada@example.com",
            "blocks": blocks,
            "username": "enrichflow",
            "icon_emoji": ":fire:",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let mut with = slack_block(&server);
    with["blocks"] = blocks;
    with["username"] = json!("enrichflow");
    with["icon_emoji"] = json!(":fire:");

    let output = execute("notify.slack", with).await.expect("Slack says ok");

    assert_eq!(output, json!({"status": 200, "ok": true}));
}

#[tokio::test]
async fn slack_rate_limits_are_retried_after_the_delay_it_asks_for() {
    let server = slack_answering(
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "30")
            .set_body_string("rate_limited"),
    )
    .await;

    let error = execute("notify.slack", slack_block(&server))
        .await
        .expect_err("rate limited");

    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(
        error.message,
        "the Slack webhook returned 429 Too Many Requests: rate_limited"
    );
    assert_hides_url(&error, &server);
}

#[tokio::test]
async fn slack_server_errors_are_retried() {
    let server = slack_answering(ResponseTemplate::new(500).set_body_string("oops")).await;

    let error = execute("notify.slack", slack_block(&server))
        .await
        .expect_err("a server error");

    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.retry_after, None);
    assert_hides_url(&error, &server);
}

#[tokio::test]
async fn slack_refusals_fail_for_good_with_slacks_reason() {
    for (status, reason) in [
        (400, "invalid_payload"),
        (404, "no_service"),
        (403, "action_prohibited"),
    ] {
        let server = slack_answering(ResponseTemplate::new(status).set_body_string(reason)).await;

        let error = execute("notify.slack", slack_block(&server))
            .await
            .expect_err("Slack refuses");

        assert!(!error.is_retryable(), "{error:?}");
        assert_eq!(error.kind, ErrorKind::Http);
        assert!(error.message.contains(reason), "{}", error.message);
        assert!(
            error.message.contains(&status.to_string()),
            "{}",
            error.message
        );
        assert_hides_url(&error, &server);
    }
}

#[tokio::test]
async fn a_slow_slack_times_out_and_is_retried() {
    let server = slack_answering(
        ResponseTemplate::new(200)
            .set_body_string("ok")
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let mut with = slack_block(&server);
    with["timeout"] = json!("200ms");

    let error = execute("notify.slack", with).await.expect_err("too slow");

    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_hides_url(&error, &server);
}

#[tokio::test]
async fn an_unreachable_slack_is_retried_without_showing_the_url() {
    // A port that was free a moment ago: nothing listens there now.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("an address");
    drop(listener);
    let url = format!("http://{address}{}", slack_path());

    let error = execute("notify.slack", json!({"webhook_url": url, "text": "hi"}))
        .await
        .expect_err("nothing listens");

    assert!(error.is_retryable(), "{error:?}");
    assert!(!error.message.contains(SLACK_TOKEN), "{}", error.message);
    assert!(
        !error.message.contains(&address.to_string()),
        "{}",
        error.message
    );
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn webhooks_are_signed_over_the_raw_body() {
    let server = MockServer::start().await;
    let body = json!({"lead": {"email": "ada@example.com", "score": 91.5, "tags": ["hot"]}});
    Mock::given(method("POST"))
        .and(path("/hooks/leads"))
        .and(header("content-type", "application/json"))
        .and(header("idempotency-key", "run-1:alert:2"))
        .and(header("authorization", "Bearer crm-token"))
        .and(header("x-source", "7"))
        .and(body_json(body.clone()))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"id": "lead-42"})))
        .expect(1)
        .mount(&server)
        .await;

    let output = execute(
        "notify.webhook",
        json!({
            "url": format!("{}/hooks/leads", server.uri()),
            "body": body,
            "headers": {"Authorization": "Bearer crm-token", "X-Source": 7},
            "secret": "shared-secret",
        }),
    )
    .await
    .expect("the receiver accepts");

    assert_eq!(output, json!({"status": 202, "body": {"id": "lead-42"}}));
    let requests = server.received_requests().await.expect("recording is on");
    let request = &requests[0];
    let signature = request
        .headers
        .get("x-enrichflow-signature")
        .expect("a signature header")
        .to_str()
        .expect("ASCII");
    assert_eq!(
        signature,
        format!("sha256={}", hmac_hex("shared-secret", &request.body))
    );
}

#[tokio::test]
async fn unsigned_webhooks_carry_no_signature_and_return_text_bodies() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("thanks"))
        .mount(&server)
        .await;

    let output = execute(
        "notify.webhook",
        json!({"url": server.uri(), "body": [1, "two", null]}),
    )
    .await
    .expect("the receiver accepts");

    assert_eq!(output, json!({"status": 200, "body": "thanks"}));
    let requests = server.received_requests().await.expect("recording is on");
    assert!(requests[0].headers.get("x-enrichflow-signature").is_none());
    assert_eq!(requests[0].body, br#"[1,"two",null]"#);
}

#[tokio::test]
async fn webhook_statuses_are_classified() {
    let server = MockServer::start().await;
    let answers = [
        (
            "/busy",
            ResponseTemplate::new(503).insert_header("Retry-After", "12"),
        ),
        (
            "/bad",
            ResponseTemplate::new(422).set_body_json(json!({"error": "email missing"})),
        ),
        ("/ok", ResponseTemplate::new(200)),
    ];
    for (route, response) in answers {
        Mock::given(path(route))
            .respond_with(response)
            .mount(&server)
            .await;
    }
    let post = |route: &str, extra: Value| {
        let mut with = json!({"url": format!("{}{route}?token=hidden", server.uri()), "body": {}});
        if let (Some(with), Some(extra)) = (with.as_object_mut(), extra.as_object()) {
            with.extend(extra.clone());
        }
        execute("notify.webhook", with)
    };

    let busy = post("/busy", json!({})).await.expect_err("busy");
    assert!(busy.is_retryable(), "{busy:?}");
    assert_eq!(busy.retry_after, Some(Duration::from_secs(12)));

    let bad = post("/bad", json!({})).await.expect_err("refused");
    assert!(!bad.is_retryable(), "{bad:?}");
    assert!(bad.message.contains("422"), "{}", bad.message);
    assert!(bad.message.contains("email missing"), "{}", bad.message);
    assert!(!bad.message.contains("hidden"), "{}", bad.message);

    let unexpected = post("/ok", json!({"expect_status": [201]}))
        .await
        .expect_err("200 is not 201");
    assert!(!unexpected.is_retryable(), "{unexpected:?}");
}

#[tokio::test]
async fn a_slow_webhook_times_out_and_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;

    let error = execute(
        "notify.webhook",
        json!({"url": server.uri(), "body": {}, "timeout": "200ms"}),
    )
    .await
    .expect_err("too slow");

    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.kind, ErrorKind::Timeout);
}

#[test]
fn bad_blocks_are_rejected_at_load_time_with_their_path() {
    let registry = Registry::with_builtins();
    let check = |kind: &str, with: Value| {
        let node = registry.get(kind).expect("a built-in");
        node.check_config(&with).expect_err("a bad block").path
    };
    let url = "https://hooks.slack.com/services/T0/B0/X";
    assert_eq!(check("notify.slack", json!({"webhook_url": url})), "text");
    assert_eq!(
        check(
            "notify.slack",
            json!({"webhook_url": url, "blocks": [{"text": "no type"}]})
        ),
        "blocks[0].type"
    );
    assert_eq!(
        check(
            "notify.webhook",
            json!({"url": "http://x", "body": {}, "headers": {"Bad Name": 1}})
        ),
        "headers.Bad Name"
    );
    assert_eq!(
        check(
            "notify.webhook",
            json!({"url": "http://x", "body": {}, "expect_status": [99]})
        ),
        "expect_status[0]"
    );
}
