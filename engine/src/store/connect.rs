//! Opening the store a database URL names: SQLite for `sqlite:…`, Postgres for `postgres://…`.

use std::sync::Arc;

use super::postgres::is_postgres_url;
use super::{Error, PostgresStore, Result, SqliteStore, Store};

/// How a process opens the database: how many connections, how durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Postgres: connections for queries, besides the few that hold run locks and the one that
    /// listens for finished runs. Every `serve` and `worker` process opens its own, and together
    /// they must stay below the server's `max_connections` (100 by default). SQLite ignores it:
    /// one writer and a fixed set of readers serve one process.
    pub max_connections: u32,
    /// What an acknowledged write survives (SQLite; Postgres commits are always flushed).
    pub durability: Durability,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            durability: Durability::default(),
        }
    }
}

/// What a committed write survives on SQLite. Postgres is not affected: its commits are
/// flushed to disk before they are acknowledged (`synchronous_commit = on`, its default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// The process being killed (kill -9, a crash), not the machine losing power: commits are
    /// written to the OS, not flushed to the disk (SQLite `synchronous=NORMAL`).
    Process,
    /// The machine losing power too: every commit is flushed to the disk before it is
    /// acknowledged (SQLite `synchronous=FULL`). Concurrent runs share each flush.
    #[default]
    Power,
}

/// Connects to (and migrates) the database at `url`: `sqlite://path`, `sqlite::memory:`,
/// `postgres://…` or `postgresql://…`. Any other URL is refused without echoing it, since it may
/// carry a password.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    connect_with(url, PoolOptions::default()).await
}

/// As [`connect`], with a pool of the given size.
pub async fn connect_with(url: &str, pool: PoolOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            SqliteStore::connect_with(url, pool.durability).await?,
        ))
    } else if is_postgres_url(url) {
        Ok(Arc::new(PostgresStore::connect_with(url, pool).await?))
    } else {
        Err(Error::UnsupportedUrl(without_credentials(url)))
    }
}

/// What an error may say about a URL that is not ours: its scheme, or the whole text when it has
/// neither a scheme nor a `user@` part (a bare file name, worth showing).
pub(super) fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None if url.contains('@') => "…".to_owned(),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunQuery;

    #[tokio::test]
    async fn sqlite_urls_open_sqlite() -> anyhow::Result<()> {
        let store = connect("sqlite::memory:").await?;
        assert_eq!(store.list_runs(&RunQuery::default()).await?, []);
        Ok(())
    }

    #[tokio::test]
    async fn other_urls_are_refused_without_credentials() {
        for url in [
            "mysql://user:secret@localhost/db",
            "user:secret@localhost/db",
            "enrichflow.db",
            "",
        ] {
            let error = connect(url).await.map(|_| ()).expect_err(url);
            let message = error.to_string();
            assert!(
                matches!(error, Error::UnsupportedUrl(_)),
                "{url}: {message}"
            );
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[tokio::test]
    async fn postgres_store_refuses_other_urls_without_credentials() {
        for url in [
            "sqlite://user:secret@x",
            "postgres:/u:secret@h/db",
            "pg://u:secret@h/db",
        ] {
            let error = PostgresStore::connect(url)
                .await
                .map(|_| ())
                .expect_err(url);
            let message = error.to_string();
            assert!(
                matches!(error, Error::UnsupportedUrl(_)),
                "{url}: {message}"
            );
            assert!(!message.contains("secret"), "{message}");
        }
    }
}
