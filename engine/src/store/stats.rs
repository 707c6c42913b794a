//! The figures of `GET /api/v1/stats` as the store counts them: plain data, and the sums the
//! API shows for all workflows together. The statements are in [`stats_sql`](super::stats_sql).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Error, Result, RunStatus};

/// How many of the newest runs finished in the window the duration percentiles look at: enough
/// for a steady figure, few enough to sort on every poll of a dashboard.
pub const DURATION_SAMPLE: u32 = 10_000;

/// What [`Store::stats`](super::Store::stats) counts.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsQuery {
    /// The start of the window: "in the window" means finished (runs, attempts) or created
    /// (leads) at or after this instant.
    pub since: DateTime<Utc>,
    /// Workflows listed even when they have no run at all (those being served), besides every
    /// workflow with an open run or a run finished in the window.
    pub workflow_ids: Vec<String>,
}

/// Everything the stats endpoint reads from the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// One entry per workflow, ordered by id.
    pub workflows: Vec<WorkflowStats>,
    pub durations: Durations,
    pub attempts: AttemptStats,
    pub leads: LeadStats,
}

/// The runs of one workflow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkflowStats {
    pub workflow_id: String,
    pub queued: u64,
    pub running: u64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Runs finished in the window, by final status.
    pub finished: FinishedRuns,
    /// When its newest run was created, at any time.
    pub last_run_at: Option<DateTime<Utc>>,
}

/// Runs finished in the window, by final status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinishedRuns {
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// Durations (start to finish) of the newest [`DURATION_SAMPLE`] runs finished in the window
/// after they started; nearest-rank percentiles, `None` when there is no such run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Durations {
    /// How many runs the percentiles are taken over.
    pub sample: u64,
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

/// Node attempts that ended in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptStats {
    /// Attempts that failed, whether or not another attempt followed.
    pub failed: u64,
    /// Attempts that were a retry (attempt 2 or later), however they ended.
    pub retried: u64,
}

/// The leads table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadStats {
    pub total: u64,
    /// Leads by the tier of their newest score; leads without a tier are `unscored`.
    pub by_tier: BTreeMap<String, u64>,
    pub unscored: u64,
    /// Leads created in the window.
    pub created: u64,
}

impl FinishedRuns {
    pub fn total(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }

    /// Failed runs among all finished ones; `None` when none finished, since no rate is not a
    /// rate of zero.
    pub fn failure_rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.failed as f64 / total as f64)
    }

    fn plus(self, other: FinishedRuns) -> FinishedRuns {
        FinishedRuns {
            succeeded: self.succeeded + other.succeeded,
            failed: self.failed + other.failed,
            cancelled: self.cancelled + other.cancelled,
        }
    }
}

impl StoreStats {
    pub fn queued(&self) -> u64 {
        self.workflows.iter().map(|workflow| workflow.queued).sum()
    }

    pub fn running(&self) -> u64 {
        self.workflows.iter().map(|workflow| workflow.running).sum()
    }

    /// When the run that has waited longest in the queue was created.
    pub fn oldest_queued_at(&self) -> Option<DateTime<Utc>> {
        self.workflows
            .iter()
            .filter_map(|workflow| workflow.oldest_queued_at)
            .min()
    }

    /// Runs of every workflow finished in the window.
    pub fn finished(&self) -> FinishedRuns {
        self.workflows
            .iter()
            .fold(FinishedRuns::default(), |sum, workflow| {
                sum.plus(workflow.finished)
            })
    }
}

/// Collects the per-workflow rows of the store's statements into [`WorkflowStats`], by id.
#[derive(Debug, Default)]
pub(super) struct Workflows(BTreeMap<String, WorkflowStats>);

impl Workflows {
    /// Starts with an empty entry for each of `ids`.
    pub(super) fn listing(ids: &[String]) -> Self {
        let mut workflows = Self::default();
        for id in ids {
            workflows.entry(id);
        }
        workflows
    }

    fn entry(&mut self, workflow_id: &str) -> &mut WorkflowStats {
        self.0
            .entry(workflow_id.to_owned())
            .or_insert_with(|| WorkflowStats {
                workflow_id: workflow_id.to_owned(),
                ..WorkflowStats::default()
            })
    }

    /// `count` runs of `workflow_id` are queued or running; `oldest` created the earliest.
    pub(super) fn open(
        &mut self,
        workflow_id: &str,
        status: RunStatus,
        count: u64,
        oldest: Option<DateTime<Utc>>,
    ) {
        let workflow = self.entry(workflow_id);
        match status {
            RunStatus::Queued => {
                workflow.queued += count;
                workflow.oldest_queued_at = oldest;
            }
            RunStatus::Running => workflow.running += count,
            // Not asked for; a row of another status is ignored rather than miscounted.
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled => {}
        }
    }

    /// `count` runs of `workflow_id` finished in the window with `status`.
    pub(super) fn finished(&mut self, workflow_id: &str, status: RunStatus, count: u64) {
        let finished = &mut self.entry(workflow_id).finished;
        match status {
            RunStatus::Succeeded => finished.succeeded += count,
            RunStatus::Failed => finished.failed += count,
            RunStatus::Cancelled => finished.cancelled += count,
            // A reopened run keeps no `finished_at`, so an open status here is stale data.
            RunStatus::Queued | RunStatus::Running => {}
        }
    }

    pub(super) fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub(super) fn last_run(&mut self, workflow_id: &str, at: Option<DateTime<Utc>>) {
        self.entry(workflow_id).last_run_at = at;
    }

    pub(super) fn into_list(self) -> Vec<WorkflowStats> {
        self.0.into_values().collect()
    }
}

/// A count read from the database, which is never negative.
pub(super) fn count(value: Option<i64>) -> Result<u64> {
    let value = value.unwrap_or(0);
    u64::try_from(value).map_err(|_| Error::Corrupt(format!("negative count {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rate_counts_cancelled_runs_and_is_none_without_runs() {
        assert_eq!(FinishedRuns::default().failure_rate(), None);
        let finished = FinishedRuns {
            succeeded: 120,
            failed: 4,
            cancelled: 1,
        };
        assert_eq!(finished.failure_rate(), Some(0.032));
    }

    #[test]
    fn totals_add_up_the_workflows() {
        let earlier = DateTime::from_timestamp(1_000, 0);
        let later = DateTime::from_timestamp(2_000, 0);
        let mut workflows = Workflows::listing(&["idle".to_owned()]);
        workflows.open("a", RunStatus::Queued, 2, later);
        workflows.open("b", RunStatus::Queued, 1, earlier);
        workflows.open("b", RunStatus::Running, 3, None);
        workflows.finished("a", RunStatus::Failed, 1);
        workflows.finished("b", RunStatus::Failed, 2);
        workflows.finished("b", RunStatus::Succeeded, 5);
        let stats = StoreStats {
            workflows: workflows.into_list(),
            ..StoreStats::default()
        };
        let ids: Vec<_> = stats.workflows.iter().map(|w| &w.workflow_id).collect();
        assert_eq!(ids, ["a", "b", "idle"]);
        assert_eq!((stats.queued(), stats.running()), (3, 3));
        assert_eq!(stats.oldest_queued_at(), earlier);
        let expected = FinishedRuns {
            succeeded: 5,
            failed: 3,
            cancelled: 0,
        };
        assert_eq!(stats.finished(), expected);
    }

    #[test]
    fn a_negative_count_is_corrupt() {
        assert_eq!(count(None).ok(), Some(0));
        assert!(matches!(count(Some(-1)), Err(Error::Corrupt(_))));
    }
}
