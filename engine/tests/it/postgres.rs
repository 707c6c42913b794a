//! Throw-away Postgres databases for service tests. Without `ENRICHFLOW_TEST_DATABASE_URL` the
//! tests that need one say they skipped; `.ci/run` always sets it.

use sqlx::{AssertSqlSafe, Connection};

/// A database created for one test, dropped when this value is (also when the test panics).
pub struct TestDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

/// A fresh, empty database, or `None` (after saying so) when no Postgres is configured.
pub async fn database(test: &str) -> Option<TestDatabase> {
    let Ok(admin_url) = std::env::var("ENRICHFLOW_TEST_DATABASE_URL") else {
        println!("skipped {test}: ENRICHFLOW_TEST_DATABASE_URL is not set");
        return None;
    };
    let name = format!("enrichflow_it_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("ENRICHFLOW_TEST_DATABASE_URL is reachable");
    // The name is ours (a prefix and a UUID), never user input.
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    let url = with_database(&admin_url, &name);
    Some(TestDatabase {
        admin_url,
        name,
        url,
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = crate::support::block_on_aside(async move {
            let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
            sqlx::raw_sql(AssertSqlSafe(drop))
                .execute(&mut admin)
                .await?;
            Ok::<_, sqlx::Error>(())
        });
        if let Err(error) = dropped {
            eprintln!("cannot drop the test database {}: {error}", self.name);
        }
    }
}

/// `admin_url` with its database name replaced (query parameters kept).
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let authority_end = base
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..authority_end]);
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[test]
fn the_database_name_is_replaced() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/postgres?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}
