//! SQL shared by both stores, turned into each database's text. A shared statement uses `?`
//! for its parameters, `?::json` for a parameter stored in a JSON column (a `json` column on
//! Postgres, which needs the cast from text; a `TEXT` column on SQLite, which takes the text as
//! it is), and [`RAISE_VERSION`] where it changes what deciding a run depends on (Postgres keeps
//! a version per run, migration 0007; SQLite, whose one process holds its runs in memory, keeps
//! none). The functions are named like the store modules, so a macro given `postgres` or
//! `sqlite` finds both the store's helpers and its dialect.
//!
//! Quoted text (`'running'`, `"trigger"`) is left as it is: status literals stay literals
//! because the partial indexes match them (`WHERE status = 'pending'`), which a bound parameter
//! would not. A statement holds no numbered parameter (`$1`): the translation numbers them.

use std::fmt::Write;

use sqlx::AssertSqlSafe;

/// Where a shared statement raises the run's version: in the `SET` list of an `UPDATE runs`,
/// after its last assignment. Postgres writes `, version = version + 1`; SQLite nothing.
pub(super) const RAISE_VERSION: &str = "/*raise version*/";

/// `statement` for Postgres: the `?` outside quotes become `$1`, `$2`, … in order; `::json`
/// casts stay; [`RAISE_VERSION`] raises the version.
pub(super) fn postgres(statement: &str) -> AssertSqlSafe<String> {
    check(statement);
    let statement = statement.replace(RAISE_VERSION, ", version = version + 1");
    let mut sql = String::with_capacity(statement.len() + 16);
    let mut n_parameters = 0;
    let mut quote = None;
    for character in statement.chars() {
        match (quote, character) {
            (None, '\'' | '"') => quote = Some(character),
            (Some(open), _) if character == open => quote = None,
            (None, '?') => {
                n_parameters += 1;
                // Writing to a String cannot fail.
                let _ = write!(sql, "${n_parameters}");
                continue;
            }
            _ => {}
        }
        sql.push(character);
    }
    // Safe: built only from this crate's statements, never from input.
    AssertSqlSafe(sql)
}

/// `statement` for SQLite: the `?` stay, the `::json` casts and [`RAISE_VERSION`] go.
pub(super) fn sqlite(statement: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(sqlite_text(statement))
}

/// [`sqlite`] as plain text, for the statements the SQLite writer runs natively.
pub(super) fn sqlite_text(statement: &str) -> String {
    check(statement);
    statement.replace("::json", "").replace(RAISE_VERSION, "")
}

/// `$statement`, a shared statement, in the words of `$dialect` (`postgres` or `sqlite`):
/// translated the first time this line runs and kept, so the hot path allocates nothing for it.
/// The statement must be a constant (a statement built at run time goes through the store's
/// `built`): what is kept is the first translation.
macro_rules! translated {
    ($dialect:ident, $statement:expr) => {{
        const STATEMENT: &str = $statement;
        static TRANSLATED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TRANSLATED
            .get_or_init(|| $crate::store::dialect::$dialect(STATEMENT).0)
            .as_str()
    }};
}
pub(crate) use translated;

/// `$statement`, a shared statement, as a write of `$dialect`'s store ([`translated`] once).
macro_rules! shared {
    ($dialect:ident, $statement:expr) => {
        $crate::store::$dialect::write($crate::store::dialect::translated!($dialect, $statement))
    };
}
pub(crate) use shared;

fn check(statement: &str) {
    debug_assert!(
        !statement.contains('$'),
        "a shared statement holds no numbered parameter: {statement}"
    );
    debug_assert!(
        statement.chars().filter(|&c| c == '\'').count() % 2 == 0
            && statement.chars().filter(|&c| c == '"').count() % 2 == 0,
        "a shared statement closes every quote it opens: {statement}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATEMENT: &str = "INSERT INTO t (a, b, c) VALUES (?, ?::json, ?)
         ON CONFLICT (a) DO UPDATE SET b = excluded.b WHERE c = ?";

    #[test]
    fn postgres_numbers_the_parameters_in_order_and_keeps_json_casts() {
        assert_eq!(
            postgres(STATEMENT).0,
            "INSERT INTO t (a, b, c) VALUES ($1, $2::json, $3)
         ON CONFLICT (a) DO UPDATE SET b = excluded.b WHERE c = $4"
        );
        assert_eq!(postgres("SELECT 1").0, "SELECT 1");
        assert_eq!(
            postgres("?,?,?,?,?,?,?,?,?,?").0,
            "$1,$2,$3,$4,$5,$6,$7,$8,$9,$10"
        );
    }

    #[test]
    fn sqlite_keeps_the_parameters_and_drops_json_casts() {
        assert_eq!(
            sqlite(STATEMENT).0,
            "INSERT INTO t (a, b, c) VALUES (?, ?, ?)
         ON CONFLICT (a) DO UPDATE SET b = excluded.b WHERE c = ?"
        );
    }

    #[test]
    fn quoted_text_is_left_as_it_is() {
        let statement = r#"SELECT "trigger" FROM runs WHERE status = 'why?' AND id = ?"#;
        assert_eq!(
            postgres(statement).0,
            r#"SELECT "trigger" FROM runs WHERE status = 'why?' AND id = $1"#
        );
        assert_eq!(sqlite(statement).0, statement);
    }

    #[test]
    fn only_postgres_raises_the_version() {
        let statement = "UPDATE runs SET status = ? /*raise version*/ WHERE id = ?";
        assert_eq!(
            postgres(statement).0,
            "UPDATE runs SET status = $1 , version = version + 1 WHERE id = $2"
        );
        assert_eq!(
            sqlite(statement).0,
            "UPDATE runs SET status = ?  WHERE id = ?"
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "closes every quote")]
    fn an_open_quote_is_refused() {
        postgres("SELECT ? WHERE status = 'why?");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "no numbered parameter")]
    fn a_numbered_parameter_is_refused() {
        sqlite("SELECT $1");
    }
}
