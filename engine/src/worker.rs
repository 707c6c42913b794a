//! A local worker: takes attempts off the queue, executes them, commits the result, acknowledges,
//! and hands the run back to the driver.
//!
//! An attempt whose execution fails in the engine (not in the node) is sorted by
//! [`Error::is_retryable`]: a passing failure (the database unreachable) queues it again after a
//! pause that grows while the failures go on; anything else (a row that cannot be decoded, a
//! revision this process cannot parse) fails the attempt, and the run goes on per its rules.
#![warn(clippy::arithmetic_side_effects)]

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::attempt;
use crate::dispatch;
use crate::driver::{self, Known};
use crate::engine::Error;
use crate::queue::Delivery;
use crate::runtime::Runtime;
use crate::store::{AttemptKey, AttemptOutcome, AttemptStatus, ErrorInfo, RunStatus, Started};

/// The error kind of an attempt the engine could not execute.
pub const ENGINE_ERROR: &str = "engine";

/// Works until shutdown. An attempt already started is finished first; the queue is not drained.
pub async fn work(runtime: Arc<Runtime>) {
    // Consecutive passing failures seen by this worker: the pause before queueing again grows
    // with them, so a database that is down is not hammered by every open attempt.
    let mut failures: u32 = 0;
    loop {
        let delivery = tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            delivery = runtime.queue.receive() => delivery,
        };
        let Some(delivery) = delivery else {
            return;
        };
        // Waits while continuations hold every slot; the delivery stays unacknowledged.
        let Ok(slot) = runtime.slots.clone().acquire_owned().await else {
            return;
        };
        let key = delivery.attempt().clone();
        run_chain(&runtime, key, None, Some(delivery), &mut failures).await;
        drop(slot);
    }
}

/// Executes an attempt and then, one after the other, the dependents its outcomes claim for
/// this worker (local continuation, see [`driver::Claimed`]), until a branch of the run ends or
/// shutdown begins. The caller holds the execution slot this runs in.
async fn run_chain(
    runtime: &Arc<Runtime>,
    key: AttemptKey,
    claimed: Option<Arc<Known>>,
    delivery: Option<Box<dyn Delivery>>,
    failures: &mut u32,
) {
    let mut delivery = delivery;
    let mut next = Some((key, claimed));
    while let Some((key, claimed)) = next.take() {
        if let Some(known) = claimed.as_ref().filter(|_| runtime.shutdown.is_cancelled()) {
            // Committed already: published like any ready attempt, it waits for a worker
            // (embedded, for the next start, which enqueues what is open).
            publish_later(runtime, vec![(known.run.workflow_id.clone(), key)]);
            break;
        }
        next = execute_one(runtime, key, claimed, &mut delivery, failures).await;
    }
}

/// Runs a claimed attempt and its own continuations in a task, in the slot taken for it, or
/// once one is free.
fn run_chain_later(
    runtime: &Arc<Runtime>,
    key: AttemptKey,
    known: Arc<Known>,
    slot: Option<OwnedSemaphorePermit>,
) {
    let chain_runtime = runtime.clone();
    runtime.tasks.spawn(async move {
        let (slot, known) = match slot {
            Some(slot) => (slot, Some(known)),
            None => match chain_runtime.slots.clone().acquire_owned().await {
                Ok(slot) => {
                    let known = unchanged(&chain_runtime, known).await;
                    (slot, known)
                }
                Err(_) => return,
            },
        };
        let mut failures = 0;
        run_chain(&chain_runtime, key, known, None, &mut failures).await;
        drop(slot);
    });
}

/// `known` if no other process changed its run since the claim, as far as a cheap look tells
/// (the run's version is the claim's, or that of this process's last write of the run, which
/// left it running; embedded, the run in memory is running); `None` to read the run again. A
/// claimed attempt that waited for a slot must not start a node of a run cancelled or failed
/// meanwhile. At shutdown, `known` as it is: the claim is published, not run (see
/// [`run_chain`]).
async fn unchanged(runtime: &Runtime, known: Arc<Known>) -> Option<Arc<Known>> {
    if runtime.shutdown.is_cancelled() {
        return Some(known);
    }
    let run_id = known.run.id.as_str();
    let unchanged = match known.version {
        Some(version) => {
            let ours = runtime.written.version(run_id);
            let now = runtime.store.run_version(run_id).await.ok().flatten();
            now.is_some_and(|now| now == version || Some(now) == ours)
        }
        None => runtime.store.run(run_id).await.is_ok_and(|run| {
            run.is_some_and(|run| run.status == RunStatus::Running && !run.cancel_requested)
        }),
    };
    unchanged.then_some(known)
}

/// Executes one attempt and sorts out what follows; returns the attempt claimed to run next
/// in the same slot.
async fn execute_one(
    runtime: &Arc<Runtime>,
    key: AttemptKey,
    claimed: Option<Arc<Known>>,
    delivery: &mut Option<Box<dyn Delivery>>,
    failures: &mut u32,
) -> Option<(AttemptKey, Option<Arc<Known>>)> {
    // A panic outside the node and rendering (both caught inside) would end this worker
    // for good; here it fails the one attempt instead.
    let executed = AssertUnwindSafe(attempt::execute(runtime, &key, claimed))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(Error::Panicked(attempt::panic_text(panic.as_ref()))));
    // A claimed attempt came with no delivery: its predecessor's was acknowledged.
    if let Some(delivery) = delivery.take() {
        delivery.ack().await;
    }
    match executed {
        Ok(Some(followup)) => {
            *failures = 0;
            publish_later(runtime, followup.queued);
            let claimed = followup.claimed?;
            for (key, slot) in claimed.more {
                run_chain_later(runtime, key, claimed.known.clone(), slot);
            }
            return Some((claimed.first, Some(claimed.known)));
        }
        Ok(None) => {
            *failures = 0;
            advance_later(runtime, key);
        }
        // Rolled back with a batch another write broke (or whose commit failed): no sign
        // that the database is down, so no longer pause than the first.
        Err(error) if error.is_rolled_back() => {
            tracing::warn!(%error, run = %key.run_id, node = %key.node_id,
                "attempt's write was rolled back with its batch; queueing it again");
            requeue_later(runtime, key, requeue_pause(1));
        }
        Err(error) if error.is_retryable() => {
            *failures = failures.saturating_add(1);
            let pause = requeue_pause(*failures);
            tracing::error!(%error, run = %key.run_id, node = %key.node_id, ?pause,
                "attempt could not be recorded; queueing it again after a pause");
            requeue_later(runtime, key, pause);
        }
        Err(error) => {
            tracing::error!(%error, run = %key.run_id, node = %key.node_id,
                "attempt cannot be executed; failing it");
            fail(runtime, key, &error).await;
        }
    }
    None
}

/// Advancing may wait on a full queue; doing it in a task keeps this worker draining the
/// queue, so the engine cannot deadlock on its own backpressure.
fn advance_later(runtime: &Arc<Runtime>, key: AttemptKey) {
    let advance_runtime = runtime.clone();
    runtime.tasks.spawn(async move {
        driver::advance_logged(&advance_runtime, &key.run_id).await;
    });
}

/// Publishes the attempts a recorded outcome made ready. Publishing may wait on a full queue;
/// doing it in a task keeps this worker draining the queue (see [`advance_later`]).
fn publish_later(runtime: &Arc<Runtime>, queued: driver::Queued) {
    if queued.is_empty() {
        return;
    }
    let publish_runtime = runtime.clone();
    runtime.tasks.spawn(async move {
        for (workflow_id, key) in queued {
            if let Err(error) = dispatch::dispatch_in(&publish_runtime, &workflow_id, key).await {
                tracing::error!(%error, "queueing an attempt failed; it resumes on restart");
            }
        }
    });
}

/// 0.5 s after the first failure, doubling up to 30 s.
pub fn requeue_pause(failures: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(500);
    const MOST: Duration = Duration::from_secs(30);
    let exponent = failures.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << exponent).min(MOST)
}

/// Records the attempt as failed for good, with the engine's error as its reason, and advances
/// its run. If even that cannot be written, the attempt stays open for recovery or the sweep.
async fn fail(runtime: &Arc<Runtime>, key: AttemptKey, error: &Error) {
    let message = format!("the engine cannot execute this attempt: {error}");
    let now = Utc::now();
    let outcome = AttemptOutcome {
        status: AttemptStatus::Failed,
        output: None,
        error: Some(ErrorInfo::new(
            ENGINE_ERROR,
            runtime.executor.redaction.engine_text(&message),
        )),
        retryable: false,
        not_before: None,
        finished_at: now,
        // The engine took the attempt up: it counts as run, like a node that failed.
        started: Some(Started {
            input: None,
            worker: runtime.executor.worker_id.clone(),
            started_at: now,
        }),
    };
    match driver::complete(runtime, &key, &outcome, false, None).await {
        Ok(followup) => publish_later(runtime, followup.queued),
        Err(write) if write.is_retryable() => {
            tracing::error!(error = %write, run = %key.run_id, node = %key.node_id,
                "recording the failure failed; queueing the attempt again");
            requeue_later(runtime, key, requeue_pause(1));
        }
        Err(write) => tracing::error!(error = %write, run = %key.run_id, node = %key.node_id,
            "recording the failure failed; the attempt stays open"),
    }
}

/// Puts an attempt whose outcome could not be written back on the queue after `pause`. The
/// attempt is still open in the store, so executing it again is safe (at least once); without
/// this, a passing database error would leave the run waiting until the next restart.
fn requeue_later(runtime: &Arc<Runtime>, key: AttemptKey, pause: Duration) {
    let requeue_runtime = runtime.clone();
    runtime.tasks.spawn(async move {
        tokio::select! {
            _ = requeue_runtime.shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {
                if let Err(error) = requeue_runtime.queue.enqueue(key).await {
                    tracing::error!(%error, "queueing an attempt again failed; it resumes on restart");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::Error::Invalid;
    use crate::revisions::Error::Unloadable;
    use crate::{queue, store};

    #[test]
    fn the_pause_grows_to_a_ceiling() {
        let pauses: Vec<u64> = [1, 2, 3, 7, 8, 100, u32::MAX]
            .into_iter()
            .map(|failures| requeue_pause(failures).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [500, 1000, 2000, 30_000, 30_000, 30_000, 30_000]);
    }

    #[test]
    fn passing_failures_are_retried_and_the_rest_are_not() {
        let cases = [
            (Error::Store(sqlx::Error::PoolTimedOut.into()), true),
            (Error::Store(sqlx::Error::PoolClosed.into()), true),
            (Error::Store(sqlx::Error::WorkerCrashed.into()), true),
            (Error::Store(store::Error::KeyContended("k".into())), true),
            (Error::Queue(queue::Error::Disconnected), true),
            (Error::Store(store::Error::Corrupt("bad row".into())), false),
            (Error::Store(sqlx::Error::RowNotFound.into()), false),
            (
                Error::Store(sqlx::Error::ColumnNotFound("input".into()).into()),
                false,
            ),
            (
                Error::Revision(Unloadable("abc".into(), "invalid YAML".into())),
                false,
            ),
            (Error::InvalidInput(Invalid(vec!["x".into()])), false),
        ];
        for (error, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }
}
