//! The statements the SQLite writer runs through rusqlite on the handle of sqlx's writer
//! connection (see [`sqlite_writer`](super::sqlite_writer)): their owned parameters, how they
//! run, and their errors in the store's terms.
//!
//! A failure keeps SQLite's extended result code, so the store classifies it as it does sqlx's
//! own SQLite errors: a constraint is refused data, BUSY or a full disk is transient.

use std::borrow::Cow;
use std::sync::Arc;

use rusqlite::types::{ToSql, ToSqlOutput, Value, ValueRef};
use sqlx::error::{DatabaseError, ErrorKind};

use super::{AttemptKey, Error, Result};

/// A parameter, owned so that its statement can wait in the writer's queue.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Null,
    Integer(i64),
    Text(String),
    /// Text shared with the caller (a run's trigger), not copied.
    Shared(Arc<str>),
}

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Null => ToSqlOutput::Owned(Value::Null),
            Param::Integer(number) => ToSqlOutput::Owned(Value::Integer(*number)),
            Param::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Param::Shared(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        })
    }
}

impl From<i64> for Param {
    fn from(number: i64) -> Param {
        Param::Integer(number)
    }
}

impl From<bool> for Param {
    fn from(flag: bool) -> Param {
        Param::Integer(i64::from(flag))
    }
}

impl From<String> for Param {
    fn from(text: String) -> Param {
        Param::Text(text)
    }
}

impl From<&str> for Param {
    fn from(text: &str) -> Param {
        Param::Text(text.to_owned())
    }
}

impl From<&String> for Param {
    fn from(text: &String) -> Param {
        Param::Text(text.clone())
    }
}

impl From<&Option<String>> for Param {
    fn from(text: &Option<String>) -> Param {
        text.as_ref().into()
    }
}

impl From<Arc<str>> for Param {
    fn from(text: Arc<str>) -> Param {
        Param::Shared(text)
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(value: Option<T>) -> Param {
        value.map_or(Param::Null, Into::into)
    }
}

/// A statement with its parameters bound, built like sqlx's `query(sql).bind(…)`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Statement {
    sql: Cow<'static, str>,
    params: Vec<Param>,
}

/// The statement `sql`, with no parameter bound yet.
pub(super) fn statement(sql: impl Into<Cow<'static, str>>) -> Statement {
    Statement {
        sql: sql.into(),
        params: Vec::new(),
    }
}

impl Statement {
    /// Binds the next `?`.
    pub(super) fn bind(mut self, value: impl Into<Param>) -> Statement {
        self.params.push(value.into());
        self
    }

    /// Runs it on `connection`; how many rows it changed.
    pub(super) fn execute(&self, connection: &rusqlite::Connection) -> Result<u64> {
        let mut prepared = connection.prepare_cached(&self.sql)?;
        let changed = prepared.execute(rusqlite::params_from_iter(&self.params))?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    /// Runs it on `connection` and reads each row it returns with `read`.
    pub(super) fn rows<T>(
        &self,
        connection: &rusqlite::Connection,
        mut read: impl FnMut(&rusqlite::Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut prepared = connection.prepare_cached(&self.sql)?;
        let mut rows = prepared.query(rusqlite::params_from_iter(&self.params))?;
        let mut read_rows = Vec::new();
        while let Some(row) = rows.next()? {
            read_rows.push(read(row)?);
        }
        Ok(read_rows)
    }
}

/// An attempt's key from a row of `run_id, node_id, attempt` (what `RETURNING` gives back).
pub(super) fn attempt_key(row: &rusqlite::Row<'_>) -> Result<AttemptKey> {
    let number: i64 = row.get(2)?;
    Ok(AttemptKey {
        run_id: row.get(0)?,
        node_id: row.get(1)?,
        attempt: u32::try_from(number)
            .map_err(|_| Error::Corrupt(format!("attempt number {number}")))?,
    })
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        Error::Database(into_sqlx(error))
    }
}

/// `error` as sqlx would have reported it, so one classification serves both drivers.
pub(super) fn into_sqlx(error: rusqlite::Error) -> sqlx::Error {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let message = message.unwrap_or_else(|| failure.to_string());
            sqlx::Error::Database(Box::new(Failure {
                code: failure.extended_code,
                message,
            }))
        }
        rusqlite::Error::QueryReturnedNoRows => sqlx::Error::RowNotFound,
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnIndex(_)
        | rusqlite::Error::InvalidColumnName(_) => sqlx::Error::Decode(Box::new(error)),
        other => sqlx::Error::AnyDriverError(Box::new(other)),
    }
}

/// SQLite refused a statement: its extended result code and message.
#[derive(Debug, thiserror::Error)]
#[error("{message} (code {code})")]
pub(crate) struct Failure {
    code: i32,
    message: String,
}

impl DatabaseError for Failure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ErrorKind::UniqueViolation,
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_statement_keeps_sqlites_code_and_is_classified_like_sqlxs() -> anyhow::Result<()> {
        let connection = rusqlite::Connection::open_in_memory()?;
        connection.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
        let insert = statement("INSERT INTO t (k, v) VALUES (?, ?)")
            .bind(1_i64)
            .bind("a");
        assert_eq!(insert.execute(&connection)?, 1);
        let Err(Error::Database(sqlx::Error::Database(failure))) = insert.execute(&connection)
        else {
            anyhow::bail!("a duplicate key was not refused");
        };
        assert_eq!(failure.kind(), ErrorKind::UniqueViolation);
        assert_eq!(failure.code().as_deref(), Some("1555"));
        let null = statement("INSERT INTO t (k, v) VALUES (2, ?)").bind(None::<String>);
        let refused = null.execute(&connection);
        assert!(refused.is_err_and(|error| !error.is_retryable()));
        Ok(())
    }

    #[test]
    fn parameters_bind_in_order_and_shared_text_is_not_copied() -> anyhow::Result<()> {
        let connection = rusqlite::Connection::open_in_memory()?;
        connection.execute_batch("CREATE TABLE t (a, b, c, d)")?;
        let shared: Arc<str> = Arc::from("trigger");
        statement("INSERT INTO t VALUES (?, ?, ?, ?)")
            .bind(true)
            .bind(Some(7_i64))
            .bind(Arc::clone(&shared))
            .bind(None::<&str>)
            .execute(&connection)?;
        let row = statement("SELECT a, b, c, d IS NULL FROM t").rows(&connection, |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, bool>(3)?,
            ))
        })?;
        assert_eq!(row, [(1, 7, "trigger".to_owned(), true)]);
        assert_eq!(Arc::strong_count(&shared), 1);
        Ok(())
    }
}
