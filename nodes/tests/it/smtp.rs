//! A real SMTP server process for tests: `fixtures/smtp_sink.py` (Python's aiosmtpd) on a free
//! loopback port, killed when dropped. Each accepted message is read back as JSON.
//!
//! The Python interpreter is `ENRICHFLOW_TEST_PYTHON` (`.ci/run` sets it), and a server that
//! cannot start then fails the test: a skipped email test would hide a broken CI image. Without
//! the variable the tests use `/usr/bin/python3` (where Debian's `python3-aiosmtpd` installs the
//! module) when it has aiosmtpd, and otherwise say they skipped, so `cargo test` passes on a
//! machine without it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const DEFAULT_PYTHON: &str = "/usr/bin/python3";

/// Whether `python` runs and can import aiosmtpd.
async fn has_aiosmtpd(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

/// How long the server may take to print `READY`; Python starts in well under a second.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running SMTP sink.
pub struct SmtpSink {
    /// The loopback port it listens on.
    pub port: u16,
    out_dir: TempDir,
    // Held for `kill_on_drop`.
    _child: Child,
}

impl SmtpSink {
    /// Starts the server and waits until it accepts connections; panics with the reason when it
    /// cannot start. `None` (after saying so) when no Python with aiosmtpd is configured or found.
    pub async fn start() -> Option<Self> {
        let python = match std::env::var("ENRICHFLOW_TEST_PYTHON") {
            Ok(python) => python,
            Err(_) if has_aiosmtpd(DEFAULT_PYTHON).await => DEFAULT_PYTHON.to_owned(),
            Err(_) => {
                println!(
                    "skipped: {DEFAULT_PYTHON} has no aiosmtpd (apt-get install python3-aiosmtpd) \
                     and ENRICHFLOW_TEST_PYTHON is not set"
                );
                return None;
            }
        };
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_sink.py");
        let out_dir = TempDir::new().expect("a temporary directory");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(out_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{}", cannot_start(&python, &error.to_string())));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let port = match line {
            Ok(Ok(Some(line))) => line
                .strip_prefix("READY ")
                .and_then(|port| port.trim().parse().ok())
                .unwrap_or_else(|| panic!("{}", cannot_start(&python, &line))),
            Ok(Ok(None)) => panic!("{}", cannot_start(&python, "it exited (see stderr above)")),
            Ok(Err(error)) => panic!("{}", cannot_start(&python, &error.to_string())),
            Err(_) => panic!(
                "{}",
                cannot_start(&python, "it did not print READY in time")
            ),
        };
        Some(Self {
            port,
            out_dir,
            _child: child,
        })
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.out_dir.path())
            .expect("the output directory is readable")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).expect("a message file");
                serde_json::from_str(&text).expect("a JSON message record")
            })
            .collect()
    }
}

fn cannot_start(python: &str, reason: &str) -> String {
    format!(
        "the test SMTP server could not start with `{python} tests/fixtures/smtp_sink.py`: \
         {reason}. Install aiosmtpd for that interpreter (Debian/Ubuntu: \
         `apt-get install python3-aiosmtpd`; elsewhere `python3 -m pip install aiosmtpd`) or set \
         ENRICHFLOW_TEST_PYTHON to a Python that has it."
    )
}
