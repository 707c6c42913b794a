//! Errors a node returns: what kind, whether a retry may help, and configuration errors.

use std::fmt;
use std::time::Duration;

/// The kind of a node error, as it appears in a run's JSON (`error.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An HTTP exchange failed or returned an unexpected status.
    Http,
    /// The attempt or the run ran out of time.
    Timeout,
    /// A template could not be rendered.
    Template,
    /// A WebAssembly plugin failed.
    Plugin,
    /// The run was cancelled while the attempt ran.
    Cancelled,
    /// The rendered configuration is not what the node accepts.
    Config,
    /// Anything else a node reports.
    Node,
    /// The egress policy refused the destination (a private address, see `egress::Policy`).
    Egress,
    /// A fault of the engine or a node's code (a panic), not of the data or the service.
    Internal,
}

impl ErrorKind {
    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Http => "http",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Template => "template",
            ErrorKind::Plugin => "plugin",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Config => "config",
            ErrorKind::Node => "node",
            ErrorKind::Egress => "egress",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt failed. Whether the engine retries is decided by [`NodeError::is_retryable`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct NodeError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// A sentence for the user; never contains secret values.
    pub message: String,
    retryable: bool,
    /// A delay the remote side asked for (`Retry-After`); the engine waits at least this long.
    pub retry_after: Option<Duration>,
}

impl NodeError {
    /// A failure that may go away on another attempt (network error, 5xx, 429, timeout).
    pub fn retryable(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A failure another attempt cannot fix (bad request, invalid configuration).
    pub fn permanent(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// The same error, asking the engine to wait at least `delay` before the next attempt.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// A node's `with` block is invalid; found when the workflow is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Where inside `with`, as keys joined by dots (`headers.Accept`); empty for the block itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error at `path` inside the `with` block.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
