//! The real `enrichflow` binary as a child process, for tests that kill or signal it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A running `enrichflow serve`; killed (SIGKILL) when dropped.
pub struct ServeProcess {
    child: Child,
    pub base_url: String,
}

impl ServeProcess {
    /// Starts `serve` on a free port with `workflows` and the store at `database_url`, the secret
    /// `BASE_URL` set to `base_url_secret`, and waits until it says where it listens.
    pub fn start(workflows: &Path, database_url: &str, base_url_secret: &str) -> ServeProcess {
        Self::start_with(
            workflows,
            database_url,
            base_url_secret,
            &["--workers", "2"],
        )
    }

    /// As [`ServeProcess::start`], with more arguments (`--amqp-url …`, `--workers 0`).
    pub fn start_with(
        workflows: &Path,
        database_url: &str,
        base_url_secret: &str,
        args: &[&str],
    ) -> ServeProcess {
        let mut child = enrichflow(base_url_secret)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--workflows")
            .arg(workflows)
            .arg("--database-url")
            .arg(database_url)
            .args(args)
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
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[serve] {line}");
            }
        });
        ServeProcess { child, base_url }
    }

    /// The process id, to read its memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("the process exits")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // SIGKILL on Unix: the process gets no chance to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with the secret `BASE_URL`, quiet logs, stderr piped and stdout dropped.
fn enrichflow(base_url_secret: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enrichflow"));
    command
        .env("ENRICHFLOW_SECRET_BASE_URL", base_url_secret)
        // The fake upstreams of the tests listen on loopback.
        .env("ENRICHFLOW_DENY_PRIVATE_NETWORKS", "false")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    command
}

/// A running `enrichflow worker`; killed (SIGKILL) when dropped.
pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    /// Starts `worker` with the given arguments after `worker`, the secret `BASE_URL` set.
    pub fn start(base_url_secret: &str, args: &[&str]) -> WorkerProcess {
        let mut child = enrichflow(base_url_secret)
            .arg("worker")
            .args(args)
            .spawn()
            .expect("the enrichflow binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        // Echo the worker's warnings into the test output; they explain a failure.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[worker] {line}");
            }
        });
        WorkerProcess { child }
    }

    /// Sends a signal (`-TERM`, `-STOP`, `-CONT`, `-KILL`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("-TERM");
        self.child.wait().expect("the process exits")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly on every kernel.
        let _ = self.child.kill();
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// A fresh SQLite path under the temp dir; `remove_database` deletes it and its WAL files.
pub fn temp_database(label: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("enrichflow-{label}-{}.db", uuid::Uuid::now_v7()))
}

/// The `sqlite://` URL of a database file.
pub fn sqlite_url(database: &Path) -> String {
    format!("sqlite://{}", database.display())
}

pub fn remove_database(database: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
}

/// Polls `GET /api/v1/runs/{id}` until the run has finished (the run belongs to another
/// process, so there is nothing to wait on but its API).
pub async fn finished_run(client: &reqwest::Client, base_url: &str, run_id: &str) -> Value {
    // Generous: two cores shared by parallel tests, each with several processes.
    const PATIENCE: Duration = Duration::from_secs(60);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
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
        if std::time::Instant::now() > deadline {
            panic!("run {run_id} did not finish within {PATIENCE:?}: {run:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a run through a webhook and returns its id.
pub async fn trigger(client: &reqwest::Client, base_url: &str, hook: &str) -> String {
    let accepted: Value = client
        .post(format!("{base_url}/hooks/{hook}"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("POST webhook")
        .json()
        .await
        .expect("202 body");
    accepted["run_id"].as_str().expect("a run id").to_owned()
}

/// Answers `delays[n]` late on call `n` (no delay past the list) and reports each arrival.
pub struct Delayed {
    pub calls: Arc<AtomicUsize>,
    pub delays: Vec<Duration>,
    pub arrived: mpsc::UnboundedSender<()>,
}

impl Respond for Delayed {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.arrived.send(());
        let delay = self.delays.get(call).copied().unwrap_or_default();
        ResponseTemplate::new(200)
            .set_body_json(json!({"ok": call}))
            .set_delay(delay)
    }
}

/// Mounts `GET /{route}` answering with `delays`; returns its call count and arrivals.
pub async fn mount(
    server: &MockServer,
    route: &str,
    delays: Vec<Duration>,
) -> (Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let responder = Delayed {
        calls: calls.clone(),
        delays,
        arrived,
    };
    Mock::given(method("GET"))
        .and(path(format!("/{route}")))
        .respond_with(responder)
        .mount(server)
        .await;
    (calls, arrivals)
}

pub async fn arrival(arrivals: &mut mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
        .await
        .expect("the mock was called within 30 s")
        .expect("the mock is alive");
}

/// The mocks of the `slow-chain` workflow (fixtures `distributed/slow-chain.yaml`): `first` answers at once, `slow` after a delay on its
/// first call.
pub struct SlowChain {
    pub first_calls: Arc<AtomicUsize>,
    pub slow_calls: Arc<AtomicUsize>,
    slow_arrived: mpsc::UnboundedReceiver<()>,
}

impl SlowChain {
    pub async fn mount(server: &MockServer, slow_delay: Duration) -> SlowChain {
        let (first_calls, _) = mount(server, "first", Vec::new()).await;
        let (slow_calls, slow_arrived) = mount(server, "slow", vec![slow_delay]).await;
        SlowChain {
            first_calls,
            slow_calls,
            slow_arrived,
        }
    }

    /// Starts a run through `base_url`; returns its id once its `slow` node is in flight.
    pub async fn start(&mut self, client: &reqwest::Client, base_url: &str) -> String {
        let run_id = trigger(client, base_url, "slow-chain").await;
        arrival(&mut self.slow_arrived).await;
        run_id
    }
}

/// The node's history statuses, oldest first.
pub fn history(run: &Value, node: &str) -> Vec<String> {
    run["nodes"][node]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|attempt| attempt["status"].as_str().map(str::to_owned))
        .collect()
}
