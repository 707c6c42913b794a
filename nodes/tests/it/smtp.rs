//! A real SMTP server process for tests: `fixtures/smtp_sink.py` (Python's aiosmtpd) on a free
//! loopback port, killed when dropped. Each accepted message is read back as JSON. It speaks plain
//! text, STARTTLS or implicit TLS; under TLS it presents a certificate for `localhost` and
//! 127.0.0.1 from a throw-away CA made for that server alone (rcgen), whose PEM file tests pass
//! as `ca_file`.
//!
//! The Python interpreter is `ENRICHFLOW_TEST_PYTHON` (`.ci/run` sets it), and a server that
//! cannot start then fails the test: a skipped email test would hide a broken CI image. Without
//! the variable the tests use `/usr/bin/python3` (where Debian's `python3-aiosmtpd` installs the
//! module) when it has aiosmtpd, and otherwise say they skipped, so `cargo test` passes on a
//! machine without it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
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

/// How the server protects its connections.
#[derive(Debug, Clone, Copy)]
enum Protection {
    PlainText,
    /// Offers STARTTLS and refuses mail from a client that has not upgraded.
    StartTls,
    /// TLS from the first byte, as on port 465.
    ImplicitTls,
}

/// A running SMTP sink.
pub struct SmtpSink {
    /// The loopback port it listens on.
    pub port: u16,
    /// Its messages, and under TLS its certificates.
    out_dir: TempDir,
    /// The PEM file of the CA that signed the server's certificate, under TLS.
    ca_file: Option<PathBuf>,
    // Held for `kill_on_drop`.
    _child: Child,
}

impl SmtpSink {
    /// Starts a plain-text server and waits until it accepts connections; panics with the reason
    /// when it cannot start. `None` (after saying so) when no Python with aiosmtpd is configured
    /// or found.
    pub async fn start() -> Option<Self> {
        Self::launch(Protection::PlainText).await
    }

    /// Like [`SmtpSink::start`], for a server that offers and requires STARTTLS.
    pub async fn start_starttls() -> Option<Self> {
        Self::launch(Protection::StartTls).await
    }

    /// Like [`SmtpSink::start`], for a server that speaks TLS from the first byte.
    pub async fn start_implicit_tls() -> Option<Self> {
        Self::launch(Protection::ImplicitTls).await
    }

    /// The PEM file of the CA that signed this server's certificate; panics for plain text.
    pub fn ca_file(&self) -> &Path {
        self.ca_file.as_deref().expect("a sink started with TLS")
    }

    async fn launch(protection: Protection) -> Option<Self> {
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
        let mut command = Command::new(&python);
        command.arg(&script).arg(out_dir.path());
        let option = match protection {
            Protection::PlainText => None,
            Protection::StartTls => Some("--starttls"),
            Protection::ImplicitTls => Some("--tls"),
        };
        let ca_file = option.map(|option| {
            let files = write_certificates(out_dir.path());
            command.arg(option).arg(files.cert_file).arg(files.key_file);
            files.ca_file
        });
        let mut child = command
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
            ca_file,
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

/// The PEM files of a server under TLS.
struct CertificateFiles {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// A new CA and a certificate it signs for `localhost` and 127.0.0.1, written into `dir`.
fn write_certificates(dir: &Path) -> CertificateFiles {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "enrichflow test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("a CA key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let mut server_params = CertificateParams::new(names).expect("server parameters");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_key = KeyPair::generate().expect("a server key");
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .expect("a server certificate");
    let files = CertificateFiles {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server-key.pem"),
    };
    let write = |path: &Path, pem: String| std::fs::write(path, pem).expect("a PEM file");
    write(&files.ca_file, ca.pem());
    write(&files.cert_file, server_cert.pem());
    write(&files.key_file, server_key.serialize_pem());
    files
}

fn cannot_start(python: &str, reason: &str) -> String {
    format!(
        "the test SMTP server could not start with `{python} tests/fixtures/smtp_sink.py`: \
         {reason}. Install aiosmtpd for that interpreter (Debian/Ubuntu: \
         `apt-get install python3-aiosmtpd`; elsewhere `python3 -m pip install aiosmtpd`) or set \
         ENRICHFLOW_TEST_PYTHON to a Python that has it."
    )
}
