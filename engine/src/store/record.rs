//! Plain data rows of the store: runs, attempts, their statuses and errors.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Status of a run, as in the run JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            other => return Err(format!("unknown run status `{other}`")),
        })
    }
}

/// Status of one node attempt. `Pending` waits for its `not_before` (a retry backoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptStatus {
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Pending => "pending",
            AttemptStatus::Queued => "queued",
            AttemptStatus::Running => "running",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Skipped => "skipped",
            AttemptStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            AttemptStatus::Succeeded
                | AttemptStatus::Failed
                | AttemptStatus::Skipped
                | AttemptStatus::Cancelled
        )
    }
}

impl fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttemptStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => AttemptStatus::Pending,
            "queued" => AttemptStatus::Queued,
            "running" => AttemptStatus::Running,
            "succeeded" => AttemptStatus::Succeeded,
            "failed" => AttemptStatus::Failed,
            "skipped" => AttemptStatus::Skipped,
            "cancelled" => AttemptStatus::Cancelled,
            other => return Err(format!("unknown attempt status `{other}`")),
        })
    }
}

/// `{ "kind": "...", "message": "..." }` as in the run JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub kind: String,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// A run's trigger as the store keeps it: JSON text, shared by every copy of the record and
/// parsed only where templates read it, so that a large webhook body is not
/// held as a tree ten times its size while its run is listed, advanced or awaited.
#[derive(Debug, Clone)]
pub struct Trigger {
    json: Json,
    /// Whether the text can be read, found once for every copy: `Ok` from the start for a
    /// trigger built from a body the API checked, looked at when first asked for one read
    /// from the store (see [`Trigger::check`]).
    readable: Arc<OnceLock<Result<(), String>>>,
}

/// Equal texts; whether either was checked does not matter.
impl PartialEq for Trigger {
    fn eq(&self, other: &Trigger) -> bool {
        self.json == other.json
    }
}

impl Trigger {
    /// The trigger as text.
    pub fn text(&self) -> &str {
        self.json.text()
    }

    /// The trigger as a JSON value; stored text that cannot be parsed is an unreadable row.
    pub fn value(&self) -> Result<Value, super::Error> {
        super::json::parse("trigger", self.json.text())
    }

    /// Whether [`Trigger::value`] would succeed, found without building the value (a run
    /// whose stored trigger cannot be read fails, even where no template reads it). Every
    /// node of a run asks; the text is scanned once.
    pub fn check(&self) -> Result<(), super::Error> {
        let readable = self.readable.get_or_init(|| {
            super::json::check_readable("trigger", self.json.text()).map_err(|error| match error {
                super::Error::Unreadable(message) => message,
                other => other.to_string(),
            })
        });
        readable.clone().map_err(super::Error::Unreadable)
    }

    /// `{"type": kind, name: text, …}` assembled from JSON texts without parsing them, so that
    /// a large body never becomes a tree on its way in. Each text must be one JSON value (the
    /// API has checked the body), which makes the whole valid JSON.
    pub fn from_parts(kind: &str, fields: &[(&str, &str)]) -> Trigger {
        let quoted = |text: &str| Value::from(text).to_string();
        let length: usize = fields
            .iter()
            .map(|(name, text)| name.len() + text.len() + 4)
            .sum();
        let mut assembled = String::with_capacity(length.saturating_add(32));
        assembled.push_str("{\"type\":");
        assembled.push_str(&quoted(kind));
        for (name, text) in fields {
            assembled.push(',');
            assembled.push_str(&quoted(name));
            assembled.push(':');
            assembled.push_str(text);
        }
        assembled.push('}');
        Trigger::checked(Json::from_text(assembled))
    }

    /// Text read from the store, parsed when it is used.
    pub(crate) fn from_stored(text: String) -> Trigger {
        Trigger {
            json: Json::from_text(text),
            readable: Arc::default(),
        }
    }

    /// Text known to be readable: built by serde_json, or from a body the API checked.
    fn checked(json: Json) -> Trigger {
        Trigger {
            json,
            readable: Arc::new(OnceLock::from(Ok(()))),
        }
    }

    /// The shared text, to bind without copying it.
    pub(super) fn shared_text(&self) -> Arc<str> {
        self.json.shared_text()
    }
}

impl<T: Into<Json>> From<T> for Trigger {
    fn from(value: T) -> Trigger {
        Trigger::checked(value.into())
    }
}

/// A node attempt's input or output as the store keeps it: JSON text, shared by every copy of
/// its record (the run in memory, what its reads hand out, the outcome being written) and
/// parsed only where a template reads it. The input and output of a `foreach` over a lead list
/// are lists as long as the list: as text they cost tens of bytes a lead, as a tree ten times
/// that. Written as it is; shown in the run JSON as it is.
#[derive(Debug, Clone)]
pub struct Json(Arc<str>);

impl Json {
    /// The value as text.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The value as a tree; stored text that cannot be parsed is an unreadable row.
    pub fn value(&self) -> Result<Value, super::Error> {
        super::json::parse("attempt", &self.0)
    }

    /// Text that is one JSON value: written by serde_json, or read from the store and checked.
    pub(crate) fn from_text(text: String) -> Json {
        Json(text.into())
    }

    /// The shared text, to bind without copying it.
    pub(super) fn shared_text(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Json {
        Json(value.to_string().into())
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Json {
        Json::from(&value)
    }
}

/// Equal values, however they are spelled (Postgres may space stored JSON differently).
impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.0 == other.0
            || matches!((self.value(), other.value()), (Ok(mine), Ok(theirs)) if mine == theirs)
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        as_written(&self.0, || self.value(), serializer)
    }
}

/// The run JSON shows the trigger as the client sent it; one that cannot be read shows as
/// null (the run's error says why).
impl Serialize for Trigger {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

/// Writes JSON text as it is, without building it. Text deeper than serde_json reads by
/// default (an old row) goes through the store's own parse; unreadable text is written null.
fn as_written<S: serde::Serializer>(
    text: &str,
    parse: impl FnOnce() -> Result<Value, super::Error>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<&serde_json::value::RawValue>(text) {
        Ok(raw) => raw.serialize(serializer),
        Err(_) => parse().unwrap_or(Value::Null).serialize(serializer),
    }
}

/// One run row.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// A UUIDv7, so ids sort by creation time.
    pub id: String,
    pub workflow_id: String,
    /// Hash of the workflow revision the run executes.
    pub revision: String,
    pub status: RunStatus,
    /// `{ "type": "webhook", "body": …, … }`, secrets never included.
    pub trigger: Trigger,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    pub idempotency_key: Option<String>,
    /// SHA-256 (hex) of the body the key came with: the same key with another body is refused.
    pub idempotency_body_hash: Option<String>,
}

/// A run without its trigger and output: what lists show and recovery needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub id: String,
    pub workflow_id: String,
    pub revision: String,
    pub status: RunStatus,
    pub error: Option<ErrorInfo>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
}

/// One row of a list of runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Listed {
    Run(RunSummary),
    /// A row that cannot be decoded: its id, and why (for the log and the list).
    Unreadable {
        id: String,
        error: String,
    },
}

impl Listed {
    pub fn id(&self) -> &str {
        match self {
            Listed::Run(run) => &run.id,
            Listed::Unreadable { id, .. } => id,
        }
    }
}

/// Identifies one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    pub run_id: String,
    pub node_id: String,
    /// 1-based; a `skipped` node has one attempt row too.
    pub attempt: u32,
}

/// One attempt row.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub key: AttemptKey,
    pub status: AttemptStatus,
    /// The rendered `with`, secrets redacted. Input and output are shared, not copied, by
    /// every copy of the record: a `foreach` makes them lists as long as a lead list.
    pub input: Option<Json>,
    pub output: Option<Json>,
    pub error: Option<ErrorInfo>,
    pub retryable: bool,
    /// A `pending` attempt is not started before this time.
    pub not_before: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker that last started it (`host:pid:n`), for the run JSON and the lease.
    pub worker: Option<String>,
}

/// Filters of `GET /api/v1/runs`.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub workflow_id: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: u32,
    /// Id of the last run already returned; the page starts after it.
    pub cursor: Option<String>,
}

impl RunQuery {
    /// Page size when `limit` is 0.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// The largest page a caller can ask for.
    pub const MAX_LIMIT: u32 = 500;

    /// `limit` clamped to `1..=MAX_LIMIT`, with 0 meaning `DEFAULT_LIMIT`.
    pub fn page_size(&self) -> u32 {
        page_size(self.limit)
    }
}

/// A list's `limit` clamped to `1..=RunQuery::MAX_LIMIT`, with 0 meaning the default; every
/// paged list (runs, leads) uses the same bounds.
pub fn page_size(limit: u32) -> u32 {
    match limit {
        0 => RunQuery::DEFAULT_LIMIT,
        limit => limit.min(RunQuery::MAX_LIMIT),
    }
}
