//! The statements of [`Store::stats`](super::Store::stats) on both stores, written once (see
//! [`dialect`]) and expanded for each store by a `macro_rules!`, as in [`cache`](super::cache):
//! the stores share the text of the code but not its sqlx types. Only the duration of a run in
//! milliseconds is spelt per database.
//!
//! Each figure is one statement over an index of migration 0004 (or 0001), so a dashboard can
//! poll them every few seconds. They are read one after another, not in one snapshot: a run
//! finishing meanwhile may be counted as running and as finished in the same answer.

use chrono::{DateTime, Utc};

use super::dialect::translated;
use super::rows::Columns as _;
use super::stats::{
    AttemptStats, DURATION_SAMPLE, Durations, LeadStats, StatsQuery, StoreStats, Workflows, count,
};
use super::{AttemptStatus, PostgresStore, Result, RunStatus, SqliteStore, postgres, sqlite};

/// Queued and running runs by workflow, with the creation of the oldest.
const OPEN_RUNS: &str = "SELECT workflow_id, status, COUNT(*) AS n, MIN(created_at) AS oldest
     FROM runs WHERE status IN (?, ?) GROUP BY workflow_id, status";

/// Runs finished in the window, by workflow and final status. MATERIALIZED keeps SQLite on
/// the window's range of `runs_finished`: grouping straight from `runs` it prefers to scan the
/// whole `(workflow_id, status)` index, which needs no sort but reads every run ever made.
const FINISHED_RUNS: &str = "WITH recent AS MATERIALIZED (
         SELECT workflow_id, status FROM runs WHERE finished_at >= ?
     )
     SELECT workflow_id, status, COUNT(*) AS n FROM recent GROUP BY workflow_id, status";

/// When a workflow's newest run was created: UUIDv7 ids sort by creation.
const LAST_RUN: &str = "SELECT created_at FROM runs WHERE workflow_id = ? ORDER BY id DESC LIMIT 1";

/// Nearest-rank p50 and p95 of the durations of the newest runs finished in the window: the
/// smallest duration whose rank `n` reaches 50 % (95 %) of the sample, in integers so that both
/// databases pick the same rank. `$duration_ms` is the database's spelling of
/// `finished_at - started_at` in whole milliseconds.
macro_rules! durations_sql {
    ($duration_ms:literal) => {
        concat!(
            "WITH recent AS (
                 SELECT ",
            $duration_ms,
            " AS ms FROM runs
                 WHERE finished_at >= ? AND started_at IS NOT NULL
                 ORDER BY finished_at DESC LIMIT ?
             ), ranked AS (
                 SELECT ms, ROW_NUMBER() OVER (ORDER BY ms) AS n, COUNT(*) OVER () AS total
                 FROM recent
             )
             SELECT COUNT(*) AS sample,
                    MIN(CASE WHEN n * 100 >= total * 50 THEN ms END) AS p50,
                    MIN(CASE WHEN n * 100 >= total * 95 THEN ms END) AS p95
             FROM ranked"
        )
    };
}

/// Attempts that ended in the window: how many failed, how many were retries.
const ATTEMPTS: &str = "SELECT
         COALESCE(SUM(CASE WHEN status = ? THEN 1 ELSE 0 END), 0) AS failed,
         COALESCE(SUM(CASE WHEN attempt > 1 THEN 1 ELSE 0 END), 0) AS retried
     FROM node_attempts WHERE finished_at >= ?";

/// Leads by tier (NULL: unscored), from the tier index alone.
const LEADS_BY_TIER: &str = "SELECT tier, COUNT(*) AS n FROM leads GROUP BY tier";

const LEADS_CREATED: &str = "SELECT COUNT(*) AS n FROM leads WHERE created_at >= ?";

/// `SqliteStore::stats_of` or `PostgresStore::stats_of`: `dialect` names the store's module
/// (`Columns`, `timestamp`) and its [`dialect`] function; every statement reads `pool`.
macro_rules! stats {
    (
        store: $store:ident,
        dialect: $dialect:ident,
        pool: $pool:ident,
        duration_ms: $duration_ms:literal $(,)?
    ) => {
        impl $store {
            pub(super) async fn stats_of(&self, query: &StatsQuery) -> Result<StoreStats> {
                let mut workflows = Workflows::listing(&query.workflow_ids);
                self.count_open_runs(&mut workflows).await?;
                self.count_finished_runs(query, &mut workflows).await?;
                for workflow_id in workflows.ids() {
                    let last_run_at = self.last_run_at(&workflow_id).await?;
                    workflows.last_run(&workflow_id, last_run_at);
                }
                Ok(StoreStats {
                    workflows: workflows.into_list(),
                    durations: self.durations(query).await?,
                    attempts: self.attempt_stats(query).await?,
                    leads: self.lead_stats(query).await?,
                })
            }

            async fn count_open_runs(&self, workflows: &mut Workflows) -> Result<()> {
                let rows = sqlx::query(translated!($dialect, OPEN_RUNS))
                    .bind(RunStatus::Queued.as_str())
                    .bind(RunStatus::Running.as_str())
                    .fetch_all(&self.$pool)
                    .await?;
                for row in &rows {
                    let columns = $dialect::Columns(row);
                    workflows.open(
                        &columns.text("workflow_id")?,
                        columns.status("status")?,
                        count(columns.optional_integer("n")?)?,
                        columns.optional_time("oldest")?,
                    );
                }
                Ok(())
            }

            async fn count_finished_runs(
                &self,
                query: &StatsQuery,
                workflows: &mut Workflows,
            ) -> Result<()> {
                let rows = sqlx::query(translated!($dialect, FINISHED_RUNS))
                    .bind($dialect::timestamp(query.since))
                    .fetch_all(&self.$pool)
                    .await?;
                for row in &rows {
                    let columns = $dialect::Columns(row);
                    workflows.finished(
                        &columns.text("workflow_id")?,
                        columns.status("status")?,
                        count(columns.optional_integer("n")?)?,
                    );
                }
                Ok(())
            }

            async fn last_run_at(&self, workflow_id: &str) -> Result<Option<DateTime<Utc>>> {
                let row = sqlx::query(translated!($dialect, LAST_RUN))
                    .bind(workflow_id)
                    .fetch_optional(&self.$pool)
                    .await?;
                row.map(|row| $dialect::Columns(&row).time("created_at"))
                    .transpose()
            }

            async fn durations(&self, query: &StatsQuery) -> Result<Durations> {
                let row = sqlx::query(translated!($dialect, durations_sql!($duration_ms)))
                    .bind($dialect::timestamp(query.since))
                    .bind(i64::from(DURATION_SAMPLE))
                    .fetch_one(&self.$pool)
                    .await?;
                let columns = $dialect::Columns(&row);
                Ok(Durations {
                    sample: count(columns.optional_integer("sample")?)?,
                    p50_ms: columns.optional_integer("p50")?,
                    p95_ms: columns.optional_integer("p95")?,
                })
            }

            async fn attempt_stats(&self, query: &StatsQuery) -> Result<AttemptStats> {
                let row = sqlx::query(translated!($dialect, ATTEMPTS))
                    .bind(AttemptStatus::Failed.as_str())
                    .bind($dialect::timestamp(query.since))
                    .fetch_one(&self.$pool)
                    .await?;
                let columns = $dialect::Columns(&row);
                Ok(AttemptStats {
                    failed: count(columns.optional_integer("failed")?)?,
                    retried: count(columns.optional_integer("retried")?)?,
                })
            }

            async fn lead_stats(&self, query: &StatsQuery) -> Result<LeadStats> {
                let mut leads = LeadStats::default();
                let rows = sqlx::query(translated!($dialect, LEADS_BY_TIER))
                    .fetch_all(&self.$pool)
                    .await?;
                for row in &rows {
                    let columns = $dialect::Columns(row);
                    let n = count(columns.optional_integer("n")?)?;
                    leads.total += n;
                    match columns.optional_text("tier")? {
                        Some(tier) => *leads.by_tier.entry(tier).or_default() += n,
                        None => leads.unscored += n,
                    }
                }
                let created = sqlx::query(translated!($dialect, LEADS_CREATED))
                    .bind($dialect::timestamp(query.since))
                    .fetch_one(&self.$pool)
                    .await?;
                leads.created = count($dialect::Columns(&created).optional_integer("n")?)?;
                Ok(leads)
            }
        }
    };
}

stats! {
    store: SqliteStore,
    dialect: sqlite,
    pool: pool,
    // SQLite reads the RFC 3339 text to the millisecond.
    duration_ms: "CAST(ROUND((julianday(finished_at) - julianday(started_at)) * 86400000) AS INTEGER)",
}

stats! {
    store: PostgresStore,
    dialect: postgres,
    pool: pool,
    duration_ms: "CAST(ROUND(EXTRACT(EPOCH FROM finished_at - started_at) * 1000) AS BIGINT)",
}
