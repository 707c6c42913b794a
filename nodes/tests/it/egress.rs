//! The egress policy and the outbound limits as an attacker meets them through a node: every
//! spelling of loopback, a name resolving to it, redirects to private addresses and to other
//! origins, an upstream that never answers, and bodies too large or endless.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;

use enrichflow_nodes::{ErrorKind, NodeContext, NodeError, Registry, egress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::context_with;

/// The policy the engine starts with: private networks refused.
fn denying() -> egress::Policy {
    egress::Policy::default()
}

/// Refusing private networks except `allowed`.
fn denying_except(allowed: &str) -> egress::Policy {
    let network: egress::Network = allowed.parse().expect("a network");
    egress::Policy {
        allowed: Arc::from(vec![network]),
        ..egress::Policy::default()
    }
}

fn allowing() -> egress::Policy {
    egress::Policy::allow_private_networks()
}

async fn run(kind: &str, policy: egress::Policy, with: Value) -> Result<Value, NodeError> {
    let node = Registry::with_builtins()
        .get(kind)
        .expect("a built-in node type");
    node.check_config(&with)
        .expect("the block passes the load-time check");
    let ctx: NodeContext = context_with("call", 1, policy);
    node.execute(&ctx, with).await
}

async fn request(policy: egress::Policy, with: Value) -> Result<Value, NodeError> {
    run("http.request", policy, with).await
}

fn assert_refused(error: &NodeError, needle: &str) {
    assert_eq!(error.kind, ErrorKind::Egress, "{error}");
    assert!(!error.is_retryable(), "{error}");
    assert!(error.message.contains(needle), "{error}");
    assert!(
        error.message.contains("--deny-private-networks=false"),
        "{error}"
    );
}

/// A server on `address` (any port) answering 200 to everything.
async fn server_on(address: Ipv4Addr) -> MockServer {
    let listener = StdListener::bind((address, 0)).expect("a free port");
    let server = MockServer::builder().listener(listener).start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("inside"))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn every_spelling_of_loopback_is_refused_and_allowed_when_the_policy_is_off() {
    let server = server_on(Ipv4Addr::LOCALHOST).await;
    let port = server.address().port();
    // All of these reach the server when allowed; the url crate turns the numeric forms into
    // 127.0.0.1, and Linux sends 0.0.0.0 to this host.
    for host in [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "0.0.0.0",
    ] {
        let url = format!("http://{host}:{port}/");
        let error = request(denying(), json!({"url": url}))
            .await
            .expect_err("refused");
        assert_refused(&error, "refused");
        let output = request(allowing(), json!({"url": url}))
            .await
            .unwrap_or_else(|error| panic!("{url} should be reached: {error}"));
        assert_eq!(output["body"], "inside", "{url}");
    }
    // IPv6 spellings of this host: refused with the policy on, never refused by it when off
    // (whether they connect depends on the machine's IPv6 set-up).
    let mut reached = 6;
    for host in ["[::1]", "[::ffff:127.0.0.1]", "[::]", "[::ffff:7f00:1]"] {
        let url = format!("http://{host}:{port}/");
        let error = request(denying(), json!({"url": url}))
            .await
            .expect_err("refused");
        assert_refused(&error, "refused");
        match request(allowing(), json!({"url": url})).await {
            Ok(_) => reached += 1,
            Err(error) => assert_ne!(error.kind, ErrorKind::Egress, "{url}: {error}"),
        }
    }
    // Only the allowed calls arrived.
    assert_eq!(
        server.received_requests().await.map(|r| r.len()),
        Some(reached)
    );
}

#[tokio::test]
async fn metadata_and_private_addresses_are_refused_before_anything_is_sent() {
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
    ] {
        let error = request(denying(), json!({"url": url}))
            .await
            .expect_err("refused");
        assert_refused(&error, "refused");
    }
}

#[tokio::test]
async fn a_name_is_refused_after_resolution_without_revealing_its_addresses() {
    let server = server_on(Ipv4Addr::LOCALHOST).await;
    let url = format!("http://localhost:{}/", server.address().port());
    let error = request(denying(), json!({"url": url}))
        .await
        .expect_err("localhost resolves to loopback");
    assert_refused(
        &error,
        "`localhost` resolves only to refused addresses (loopback)",
    );
    assert!(!error.message.contains("127.0.0.1"), "{error}");
    let output = request(allowing(), json!({"url": url}))
        .await
        .expect("allowed when the policy is off");
    assert_eq!(output["body"], "inside");
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(1));
}

#[tokio::test]
async fn a_redirect_from_an_allowed_address_to_a_private_one_is_refused() {
    let inside = server_on(Ipv4Addr::new(127, 0, 0, 2)).await;
    let outside = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/secret", inside.uri())),
        )
        .mount(&outside)
        .await;
    // 127.0.0.1 stands for a public host here: the only address the policy lets through.
    let error = request(
        denying_except("127.0.0.1"),
        json!({"url": outside.uri(), "redirects": "any"}),
    )
    .await
    .expect_err("the second hop is private");
    assert_refused(&error, "redirected to GET http://127.0.0.2:");
    assert_refused(&error, "the address 127.0.0.2 is loopback");
    assert_eq!(inside.received_requests().await.map(|r| r.len()), Some(0));
}

/// Answers every request with a redirect to `to`.
async fn redirecting(to: &str, status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/start"))
        .respond_with(ResponseTemplate::new(status).insert_header("location", to))
        .mount(&server)
        .await;
    server
}

fn header_names(request: &Request) -> Vec<String> {
    request
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn a_cross_origin_redirect_drops_credentials_and_no_referer_is_ever_sent() {
    let elsewhere = server_on(Ipv4Addr::new(127, 0, 0, 2)).await;
    let first = redirecting(&format!("{}/landing", elsewhere.uri()), 307).await;
    let headers = json!({
        "Authorization": "Bearer s3cret-token",
        "X-Api-Key": "s3cret-key",
        "Cookie": "session=s3cret",
        "Proxy-Authorization": "Basic eA==",
        "Accept": "application/json",
    });
    let with = json!({
        "url": format!("{}/start?api_key=s3cret-query", first.uri()),
        "headers": headers,
        "redirects": "any",
    });
    let output = request(allowing(), with).await.expect("followed");
    assert_eq!(output["body"], "inside");
    let received = elsewhere.received_requests().await.expect("recorded");
    let names = header_names(&received[0]);
    for dropped in [
        "authorization",
        "x-api-key",
        "cookie",
        "proxy-authorization",
        "referer",
        "idempotency-key",
    ] {
        assert!(
            !names.iter().any(|name| name == dropped),
            "{dropped} in {names:?}"
        );
    }
    assert_eq!(received[0].headers["accept"], "application/json");
    let first_hop = first.received_requests().await.expect("recorded");
    assert!(!header_names(&first_hop[0]).iter().any(|n| n == "referer"));
}

#[tokio::test]
async fn same_origin_redirects_are_followed_by_default_and_others_refused() {
    let server = MockServer::start().await;
    Mock::given(path("/start"))
        .respond_with(ResponseTemplate::new(301).insert_header("location", "/moved"))
        .mount(&server)
        .await;
    Mock::given(path("/moved"))
        .respond_with(ResponseTemplate::new(200).set_body_string("moved here"))
        .mount(&server)
        .await;
    let with = json!({"url": format!("{}/start", server.uri()), "headers": {"X-Api-Key": "k"}});
    let output = request(allowing(), with).await.expect("followed");
    assert_eq!(output["body"], "moved here");
    let received = server.received_requests().await.expect("recorded");
    assert_eq!(
        received[1].headers["x-api-key"], "k",
        "same origin keeps it"
    );
    assert!(!header_names(&received[1]).iter().any(|n| n == "referer"));

    let elsewhere = server_on(Ipv4Addr::new(127, 0, 0, 2)).await;
    let first = redirecting(&elsewhere.uri(), 302).await;
    let start = format!("{}/start", first.uri());
    let error = request(allowing(), json!({"url": start}))
        .await
        .expect_err("another origin");
    assert_eq!(error.kind, ErrorKind::Http);
    assert!(!error.is_retryable());
    assert!(error.message.contains("set `redirects: any`"), "{error}");
    let unfollowed = request(
        allowing(),
        json!({"url": start, "redirects": "none", "expect_status": [302]}),
    )
    .await
    .expect("the redirect is the answer");
    assert_eq!(unfollowed["status"], 302);
    assert_eq!(
        elsewhere.received_requests().await.map(|r| r.len()),
        Some(0)
    );
}

#[tokio::test]
async fn a_redirect_loop_stops() {
    let server = MockServer::start().await;
    Mock::given(path("/start"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/start"))
        .mount(&server)
        .await;
    let error = request(
        allowing(),
        json!({"url": format!("{}/start", server.uri())}),
    )
    .await
    .expect_err("a loop");
    assert!(
        error.message.contains("redirected more than 10 times"),
        "{error}"
    );
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(11));
}

/// A server that accepts connections, reads what it is sent and never answers.
async fn silent() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            held.push(socket);
        }
    });
    (address, task)
}

#[tokio::test]
async fn the_default_timeout_ends_a_call_to_an_upstream_that_never_answers() {
    let (address, task) = silent().await;
    let policy = egress::Policy {
        request_timeout: Duration::from_millis(300),
        ..allowing()
    };
    let error = request(policy.clone(), json!({"url": format!("http://{address}/")}))
        .await
        .expect_err("timed out");
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(error.is_retryable());
    // The notify nodes and providers set their own timeouts; a webhook's is 10 s by default,
    // so give it a short one to see the same upstream end it.
    let with = json!({"url": format!("http://{address}/hook"), "body": {}, "timeout": "300ms"});
    let error = run("notify.webhook", policy, with)
        .await
        .expect_err("timed out");
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    task.abort();
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(2048)))
        .mount(&server)
        .await;
    let policy = egress::Policy {
        max_response_bytes: 1024,
        ..allowing()
    };
    let error = request(policy, json!({"url": server.uri()}))
        .await
        .expect_err("too large");
    assert!(
        error
            .message
            .contains("returned a body larger than 1024 bytes"),
        "{error}"
    );
    assert!(!error.is_retryable());
}

/// A server whose answer is a chunked body that never ends.
async fn endless() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    let task = tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buffer = [0u8; 4096];
        let _ = socket.read(&mut buffer).await;
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 4096, "y".repeat(4096));
        // Until the client hangs up.
        while socket.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    (address, task)
}

#[tokio::test]
async fn an_endless_body_is_cut_off() {
    let (address, task) = endless().await;
    let policy = egress::Policy {
        max_response_bytes: 64 * 1024,
        ..allowing()
    };
    let error = request(policy, json!({"url": format!("http://{address}/")}))
        .await
        .expect_err("cut off");
    assert!(error.message.contains("larger than 65536 bytes"), "{error}");
    task.abort();
}

#[tokio::test]
async fn providers_and_notify_nodes_are_under_the_same_policy() {
    let server = server_on(Ipv4Addr::LOCALHOST).await;
    let company = json!({
        "domain": "stripe.com",
        "provider": "clearbit",
        "api_key": "test-key-0123456789",
        "base_url": server.uri(),
        "cache_ttl": "0s",
    });
    let error = run("enrich.company", denying(), company)
        .await
        .expect_err("refused");
    assert_refused(&error, "the address 127.0.0.1 is loopback");
    let hook = json!({"url": "http://169.254.169.254/hook", "body": {"a": 1}});
    let error = run("notify.webhook", denying(), hook)
        .await
        .expect_err("refused");
    assert_refused(&error, "link-local");
    let slack = json!({"webhook_url": format!("http://localhost:{}/", server.address().port()), "text": "hi"});
    let error = run("notify.slack", denying(), slack)
        .await
        .expect_err("refused");
    assert_refused(&error, "`localhost` resolves only to refused addresses");
    let mail = json!({
        "host": "localhost",
        "port": 25,
        "tls": "none",
        "from": "bot@example.com",
        "to": "sales@example.com",
        "subject": "s",
        "text": "t",
    });
    let error = run("notify.email", denying(), mail)
        .await
        .expect_err("refused");
    assert_refused(&error, "`localhost` resolves only to refused addresses");
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(0));
}

/// A server that announces a huge body, sends two bytes and holds the connection open.
async fn announcing_a_huge_body() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    let task = tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buffer = [0u8; 4096];
        let _ = socket.read(&mut buffer).await;
        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\nab";
        let _ = socket.write_all(answer.as_bytes()).await;
        // Held open until the client gives up.
        let _ = socket.read(&mut buffer).await;
    });
    (address, task)
}

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_without_waiting_for_it() {
    let (address, task) = announcing_a_huge_body().await;
    // Were the body awaited, the call would end by this timeout instead.
    let policy = egress::Policy {
        request_timeout: Duration::from_secs(20),
        ..allowing()
    };
    let error = request(policy, json!({"url": format!("http://{address}/")}))
        .await
        .expect_err("refused");
    assert!(
        error
            .message
            .contains("returned a body larger than 10485760 bytes"),
        "{error}"
    );
    task.abort();
}
