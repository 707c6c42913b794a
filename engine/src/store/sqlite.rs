//! SQLite implementation of the store (embedded mode). (Being written; see the store helper.)

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}
