//! Which SMTP failures another attempt may fix: the server's own verdict (4xx transient, 5xx
//! permanent, RFC 5321 section 4.2.1) where there is one, and the network's otherwise.

use std::time::Duration;

use lettre::transport::smtp::Error;

use crate::{ErrorKind, NodeError};

/// Replies that mean the credentials, not the message, are wrong (RFC 4954 section 6).
const AUTH_REQUIRED: u16 = 530;
const AUTH_TOO_WEAK: u16 = 534;
const AUTH_INVALID: u16 = 535;

/// The node error for a failed delivery. `password` is cut out of the message in case a server
/// echoes what it was sent.
pub(super) fn classify(target: &str, error: &Error, password: Option<&str>) -> NodeError {
    let detail = redact(&chain(error), password);
    if error.is_timeout() {
        return NodeError::retryable(ErrorKind::Timeout, format!("{target} timed out: {detail}"));
    }
    if let Some(code) = error.status().map(u16::from) {
        return by_reply(target, code, error.is_transient(), &detail);
    }
    // Certificates and protocol versions do not change between attempts: TLS failures are final.
    let handshake = handshake_error(error);
    if let Some(rustls::Error::InvalidCertificate(_)) = handshake {
        let message = format!(
            "the certificate of {target} is not trusted (check `host`, or trust its CA with \
             `ca_file`): {detail}"
        );
        return NodeError::permanent(ErrorKind::Node, message);
    }
    if error.is_tls() || handshake.is_some() {
        let message = format!(
            "TLS with {target} failed (check `tls`, `port` and the server's certificate): {detail}"
        );
        return NodeError::permanent(ErrorKind::Node, message);
    }
    if error.is_client() {
        // lettre's own refusals: no STARTTLS offered, no usable AUTH mechanism, a bad name.
        let message = format!("{target} cannot be used as configured: {detail}");
        return NodeError::permanent(ErrorKind::Node, message);
    }
    // Connecting failed, the connection broke, or a reply was garbled: worth another attempt.
    NodeError::retryable(
        ErrorKind::Node,
        format!("sending to {target} failed: {detail}"),
    )
}

/// The handshake's own error. lettre reports a failed handshake as a connection error, whose
/// causes hold the I/O error of tokio-rustls, which wraps rustls's (`io::Error` hides what it
/// wraps from `source()`, hence `get_ref`).
fn handshake_error(error: &Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(tls_error) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls_error);
        }
        let wrapped = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if wrapped.is_some() {
            return wrapped;
        }
        source = cause.source();
    }
    None
}

/// A delivery that ran past the node's `timeout`.
pub(super) fn timed_out(target: &str, timeout: Duration) -> NodeError {
    let after = humantime::format_duration(timeout);
    NodeError::retryable(
        ErrorKind::Timeout,
        format!("{target} did not finish within {after}"),
    )
}

fn by_reply(target: &str, code: u16, transient: bool, detail: &str) -> NodeError {
    if transient {
        let message = format!("{target} deferred the message (try again later): {detail}");
        return NodeError::retryable(ErrorKind::Node, message);
    }
    let message = match code {
        AUTH_INVALID => format!("{target} rejected the username or password: {detail}"),
        AUTH_TOO_WEAK | AUTH_REQUIRED => {
            format!("{target} requires authentication (`username`, `password`, `tls`): {detail}")
        }
        _ => format!("{target} refused the message: {detail}"),
    };
    NodeError::permanent(ErrorKind::Node, message)
}

/// The error and its causes on one line; the server's reply is in there.
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // lettre's Display already appends its direct source.
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn redact(text: &str, password: Option<&str>) -> String {
    match password {
        Some(password) if !password.is_empty() => text.replace(password, "[password]"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decide_retries() {
        let deferred = by_reply("the SMTP server x:25", 451, true, "451 try later");
        assert!(deferred.is_retryable());
        let refused = by_reply("the SMTP server x:25", 550, false, "550 no such user");
        assert!(!refused.is_retryable());
        assert!(
            refused
                .message
                .contains("refused the message: 550 no such user")
        );
        let login = by_reply("the SMTP server x:25", 535, false, "535 bad credentials");
        assert!(!login.is_retryable());
        assert!(login.message.contains("rejected the username or password"));
    }

    #[test]
    fn passwords_are_cut_out() {
        assert_eq!(
            redact("AUTH hunter2 failed", Some("hunter2")),
            "AUTH [password] failed"
        );
        assert_eq!(redact("nothing", Some("")), "nothing");
        assert_eq!(redact("nothing", None), "nothing");
    }

    #[test]
    fn timeouts_are_retryable() {
        let error = timed_out("the SMTP server x:25", Duration::from_secs(30));
        assert!(error.is_retryable());
        assert_eq!(error.kind, ErrorKind::Timeout);
        assert_eq!(
            error.message,
            "the SMTP server x:25 did not finish within 30s"
        );
    }
}
