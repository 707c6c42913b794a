//! SQL shared by both stores, turned into each database's text. A shared statement uses `?`
//! for its parameters and `?::json` for a parameter stored in a JSON column (a `json` column
//! on Postgres, which needs the cast from text; a `TEXT` column on SQLite, which takes the text
//! as it is). The functions are named like the store modules, so a macro given `postgres` or
//! `sqlite` finds both the store's helpers and its dialect.
//!
//! The translation does not parse SQL, so a shared statement holds no string literal (checked
//! in debug builds): a `?` or `::json` inside one would be rewritten too.

use std::fmt::Write;

use sqlx::AssertSqlSafe;

/// `statement` for Postgres: the `?` become `$1`, `$2`, … in order; `::json` casts stay.
pub(super) fn postgres(statement: &'static str) -> AssertSqlSafe<String> {
    check(statement);
    let mut sql = String::with_capacity(statement.len() + 16);
    let mut n_parameters = 0;
    for character in statement.chars() {
        if character == '?' {
            n_parameters += 1;
            // Writing to a String cannot fail.
            let _ = write!(sql, "${n_parameters}");
        } else {
            sql.push(character);
        }
    }
    // Safe: built only from a `'static` statement of this crate, never from input.
    AssertSqlSafe(sql)
}

/// `statement` for SQLite: the `?` stay, the `::json` casts go.
pub(super) fn sqlite(statement: &'static str) -> AssertSqlSafe<String> {
    check(statement);
    // Safe: built only from a `'static` statement of this crate, never from input.
    AssertSqlSafe(statement.replace("::json", ""))
}

fn check(statement: &str) {
    debug_assert!(
        !statement.contains(['\'', '"', '$']),
        "a shared statement holds no literal, quoted name or numbered parameter: {statement}"
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
    #[cfg(debug_assertions)]
    #[should_panic(expected = "holds no literal")]
    fn a_string_literal_is_refused() {
        postgres("SELECT ? WHERE status = 'why?'");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "holds no literal")]
    fn a_numbered_parameter_is_refused() {
        sqlite("SELECT $1");
    }
}
