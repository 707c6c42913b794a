//! Rows to records, written once for both stores: each store says how to read one column of
//! each kind (SQLite keeps timestamps and JSON as text, Postgres as native types), and the
//! layout of a run or an attempt lives here.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    AttemptKey, AttemptRecord, AttemptStatus, Error, ErrorInfo, Json, Listed, Result, RunRecord,
    RunSummary, Trigger, json,
};

/// The columns of a run that lists read: everything but the trigger and the output, which
/// can be large and which a list does not show. A macro, so that `concat!` can use it.
macro_rules! summary_columns {
    () => {
        "id, workflow_id, revision, status, error, created_at, started_at, finished_at, deadline_at"
    };
}
pub(super) use summary_columns;

/// Typed access to the columns of one row, naming the column in every decoding error.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn optional_text(&self, column: &str) -> Result<Option<String>>;
    fn flag(&self, column: &str) -> Result<bool>;
    fn time(&self, column: &str) -> Result<DateTime<Utc>>;
    fn optional_time(&self, column: &str) -> Result<Option<DateTime<Utc>>>;
    /// A JSON column's text as stored; SQL NULL is `None`.
    fn json_text(&self, column: &str) -> Result<Option<String>>;
    fn attempt_number(&self, column: &str) -> Result<u32>;
    fn optional_integer(&self, column: &str) -> Result<Option<i64>>;
    fn optional_real(&self, column: &str) -> Result<Option<f64>>;

    fn status<T: FromStr<Err = String>>(&self, column: &str) -> Result<T> {
        self.text(column)?.parse().map_err(Error::Corrupt)
    }

    /// A JSON column of any depth (see [`json::parse`]): SQL NULL is `None`, the JSON `null`
    /// is `Some(Value::Null)`.
    fn json(&self, column: &str) -> Result<Option<Value>> {
        self.json_text(column)?
            .map(|text| json::parse(column, &text))
            .transpose()
    }

    /// A JSON column kept as text (see [`Json`]): checked to be readable, not built.
    fn kept_json(&self, column: &str) -> Result<Option<Json>> {
        self.json_text(column)?
            .map(|text| {
                json::check_readable(column, &text)?;
                Ok(Json::from_text(text))
            })
            .transpose()
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

/// A run row; any column that cannot be decoded makes the row [`Error::Unreadable`], naming the
/// run.
pub(super) fn run(columns: &impl Columns) -> Result<RunRecord> {
    decode_run(columns).map_err(|error| unreadable("run", "id", columns, error))
}

fn decode_run(columns: &impl Columns) -> Result<RunRecord> {
    Ok(RunRecord {
        id: columns.text("id")?,
        workflow_id: columns.text("workflow_id")?,
        revision: columns.text("revision")?,
        status: columns.status("status")?,
        // Left as text: parsed where it is used (see `Trigger`).
        trigger: Trigger::from_stored(
            columns
                .json_text("trigger")?
                .unwrap_or_else(|| "null".to_owned()),
        ),
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

/// An attempt row; any column that cannot be decoded makes it [`Error::Unreadable`], naming the
/// run, which the attempt's failure then fails.
pub(super) fn attempt(columns: &impl Columns) -> Result<AttemptRecord> {
    decode_attempt(columns).map_err(|error| unreadable("attempt of run", "run_id", columns, error))
}

fn decode_attempt(columns: &impl Columns) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        key: attempt_key(columns)?,
        status: columns.status::<AttemptStatus>("status")?,
        input: columns.kept_json("input")?,
        output: columns.kept_json("output")?,
        error: columns.typed_json("error")?,
        retryable: columns.flag("retryable")?,
        not_before: columns.optional_time("not_before")?,
        created_at: columns.time("created_at")?,
        started_at: columns.optional_time("started_at")?,
        finished_at: columns.optional_time("finished_at")?,
        worker: columns.optional_text("worker")?,
    })
}

/// A row of a list of runs ([`SUMMARY_COLUMNS`]): its summary, or, when it cannot be decoded,
/// its id and why, so that one bad row never fails the list.
pub(super) fn listed(columns: &impl Columns) -> Result<Listed> {
    match summary(columns) {
        Ok(summary) => Ok(Listed::Run(summary)),
        Err(error) => {
            // Without even a readable id the row cannot be named, paged past or failed.
            let id = columns.text("id")?;
            let reason = unreadable("run", "id", columns, error).to_string();
            tracing::error!(run = %id, error = %reason, "a stored run cannot be read");
            Ok(Listed::Unreadable { id, error: reason })
        }
    }
}

fn summary(columns: &impl Columns) -> Result<RunSummary> {
    Ok(RunSummary {
        id: columns.text("id")?,
        workflow_id: columns.text("workflow_id")?,
        revision: columns.text("revision")?,
        status: columns.status("status")?,
        error: columns.typed_json("error")?,
        created_at: columns.time("created_at")?,
        started_at: columns.optional_time("started_at")?,
        finished_at: columns.optional_time("finished_at")?,
        deadline_at: columns.optional_time("deadline_at")?,
    })
}

/// `error` as [`Error::Unreadable`], naming the row by its run id when that is readable.
fn unreadable(row: &str, id_column: &str, columns: &impl Columns, error: Error) -> Error {
    let run_id = columns.text(id_column).unwrap_or_else(|_| "?".to_owned());
    let detail = match error {
        Error::Unreadable(detail) | Error::Corrupt(detail) => detail,
        other => other.to_string(),
    };
    Error::Unreadable(format!("{row} {run_id}: {detail}"))
}
