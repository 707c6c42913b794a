//! The `notify.email` node against a real SMTP server process on loopback (Python's aiosmtpd):
//! what arrives in plain text, over STARTTLS and over implicit TLS with a private CA trusted
//! through `ca_file`, and how the server's refusals, an untrusted certificate and an absent
//! server are classified.

use std::sync::Arc;
use std::time::Duration;

use crate::smtp::SmtpSink;
use enrichflow_nodes::{ErrorKind, NodeContext, NodeError, Registry, egress};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const PASSWORD: &str = "s3cret-pass";

fn context() -> NodeContext {
    crate::support::context("mail", 1)
}

/// A plain-text block for a server on `port`; tests add or replace keys.
fn block(port: u16) -> Value {
    json!({
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "from": "Enrichflow <bot@example.com>",
        "to": "sales@example.com",
        "subject": "Hot lead",
        "text": "Call them.",
        "timeout": "10s",
    })
}

async fn execute_in(ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
    let node = Registry::with_builtins()
        .get("notify.email")
        .expect("notify.email is a built-in");
    node.check_config(&with)
        .expect("the block passes the load-time check");
    node.execute(ctx, with).await
}

async fn execute(with: Value) -> Result<Value, NodeError> {
    execute_in(&context(), with).await
}

/// The decoded parts of a received message, by content type.
fn part(message: &Value, content_type: &str) -> String {
    let parts = message["parts"].as_array().expect("a list of parts");
    let part = parts
        .iter()
        .find(|part| part["content_type"] == content_type)
        .unwrap_or_else(|| panic!("no {content_type} part in {message}"));
    part["content"].as_str().expect("text").trim().to_owned()
}

#[tokio::test]
async fn delivers_text_and_html_to_every_recipient() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mut with = block(sink.port);
    with["to"] = json!(["sales@example.com", "Ada Lovelace <ada@example.com>"]);
    with["cc"] = json!("lead-owner@example.com");
    with["bcc"] = json!(["audit@example.com"]);
    with["reply_to"] = json!("lead@customer.example");
    with["subject"] = json!("Hot lead: ada@customer.example");
    with["html"] = json!("<p>Call <b>them</b>.</p>");

    let output = execute(with).await.expect("the message is accepted");

    let message_id = "<run-1.mail.1@enrichflow>";
    let recipients = [
        "sales@example.com",
        "ada@example.com",
        "lead-owner@example.com",
        "audit@example.com",
    ];
    assert_eq!(output["message_id"], message_id);
    assert_eq!(output["accepted"], json!(recipients));
    assert!(
        output["reply"]
            .as_str()
            .expect("text")
            .contains("queued as 0001")
    );
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["mail_from"], "bot@example.com");
    assert_eq!(message["rcpt_tos"], json!(recipients));
    let headers = &message["headers"];
    assert_eq!(headers["message-id"], message_id);
    assert_eq!(headers["subject"], "Hot lead: ada@customer.example");
    assert_eq!(headers["from"], "Enrichflow <bot@example.com>");
    assert_eq!(
        headers["to"],
        "sales@example.com, Ada Lovelace <ada@example.com>"
    );
    assert_eq!(headers["cc"], "lead-owner@example.com");
    assert_eq!(headers["reply-to"], "lead@customer.example");
    assert!(headers.get("bcc").is_none(), "Bcc leaked: {headers}");
    assert_eq!(message["content_type"], "multipart/alternative");
    assert_eq!(part(message, "text/plain"), "Call them.");
    assert_eq!(part(message, "text/html"), "<p>Call <b>them</b>.</p>");
}

#[tokio::test]
async fn a_redelivered_attempt_sends_the_same_message_id() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let ctx = context();
    let mut with = block(sink.port);
    with["html"] = json!("<p>Only HTML</p>");
    with.as_object_mut().expect("a map").remove("text");

    execute_in(&ctx, with.clone())
        .await
        .expect("first delivery");
    execute_in(&ctx, with).await.expect("redelivery");

    let messages = sink.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0]["headers"]["message-id"],
        messages[1]["headers"]["message-id"]
    );
    assert_eq!(messages[0]["content_type"], "text/html");
    assert_eq!(part(&messages[0], "text/html"), "<p>Only HTML</p>");
}

#[tokio::test]
async fn authenticates_with_the_credentials() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mut with = block(sink.port);
    with["username"] = json!("bot");
    with["password"] = json!(PASSWORD);

    execute(with).await.expect("the login is accepted");

    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["authenticated"], true);
    assert_eq!(part(&messages[0], "text/plain"), "Call them.");
}

#[tokio::test]
async fn a_wrong_password_fails_for_good_without_showing_it() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mut with = block(sink.port);
    with["username"] = json!("bot");
    with["password"] = json!("wrong-pass-1234");

    let error = execute(with).await.expect_err("the login is refused");

    assert!(!error.is_retryable(), "{error:?}");
    assert!(
        error.message.contains("rejected the username or password"),
        "{}",
        error.message
    );
    assert!(error.message.contains("535"), "{}", error.message);
    assert!(
        !error.message.contains("wrong-pass-1234"),
        "{}",
        error.message
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_rejected_recipient_fails_for_good() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mut with = block(sink.port);
    with["to"] = json!(["sales@example.com", "rejected@example.com"]);

    let error = execute(with).await.expect_err("the recipient is refused");

    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(error.kind, ErrorKind::Node);
    assert!(
        error.message.contains("refused the message"),
        "{}",
        error.message
    );
    assert!(error.message.contains("550"), "{}", error.message);
    assert!(
        error.message.contains("mailbox unavailable"),
        "{}",
        error.message
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_deferred_recipient_is_retried() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mut with = block(sink.port);
    with["to"] = json!("deferred@example.com");

    let error = execute(with).await.expect_err("the recipient is deferred");

    assert!(error.is_retryable(), "{error:?}");
    assert!(error.message.contains("451"), "{}", error.message);
}

#[tokio::test]
async fn an_absent_server_is_retried() {
    // A port that was free a moment ago: nothing listens there now.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);

    let error = execute(block(port)).await.expect_err("nothing listens");

    assert!(error.is_retryable(), "{error:?}");
    assert!(
        error.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_silent_server_times_out_and_is_retried() {
    // Accepts connections (the kernel does, for the backlog) but never greets.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    let mut with = block(port);
    with["timeout"] = json!("300ms");

    let started = std::time::Instant::now();
    let error = execute(with).await.expect_err("no greeting");

    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.kind, ErrorKind::Timeout, "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[tokio::test]
async fn starttls_is_required_unless_turned_off() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mut with = block(sink.port);
    with["tls"] = json!("starttls");

    let error = execute(with)
        .await
        .expect_err("the sink offers no STARTTLS");

    assert!(!error.is_retryable(), "{error:?}");
    assert!(error.message.contains("STARTTLS"), "{}", error.message);
    assert!(sink.messages().is_empty());
}

/// A block for `sink` under `tls` (`starttls` or `tls`) that trusts the sink's CA.
fn tls_block(sink: &SmtpSink, tls: &str) -> Value {
    let mut with = block(sink.port);
    with["tls"] = json!(tls);
    with["ca_file"] = json!(sink.ca_file());
    with
}

/// Asserts that `message` arrived over TLS (the sink records the protocol version).
fn assert_encrypted(message: &Value) {
    let version = message["tls"].as_str().unwrap_or_default();
    assert!(version.starts_with("TLSv1."), "not over TLS: {message}");
}

#[tokio::test]
async fn delivers_over_starttls_trusting_the_ca_file() {
    let Some(sink) = SmtpSink::start_starttls().await else {
        return;
    };
    let mut with = tls_block(&sink, "starttls");
    with["username"] = json!("bot");
    with["password"] = json!(PASSWORD);

    let output = execute(with).await.expect("the message is accepted");

    assert_eq!(output["accepted"], json!(["sales@example.com"]));
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_encrypted(&messages[0]);
    assert_eq!(messages[0]["authenticated"], true);
    assert_eq!(part(&messages[0], "text/plain"), "Call them.");
}

#[tokio::test]
async fn delivers_over_implicit_tls_trusting_the_ca_file() {
    let Some(sink) = SmtpSink::start_implicit_tls().await else {
        return;
    };

    let output = execute(tls_block(&sink, "tls"))
        .await
        .expect("the message is accepted");

    assert_eq!(output["message_id"], "<run-1.mail.1@enrichflow>");
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_encrypted(&messages[0]);
    assert_eq!(messages[0]["headers"]["subject"], "Hot lead");
    assert_eq!(part(&messages[0], "text/plain"), "Call them.");
}

#[tokio::test]
async fn an_untrusted_certificate_fails_for_good_without_showing_the_password() {
    let Some(sink) = SmtpSink::start_starttls().await else {
        return;
    };
    // The system's roots alone: the sink's CA is not among them.
    let mut with = block(sink.port);
    with["tls"] = json!("starttls");
    with["username"] = json!("bot");
    with["password"] = json!(PASSWORD);

    let error = execute(with).await.expect_err("the certificate is refused");

    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(error.kind, ErrorKind::Node);
    let message = &error.message;
    assert!(message.contains("is not trusted"), "{message}");
    assert!(message.contains("`ca_file`"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", sink.port)),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_to_a_plain_text_server_fails_for_good() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mut with = block(sink.port);
    with["tls"] = json!("tls");

    let error = execute(with)
        .await
        .expect_err("the server does not speak TLS");

    assert!(!error.is_retryable(), "{error:?}");
    assert!(error.message.contains("TLS with"), "{}", error.message);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_missing_ca_file_is_a_config_error_naming_it() {
    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let missing = dir.path().join("relay-ca.pem");
    // The file is read before connecting: no server is needed.
    let mut with = block(25);
    with["tls"] = json!("starttls");
    with["ca_file"] = json!(missing);
    with["username"] = json!("bot");
    with["password"] = json!(PASSWORD);

    let error = execute(with).await.expect_err("the file is missing");

    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(error.kind, ErrorKind::Config, "{error:?}");
    let message = &error.message;
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("cannot be read"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test]
async fn a_cancelled_run_sends_nothing() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let ctx = context();
    ctx.cancellation.cancel();

    let error = execute_in(&ctx, block(sink.port))
        .await
        .expect_err("the run is cancelled");

    assert_eq!(error.kind, ErrorKind::Cancelled);
    assert!(sink.messages().is_empty());
}

#[test]
fn bad_blocks_are_rejected_at_load_time_with_their_path() {
    let node = Registry::with_builtins()
        .get("notify.email")
        .expect("notify.email is a built-in");
    let mut with = block(25);
    with["to"] = json!(["sales@example.com", "not-an-address"]);
    let error = node.check_config(&with).expect_err("a bad address");
    assert_eq!(error.path, "to[1]");
    assert!(
        error.message.contains("not-an-address"),
        "{}",
        error.message
    );
    let mut with = block(25);
    with["tls"] = json!("ssl");
    assert_eq!(
        node.check_config(&with).expect_err("a bad mode").path,
        "tls"
    );
    let mut with = block(25);
    with["tls"] = json!("starttls");
    with["ca_file"] = json!(true);
    assert_eq!(
        node.check_config(&with)
            .expect_err("a path is a string")
            .path,
        "ca_file"
    );
}

/// A policy refusing private networks except 127.0.0.1, where the sink listens.
fn loopback_relay_allowed() -> egress::Policy {
    egress::Policy {
        allowed: Arc::from(vec![
            "127.0.0.1".parse::<egress::Network>().expect("an address"),
        ]),
        ..egress::Policy::default()
    }
}

#[tokio::test]
async fn an_allowed_relay_named_by_host_is_reached_at_its_checked_address_with_tls_for_the_name() {
    let Some(sink) = SmtpSink::start_starttls().await else {
        return;
    };
    let mut with = tls_block(&sink, "starttls");
    // The certificate names `localhost`: TLS checks the name while the connection goes to the
    // address the policy checked.
    with["host"] = json!("localhost");
    let ctx = crate::support::context_with("mail", 1, loopback_relay_allowed());

    let output = execute_in(&ctx, with)
        .await
        .expect("the message is accepted");

    assert_eq!(output["accepted"], json!(["sales@example.com"]));
    assert_encrypted(&sink.messages()[0]);
}

#[tokio::test]
async fn a_relay_outside_the_allowed_networks_is_refused_before_connecting() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let ctx = crate::support::context_with("mail", 1, egress::Policy::default());

    let error = execute_in(&ctx, block(sink.port))
        .await
        .expect_err("loopback is refused");

    assert_eq!(error.kind, ErrorKind::Egress);
    assert!(!error.is_retryable());
    assert!(
        error.message.contains("the address 127.0.0.1 is loopback"),
        "{error}"
    );
    assert!(sink.messages().is_empty());
}
