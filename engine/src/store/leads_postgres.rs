//! Leads on Postgres: the statements of an upsert (in one transaction; concurrent upserts of
//! one row wait for each other on the row lock `ON CONFLICT DO UPDATE` takes) and the queries
//! of the API, expanded from [`leads_sql`](super::leads_sql).

super::leads_sql::lead_store! {
    store: PostgresStore,
    database: Postgres,
    dialect: postgres,
    read_pool: pool,
    position: "strpos",
}
