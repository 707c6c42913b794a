//! The driver: performs what the scheduler decides. It loads a run from the store, asks
//! [`scheduler::decide`], and carries out each action — every state change is written to the
//! store before anything is enqueued, so a crash at any point leaves a state recovery can resume.
//!
//! Deadlines and waits come from workflow files and stored times: every sum on them is checked.
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use tokio::sync::OwnedSemaphorePermit;

use crate::engine::Error;
use crate::redaction::{self, Redactor};
use crate::runtime::{Executor, Runtime};
use crate::scheduler::{self, Action};
use crate::store::{
    AttemptKey, AttemptOutcome, AttemptRecord, AttemptStatus, Completed, ErrorInfo, RunEnd,
    RunRecord, RunStatus, insert_ordered,
};
use crate::template::{RunScope, TemplateError};
use crate::workflow::{NodeId, Workflow};
use crate::{dispatch, reopen, scope, telemetry};

/// Starts queued runs of a workflow while its `concurrency` allows.
pub async fn admit(runtime: &Arc<Runtime>, workflow: &Workflow) -> Result<(), Error> {
    let store = &runtime.store;
    let workflow_id = workflow.id.as_str();
    let _guard = runtime.locks.admission(workflow_id).lock().await;
    let free = match workflow.concurrency {
        None => u32::MAX,
        Some(limit) => {
            let running = store.count_running(workflow_id).await?;
            u32::try_from(u64::from(limit).saturating_sub(running)).unwrap_or(0)
        }
    };
    if free == 0 {
        return Ok(());
    }
    for run_id in store.oldest_queued(workflow_id, free.min(1000)).await? {
        start(runtime, workflow, &run_id).await?;
    }
    Ok(())
}

/// Starts one queued run now: `queued` → `running`, deadline armed, first nodes enqueued.
pub async fn start(runtime: &Arc<Runtime>, workflow: &Workflow, run_id: &str) -> Result<(), Error> {
    let now = now();
    let deadline = deadline(workflow, now);
    if runtime.store.start_run(run_id, now, deadline).await? {
        telemetry::run_started(workflow.id.as_str());
        if let Some(deadline) = deadline {
            watch_deadline(runtime, run_id, deadline);
        }
        advance(runtime, run_id).await?;
    }
    Ok(())
}

/// The attempts a run stored as `running` starts with (its first nodes, queued), to insert in
/// the run's own commit: a new run is one durable write, and no crash can leave it running
/// with nothing queued.
pub fn first_attempts(workflow: &Arc<Workflow>, run: &RunRecord) -> Vec<AttemptRecord> {
    let mut known = Known {
        run: run.clone(),
        workflow: workflow.clone(),
        attempts: Vec::new(),
        version: None,
    };
    made_ready(&mut known).next
}

/// Carries on with a run just stored as `running` with its [`first_attempts`]: its deadline
/// armed, those attempts published, and anything else the scheduler decides done.
pub async fn started(
    runtime: &Arc<Runtime>,
    workflow: &Arc<Workflow>,
    run: &RunRecord,
    first: &[AttemptRecord],
) -> Result<(), Error> {
    telemetry::run_started(&run.workflow_id);
    if let Some(deadline) = run.deadline_at {
        watch_deadline(runtime, &run.id, deadline);
    }
    let mut attempts = Vec::with_capacity(first.len());
    let mut queued = Vec::new();
    for attempt in first {
        if attempt.status == AttemptStatus::Queued {
            queued.push((run.workflow_id.clone(), attempt.key.clone()));
        }
        insert_ordered(&mut attempts, attempt.clone());
    }
    // Usually the first attempts were all there is to do: publishing them needs no lock (and,
    // distributed, no three round trips for it).
    if scheduler::decide(workflow, run, &attempts, Utc::now()).is_empty() {
        for (workflow_id, key) in queued {
            dispatch::dispatch_in(runtime, &workflow_id, key).await?;
        }
        return Ok(());
    }
    let known = Known {
        run: run.clone(),
        workflow: workflow.clone(),
        attempts,
        version: None,
    };
    advance_from(runtime, &run.id, Some(known), queued).await
}

/// Now, as the store keeps instants (microseconds), so a record built in memory equals the
/// one read back.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// When a run (re)started at `now` times out, if its workflow has a `timeout` (at most 30 days,
/// checked at load, so the sum cannot leave chrono's range).
pub fn deadline(workflow: &Workflow, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    workflow
        .timeout
        .map(|timeout| scheduler::later_by(now, timeout))
}

/// Reopens a failed or cancelled run for a manual retry (see `crate::reopen`) and advances it;
/// false when the run was not failed or cancelled when the store looked.
pub async fn reopen(
    runtime: &Arc<Runtime>,
    workflow: &Workflow,
    run: &RunRecord,
    attempts: &[AttemptRecord],
) -> Result<bool, Error> {
    let plan = reopen::plan(workflow, attempts);
    let now = Utc::now();
    let deadline = deadline(workflow, now);
    let store = &runtime.store;
    if !store
        .reopen_run(&run.id, deadline, &plan.remove, &plan.requeue, now)
        .await?
    {
        return Ok(false);
    }
    telemetry::run_started(workflow.id.as_str());
    if let Some(deadline) = deadline {
        watch_deadline(runtime, &run.id, deadline);
    }
    for key in plan.requeue {
        dispatch::dispatch_in(runtime, &run.workflow_id, key).await?;
    }
    advance(runtime, &run.id).await?;
    Ok(true)
}

/// Brings a run forward: decides and performs until nothing more can happen right now.
///
/// Boxed with an explicit `Send` bound: finishing a run admits the next queued one, which
/// advances again, and the compiler cannot infer `Send` through that cycle on its own.
pub fn advance<'a>(runtime: &'a Arc<Runtime>, run_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
    advance_now(runtime, run_id).boxed()
}

async fn advance_now(runtime: &Arc<Runtime>, run_id: &str) -> Result<(), Error> {
    advance_from(runtime, run_id, None, Vec::new()).await
}

/// Advances the run from `known` (read if `None`), publishing `queued` and what it queues.
async fn advance_from(
    runtime: &Arc<Runtime>,
    run_id: &str,
    known: Option<Known>,
    mut queued: Queued,
) -> Result<(), Error> {
    let _guard = runtime.locks.run(run_id).lock().await;
    // Other processes sharing the store (replicas, workers) may advance the same run.
    let lock = runtime.store.lock_run(run_id).await?;
    let advanced = decide_and_perform(runtime, run_id, known, &mut queued).await;
    // A run whose rows cannot be read would fail every advance the same way: it fails instead.
    let advanced = crate::unreadable::fail_if_unreadable(runtime, run_id, advanced).await;
    lock.release().await;
    // Published after the lock is released: the attempts are committed already (the outbox
    // covers a crash from here on), and a process must never hold a run's lock while it waits
    // on the broker, or on itself when the broker hands the task straight back to it.
    for (workflow_id, key) in queued {
        dispatch::dispatch_in(runtime, &workflow_id, key).await?;
    }
    advanced
}

/// Attempts to publish, with their run's workflow.
pub type Queued = Vec<(String, AttemptKey)>;

/// What recording an outcome leaves to the worker that recorded it.
#[derive(Default)]
pub struct Followup {
    /// The attempts to publish.
    pub queued: Queued,
    /// What the outcome's commit claimed for this worker to run itself.
    pub claimed: Option<Claimed>,
}

/// Ready dependents claimed in an outcome's commit for the worker that recorded it, to run
/// without a trip through the queue (local continuation), with their run as that commit left
/// it.
pub struct Claimed {
    /// Runs next in the execution slot of the attempt that finished.
    pub first: AttemptKey,
    /// Each runs in an execution slot of its own (see `Runtime::slots`), taken at the claim
    /// when one was free, or else waited for: parallel branches stay parallel, and no more
    /// attempts run at once than the worker has slots.
    pub more: Vec<(AttemptKey, Option<OwnedSemaphorePermit>)>,
    /// Shared by the claimed attempts: a wide fan-out is not a copy of the run per branch.
    pub known: Arc<Known>,
}

/// What [`claim_ready`] claimed: the first attempt, and the others with their slots.
type ClaimedKeys = (AttemptKey, Vec<(AttemptKey, Option<OwnedSemaphorePermit>)>);

/// Records an attempt's outcome and brings its run forward under one hold of the run's lock.
/// The attempts the outcome makes ready (and the nodes it makes skipped) are inserted in the
/// outcome's own commit: a node hop costs one durable write, not two, and a crash between the
/// two can no longer leave a finished node whose dependents were never queued.
///
/// `Err` only when the outcome was not written (the caller keeps the attempt and tries again);
/// once it is, a failure to advance is logged and left to recovery, like [`advance_logged`].
/// The returned attempts are to publish, which the caller does off its own path.
///
/// With `claim`, the caller will run one ready dependent itself next (see [`Followup`]).
/// `known` is the run as the caller holds it: when it carries the version of this process's
/// last write of the run, the outcome is written only if that is still the run's version, and
/// then without the run's lock or a read (see [`Store::finish_attempt_if_current`]).
pub async fn complete(
    runtime: &Arc<Runtime>,
    key: &AttemptKey,
    outcome: &AttemptOutcome,
    claim: bool,
    known: Option<Arc<Known>>,
) -> Result<Followup, Error> {
    let run_id = key.run_id.as_str();
    let _guard = runtime.locks.run(run_id).lock().await;
    let mut followup = Followup::default();
    // The newer of what this process last wrote of the run and the caller's copy; the other
    // is dropped first, so that when both are one allocation (a chain), it is not copied.
    let known = known.filter(|known| known.version.is_some());
    let held = match (runtime.written.take(run_id), known) {
        (Some(held), Some(known)) if known.version > held.version => Some(known),
        (held, known) => held.or(known),
    };
    if let Some(known) = held
        && record_current(
            runtime,
            key,
            outcome,
            claim,
            Arc::unwrap_or_clone(known),
            &mut followup,
        )
        .await?
    {
        return Ok(followup);
    }
    let lock = runtime.store.lock_run(run_id).await?;
    let recorded = record(runtime, key, outcome, claim, &mut followup).await;
    let known = match recorded {
        Ok(Recorded::Ended | Recorded::Claimed | Recorded::Held) => {
            lock.release().await;
            return Ok(followup);
        }
        Ok(Recorded::Known(known)) => Some(*known),
        Ok(Recorded::Unknown) => None,
        Err(error) => {
            lock.release().await;
            return Err(error);
        }
    };
    let advanced = decide_and_perform(runtime, run_id, known, &mut followup.queued).await;
    let advanced = crate::unreadable::fail_if_unreadable(runtime, run_id, advanced).await;
    lock.release().await;
    if let Err(error) = advanced {
        tracing::error!(%error, run = %run_id, "advancing the run failed");
    }
    Ok(followup)
}

/// A run as this process last read or wrote it: deciding from it spares reading back what was
/// just written, and executing from it spares reading the run again.
#[derive(Clone)]
pub struct Known {
    pub run: RunRecord,
    pub workflow: Arc<Workflow>,
    pub attempts: Vec<AttemptRecord>,
    /// The run's version as of that read or write, in a store that keeps versions (see
    /// [`crate::store::Store::finish_attempt_if_current`]).
    pub version: Option<i64>,
}

/// What [`record`] leaves to decide.
enum Recorded {
    /// The run as it stands after the write.
    Known(Box<Known>),
    /// Read it again: the outcome went through the plain path, or was refused.
    Unknown,
    /// The run ended in the same commit: nothing is left to decide.
    Ended,
    /// Nothing is left to decide, and the run as it stands went to the claimed attempts.
    Claimed,
    /// Nothing is left to decide, and the run as it stands is held in `Runtime::written`.
    Held,
}

/// Writes `outcome` together with what it leads to at once: the attempts it makes ready and,
/// when it was the run's last node, the run's success.
async fn record(
    runtime: &Arc<Runtime>,
    key: &AttemptKey,
    outcome: &AttemptOutcome,
    claim: bool,
    followup: &mut Followup,
) -> Result<Recorded, Error> {
    let store = &runtime.store;
    let Some(mut known) = open_attempt_of(runtime, key).await? else {
        // Nothing to fold into: the write decides (an attempt already closed is refused).
        store.finish_attempt(key, outcome).await?;
        return Ok(Recorded::Unknown);
    };
    if let Some(attempt) = known.attempts.iter_mut().find(|a| a.key == *key) {
        attempt.apply(outcome);
    }
    let mut ready = made_ready(&mut known);
    let end = match ready.then.as_slice() {
        [Action::Succeed] => success(
            &runtime.executor,
            &known.workflow,
            &known.run,
            &known.attempts,
        ),
        _ => None,
    };
    // Only when the scheduler has nothing more to decide: the state handed to the claimed
    // attempt is then the run's state after this commit, with no advance in between.
    let claimed = (claim && ready.then.is_empty())
        .then(|| claim_ready(runtime, &mut ready, &mut known.attempts))
        .flatten();
    let completed = store
        .finish_attempt_then(key, outcome, &ready.next, end.as_ref())
        .await?;
    written(runtime, known, ready, end, claimed, completed, followup).await
}

/// [`record`] from the run as this process last wrote it, without its lock or a read: only if
/// the run is still at `known.version` and the outcome leads to nothing but queued and skipped
/// nodes or the run's success. False when not (nothing was written): the caller takes the
/// ordinary way.
async fn record_current(
    runtime: &Arc<Runtime>,
    key: &AttemptKey,
    outcome: &AttemptOutcome,
    claim: bool,
    mut known: Known,
    followup: &mut Followup,
) -> Result<bool, Error> {
    let Some(version) = known.version else {
        return Ok(false);
    };
    let Some(attempt) = known
        .attempts
        .iter_mut()
        .find(|a| a.key == *key && !a.status.is_finished())
    else {
        return Ok(false);
    };
    attempt.apply(outcome);
    let mut ready = made_ready(&mut known);
    let end = match ready.then.as_slice() {
        [] => None,
        // An output that does not render fails the run: the ordinary way says why.
        [Action::Succeed] => match success(
            &runtime.executor,
            &known.workflow,
            &known.run,
            &known.attempts,
        ) {
            Some(end) => Some(end),
            None => return Ok(false),
        },
        // A retry, a failure, a cancellation: written by `perform`, under the lock.
        _ => return Ok(false),
    };
    let claimed = claim
        .then(|| claim_ready(runtime, &mut ready, &mut known.attempts))
        .flatten();
    let Some(completed) = runtime
        .store
        .finish_attempt_if_current(version, key, outcome, &ready.next, end.as_ref())
        .await?
    else {
        return Ok(false);
    };
    match written(runtime, known, ready, end, claimed, completed, followup).await? {
        // Nothing is left to decide: `made_ready` decided until nothing but queueing was left.
        Recorded::Ended | Recorded::Claimed | Recorded::Held | Recorded::Known(_) => Ok(true),
        Recorded::Unknown => Ok(false),
    }
}

/// What follows a written outcome (`completed`): the run's bookkeeping when it ended, the
/// attempts to publish and the claimed one in `followup`, and the run as it now stands.
async fn written(
    runtime: &Arc<Runtime>,
    mut known: Known,
    ready: Ready,
    end: Option<RunEnd>,
    claimed: Option<ClaimedKeys>,
    completed: Completed,
    followup: &mut Followup,
) -> Result<Recorded, Error> {
    if !completed.attempt {
        return Ok(Recorded::Unknown);
    }
    if let Some(end) = end {
        // Written: from here on a failure is no reason to write the outcome again.
        if completed.run
            && let Err(error) = after_finish(runtime, &known.workflow, &known.run, end).await
        {
            tracing::error!(%error, run = %known.run.id, "finishing the run's bookkeeping failed");
        }
        return Ok(Recorded::Ended);
    }
    let is_claimed = |key: &AttemptKey| {
        claimed
            .as_ref()
            .is_some_and(|(first, more)| first == key || more.iter().any(|(k, _)| k == key))
    };
    for attempt in &ready.next {
        if attempt.status == AttemptStatus::Queued && !is_claimed(&attempt.key) {
            followup
                .queued
                .push((known.run.workflow_id.clone(), attempt.key.clone()));
        }
    }
    // `known.attempts` is what was just written: the outcome and `next` applied.
    known.version = completed.version;
    // Held for the run's next outcome, unless what follows writes more (a retry, a failure:
    // `then`), which would leave this copy behind. Then nothing is left to decide either:
    // `made_ready` decided until only queueing was left.
    let hold = known.version.is_some() && ready.then.is_empty();
    match claimed {
        Some((first, more)) => {
            let known = Arc::new(known);
            if hold {
                runtime.written.keep(known.clone());
            }
            followup.claimed = Some(Claimed { first, more, known });
            Ok(Recorded::Claimed)
        }
        None if hold => {
            runtime.written.keep(Arc::new(known));
            Ok(Recorded::Held)
        }
        None => Ok(Recorded::Known(Box::new(known))),
    }
}

/// Claims the queued attempts of `ready.next` for the worker recording the outcome: the first
/// for the slot it runs in, each further one with a free execution slot if there is one now.
/// A run's branches thus run on the worker that ran their parent, with no trip through the
/// queue; the queue spreads runs (their first nodes) over workers. Distributed, a claimed
/// attempt is inserted `running` under this worker's lease, so no other worker takes it and,
/// should this one die, the sweep hands it on when the lease runs out; embedded, it stays
/// `queued` (a restart enqueues what is open) and is simply not enqueued.
fn claim_ready(
    runtime: &Runtime,
    ready: &mut Ready,
    attempts: &mut [AttemptRecord],
) -> Option<ClaimedKeys> {
    // Claimed attempts waiting for a slot: at most one round of the worker's slots, so that a
    // wide fan-out spreads over the other workers through the queue instead.
    let most_waiting = runtime.options.workers.max(1);
    let mut waiting = 0_usize;
    let mut first = None;
    let mut more = Vec::new();
    for attempt in &mut ready.next {
        if attempt.status != AttemptStatus::Queued {
            continue;
        }
        if first.is_some() {
            let slot = runtime.slots.clone().try_acquire_owned().ok();
            if slot.is_none() {
                if waiting >= most_waiting {
                    break;
                }
                waiting = waiting.saturating_add(1);
            }
            more.push((attempt.key.clone(), slot));
        } else {
            first = Some(attempt.key.clone());
        }
        if runtime.queue.durable() {
            attempt.status = AttemptStatus::Running;
            attempt.started_at = Some(now());
            attempt.worker = Some(runtime.executor.worker_id.clone());
            if let Some(listed) = attempts.iter_mut().find(|a| a.key == attempt.key) {
                listed.clone_from(attempt);
            }
        }
    }
    first.map(|first| (first, more))
}

/// The run's end when the scheduler decided it succeeds: its output rendered from `attempts`.
/// `None` when the output does not render or nests too deeply; the ordinary advance after the
/// commit then fails the run with the reason (see [`succeed`]).
fn success(
    executor: &Executor,
    workflow: &Workflow,
    run: &RunRecord,
    attempts: &[AttemptRecord],
) -> Option<RunEnd> {
    let output = match &workflow.output {
        None => None,
        Some(template) => {
            let scope = output_scope(executor, workflow, run, attempts).ok()?;
            let output = render_output(executor, template, scope).ok()?;
            if let Some(value) = &output {
                crate::store::json::check_depth("the run's output", value).ok()?;
            }
            output
        }
    };
    Some(RunEnd {
        status: RunStatus::Succeeded,
        output,
        error: None,
        finished_at: now(),
    })
}

/// The run of an attempt that is still open, with its workflow and attempts; `None` when the
/// run ended, the attempt closed, or the revision cannot be loaded (the plain path handles it).
async fn open_attempt_of(runtime: &Arc<Runtime>, key: &AttemptKey) -> Result<Option<Known>, Error> {
    let store = &runtime.store;
    let Some(run) = store.run(&key.run_id).await? else {
        return Ok(None);
    };
    if run.status.is_finished() {
        return Ok(None);
    }
    let Ok(workflow) = runtime.revisions.for_run(&run, store.as_ref()).await else {
        return Ok(None);
    };
    let attempts = store.attempts(&key.run_id).await?;
    let open = attempts
        .iter()
        .any(|a| a.key == *key && !a.status.is_finished());
    Ok(open.then_some(Known {
        run,
        workflow,
        attempts,
        version: None,
    }))
}

/// What an outcome leads to at once (see [`made_ready`]).
struct Ready {
    /// The attempts to insert with the outcome.
    next: Vec<AttemptRecord>,
    /// What the scheduler decided after `next`, beyond queueing and skipping (its end, a
    /// retry); empty when nothing.
    then: Vec<Action>,
}

/// The attempts the scheduler inserts next, as long as it only queues and skips nodes: what a
/// node's outcome makes ready. What it decides beyond that is returned for the caller to fold
/// (the run's success) or to leave to the ordinary advance that follows the commit.
///
/// `known.attempts` receives `next` in place, not a copy: a run's attempts carry every node's
/// input and output, a large list for a `foreach` node. The caller writes `next` and drops
/// `known` if the write does not go through.
fn made_ready(known: &mut Known) -> Ready {
    let mut next = Vec::new();
    loop {
        let actions = scheduler::decide(&known.workflow, &known.run, &known.attempts, Utc::now());
        let folds = actions
            .iter()
            .all(|action| matches!(action, Action::Enqueue { .. } | Action::Skip { .. }));
        if !folds || actions.is_empty() {
            let then = if folds { Vec::new() } else { actions };
            return Ready { next, then };
        }
        let mut skipped = false;
        for action in actions {
            let record = match action {
                Action::Enqueue { node, attempt } => {
                    new_attempt(&known.run, &node, attempt, AttemptStatus::Queued, None)
                }
                Action::Skip { node } => {
                    skipped = true;
                    new_attempt(&known.run, &node, 1, AttemptStatus::Skipped, None)
                }
                _ => continue,
            };
            insert_ordered(&mut known.attempts, record.clone());
            next.push(record);
        }
        // A skip can make its dependents decidable at once, as in `decide_and_perform`.
        if !skipped {
            return Ready {
                next,
                then: Vec::new(),
            };
        }
    }
}

/// Decides and records what the run does next; `queued` receives the attempts to publish.
/// `known` is the run as it stands, when the caller just wrote it; otherwise it is read.
async fn decide_and_perform(
    runtime: &Arc<Runtime>,
    run_id: &str,
    mut known: Option<Known>,
    queued: &mut Queued,
) -> Result<(), Error> {
    // Skipping a node can make its dependents decidable at once, hence the loop.
    loop {
        let (run, workflow, attempts) = match known.take() {
            Some(known) => (known.run, known.workflow, known.attempts),
            None => {
                let Some(run) = runtime.store.run(run_id).await? else {
                    return Ok(());
                };
                let loaded = runtime.revisions.for_run(&run, runtime.store.as_ref());
                let workflow = match loaded.await.map_err(Error::from) {
                    Ok(workflow) => workflow,
                    Err(error) if !error.is_retryable() && !run.status.is_finished() => {
                        return fail_unloadable(runtime, &run, &error).await;
                    }
                    Err(error) => return Err(error),
                };
                let attempts = runtime.store.attempts(run_id).await?;
                (run, workflow, attempts)
            }
        };
        let actions = scheduler::decide(&workflow, &run, &attempts, Utc::now());
        let mut decide_again = false;
        for action in actions {
            decide_again |= perform(runtime, &workflow, &run, &attempts, action, queued).await?;
        }
        if !decide_again {
            return Ok(());
        }
    }
}

/// Performs one action; true when the run should be decided again.
async fn perform(
    runtime: &Arc<Runtime>,
    workflow: &Workflow,
    run: &RunRecord,
    attempts: &[AttemptRecord],
    action: Action,
    queued: &mut Queued,
) -> Result<bool, Error> {
    let store = &runtime.store;
    match action {
        Action::Enqueue { node, attempt } => {
            let record = new_attempt(run, &node, attempt, AttemptStatus::Queued, None);
            if store.insert_attempt(&record).await? {
                queued.push((run.workflow_id.clone(), record.key));
            }
            Ok(false)
        }
        Action::Retry {
            node,
            attempt,
            not_before,
        } => {
            let record = new_attempt(
                run,
                &node,
                attempt,
                AttemptStatus::Pending,
                Some(not_before),
            );
            store.insert_attempt(&record).await?;
            runtime.retry_due.notify_one();
            Ok(false)
        }
        Action::Skip { node } => {
            let record = new_attempt(run, &node, 1, AttemptStatus::Skipped, None);
            Ok(store.insert_attempt(&record).await?)
        }
        Action::Succeed => {
            succeed(runtime, workflow, run, attempts).await?;
            Ok(false)
        }
        Action::Fail { error } => {
            end_run(runtime, workflow, run, attempts, RunStatus::Failed, error).await?;
            Ok(false)
        }
        Action::Cancel => {
            let error = ErrorInfo::new("cancelled", "the run was cancelled");
            end_run(
                runtime,
                workflow,
                run,
                attempts,
                RunStatus::Cancelled,
                error,
            )
            .await?;
            Ok(false)
        }
    }
}

fn new_attempt(
    run: &RunRecord,
    node: &NodeId,
    attempt: u32,
    status: AttemptStatus,
    not_before: Option<DateTime<Utc>>,
) -> AttemptRecord {
    let now = Utc::now();
    let finished = status.is_finished().then_some(now);
    AttemptRecord {
        key: AttemptKey {
            run_id: run.id.clone(),
            node_id: node.to_string(),
            attempt,
        },
        status,
        input: None,
        output: None,
        error: None,
        retryable: false,
        not_before,
        created_at: now,
        started_at: None,
        finished_at: finished,
        worker: None,
    }
}

/// Renders the run's `output` and finishes it; an output that does not render fails the run.
async fn succeed(
    runtime: &Arc<Runtime>,
    workflow: &Workflow,
    run: &RunRecord,
    attempts: &[AttemptRecord],
) -> Result<(), Error> {
    let output = match &workflow.output {
        None => Ok(None),
        Some(template) => {
            let scope = output_scope(&runtime.executor, workflow, run, attempts)?;
            render_output(&runtime.executor, template, scope)
        }
    };
    // An output nested deeper than the store keeps fails the run rather than its every advance.
    if let Ok(Some(value)) = &output
        && let Err(error) = crate::store::json::check_depth("the run's output", value)
    {
        let error = ErrorInfo::new("template", format!("run output: {error}"));
        return end_run(runtime, workflow, run, attempts, RunStatus::Failed, error).await;
    }
    match output {
        Ok(output) => {
            let finished_at = now();
            let finished = runtime
                .store
                .finish_run(
                    &run.id,
                    RunStatus::Succeeded,
                    output.as_ref(),
                    None,
                    finished_at,
                )
                .await?;
            if finished {
                let end = RunEnd {
                    status: RunStatus::Succeeded,
                    output,
                    error: None,
                    finished_at,
                };
                after_finish(runtime, workflow, run, end).await?;
            }
            Ok(())
        }
        Err(error) => {
            let template = workflow.output.as_ref().unwrap_or(&Value::Null);
            let redactor = Redactor::new(
                &runtime.executor.redaction,
                runtime.executor.redaction.read_by(&[template], &[]),
            );
            let message = redactor.text(&format!("run output: {error}"));
            let error = ErrorInfo::new("template", message);
            end_run(runtime, workflow, run, attempts, RunStatus::Failed, error).await
        }
    }
}

/// A run whose workflow revision this process cannot load (damaged, or written by a version
/// that knew node types this one does not) can never advance: it fails with the reason rather
/// than staying `running`, holding a `concurrency` slot, for ever.
async fn fail_unloadable(
    runtime: &Arc<Runtime>,
    run: &RunRecord,
    error: &Error,
) -> Result<(), Error> {
    tracing::error!(%error, run = %run.id, workflow = %run.workflow_id,
        "the run's workflow revision cannot be loaded; failing the run");
    let store = &runtime.store;
    let now = Utc::now();
    store.cancel_open_attempts(&run.id, now).await?;
    runtime.signals.run_token(&run.id).cancel();
    let message = runtime.executor.redaction.engine_text(&error.to_string());
    let error = ErrorInfo::new(UNLOADABLE, message);
    if !store
        .finish_run(&run.id, RunStatus::Failed, None, Some(&error), now)
        .await?
    {
        return Ok(());
    }
    telemetry::run_finished(&run.workflow_id, RunStatus::Failed.as_str(), None);
    runtime.signals.drop_run_token(&run.id);
    runtime.signals.notify_finished(&run.id);
    // The slot it held may admit the next queued run, by the folder's current version.
    if let Some(workflow) = runtime.catalog.current().get(&run.workflow_id)
        && workflow.concurrency.is_some()
    {
        let runtime = runtime.clone();
        runtime.tasks.clone().spawn(async move {
            if let Err(error) = admit(&runtime, &workflow).await {
                tracing::error!(%error, workflow = %workflow.id, "admitting queued runs failed");
            }
        });
    }
    Ok(())
}

/// The error kind of a run failed because its workflow revision cannot be loaded.
pub const UNLOADABLE: &str = "revision";

/// The run's `output`, as it is stored: with `[redacted]` where it used a secret (see
/// [`crate::redaction`]).
fn render_output(
    executor: &Executor,
    template: &Value,
    mut scope: RunScope,
) -> Result<Option<Value>, TemplateError> {
    let output = executor.templates.render_run(template, &scope)?;
    let used = executor.redaction.read_by(&[template], &[]);
    scope::hide_secrets(&mut scope);
    let (output, _) = redaction::shown(
        &executor.redaction,
        used,
        &executor.templates,
        template,
        output,
        &scope,
    );
    Ok(Some(output))
}

/// What the run's `output` template sees.
fn output_scope(
    executor: &Executor,
    workflow: &Workflow,
    run: &RunRecord,
    attempts: &[AttemptRecord],
) -> Result<RunScope, crate::store::Error> {
    scope::for_run(
        &run.trigger,
        &workflow.output_reads,
        attempts,
        &executor.secrets,
        &executor.vars,
        &run.id,
        workflow.id.as_str(),
    )
}

/// The error kind of the attempt that closes a node a failed or cancelled run never reached.
pub const UNREACHED: &str = "unreached";

/// Fails or cancels a run: stops in-flight attempts, closes nodes never reached (skipped on
/// failure, cancelled on cancellation), and records the final status. `attempts` are the ones
/// `advance` read: attempts are only inserted under the run's lock, so no node gained one since.
async fn end_run(
    runtime: &Arc<Runtime>,
    workflow: &Workflow,
    run: &RunRecord,
    attempts: &[AttemptRecord],
    status: RunStatus,
    error: ErrorInfo,
) -> Result<(), Error> {
    let store = &runtime.store;
    let now = now();
    // Close the attempts first, so a worker that sees the cancellation cannot record its node
    // as failed before it is recorded as cancelled.
    store.cancel_open_attempts(&run.id, now).await?;
    runtime.signals.run_token(&run.id).cancel();
    let unreached = match status {
        RunStatus::Cancelled => AttemptStatus::Cancelled,
        _ => AttemptStatus::Skipped,
    };
    for node in workflow.nodes.keys() {
        if !attempts.iter().any(|a| a.key.node_id == node.as_str()) {
            // Marked, so that a manual retry can tell these from nodes the run chose to skip.
            let placeholder = AttemptRecord {
                error: Some(ErrorInfo::new(
                    UNREACHED,
                    "the run ended before this node ran",
                )),
                ..new_attempt(run, node, 1, unreached, None)
            };
            store.insert_attempt(&placeholder).await?;
        }
    }
    if store
        .finish_run(&run.id, status, None, Some(&error), now)
        .await?
    {
        let end = RunEnd {
            status,
            output: None,
            error: Some(error),
            finished_at: now,
        };
        after_finish(runtime, workflow, run, end).await?;
    }
    Ok(())
}

/// Metrics, waiters, and the next queued run of the workflow.
async fn after_finish(
    runtime: &Arc<Runtime>,
    workflow: &Workflow,
    run: &RunRecord,
    end: RunEnd,
) -> Result<(), Error> {
    let status = end.status;
    let duration = run
        .started_at
        .and_then(|started| Utc::now().signed_duration_since(started).to_std().ok());
    if run.status == RunStatus::Queued {
        telemetry::queued_run_finished(workflow.id.as_str(), status.as_str());
    } else {
        telemetry::run_finished(workflow.id.as_str(), status.as_str(), duration);
    }
    // Nothing of the run is in flight any more; cancelling also ends its deadline watcher.
    runtime.signals.run_token(&run.id).cancel();
    runtime.signals.drop_run_token(&run.id);
    runtime.signals.notify_finished_with(RunRecord {
        status,
        output: end.output,
        error: end.error,
        finished_at: Some(end.finished_at),
        ..run.clone()
    });
    if workflow.concurrency.is_some() {
        let runtime = runtime.clone();
        let finished = Arc::new(workflow.clone());
        // Admitting takes the workflow's admission lock; doing it in a task keeps this run's
        // lock and that one from ever being held in opposite orders.
        runtime.tasks.clone().spawn(async move {
            // The folder's current version decides the limit; a worker has no folder and uses
            // the version the finished run ran.
            let workflow = runtime
                .catalog
                .current()
                .get(finished.id.as_str())
                .unwrap_or(finished);
            if let Err(error) = admit(&runtime, &workflow).await {
                tracing::error!(%error, workflow = %workflow.id, "admitting queued runs failed");
            }
        });
    }
    Ok(())
}

/// Advances the run when its deadline passes (the scheduler then fails it with `timeout`).
pub fn watch_deadline(runtime: &Arc<Runtime>, run_id: &str, deadline: DateTime<Utc>) {
    let runtime = runtime.clone();
    let run_id = run_id.to_owned();
    let finished = runtime.signals.run_token(&run_id);
    runtime.tasks.clone().spawn(async move {
        let wait = until(deadline);
        tokio::select! {
            _ = runtime.shutdown.cancelled() => {}
            _ = finished.cancelled() => {}
            _ = tokio::time::sleep(wait) => advance_logged(&runtime, &run_id).await,
        }
    });
}

/// How long from now until `time`; zero once it has passed.
fn until(time: DateTime<Utc>) -> Duration {
    time.signed_duration_since(Utc::now())
        .to_std()
        .unwrap_or_default()
}

/// Advances a run from a background task, logging failures (there is no caller to return to).
pub async fn advance_logged(runtime: &Arc<Runtime>, run_id: &str) {
    if let Err(error) = advance(runtime, run_id).await {
        tracing::error!(%error, run = %run_id, "advancing the run failed");
    }
}

/// Queues retries whose backoff has passed. Sleeps until the earliest one is due, or until a
/// new retry is scheduled.
pub async fn retry_timer(runtime: Arc<Runtime>) {
    // Retries scheduled by other processes (workers) do not wake this timer, so in the
    // distributed mode it looks more often.
    let idle = if runtime.queue.durable() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    loop {
        let wait = match due_retries(&runtime).await {
            Ok(Some(next)) => until(next).min(idle),
            Ok(None) => idle,
            Err(error) => {
                tracing::error!(%error, "queueing due retries failed");
                idle
            }
        };
        tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            _ = runtime.retry_due.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Promotes and enqueues due retries; returns when the next one is due.
async fn due_retries(runtime: &Runtime) -> Result<Option<DateTime<Utc>>, Error> {
    for key in runtime.store.promote_due_attempts(Utc::now()).await? {
        dispatch::dispatch(runtime, key).await?;
    }
    Ok(runtime.store.next_due_at().await?)
}
