//! How `notify.email` protects a connection: a server's certificate is checked against the
//! system's roots and, with `ca_file`, the CA certificates of that PEM file, read afresh for each
//! attempt so that a replaced file needs no restart.

use std::path::Path;

use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};

use super::with_block::{Server, TlsMode};
use crate::{ErrorKind, NodeError};

/// The line every PEM certificate starts with; a file without one would trust nothing more.
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// lettre's TLS settings for `server`, which `target` names in errors.
pub(super) async fn for_server(server: &Server, target: &str) -> Result<Tls, NodeError> {
    let wrap: fn(TlsParameters) -> Tls = match server.tls {
        TlsMode::StartTls => Tls::Required,
        TlsMode::Tls => Tls::Wrapper,
        TlsMode::None => return Ok(Tls::None),
    };
    // The builder starts from the system's roots (lettre's `rustls-native-certs`); `ca_file`
    // adds to them rather than replacing them.
    let mut builder = TlsParameters::builder(server.host.clone());
    if let Some(path) = &server.ca_file {
        builder = builder.add_root_certificate(read_ca_file(path).await?);
    }
    let parameters = builder.build().map_err(|error| match &server.ca_file {
        // Building parses each added CA, which fails for a block that is not a certificate.
        Some(path) => ca_file_error(path, &format!("holds an unusable certificate: {error}")),
        None => NodeError::permanent(ErrorKind::Node, format!("TLS for {target}: {error}")),
    })?;
    Ok(wrap(parameters))
}

/// The certificates of the PEM file at `path`. Every problem is the configuration's and final;
/// the message names the path, never the file's content.
pub(super) async fn read_ca_file(path: &Path) -> Result<Certificate, NodeError> {
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
    Certificate::from_pem(&pem)
        .map_err(|error| ca_file_error(path, &format!("is not valid PEM: {error}")))
}

fn ca_file_error(path: &Path, problem: &str) -> NodeError {
    let message = format!("`with.ca_file`: `{}` {problem}", path.display());
    NodeError::permanent(ErrorKind::Config, message)
}
