//! The real `enrichflow` binary as a child process, for tests that kill or signal it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running `enrichflow serve`; killed (SIGKILL) when dropped.
pub struct ServeProcess {
    child: Child,
    pub base_url: String,
}

impl ServeProcess {
    /// Starts `serve` on a free port with `workflows` and the store at `database_url`, the secret
    /// `BASE_URL` set to `base_url_secret`, and waits until it says where it listens.
    pub fn start(workflows: &Path, database_url: &str, base_url_secret: &str) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_enrichflow"))
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
            .arg("--workflows")
            .arg(workflows)
            .arg("--database-url")
            .arg(database_url)
            .env("ENRICHFLOW_SECRET_BASE_URL", base_url_secret)
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
        ServeProcess { child, base_url }
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
