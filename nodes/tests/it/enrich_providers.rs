//! `enrich.company` and `enrich.person` against providers faked by wiremock: the mapping of each
//! provider style, the cache, how failures are classified, the circuit breaker and the rate
//! limiter. No test reaches the internet: every block sets `base_url` to the local server.

use std::sync::Arc;
use std::time::Duration;

use enrichflow_nodes::{ErrorKind, Node, NodeContext, NodeError, Registry};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk_test_do_not_leak";

fn context() -> NodeContext {
    crate::support::context("company", 1)
}

/// A fresh node, so that no test sees another's circuit breaker or rate limiter.
fn node(kind: &str) -> Arc<dyn Node> {
    Registry::with_builtins()
        .get(kind)
        .expect("a built-in node type")
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/providers/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("the fixture exists");
    serde_json::from_str(&text).expect("the fixture is JSON")
}

async fn run(node: &dyn Node, ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
    node.check_config(&with)
        .expect("the block passes the load-time check");
    node.execute(ctx, with).await
}

fn company(server: &MockServer, domain: &str) -> Value {
    json!({"domain": domain, "api_key": KEY, "base_url": server.uri()})
}

/// Fails one lookup against a server that always answers `response`.
async fn company_error(response: ResponseTemplate) -> NodeError {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(response)
        .mount(&server)
        .await;
    let error = run(
        &*node("enrich.company"),
        &context(),
        company(&server, "stripe.com"),
    )
    .await
    .expect_err("the lookup fails");
    assert!(!error.message.contains(KEY), "{}", error.message);
    error
}

#[tokio::test]
async fn maps_a_clearbit_company() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/companies/find"))
        .and(query_param("domain", "stripe.com"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("clearbit_company.json")))
        .expect(1)
        .mount(&server)
        .await;

    let output = run(
        &*node("enrich.company"),
        &context(),
        company(&server, " Stripe.COM "),
    )
    .await
    .expect("the lookup succeeds");

    assert_eq!(output["found"], true);
    assert_eq!(output["cached"], false);
    assert_eq!(output["provider"], "clearbit");
    assert_eq!(output["domain"], "stripe.com");
    assert_eq!(output["name"], "Stripe");
    assert_eq!(output["employees"], 7000);
    assert_eq!(output["country"], "US");
}

#[tokio::test]
async fn maps_a_hunter_domain_search() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/domain-search"))
        .and(query_param("domain", "stripe.com"))
        .and(query_param("api_key", KEY))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("hunter_domain_search.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut with = company(&server, "stripe.com");
    with["provider"] = json!("hunter");

    let output = run(&*node("enrich.company"), &context(), with)
        .await
        .expect("the lookup succeeds");

    assert_eq!(output["found"], true);
    assert_eq!(output["provider"], "hunter");
    assert_eq!(output["name"], "Stripe");
    assert_eq!(output["employees_range"], "5001-10000");
}

#[tokio::test]
async fn a_404_is_found_false_and_is_cached_too() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error": {"type": "unknown_record", "message": "Unknown domain"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let node = node("enrich.company");
    let ctx = context();

    let first = run(&*node, &ctx, company(&server, "nobody.example"))
        .await
        .expect("not found is an answer");
    let second = run(&*node, &ctx, company(&server, "nobody.example"))
        .await
        .expect("not found is an answer");

    assert_eq!(first["found"], false);
    assert_eq!(first["cached"], false);
    assert_eq!(first["name"], Value::Null);
    assert_eq!(second["found"], false);
    assert_eq!(second["cached"], true);
}

#[tokio::test]
async fn the_same_domain_is_paid_for_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/companies/find"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("clearbit_company.json")))
        .expect(1)
        .mount(&server)
        .await;
    let ctx = context();

    let first = run(
        &*node("enrich.company"),
        &ctx,
        company(&server, "stripe.com"),
    )
    .await
    .expect("the lookup succeeds");
    // Another node instance, as in another run: the cache is the engine's, not the node's.
    let second = run(
        &*node("enrich.company"),
        &ctx,
        company(&server, "https://www.stripe.com/"),
    )
    .await
    .expect("the lookup succeeds");

    assert_eq!(first["cached"], false);
    assert_eq!(second["cached"], true);
    assert_eq!(second["name"], "Stripe");
}

#[tokio::test]
async fn a_zero_cache_ttl_asks_every_time() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("clearbit_company.json")))
        .expect(2)
        .mount(&server)
        .await;
    let node = node("enrich.company");
    let ctx = context();
    let mut with = company(&server, "stripe.com");
    with["cache_ttl"] = json!("0s");

    for _ in 0..2 {
        let output = run(&*node, &ctx, with.clone()).await.expect("succeeds");
        assert_eq!(output["cached"], false);
    }
}

#[tokio::test]
async fn a_429_is_retryable_after_the_asked_delay() {
    let error = company_error(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;
    assert_eq!(error.kind, ErrorKind::Http);
    assert!(error.is_retryable());
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    assert!(
        error.message.contains("rate limited (HTTP 429)"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_500_is_retryable() {
    let error = company_error(ResponseTemplate::new(500).set_body_string("oops")).await;
    assert_eq!(error.kind, ErrorKind::Http);
    assert!(error.is_retryable());
    assert!(
        error
            .message
            .starts_with("provider error (HTTP 500) from clearbit GET")
    );
}

#[tokio::test]
async fn bad_keys_and_spent_credits_are_permanent() {
    for (status, expected) in [
        (401, "invalid API key (HTTP 401)"),
        (403, "invalid API key (HTTP 403)"),
        (402, "out of credits (HTTP 402)"),
    ] {
        let body = json!({"error": {"type": "auth", "message": format!("key {KEY} refused")}});
        let error = company_error(ResponseTemplate::new(status).set_body_json(body)).await;
        assert_eq!(error.kind, ErrorKind::Http);
        assert!(!error.is_retryable(), "{status}");
        assert!(error.message.starts_with(expected), "{}", error.message);
        assert!(
            error.message.contains("key [redacted] refused"),
            "{}",
            error.message
        );
    }
}

#[tokio::test]
async fn hunter_uses_403_for_its_rate_limit_and_429_for_its_quota() {
    let server = MockServer::start().await;
    Mock::given(path("/v2/email-verifier"))
        .and(query_param("email", "a@stripe.com"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"errors": [{"id": "too_many_requests", "code": 403, "details": "Rate limit reached"}]}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/v2/email-verifier"))
        .and(query_param("email", "b@stripe.com"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&server)
        .await;
    let node = node("enrich.person");
    let with = |email: &str| json!({"email": email, "api_key": KEY, "base_url": server.uri()});

    let limited = run(&*node, &context(), with("a@stripe.com"))
        .await
        .expect_err("rate limited");
    let spent = run(&*node, &context(), with("b@stripe.com"))
        .await
        .expect_err("quota spent");

    assert!(limited.is_retryable());
    assert!(
        limited.message.ends_with(": Rate limit reached"),
        "{}",
        limited.message
    );
    assert!(!spent.is_retryable());
    assert!(
        spent.message.starts_with("out of credits (HTTP 429)"),
        "{}",
        spent.message
    );
    for error in [&limited, &spent] {
        assert!(!error.message.contains(KEY), "{}", error.message);
    }
}

#[tokio::test]
async fn a_slow_provider_times_out_retryably() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("clearbit_company.json"))
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;
    let mut with = company(&server, "stripe.com");
    with["timeout"] = json!("100ms");

    let error = run(&*node("enrich.company"), &context(), with)
        .await
        .expect_err("the provider is too slow");

    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.is_retryable());
}

#[tokio::test]
async fn malformed_json_is_retryable_and_names_the_provider() {
    let error = company_error(
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_string("{\"name\": \"Str"),
    )
    .await;
    assert_eq!(error.kind, ErrorKind::Http);
    assert!(error.is_retryable());
    assert!(
        error
            .message
            .starts_with("malformed JSON from clearbit GET"),
        "{}",
        error.message
    );
}

/// A provider that is down: every call gets a 503, and only the five that open the circuit
/// reach it.
async fn down_provider() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .expect(5)
        .mount(&server)
        .await;
    server
}

/// Five failing company lookups `with` the server: enough to open its circuit.
async fn open_circuit(node: &dyn Node, ctx: &NodeContext, with: Value) {
    for attempt in 0..5 {
        let error = run(node, ctx, with.clone())
            .await
            .expect_err("the provider is down");
        assert!(
            error.message.contains("HTTP 503"),
            "{attempt}: {}",
            error.message
        );
    }
}

fn assert_circuit_open(error: &NodeError) {
    assert!(error.is_retryable());
    assert!(
        error.message.contains("circuit is open"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_5xx_and_fails_fast() {
    let server = down_provider().await;
    let node = node("enrich.company");
    let ctx = context();
    open_circuit(&*node, &ctx, company(&server, "stripe.com")).await;
    let error = run(&*node, &ctx, company(&server, "other.example"))
        .await
        .expect_err("the circuit is open");
    assert_circuit_open(&error);
    let wait = error.retry_after.expect("the remaining cooldown");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
}

#[tokio::test]
async fn company_and_person_lookups_share_one_circuit_per_provider() {
    let server = down_provider().await;
    let registry = Registry::with_builtins();
    let company_node = registry.get("enrich.company").expect("a built-in");
    let person_node = registry.get("enrich.person").expect("a built-in");
    let ctx = context();
    let mut hunter_company = company(&server, "stripe.com");
    hunter_company["provider"] = json!("hunter");
    open_circuit(&*company_node, &ctx, hunter_company).await;
    // The provider counts every call made with its key, whichever node makes it.
    let with = json!({"email": "ada@example.com", "api_key": KEY, "base_url": server.uri()});
    let error = run(&*person_node, &ctx, with)
        .await
        .expect_err("the circuit is open");
    assert_circuit_open(&error);
}

#[tokio::test]
async fn the_rate_limit_makes_calls_wait_rather_than_fail() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&server)
        .await;
    let node = node("enrich.company");
    let ctx = context();
    let with = |domain: &str| {
        let mut with = company(&server, domain);
        // One call per 1000 seconds: the second call's turn is far beyond this test.
        with["rate_limit"] = json!(0.001);
        with
    };
    run(&*node, &ctx, with("a.example"))
        .await
        .expect("first call");

    let waiting = tokio::time::timeout(
        Duration::from_millis(200),
        run(&*node, &ctx, with("b.example")),
    )
    .await;
    assert!(waiting.is_err(), "the second call waits for its turn");

    ctx.cancellation.cancel();
    let error = run(&*node, &ctx, with("c.example"))
        .await
        .expect_err("a cancelled run stops waiting");
    assert_eq!(error.kind, ErrorKind::Cancelled);
}

#[tokio::test]
async fn finds_a_person_by_name_with_hunter() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/email-finder"))
        .and(query_param("domain", "stripe.com"))
        .and(query_param("first_name", "Patrick"))
        .and(query_param("last_name", "Collison"))
        .and(query_param("api_key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("hunter_email_finder.json")))
        .expect(1)
        .mount(&server)
        .await;
    let with = json!({
        "first_name": "Patrick", "last_name": "Collison", "domain": "stripe.com",
        "api_key": KEY, "base_url": server.uri(),
    });

    let output = run(&*node("enrich.person"), &context(), with)
        .await
        .expect("the lookup succeeds");

    assert_eq!(output["found"], true);
    assert_eq!(output["email"], "patrick@stripe.com");
    assert_eq!(output["title"], "CEO");
    assert_eq!(output["deliverable"], true);
    assert_eq!(output["score"], 97);
}

#[tokio::test]
async fn verifies_an_email_with_hunter_and_finds_one_with_clearbit() {
    let server = MockServer::start().await;
    Mock::given(path("/v2/email-verifier"))
        .and(query_param("email", "patrick@stripe.com"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("hunter_email_verifier.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v2/people/find"))
        .and(query_param("email", "ada@stripe.com"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("clearbit_person.json")))
        .expect(1)
        .mount(&server)
        .await;
    let node = node("enrich.person");

    let verified = run(
        &*node,
        &context(),
        json!({"email": "Patrick@Stripe.com", "api_key": KEY, "base_url": server.uri()}),
    )
    .await
    .expect("verified");
    let found = run(
        &*node,
        &context(),
        json!({"email": "ada@stripe.com", "api_key": KEY, "base_url": server.uri(), "provider": "clearbit"}),
    )
    .await
    .expect("found");

    assert_eq!(verified["verification"], "valid");
    assert_eq!(verified["deliverable"], true);
    assert_eq!(found["provider"], "clearbit");
    assert_eq!(found["title"], "Head of Engineering");
    assert_eq!(found["company_domain"], "stripe.com");
}

#[tokio::test]
async fn an_unknown_person_is_found_false() {
    let server = MockServer::start().await;
    Mock::given(path("/v2/email-finder"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("hunter_email_finder_empty.json")),
        )
        .mount(&server)
        .await;
    let with = json!({
        "first_name": "Nobody", "last_name": "Known", "domain": "stripe.com",
        "api_key": KEY, "base_url": server.uri(),
    });

    let output = run(&*node("enrich.person"), &context(), with)
        .await
        .expect("not found is an answer");

    assert_eq!(output["found"], false);
    assert_eq!(output["email"], Value::Null);
    assert_eq!(output["company_domain"], "stripe.com");
}

#[tokio::test]
async fn an_empty_rendered_api_key_is_a_permanent_config_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    for kind in ["enrich.company", "enrich.person"] {
        let with = json!({
            "domain": "stripe.com", "email": "a@stripe.com", "api_key": "", "base_url": server.uri(),
        });
        let mut with = with;
        let unused = if kind == "enrich.company" {
            "email"
        } else {
            "domain"
        };
        with.as_object_mut().map(|map| map.remove(unused));

        let error = node(kind)
            .execute(&context(), with)
            .await
            .expect_err("no key");

        assert_eq!(error.kind, ErrorKind::Config, "{kind}");
        assert!(!error.is_retryable());
        assert!(
            error.message.starts_with("`with.api_key`"),
            "{}",
            error.message
        );
    }
}

#[test]
fn bad_configuration_is_rejected_at_load_time_with_its_path() {
    let company = node("enrich.company");
    let person = node("enrich.person");
    let path =
        |node: &Arc<dyn Node>, with: Value| node.check_config(&with).expect_err("rejected").path;

    assert_eq!(path(&company, json!({"api_key": "k"})), "domain");
    assert_eq!(
        path(
            &company,
            json!({"domain": "x.com", "api_key": "k", "retries": 3})
        ),
        "retries"
    );
    assert_eq!(
        path(
            &company,
            json!({"domain": "x.com", "api_key": "k", "timeout": "soon"})
        ),
        "timeout"
    );
    assert_eq!(
        path(
            &company,
            json!({"domain": "x.com", "api_key": "k", "provider": "apollo"})
        ),
        "provider"
    );
    assert_eq!(
        path(
            &person,
            json!({"email": "a@x.com", "api_key": "k", "rate_limit": -1})
        ),
        "rate_limit"
    );
    assert_eq!(
        path(&person, json!({"first_name": "A", "api_key": "k"})),
        "last_name"
    );
    let templated = json!({
        "domain": "{{ nodes.normalize.output.domain }}",
        "api_key": "{{ secrets.CLEARBIT_API_KEY }}",
        "cache_ttl": "7d",
    });
    assert_eq!(company.check_config(&templated), Ok(()));
}
