//! Leads on SQLite: the statements of an upsert (run in one transaction on the writer
//! connection, which also serialises concurrent upserts) and the queries of the API, expanded
//! from [`leads_sql`](super::leads_sql).

super::leads_sql::lead_store! {
    store: SqliteStore,
    database: Sqlite,
    dialect: sqlite,
    read_pool: pool,
    position: "instr",
}
