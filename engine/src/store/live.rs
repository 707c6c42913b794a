//! Runs in memory: the state of every run this process is driving, kept beside the store so the
//! hot path reads nothing from it.
//!
//! Only for a store one process writes (embedded mode). There, every change to a run goes
//! through this process, so a run's state in memory, updated after each write the store
//! confirms, is the state on disk. Each update repeats the condition of its statement (an
//! attempt finishes only if it is open, and so on), so updates that race apply as the
//! statements did, whatever order they arrive in. A write this layer does not mirror drops the
//! run from memory, and the next read loads it again. A finished run leaves memory; so does
//! everything on a failed write, since a failed commit says nothing certain about the disk.
//!
//! The store stays the source of truth: recovery, lists and the API's reads of other runs go to
//! it, and a run missing from memory is read from it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use enrichflow_nodes::Services;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    AttemptKey, AttemptOutcome, AttemptRecord, AttemptStatus, Attempts, Completed, Created,
    Dispatch, ErrorInfo, Json, LeadDetail, LeadQuery, LeadView, Listed, Progress, ProgressStore,
    Result, Revisions, RunEnd, RunLock, RunQuery, RunRecord, RunStatus, Runs, StatsQuery, Store,
    StoreStats,
};

/// A run as the store holds it: the run and every attempt, ordered by node then number.
#[derive(Debug, Clone)]
struct LiveRun {
    run: RunRecord,
    attempts: Vec<AttemptRecord>,
}

/// A [`Store`] that keeps the runs in progress in memory.
pub struct LiveStore {
    inner: Arc<dyn Store>,
    memory: Mutex<Memory>,
}

/// Stripes of write counters: a run read from the store while a write to it completed may be
/// stale, and is then not kept.
const STRIPES: usize = 64;

#[derive(Default)]
struct Memory {
    runs: HashMap<String, LiveRun>,
    /// Bumped, under this lock, by every write that completes, per stripe of run ids.
    writes: Vec<u64>,
}

impl Memory {
    fn bump(&mut self, run_id: &str) {
        let stripe = stripe(run_id);
        if let Some(count) = self.writes.get_mut(stripe) {
            *count = count.wrapping_add(1);
        }
    }

    fn writes(&self, run_id: &str) -> u64 {
        self.writes.get(stripe(run_id)).copied().unwrap_or_default()
    }
}

fn stripe(run_id: &str) -> usize {
    let hash = run_id.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    hash % STRIPES
}

impl LiveStore {
    /// `inner` must be written by this process alone.
    pub fn new(inner: Arc<dyn Store>) -> LiveStore {
        LiveStore {
            inner,
            memory: Mutex::new(Memory {
                runs: HashMap::new(),
                writes: vec![0; STRIPES],
            }),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `pick` takes of the run in memory, or the stripe's write count to load it with.
    fn cached<T>(&self, run_id: &str, pick: impl FnOnce(&LiveRun) -> T) -> Result<T, u64> {
        let memory = self.memory();
        match memory.runs.get(run_id) {
            Some(live) => Ok(pick(live)),
            None => Err(memory.writes(run_id)),
        }
    }

    /// `run`, just read from the store and unfinished, with its attempts; kept in memory only if
    /// no write to its stripe completed since `writes` was taken (what was read may predate it).
    async fn keep(&self, run: RunRecord, writes: u64) -> Result<LiveRun> {
        let attempts = self.inner.attempts(&run.id).await?;
        let live = LiveRun { run, attempts };
        let mut memory = self.memory();
        if memory.writes(&live.run.id) == writes {
            memory
                .runs
                .entry(live.run.id.clone())
                .or_insert_with(|| live.clone());
        }
        Ok(live)
    }

    /// Applies `change` to the run in memory, if it is there, after a write to it completed.
    fn update(&self, run_id: &str, change: impl FnOnce(&mut LiveRun)) {
        let mut memory = self.memory();
        memory.bump(run_id);
        if let Some(live) = memory.runs.get_mut(run_id) {
            change(live);
        }
    }

    fn forget(&self, run_id: &str) {
        let mut memory = self.memory();
        memory.bump(run_id);
        memory.runs.remove(run_id);
    }

    /// After a failed write nothing in memory can be trusted to match the disk.
    fn forget_all(&self) {
        let mut memory = self.memory();
        memory.runs.clear();
        for count in &mut memory.writes {
            *count = count.wrapping_add(1);
        }
    }

    /// `result` of a write; on failure, memory is dropped.
    fn checked<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.forget_all();
        }
        result
    }
}

impl LiveRun {
    fn attempt_mut(&mut self, key: &AttemptKey) -> Option<&mut AttemptRecord> {
        self.attempts.iter_mut().find(|a| a.key == *key)
    }

    fn insert_attempt(&mut self, attempt: AttemptRecord) {
        super::insert_ordered(&mut self.attempts, attempt);
    }
}

fn is_open(status: AttemptStatus) -> bool {
    matches!(
        status,
        AttemptStatus::Pending | AttemptStatus::Queued | AttemptStatus::Running
    )
}

#[async_trait]
impl ProgressStore for LiveStore {
    async fn set_progress(&self, key: &AttemptKey, progress: Progress) -> Result<()> {
        self.inner.set_progress(key, progress).await
    }

    async fn progress(&self, run_id: &str) -> Result<Vec<(AttemptKey, Progress)>> {
        self.inner.progress(run_id).await
    }
}

#[async_trait]
impl Revisions for LiveStore {
    async fn save_revision(&self, workflow_id: &str, hash: &str, source: &str) -> Result<()> {
        self.inner.save_revision(workflow_id, hash, source).await
    }

    async fn revision(&self, hash: &str) -> Result<Option<String>> {
        self.inner.revision(hash).await
    }
}

#[async_trait]
impl Runs for LiveStore {
    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        let created = self.inner.create_run(run).await;
        self.checked(created)?;
        self.remember_new(run);
        Ok(())
    }

    async fn create_run_then(
        &self,
        run: &RunRecord,
        fresh_since: DateTime<Utc>,
        first: &[AttemptRecord],
    ) -> Result<Created> {
        let created = self.inner.create_run_then(run, fresh_since, first).await;
        let created = self.checked(created)?;
        if created == Created::New {
            self.remember_new(run);
            self.update(&run.id, |live| {
                for attempt in first {
                    if live.attempt_mut(&attempt.key).is_none() {
                        live.insert_attempt(attempt.clone());
                    }
                }
            });
        }
        Ok(created)
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let writes = match self.cached(run_id, |live| live.run.clone()) {
            Ok(run) => return Ok(Some(run)),
            Err(writes) => writes,
        };
        match self.inner.run(run_id).await? {
            // A finished run is not kept, and its attempts are not needed here.
            Some(run) if !run.status.is_finished() => Ok(Some(self.keep(run, writes).await?.run)),
            found => Ok(found),
        }
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        self.inner.list_runs(query).await
    }

    async fn list_run_summaries(&self, query: &RunQuery) -> Result<Vec<Listed>> {
        self.inner.list_run_summaries(query).await
    }

    async fn unfinished_runs(&self) -> Result<Vec<Listed>> {
        self.inner.unfinished_runs().await
    }

    async fn count_running(&self, workflow_id: &str) -> Result<u64> {
        self.inner.count_running(workflow_id).await
    }

    async fn oldest_queued(&self, workflow_id: &str, limit: u32) -> Result<Vec<String>> {
        self.inner.oldest_queued(workflow_id, limit).await
    }

    async fn start_run(
        &self,
        run_id: &str,
        started_at: DateTime<Utc>,
        deadline_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let started = self.inner.start_run(run_id, started_at, deadline_at).await;
        let started = self.checked(started)?;
        if started {
            self.update(run_id, |live| {
                live.run.status = RunStatus::Running;
                live.run.started_at = Some(started_at);
                live.run.deadline_at = deadline_at;
            });
        }
        Ok(started)
    }

    async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        output: Option<&Value>,
        error: Option<&ErrorInfo>,
        finished_at: DateTime<Utc>,
    ) -> Result<bool> {
        let finished = self
            .inner
            .finish_run(run_id, status, output, error, finished_at)
            .await;
        let finished = self.checked(finished)?;
        // Finished or not (then it already was), the run needs no memory any more.
        self.forget(run_id);
        Ok(finished)
    }

    async fn request_cancel(&self, run_id: &str) -> Result<bool> {
        let requested = self.inner.request_cancel(run_id).await;
        let requested = self.checked(requested)?;
        if requested {
            self.update(run_id, |live| live.run.cancel_requested = true);
        }
        Ok(requested)
    }

    async fn reopen_run(
        &self,
        run_id: &str,
        deadline_at: Option<DateTime<Utc>>,
        remove: &[AttemptKey],
        requeue: &[AttemptKey],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.forget(run_id);
        let reopened = self
            .inner
            .reopen_run(run_id, deadline_at, remove, requeue, now)
            .await;
        self.forget(run_id);
        self.checked(reopened)
    }

    async fn lock_run(&self, run_id: &str) -> Result<RunLock> {
        self.inner.lock_run(run_id).await
    }

    async fn listen_finished(&self, finished: mpsc::UnboundedSender<String>) -> Result<()> {
        self.inner.listen_finished(finished).await
    }
}

#[async_trait]
impl Attempts for LiveStore {
    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let writes = match self.cached(run_id, |live| live.attempts.clone()) {
            Ok(attempts) => return Ok(attempts),
            Err(writes) => writes,
        };
        match self.inner.run(run_id).await? {
            Some(run) if !run.status.is_finished() => Ok(self.keep(run, writes).await?.attempts),
            _ => self.inner.attempts(run_id).await,
        }
    }

    async fn insert_attempt(&self, attempt: &AttemptRecord) -> Result<bool> {
        let inserted = self.inner.insert_attempt(attempt).await;
        let inserted = self.checked(inserted)?;
        if inserted {
            self.update(&attempt.key.run_id, |live| {
                if live.attempt_mut(&attempt.key).is_none() {
                    live.insert_attempt(attempt.clone());
                }
            });
        }
        Ok(inserted)
    }

    async fn start_attempt(
        &self,
        key: &AttemptKey,
        input: Option<&Json>,
        worker: &str,
        started_at: DateTime<Utc>,
    ) -> Result<bool> {
        let started = self
            .inner
            .start_attempt(key, input, worker, started_at)
            .await;
        let started = self.checked(started)?;
        if started {
            self.update(&key.run_id, |live| match live.attempt_mut(key) {
                Some(attempt)
                    if matches!(
                        attempt.status,
                        AttemptStatus::Queued | AttemptStatus::Running
                    ) =>
                {
                    attempt.status = AttemptStatus::Running;
                    attempt.input = input.cloned();
                    attempt.started_at = Some(started_at);
                    attempt.worker = Some(worker.to_owned());
                }
                _ => {}
            });
        }
        Ok(started)
    }

    async fn finish_attempt_then(
        &self,
        key: &AttemptKey,
        outcome: &AttemptOutcome,
        next: &[AttemptRecord],
        end: Option<&RunEnd>,
    ) -> Result<Completed> {
        let completed = self
            .inner
            .finish_attempt_then(key, outcome, next, end)
            .await;
        let completed = self.checked(completed)?;
        if completed.run || (completed.attempt && end.is_some()) {
            // As after `finish_run`: an ended run needs no memory (and if it had already
            // ended, it did not need it either).
            self.forget(&key.run_id);
        } else if completed.attempt {
            self.update(&key.run_id, |live| {
                if let Some(attempt) = live.attempt_mut(key)
                    && is_open(attempt.status)
                {
                    attempt.apply(outcome);
                }
                for attempt in next {
                    if live.attempt_mut(&attempt.key).is_none() {
                        live.insert_attempt(attempt.clone());
                    }
                }
            });
        }
        Ok(completed)
    }

    async fn promote_due_attempts(&self, now: DateTime<Utc>) -> Result<Vec<AttemptKey>> {
        let promoted = self.inner.promote_due_attempts(now).await;
        let promoted = self.checked(promoted)?;
        for key in &promoted {
            self.update(&key.run_id, |live| {
                if let Some(attempt) = live.attempt_mut(key)
                    && attempt.status == AttemptStatus::Pending
                {
                    attempt.status = AttemptStatus::Queued;
                }
            });
        }
        Ok(promoted)
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        self.inner.next_due_at().await
    }

    async fn open_attempts(&self) -> Result<Vec<AttemptKey>> {
        self.inner.open_attempts().await
    }

    async fn cancel_open_attempts(&self, run_id: &str, finished_at: DateTime<Utc>) -> Result<u64> {
        let cancelled = self.inner.cancel_open_attempts(run_id, finished_at).await;
        let cancelled = self.checked(cancelled)?;
        self.update(run_id, |live| {
            for attempt in &mut live.attempts {
                if is_open(attempt.status) {
                    attempt.status = AttemptStatus::Cancelled;
                    attempt.finished_at = Some(finished_at);
                }
            }
        });
        Ok(cancelled)
    }
}

#[async_trait]
impl Dispatch for LiveStore {
    async fn mark_dispatched(&self, keys: &[AttemptKey]) -> Result<()> {
        self.inner.mark_dispatched(keys).await
    }

    async fn undispatched_attempts(&self, before: DateTime<Utc>) -> Result<Vec<AttemptKey>> {
        self.inner.undispatched_attempts(before).await
    }

    async fn claim_stale_attempts(
        &self,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AttemptKey>> {
        // Only the lease changes, which memory does not hold.
        self.inner.claim_stale_attempts(stale_before, now).await
    }

    async fn heartbeat(&self, worker: &str, now: DateTime<Utc>) -> Result<u64> {
        self.inner.heartbeat(worker, now).await
    }

    async fn overdue_runs(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        self.inner.overdue_runs(now).await
    }

    async fn stalled_runs(&self, quiet_before: DateTime<Utc>) -> Result<Vec<String>> {
        self.inner.stalled_runs(quiet_before).await
    }
}

#[async_trait]
impl Store for LiveStore {
    fn services(&self) -> Services {
        self.inner.services()
    }

    async fn list_leads(&self, query: &LeadQuery) -> Result<Vec<LeadView>> {
        self.inner.list_leads(query).await
    }

    async fn lead(&self, lead_id: &str) -> Result<Option<LeadDetail>> {
        self.inner.lead(lead_id).await
    }

    async fn stats(&self, query: &StatsQuery) -> Result<StoreStats> {
        self.inner.stats(query).await
    }
}

impl LiveStore {
    /// A run just inserted: in memory from the start, with no attempts yet.
    fn remember_new(&self, run: &RunRecord) {
        if !run.status.is_finished() {
            self.memory().runs.insert(
                run.id.clone(),
                LiveRun {
                    run: run.clone(),
                    attempts: Vec::new(),
                },
            );
        }
    }
}

/// An open attempt as `finish_attempt` leaves it.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::SqliteStore;
    use crate::store::tests::{attempt, key, outcome, run};

    async fn stores() -> anyhow::Result<(LiveStore, Arc<SqliteStore>)> {
        let sqlite = Arc::new(SqliteStore::connect("sqlite::memory:").await?);
        Ok((LiveStore::new(sqlite.clone()), sqlite))
    }

    #[tokio::test]
    async fn reads_of_a_run_in_progress_come_from_memory_and_follow_its_writes()
    -> anyhow::Result<()> {
        let (live, sqlite) = stores().await?;
        live.create_run(&run(1, "w", RunStatus::Running)).await?;
        let first = key(1, "a", 1);
        live.insert_attempt(&attempt(first.clone(), AttemptStatus::Queued))
            .await?;
        live.finish_attempt(&first, &outcome(AttemptStatus::Succeeded, Some(json!(7))))
            .await?;
        let attempts = live.attempts(&first.run_id).await?;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].status, AttemptStatus::Succeeded);
        assert_eq!(attempts[0].output, Some(Json::from(json!(7))));
        assert_eq!(attempts, sqlite.attempts(&first.run_id).await?);
        // Changed behind memory's back: memory, not the file, answers.
        sqlite.request_cancel(&first.run_id).await?;
        assert!(
            !live
                .run(&first.run_id)
                .await?
                .is_some_and(|r| r.cancel_requested)
        );
        Ok(())
    }

    /// The poison rule: after a write fails, memory may be ahead of the disk, so it is dropped
    /// and the next read goes to the store.
    #[tokio::test]
    async fn a_failed_write_drops_memory_and_the_store_answers_again() -> anyhow::Result<()> {
        let (live, sqlite) = stores().await?;
        let record = run(1, "w", RunStatus::Running);
        live.create_run(&record).await?;
        assert_eq!(live.run(&record.id).await?, Some(record.clone()));
        // Changed behind memory's back, then a write fails.
        sqlite.request_cancel(&record.id).await?;
        assert!(
            !live
                .run(&record.id)
                .await?
                .is_some_and(|r| r.cancel_requested)
        );
        let too_deep = (0..200).fold(json!(1), |inner, _| json!([inner]));
        let refused = AttemptRecord {
            input: Some(Json::from(too_deep)),
            ..attempt(key(1, "a", 1), AttemptStatus::Queued)
        };
        assert!(live.insert_attempt(&refused).await.is_err());
        assert!(
            live.run(&record.id)
                .await?
                .is_some_and(|r| r.cancel_requested)
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_outcome_with_what_it_made_ready_and_the_run_end_is_mirrored() -> anyhow::Result<()>
    {
        let (live, sqlite) = stores().await?;
        let record = run(1, "w", RunStatus::Running);
        live.create_run(&record).await?;
        let first = key(1, "a", 1);
        live.insert_attempt(&attempt(first.clone(), AttemptStatus::Queued))
            .await?;
        let next = [attempt(key(1, "b", 1), AttemptStatus::Queued)];
        let success = outcome(AttemptStatus::Succeeded, Some(json!(1)));
        live.finish_attempt_then(&first, &success, &next, None)
            .await?;
        assert!(!live.memory().runs.is_empty());
        assert_eq!(
            live.attempts(&record.id).await?,
            sqlite.attempts(&record.id).await?
        );
        assert_eq!(live.attempts(&record.id).await?.len(), 2);
        let end = RunEnd {
            status: RunStatus::Succeeded,
            output: Some(json!("done")),
            error: None,
            finished_at: record.created_at,
        };
        let completed = live
            .finish_attempt_then(&next[0].key, &success, &[], Some(&end))
            .await?;
        assert!(completed.attempt && completed.run);
        assert!(live.memory().runs.is_empty(), "an ended run leaves memory");
        let ended = live.run(&record.id).await?;
        assert_eq!(ended.as_ref().map(|r| r.status), Some(RunStatus::Succeeded));
        assert_eq!(ended, sqlite.run(&record.id).await?);
        Ok(())
    }

    #[tokio::test]
    async fn a_finished_run_leaves_memory() -> anyhow::Result<()> {
        let (live, sqlite) = stores().await?;
        let record = run(1, "w", RunStatus::Running);
        live.create_run(&record).await?;
        live.finish_run(
            &record.id,
            RunStatus::Succeeded,
            None,
            None,
            record.created_at,
        )
        .await?;
        assert!(live.memory().runs.is_empty());
        assert_eq!(live.run(&record.id).await?, sqlite.run(&record.id).await?);
        assert!(live.memory().runs.is_empty(), "a finished run is not kept");
        Ok(())
    }
}
