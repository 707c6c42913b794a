//! The `with` block of `notify.email`, read at load time and after rendering, and the message
//! built from it.

use serde_json::{Value, json};

use super::with_block::{DEFAULT_TIMEOUT, TlsMode};
use super::*;

fn error(with: Value) -> ConfigError {
    NotifyEmail
        .check_config(&with)
        .expect_err("the block should be rejected")
}

fn minimal() -> Value {
    json!({
        "host": "smtp.example.com",
        "from": "Enrichflow <bot@example.com>",
        "to": "sales@example.com",
        "subject": "Hot lead",
        "text": "Call them.",
    })
}

fn with(key: &str, value: Value) -> Value {
    let mut block = minimal();
    block[key] = value;
    block
}

fn without(key: &str) -> Value {
    let mut block = minimal();
    block.as_object_mut().expect("a map").remove(key);
    block
}

fn read_rendered(with: Value) -> (Server, Letter) {
    read(Phase::Run, &with)
        .expect("the block is valid")
        .expect("nothing is pending")
}

#[test]
fn accepts_literals_and_templates() {
    assert_eq!(NotifyEmail.check_config(&minimal()), Ok(()));
    let templated = json!({
        "host": "{{ vars.SMTP_HOST }}",
        "port": "{{ vars.SMTP_PORT }}",
        "tls": "tls",
        "ca_file": "{{ secrets.SMTP_CA_FILE }}",
        "username": "{{ secrets.SMTP_USER }}",
        "password": "{{ secrets.SMTP_PASSWORD }}",
        "from": "bot@example.com",
        "to": ["{{ trigger.body.owner }}", "Sales <sales@example.com>"],
        "cc": "{{ nodes.route.output.cc }}",
        "bcc": [],
        "reply_to": "{{ trigger.body.email }}",
        "subject": "Hot lead {{ trigger.body.email }}",
        "html": "<p>{{ trigger.body.email }}</p>",
        "timeout": "1m",
    });
    assert_eq!(NotifyEmail.check_config(&templated), Ok(()));
}

#[test]
fn rejects_bad_keys_at_their_path() {
    let cases = [
        (without("host"), "host"),
        (without("from"), "from"),
        (without("to"), "to"),
        (without("subject"), "subject"),
        (without("text"), "text"),
        (with("attachments", json!([])), "attachments"),
        (with("host", json!("smtp://example.com")), "host"),
        (with("port", json!(0)), "port"),
        (with("port", json!(25.5)), "port"),
        (with("port", json!("25")), "port"),
        (with("tls", json!("ssl")), "tls"),
        (with("ca_file", json!(42)), "ca_file"),
        (with("ca_file", json!(["ca.pem"])), "ca_file"),
        (with("ca_file", json!(" ")), "ca_file"),
        (with("from", json!("not an address")), "from"),
        (with("to", json!([])), "to"),
        (with("to", json!(["a@example.com", "nope"])), "to[1]"),
        (with("to", json!({"a": "b"})), "to"),
        (with("cc", json!("@example.com")), "cc"),
        (with("bcc", json!([1])), "bcc[0]"),
        (with("reply_to", json!("x")), "reply_to"),
        (with("username", json!("bot")), "password"),
        (with("password", json!("pw")), "username"),
        (with("html", json!(["<p>"])), "html"),
        (with("timeout", json!("forever")), "timeout"),
    ];
    for (block, path) in cases {
        assert_eq!(error(block.clone()).path, path, "for {block}");
    }
}

#[test]
fn a_bad_password_is_not_quoted() {
    let mut block = minimal();
    block["username"] = json!("bot");
    block["password"] = json!(271828);
    let error = error(block);
    assert_eq!(error.path, "password");
    assert!(!error.message.contains("271828"), "{}", error.message);
}

#[test]
fn the_port_follows_the_tls_mode() {
    let port = |tls: &str| read_rendered(with("tls", json!(tls))).0.port;
    assert_eq!(read_rendered(minimal()).0.tls, TlsMode::StartTls);
    assert_eq!(port("starttls"), 587);
    assert_eq!(port("tls"), 465);
    assert_eq!(port("none"), 25);
    assert_eq!(read_rendered(with("port", json!(2525))).0.port, 2525);
    assert_eq!(read_rendered(minimal()).0.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn a_password_never_reaches_debug_output() {
    let mut block = minimal();
    block["username"] = json!("bot");
    block["password"] = json!("hunter2");
    let (server, _) = read_rendered(block);
    let debug = format!("{server:?}");
    assert!(
        debug.contains("bot") && !debug.contains("hunter2"),
        "{debug}"
    );
}

#[test]
fn message_ids_are_dot_atoms_from_the_key() {
    assert_eq!(message_id("run-1:notify:2"), "<run-1.notify.2@enrichflow>");
    assert_eq!(message_id("r:a.b:1"), "<r.a=2Eb.1@enrichflow>");
    assert_eq!(message_id("r::1"), "<r.=.1@enrichflow>");
    assert_eq!(message_id("r:é<>:1"), "<r.=C3=A9=3C=3E.1@enrichflow>");
}

#[test]
fn both_bodies_make_an_alternative() {
    let mut block = with("html", json!("<p>Call them.</p>"));
    block["bcc"] = json!(["Boss <boss@example.com>"]);
    let (_, letter) = read_rendered(block);
    let message = build_message(letter, "<k@enrichflow>").expect("a valid message");
    let recipients: Vec<String> = message
        .envelope()
        .to()
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(recipients, ["sales@example.com", "boss@example.com"]);
    let formatted = String::from_utf8(message.formatted()).expect("ASCII");
    assert!(
        formatted.contains("Message-ID: <k@enrichflow>"),
        "{formatted}"
    );
    assert!(formatted.contains("multipart/alternative"), "{formatted}");
    assert!(
        !formatted.contains("boss@"),
        "Bcc must not be in the headers: {formatted}"
    );
}

#[test]
fn a_null_login_is_no_login() {
    let mut block = minimal();
    block["username"] = Value::Null;
    block["password"] = Value::Null;
    assert!(read_rendered(block.clone()).0.login.is_none());
    block["username"] = json!("bot");
    assert_eq!(error(block).path, "password");
}

#[test]
fn ca_file_is_a_path_for_tls_only() {
    let path = |block: Value| read_rendered(block).0.ca_file;
    assert_eq!(path(minimal()), None);
    assert_eq!(path(with("ca_file", Value::Null)), None);
    let block = with("ca_file", json!("/etc/enrichflow/relay-ca.pem"));
    assert_eq!(
        path(block.clone()),
        Some("/etc/enrichflow/relay-ca.pem".into())
    );
    let mut implicit = block.clone();
    implicit["tls"] = json!("tls");
    assert_eq!(NotifyEmail.check_config(&implicit), Ok(()));
    let mut plain = block;
    plain["tls"] = json!("none");
    let error = error(plain.clone());
    assert_eq!(error.path, "ca_file");
    assert!(error.message.contains("tls: none"), "{}", error.message);
    // A template may render to null, which is no `ca_file`: only the run can tell.
    plain["ca_file"] = json!("{{ secrets.SMTP_CA_FILE | default(none) }}");
    assert_eq!(NotifyEmail.check_config(&plain), Ok(()));
}

/// A server block for `tls: starttls` with `ca_file` set to `path`.
fn server_with_ca_file(path: &std::path::Path) -> Server {
    let mut block = with("ca_file", json!(path));
    block["host"] = json!("127.0.0.1");
    read_rendered(block).0
}

#[tokio::test]
async fn a_bad_ca_file_is_a_config_error_naming_it() {
    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let missing = dir.path().join("missing.pem");
    let no_certificate = dir.path().join("key-only.pem");
    std::fs::write(&no_certificate, "not a certificate").expect("written");
    let bad_certificate = dir.path().join("bad.pem");
    let block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    std::fs::write(&bad_certificate, block).expect("written");
    let cases = [
        (missing, "cannot be read"),
        (no_certificate, "holds no PEM certificate"),
        (bad_certificate, "holds an unusable certificate"),
    ];
    for (path, problem) in cases {
        let server = server_with_ca_file(&path);
        let error = tls::for_server(&server, "the SMTP server")
            .await
            .expect_err("the file is rejected");
        assert_eq!(error.kind, ErrorKind::Config, "{error:?}");
        assert!(!error.is_retryable());
        let shown = format!("`with.ca_file`: `{}` {problem}", path.display());
        assert!(error.message.starts_with(&shown), "{}", error.message);
    }
}

#[tokio::test]
async fn a_ca_file_is_added_to_the_roots() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let ca =
        rcgen::generate_simple_self_signed(["relay.internal".to_owned()]).expect("a certificate");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca.cert.pem()).expect("written");
    let tls = tls::for_server(&server_with_ca_file(&path), "the SMTP server")
        .await
        .expect("the file is accepted");
    assert!(matches!(tls, Tls::Required(_)), "{tls:?}");
}
