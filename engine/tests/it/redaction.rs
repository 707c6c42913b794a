//! Secrets stay out of what the engine stores and answers, in every encoding it searches for
//! and through template filters, while what a client sends is stored as sent (no oracle); a
//! secret too short to redact is refused at start. Workflows are in `tests/fixtures/redaction`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use enrichflow::store::RunStatus;
use enrichflow_nodes::Secrets;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{TestOptions, TestServer, fixtures};

/// Long enough for any run on a loaded CI machine; a healthy one takes milliseconds.
const FINISH: Duration = Duration::from_secs(20);

/// Has a space, `/` and `&`, which every encoding writes differently.
const TOKEN: &str = "tok/en key&more";

async fn server() -> TestServer {
    let mut options = TestOptions::default();
    options.engine.secrets = Secrets::new(BTreeMap::from([("TOKEN".to_owned(), TOKEN.to_owned())]));
    TestServer::start_with(&fixtures("redaction"), options).await
}

/// Starts a manual run, waits for it to finish, and returns the run JSON as the API shows it.
async fn run(server: &TestServer, workflow: &str, body: Value) -> Value {
    let url = server.url(&format!("/api/v1/workflows/{workflow}/runs"));
    let answer = server
        .client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(answer.status(), StatusCode::CREATED);
    let summary: Value = answer.json().await.expect("JSON");
    let run_id = summary["id"].as_str().expect("a run id").to_owned();
    let finished = server
        .engine
        .wait(&run_id, FINISH)
        .await
        .expect("the store answers")
        .expect("the run finished in time");
    assert_eq!(finished.status, RunStatus::Succeeded);
    let url = server.url(&format!("/api/v1/runs/{run_id}"));
    let text = server
        .client
        .get(url)
        .send()
        .await
        .expect("the API answers")
        .text()
        .await
        .expect("a body");
    serde_json::from_str(&text).expect("JSON")
}

/// Fails naming the form when the run JSON holds `form` anywhere, in any case.
fn assert_absent(run: &Value, forms: &[(&str, String)]) {
    let text = run.to_string().to_lowercase();
    for (what, form) in forms {
        assert!(
            !text.contains(&form.to_lowercase()),
            "{what} ({form}) is stored: {run:#}"
        );
    }
}

/// Answers with the path and query it was called on, the token it received in HTTP Basic form (standard
/// and URL-safe base64, inside a longer payload) and upper-cased: an upstream that echoes.
struct Echo;

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = request
            .url
            .query_pairs()
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        ResponseTemplate::new(200).set_body_json(json!({
            "url": format!("{}?{}", request.url.path(), request.url.query().unwrap_or_default()),
            "basic": format!("Basic {}", STANDARD.encode(format!("user:{token}"))),
            "url_safe": URL_SAFE_NO_PAD.encode(format!("ab{token}!")),
            "upper": token.to_uppercase(),
        }))
    }
}

#[tokio::test]
async fn an_upstream_echoing_the_secret_encoded_stores_no_secret() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/echo"))
        .respond_with(Echo)
        .mount(&mock)
        .await;
    let server = server().await;
    let run = run(
        &server,
        "echo-url",
        json!({ "base": mock.uri(), "q": "hello" }),
    )
    .await;

    // The secret did reach the upstream, form-encoded, so its absence below is redaction.
    let requests = mock.received_requests().await.expect("recording is on");
    let query = requests[0].url.query().unwrap_or_default().to_owned();
    assert_eq!(query, "q=hello&token=tok%2Fen+key%26more");

    let base = mock.uri();
    assert_eq!(
        run["nodes"]["call"]["history"][0]["input"],
        json!({ "url": format!("{base}/echo"), "query": { "token": "[redacted]", "q": "hello" } })
    );
    assert_eq!(
        run["output"],
        json!({
            "url": "/echo?q=hello&token=[redacted]",
            "basic": "Basic [redacted]",
            "url_safe": "[redacted]",
            "upper": "[redacted]",
        })
    );
    assert_absent(
        &run,
        &[
            ("the value", TOKEN.to_owned()),
            ("the query", query),
            ("base64", STANDARD.encode(format!("user:{TOKEN}"))),
        ],
    );
}

#[tokio::test]
async fn filters_applied_to_a_secret_are_not_stored_in_clear() {
    let server = server().await;
    let run = run(&server, "transforms", json!({})).await;
    let shown = json!({
        "upper": "[REDACTED]",
        "lower": "[redacted]",
        "escaped": "[redacted]",
        "replaced": "[redacted]",
        "reversed": "]detcader[",
        "in_text": "key=[redacted];",
        // Lengths are numbers, not searched for: the input shows the length of `[redacted]`.
        "length": 10,
    });
    assert_eq!(
        run["nodes"]["shown"]["history"][0]["input"],
        json!({ "value": shown })
    );
    let mut node_output = shown.clone();
    node_output["length"] = json!(TOKEN.len());
    assert_eq!(run["nodes"]["shown"]["output"], node_output);
    assert_eq!(
        run["output"],
        json!({ "node": node_output, "direct": "[redacted]" })
    );
    let each = ["first: [REDACTED]", "second: [REDACTED]"];
    assert_eq!(
        run["nodes"]["each"]["history"][0]["input"],
        json!([{ "value": each[0] }, { "value": each[1] }])
    );
    assert_eq!(run["nodes"]["each"]["output"], json!(each));
    let reversed: String = TOKEN.chars().rev().collect();
    assert_absent(
        &run,
        &[
            ("the value", TOKEN.to_owned()),
            ("escaped", "tok&#x2f;en key&amp;more".to_owned()),
            ("replaced", TOKEN.replace(' ', "_")),
            ("reversed", reversed),
            ("form-encoded", TOKEN.replace(' ', "+")),
        ],
    );
}

#[tokio::test]
async fn what_a_client_posts_is_stored_and_answered_as_sent_even_when_it_equals_a_secret() {
    let server = server().await;
    for guess in [TOKEN, "a wrong guess"] {
        let answer = server
            .client
            .post(server.url("/hooks/guess"))
            .json(&json!({ "guess": guess }))
            .send()
            .await
            .expect("the webhook answers");
        assert_eq!(answer.status(), StatusCode::OK);
        let run_id = answer
            .headers()
            .get("x-enrichflow-run-id")
            .and_then(|v| v.to_str().ok())
            .expect("the run id")
            .to_owned();
        let body: Value = answer.json().await.expect("JSON");
        assert_eq!(
            body,
            json!({ "kept": guess, "direct": guess, "length": TOKEN.len() })
        );
        let run = server
            .engine
            .run_json(&run_id)
            .await
            .expect("the store answers")
            .expect("the run");
        assert_eq!(run["trigger"]["body"]["guess"], guess);
        assert_eq!(run["nodes"]["keep"]["output"], guess);
        assert_eq!(run["nodes"]["keep"]["history"][0]["input"]["value"], guess);
    }
}

fn enrichflow_with_secret(args: &[&str], value: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_enrichflow"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "error")
        .env("ENRICHFLOW_SECRET_PIN", value)
        .output()
        .expect("the enrichflow binary runs")
}

#[test]
fn a_secret_shorter_than_8_characters_is_refused_at_start() {
    let workflow = "../workflows/hello.yaml";
    let commands: [&[&str]; 2] = [
        &["run", workflow, "--input", "{}"],
        &[
            "serve",
            "--workflows",
            "tests/fixtures/redaction",
            "--database-url",
            "sqlite::memory:",
            "--listen",
            "127.0.0.1:0",
        ],
    ];
    for args in commands {
        let output = enrichflow_with_secret(args, "1234567");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("secret PIN is shorter than 8 characters"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("1234567"),
            "{args:?} prints the value: {stderr}"
        );
    }
    let output = enrichflow_with_secret(&["run", workflow, "--input", "{}"], "12345678");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
