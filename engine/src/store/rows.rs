//! Rows to records, written once for both stores: each store says how to read one column of
//! each kind (SQLite keeps timestamps and JSON as text, Postgres as native types), and the
//! layout of a run or an attempt lives here.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{AttemptKey, AttemptRecord, AttemptStatus, Error, ErrorInfo, Result, RunRecord};

/// Typed access to the columns of one row, naming the column in every decoding error.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn optional_text(&self, column: &str) -> Result<Option<String>>;
    fn flag(&self, column: &str) -> Result<bool>;
    fn time(&self, column: &str) -> Result<DateTime<Utc>>;
    fn optional_time(&self, column: &str) -> Result<Option<DateTime<Utc>>>;
    /// A JSON column: SQL NULL is `None`, the JSON `null` is `Some(Value::Null)`.
    fn json(&self, column: &str) -> Result<Option<Value>>;
    fn attempt_number(&self, column: &str) -> Result<u32>;
    fn optional_integer(&self, column: &str) -> Result<Option<i64>>;
    fn optional_real(&self, column: &str) -> Result<Option<f64>>;

    fn status<T: FromStr<Err = String>>(&self, column: &str) -> Result<T> {
        self.text(column)?.parse().map_err(Error::Corrupt)
    }

    fn typed_json<T: DeserializeOwned>(&self, column: &str) -> Result<Option<T>> {
        self.json(column)?
            .map(|value| {
                serde_json::from_value(value)
                    .map_err(|error| Error::Corrupt(format!("{column}: {error}")))
            })
            .transpose()
    }
}

/// How an error is stored: `{"kind", "message"}` as JSON text.
pub(super) fn error_json(error: &ErrorInfo) -> String {
    serde_json::json!({ "kind": error.kind, "message": error.message }).to_string()
}

pub(super) fn run(columns: &impl Columns) -> Result<RunRecord> {
    Ok(RunRecord {
        id: columns.text("id")?,
        workflow_id: columns.text("workflow_id")?,
        revision: columns.text("revision")?,
        status: columns.status("status")?,
        trigger: columns.json("trigger")?.unwrap_or(Value::Null),
        output: columns.json("output")?,
        error: columns.typed_json("error")?,
        created_at: columns.time("created_at")?,
        started_at: columns.optional_time("started_at")?,
        finished_at: columns.optional_time("finished_at")?,
        deadline_at: columns.optional_time("deadline_at")?,
        cancel_requested: columns.flag("cancel_requested")?,
        idempotency_key: columns.optional_text("idempotency_key")?,
        idempotency_body_hash: columns.optional_text("idempotency_body_hash")?,
    })
}

pub(super) fn attempt_key(columns: &impl Columns) -> Result<AttemptKey> {
    Ok(AttemptKey {
        run_id: columns.text("run_id")?,
        node_id: columns.text("node_id")?,
        attempt: columns.attempt_number("attempt")?,
    })
}

pub(super) fn attempt(columns: &impl Columns) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        key: attempt_key(columns)?,
        status: columns.status::<AttemptStatus>("status")?,
        input: columns.json("input")?,
        output: columns.json("output")?,
        error: columns.typed_json("error")?,
        retryable: columns.flag("retryable")?,
        not_before: columns.optional_time("not_before")?,
        created_at: columns.time("created_at")?,
        started_at: columns.optional_time("started_at")?,
        finished_at: columns.optional_time("finished_at")?,
        worker: columns.optional_text("worker")?,
    })
}
