//! `foreach` at the scale of a list import: an item costs the same whatever the length of the
//! list (a loop that copied the scope per item took minutes for 100,000 items, and would take
//! far longer than the bound here for 200,000), and the run JSON shows how far a running
//! `foreach` is. Timings are printed, never asserted: benchmarks measure them
//! (`engine/benches/foreach/measure.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use enrichflow::oneshot;
use enrichflow::store::RunStatus;
use enrichflow::template::{Limits, Templates};
use enrichflow_nodes::{ConfigError, Node, NodeContext, NodeError, Registry, Secrets};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestOptions, TestServer, fixtures, install_crypto};

const ITEMS: u64 = 200_000;

/// Far beyond what a linear loop needs (seconds), far below what a quadratic one would.
const SCALE_BOUND: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_list_of_200_000_items_goes_through_a_transform_in_order() {
    install_crypto();
    let leads: Vec<u64> = (0..ITEMS).collect();
    let body = json!({ "source": "import-7", "leads": leads });
    let file = fixtures("foreach").join("scale.yaml");
    let started = Instant::now();
    let (run, status) = tokio::time::timeout(
        SCALE_BOUND,
        oneshot::run_file(&file, body, Secrets::default()),
    )
    .await
    .expect("a linear foreach finishes well within the bound")
    .expect("the run happens");
    let elapsed = started.elapsed();
    assert_eq!(status, RunStatus::Succeeded, "{}", run["error"]);
    assert_eq!(run["output"], json!(ITEMS));
    let outputs = run["nodes"]["each"]["output"]
        .as_array()
        .expect("the list of item outputs");
    assert_eq!(outputs.len() as u64, ITEMS);
    assert_eq!(outputs[0], json!("import-7/0"));
    assert_eq!(
        outputs[outputs.len() - 1],
        json!(format!("import-7/{}", ITEMS - 1))
    );
    let inputs = &run["nodes"]["each"]["history"][0]["input"];
    assert_eq!(inputs[12_345], json!({ "value": "import-7/12345" }));
    eprintln!(
        "{ITEMS} foreach items in {:.1} s ({:.0} items/s, debug build, whole run)",
        elapsed.as_secs_f64(),
        ITEMS as f64 / elapsed.as_secs_f64()
    );
}

/// Sleeps `ms` milliseconds and returns its `n`.
struct Sleeps;

#[async_trait]
impl Node for Sleeps {
    fn check_config(&self, _: &Value) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn execute(&self, _: &NodeContext, input: Value) -> Result<Value, NodeError> {
        let ms = input["ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(input["n"].clone())
    }
}

/// A server of the `foreach` fixtures, whose progress workflow needs `test.sleep`.
async fn foreach_server(templates: Templates) -> TestServer {
    let mut registry = Registry::with_builtins();
    registry.register("test.sleep", Arc::new(Sleeps));
    TestServer::start_with_parts(
        &fixtures("foreach"),
        TestOptions::default(),
        registry,
        templates,
        |store| store,
    )
    .await
}

#[tokio::test]
async fn a_running_foreach_shows_its_progress_in_the_run_json() {
    let server = foreach_server(Templates::new()).await;
    // 200 items of 20 ms, one at a time: about 4 s, so several writes of its progress.
    let items: Vec<u64> = (0..200).collect();
    let answer = server
        .client
        .post(server.url("/hooks/progress"))
        .json(&json!({ "items": items, "ms": 20 }))
        .send()
        .await
        .expect("POST webhook");
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let accepted: Value = answer.json().await.expect("202 body");
    let run_id = accepted["run_id"].as_str().expect("a run id").to_owned();

    let mut seen = Vec::new();
    let finished = loop {
        let run: Value = server
            .client
            .get(server.url(&format!("/api/v1/runs/{run_id}")))
            .send()
            .await
            .expect("GET run")
            .json()
            .await
            .expect("run JSON");
        let node = &run["nodes"]["each"];
        if let Some(progress) = node.get("progress") {
            assert_eq!(node["status"], "running", "{node}");
            assert_eq!(progress["total"], 200, "{progress}");
            let done = progress["done"].as_u64().expect("done is a count");
            assert!(done <= 200, "{progress}");
            seen.push(done);
        }
        if run["status"] != "running" && run["status"] != "queued" {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished["status"], "succeeded", "{}", finished["error"]);
    assert!(
        finished["nodes"]["each"].get("progress").is_none(),
        "a finished node shows its output, not a stale count"
    );
    assert_eq!(finished["nodes"]["each"]["output"], json!(items));
    assert!(
        !seen.is_empty(),
        "the progress of a 4 s foreach was never shown"
    );
    assert!(seen.is_sorted(), "progress only goes forward: {seen:?}");
}

#[tokio::test]
async fn a_list_named_as_a_path_is_read_in_place_and_a_computed_one_counts_against_the_limit() {
    let limits = Limits {
        max_output_bytes: 1_000,
        ..Limits::default()
    };
    let server = foreach_server(Templates::with_limits(limits)).await;
    // Far more than 1,000 bytes as a list, each item far less.
    let leads: Vec<u64> = (0..2_000).collect();
    let answer = server
        .client
        .post(server.url("/hooks/named"))
        .json(&json!({ "leads": leads }))
        .send()
        .await
        .expect("POST webhook");
    let status = answer.status();
    let run_id = answer
        .headers()
        .get("x-enrichflow-run-id")
        .and_then(|id| id.to_str().ok())
        .expect("the run id")
        .to_owned();
    let output: Value = answer.json().await.expect("the run's output");
    assert_eq!((status, output), (StatusCode::OK, json!(2_000)));
    let run = server
        .engine
        .run_json(&run_id)
        .await
        .expect("readable")
        .expect("the run");
    assert_eq!(run["nodes"]["named"]["output"], json!(leads));
    let computed = &run["nodes"]["computed"];
    assert_eq!(computed["status"], "failed", "{computed}");
    let message = computed["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains("larger than the template output limit of 1000 bytes"),
        "{message}"
    );
}
