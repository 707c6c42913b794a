//! How `notify.email` protects a connection: a server's certificate is checked against the
//! system's roots and, with `ca_file`, the CA certificates of that PEM file, read afresh for each
//! attempt so that a replaced file needs no restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};

use super::with_block::{Server, TlsMode};
use crate::{ErrorKind, NodeError};

/// The line every PEM certificate starts with; a file without one would trust nothing more.
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Built settings by host and `ca_file` content. Building reads and parses the system's whole
/// certificate bundle, a blocking file read far costlier than the mail itself; the settings
/// only change with the host or the file, so each pair is built once.
static BUILT: LazyLock<Mutex<HashMap<BuiltKey, TlsParameters>>> = LazyLock::new(Mutex::default);

/// A host and the content of its `ca_file` (empty without one).
type BuiltKey = (String, Vec<u8>);

/// Enough for every SMTP server and CA file of a deployment; past it the cache starts over.
const MAX_BUILT: usize = 64;

/// lettre's TLS settings for `server`, which `target` names in errors.
pub(super) async fn for_server(server: &Server, target: &str) -> Result<Tls, NodeError> {
    let wrap: fn(TlsParameters) -> Tls = match server.tls {
        TlsMode::StartTls => Tls::Required,
        TlsMode::Tls => Tls::Wrapper,
        TlsMode::None => return Ok(Tls::None),
    };
    let ca_pem = match &server.ca_file {
        Some(path) => read_ca_file(path).await?,
        None => Vec::new(),
    };
    let key = (server.host.clone(), ca_pem);
    if let Some(built) = lock(&BUILT).get(&key) {
        return Ok(wrap(built.clone()));
    }
    let (host, ca_file, pem) = (server.host.clone(), server.ca_file.clone(), key.1.clone());
    let built = tokio::task::spawn_blocking(move || build(host, ca_file.as_deref(), &pem))
        .await
        .map_err(|error| {
            NodeError::permanent(ErrorKind::Node, format!("TLS for {target}: {error}"))
        })?
        .map_err(|error| match error {
            BuildError::CaFile(error) => error,
            BuildError::Tls(error) => {
                NodeError::permanent(ErrorKind::Node, format!("TLS for {target}: {error}"))
            }
        })?;
    let mut cache = lock(&BUILT);
    if cache.len() >= MAX_BUILT {
        cache.clear();
    }
    cache.insert(key, built.clone());
    Ok(wrap(built))
}

enum BuildError {
    CaFile(NodeError),
    Tls(lettre::transport::smtp::Error),
}

/// The builder starts from the system's roots (lettre's `rustls-native-certs`); `ca_file` adds
/// to them rather than replacing them.
fn build(host: String, ca_file: Option<&Path>, pem: &[u8]) -> Result<TlsParameters, BuildError> {
    let mut builder = TlsParameters::builder(host);
    if let Some(path) = ca_file {
        let certificate = Certificate::from_pem(pem).map_err(|error| {
            BuildError::CaFile(ca_file_error(path, &format!("is not valid PEM: {error}")))
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|error| match ca_file {
        // Building parses each added CA, which fails for a block that is not a certificate.
        Some(path) => BuildError::CaFile(ca_file_error(
            path,
            &format!("holds an unusable certificate: {error}"),
        )),
        None => BuildError::Tls(error),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map holds only finished values, so a panic elsewhere cannot leave it half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The PEM text of the file at `path`, read afresh for each attempt so that a replaced file
/// needs no restart. Every problem is the configuration's and final; the message names the
/// path, never the file's content.
pub(super) async fn read_ca_file(path: &Path) -> Result<Vec<u8>, NodeError> {
    let pem = tokio::fs::read(path)
        .await
        .map_err(|error| ca_file_error(path, &format!("cannot be read: {error}")))?;
    let marked = pem
        .windows(PEM_CERTIFICATE.len())
        .any(|window| window == PEM_CERTIFICATE);
    if !marked {
        let problem = "holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)";
        return Err(ca_file_error(path, problem));
    }
    Ok(pem)
}

fn ca_file_error(path: &Path, problem: &str) -> NodeError {
    let message = format!("`with.ca_file`: `{}` {problem}", path.display());
    NodeError::permanent(ErrorKind::Config, message)
}
