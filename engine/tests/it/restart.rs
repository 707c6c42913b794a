//! Crash safety: SIGKILL `enrichflow serve` while a node waits on a slow server, start it again
//! on the same database, and check the run finishes without re-running a succeeded node.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Answers the first call only after a long delay (and reports it arrived), later calls at once.
struct HangsOnce {
    calls: Arc<AtomicUsize>,
    arrived: mpsc::UnboundedSender<()>,
}

impl Respond for HangsOnce {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.arrived.send(());
        let response = ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": call}));
        if call == 0 {
            response.set_delay(Duration::from_secs(300))
        } else {
            response
        }
    }
}

struct Serve {
    child: Child,
    base_url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary on a free port and waits until it says where it listens.
fn start_serve(database: &Path, mock_url: &str) -> Serve {
    let workflows = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/restart");
    let mut child = Command::new(env!("CARGO_BIN_EXE_enrichflow"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
        .arg("--workflows")
        .arg(&workflows)
        .arg("--database-url")
        .arg(format!("sqlite://{}", database.display()))
        .env("ENRICHFLOW_SECRET_BASE_URL", mock_url)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the enrichflow binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let base_url = loop {
        let line = lines
            .next()
            .expect("serve printed where it listens")
            .expect("readable stderr");
        if let Some(url) = line.strip_prefix("enrichflow listening on ") {
            break url.trim().to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Serve { child, base_url }
}

async fn run_when_finished(client: &reqwest::Client, base_url: &str, run_id: &str) -> Value {
    for _ in 0..600 {
        let run: Value = client
            .get(format!("{base_url}/api/v1/runs/{run_id}"))
            .send()
            .await
            .expect("GET run")
            .json()
            .await
            .expect("run JSON");
        if matches!(
            run["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} did not finish within 30 s");
}

#[tokio::test]
async fn a_killed_server_resumes_its_runs_without_repeating_succeeded_nodes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockServer::start().await;
    let first_calls = Arc::new(AtomicUsize::new(0));
    let slow_calls = Arc::new(AtomicUsize::new(0));
    let (arrived, mut slow_arrived) = mpsc::unbounded_channel();
    Mock::given(method("GET"))
        .and(path("/first"))
        .respond_with(CountCalls(first_calls.clone()))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/slow"))
        .respond_with(HangsOnce {
            calls: slow_calls.clone(),
            arrived,
        })
        .mount(&mock)
        .await;

    let database =
        std::env::temp_dir().join(format!("enrichflow-restart-{}.db", uuid::Uuid::now_v7()));
    let client = reqwest::Client::new();
    let server = start_serve(&database, &mock.uri());
    let accepted: Value = client
        .post(format!("{}/hooks/slow-chain", server.base_url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("POST webhook")
        .json()
        .await
        .expect("202 body");
    let run_id = accepted["run_id"].as_str().expect("a run id").to_owned();

    slow_arrived
        .recv()
        .await
        .expect("the slow node called the server");
    drop(server); // SIGKILL: Child::kill sends SIGKILL on Unix.

    let server = start_serve(&database, &mock.uri());
    let run = run_when_finished(&client, &server.base_url, &run_id).await;

    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["output"], serde_json::json!({"ok": 1}));
    assert_eq!(
        first_calls.load(Ordering::SeqCst),
        1,
        "a succeeded node ran again"
    );
    assert_eq!(run["nodes"]["first"]["attempts"], 1);
    assert_eq!(
        slow_calls.load(Ordering::SeqCst),
        2,
        "the interrupted attempt runs again"
    );
    drop(server);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
}

struct CountCalls(Arc<AtomicUsize>);

impl Respond for CountCalls {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"first": true}))
    }
}
