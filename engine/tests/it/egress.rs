//! The egress policy end to end: a webhook that names a URL cannot make the engine call its own
//! API or anything else on loopback unless the policy is off, through the API and through
//! `enrichflow run` with its flag and environment variable.

use std::path::PathBuf;
use std::process::{Command, Output};

use enrichflow_nodes::egress;
use serde_json::{Value, json};

use crate::support::{TestOptions, TestServer, fixtures};

fn folder() -> PathBuf {
    fixtures("egress")
}

async fn server(policy: egress::Policy) -> TestServer {
    let mut options = TestOptions::default();
    options.engine.egress = policy;
    TestServer::start_with(&folder(), options).await
}

/// Posts `url` to the fetching workflow; the answer's status and the run as the API shows it.
async fn fetch(server: &TestServer, url: &str) -> (u16, Value) {
    let answer = server
        .client
        .post(server.url("/hooks/fetch"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .expect("the webhook answers");
    let status = answer.status().as_u16();
    let location = answer
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .expect("a run location")
        .to_owned();
    let run = server
        .client
        .get(server.url(&location))
        .send()
        .await
        .expect("the run answers")
        .json()
        .await
        .expect("run JSON");
    (status, run)
}

#[tokio::test]
async fn a_webhook_cannot_make_the_engine_call_its_own_api() {
    let server = server(egress::Policy::default()).await;
    let port = server.addr.port();
    for host in [
        "127.0.0.1",
        "0x7f.1",
        "2130706433",
        "0.0.0.0",
        "localhost",
        "[::ffff:127.0.0.1]",
    ] {
        let (status, run) = fetch(&server, &format!("http://{host}:{port}/api/v1/runs")).await;
        assert_eq!(status, 500, "{host}: {run:#}");
        let error = &run["nodes"]["get"]["error"];
        assert_eq!(error["kind"], "egress", "{host}: {run:#}");
        assert_eq!(run["nodes"]["get"]["attempts"], 1, "refusals are final");
        let message = error["message"].as_str().expect("a message");
        assert!(
            message.contains("--deny-private-networks=false"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn with_the_policy_off_the_same_call_goes_through() {
    let server = server(egress::Policy::allow_private_networks()).await;
    let (status, run) = fetch(&server, &format!("{}/healthz", server.base_url)).await;
    assert_eq!(status, 200, "{run:#}");
    assert_eq!(run["output"], 200);
}

fn enrichflow_run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let file = folder().join("fetch.yaml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_enrichflow"));
    command
        .arg("run")
        .arg(&file)
        // Port 9 (discard) is closed here: allowed, the call fails to connect instead.
        .args(["--input", r#"{"url": "http://127.0.0.1:9/"}"#])
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove("ENRICHFLOW_DENY_PRIVATE_NETWORKS");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the enrichflow binary runs")
}

fn error_kind(output: &Output) -> Value {
    let run: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "run JSON expected ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    run["nodes"]["get"]["error"]["kind"].clone()
}

#[test]
fn enrichflow_run_refuses_loopback_unless_told_otherwise() {
    let refused = enrichflow_run(&[], &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(error_kind(&refused), "egress");
    let flag = enrichflow_run(&["--deny-private-networks=false"], &[]);
    assert_eq!(
        error_kind(&flag),
        "http",
        "the call was made and failed to connect"
    );
    let variable = enrichflow_run(&[], &[("ENRICHFLOW_DENY_PRIVATE_NETWORKS", "false")]);
    assert_eq!(error_kind(&variable), "http");
    let allowed = enrichflow_run(&["--egress-allow", "127.0.0.0/8"], &[]);
    assert_eq!(error_kind(&allowed), "http");
    let bad = enrichflow_run(&["--egress-allow", "intranet"], &[]);
    assert_eq!(bad.status.code(), Some(2), "a bad network is a usage error");
}
