//! Dispatch in the distributed mode: the outbox between the store and RabbitMQ, attempt leases,
//! dead letters, and news of runs finished by other processes.
//!
//! Every state change is committed before its task is published, so the store is the truth and
//! RabbitMQ only carries work to do. What can fall between the two is caught by the sweep a
//! `serve` replica runs: queued attempts the broker never confirmed are published again, running
//! attempts whose worker stopped renewing their lease are handed to another worker, and runs
//! past their deadline are advanced whichever replica armed the timer.
//!
//! The lease comes from the command line: the time sums on it are checked.
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::driver;
use crate::engine::Error;
use crate::queue::{DeadLetter, Queue};
use crate::runtime::Runtime;
use crate::store::{AttemptKey, AttemptOutcome, AttemptStatus, ErrorInfo, Store};

/// How long a queued attempt may stay unconfirmed before the sweep publishes it again: longer
/// than a publish normally takes, so the sweep rarely duplicates a message still in flight.
const OUTBOX_GRACE: Duration = Duration::from_secs(5);

/// Puts an attempt on the queue. With a durable queue the attempt is already committed, so the
/// publish, its confirm and the `dispatched` mark happen in a task of their own, off the caller's
/// path: a failed publish or mark is left to the sweep (a lost mark only costs a duplicate
/// delivery, which at-least-once allows). The in-process queue is awaited, for backpressure.
pub async fn dispatch(runtime: &Runtime, key: AttemptKey) -> Result<(), Error> {
    dispatch_in(runtime, "", key).await
}

/// [`dispatch`] in the lane of the run's workflow (see [`Queue::enqueue_in`]).
pub async fn dispatch_in(
    runtime: &Runtime,
    workflow_id: &str,
    key: AttemptKey,
) -> Result<(), Error> {
    if !runtime.queue.durable() {
        return Ok(runtime.queue.enqueue_in(workflow_id, key).await?);
    }
    let (queue, store) = (runtime.queue.clone(), runtime.store.clone());
    runtime.tasks.spawn(async move {
        publish_and_mark(queue.as_ref(), store.as_ref(), key).await;
    });
    Ok(())
}

async fn publish_and_mark(queue: &dyn Queue, store: &dyn Store, key: AttemptKey) {
    if let Err(error) = queue.enqueue(key.clone()).await {
        tracing::warn!(%error, run = %key.run_id, node = %key.node_id,
            "publishing an attempt failed; the sweep will publish it");
        return;
    }
    if let Err(error) = store.mark_dispatched(std::slice::from_ref(&key)).await {
        tracing::warn!(%error, run = %key.run_id, node = %key.node_id,
            "recording a dispatch failed; the sweep will publish the attempt again");
    }
}

/// The sweep of a `serve` replica, every `interval` until shutdown.
pub async fn sweep(runtime: Arc<Runtime>, interval: Duration) {
    loop {
        tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = sweep_once(&runtime).await {
            tracing::error!(%error, "sweeping open attempts failed");
        }
    }
}

async fn sweep_once(runtime: &Arc<Runtime>) -> Result<(), Error> {
    let store = &runtime.store;
    let now = Utc::now();
    for key in store
        .undispatched_attempts(earlier_by(now, OUTBOX_GRACE))
        .await?
    {
        tracing::info!(run = %key.run_id, node = %key.node_id, attempt = key.attempt,
            "publishing an attempt the broker never confirmed");
        dispatch(runtime, key).await?;
    }
    let lease_start = earlier_by(now, runtime.options.lease);
    for key in store.claim_stale_attempts(lease_start, now).await? {
        tracing::warn!(run = %key.run_id, node = %key.node_id, attempt = key.attempt,
            "the worker running this attempt stopped renewing its lease; dispatching it again");
        if let Err(error) = runtime.queue.enqueue(key).await {
            // The lease was renewed by the claim, so the next sweep after it runs out retries.
            tracing::warn!(%error, "publishing an attempt whose lease ran out failed");
        }
    }
    for run_id in store.overdue_runs(now).await? {
        driver::advance(runtime, &run_id).await?;
    }
    crate::stalls::advance_stalled(runtime).await
}

/// `time - span`, or the earliest time chrono knows when that is out of range (a lease of a
/// million years claims nothing, rather than panicking the sweep).
pub(crate) fn earlier_by(time: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(span)
        .ok()
        .and_then(|span| time.checked_sub_signed(span))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Renews the lease of the attempts this process is running, a few times per lease.
pub async fn heartbeat(runtime: Arc<Runtime>) {
    // A floor, so that `--lease 0s` cannot turn this into a loop hammering the database.
    let interval = runtime
        .options
        .lease
        .checked_div(3)
        .unwrap_or_default()
        .max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = runtime
            .store
            .heartbeat(&runtime.executor.worker_id, Utc::now())
            .await
        {
            tracing::warn!(%error, "renewing attempt leases failed");
        }
    }
}

/// Marks the attempts RabbitMQ gave up on as failed, so their runs end instead of waiting.
pub async fn dead_letters(runtime: Arc<Runtime>) {
    loop {
        let letter = tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            letter = runtime.queue.dead_letter() => letter,
        };
        let Some(letter) = letter else {
            return;
        };
        match handle_dead_letter(&runtime, &letter).await {
            Ok(()) => {
                if let Err(error) = letter.ack().await {
                    tracing::warn!(%error, "cannot remove a handled dead letter");
                }
            }
            // Not acknowledged: RabbitMQ delivers it again after a reconnect.
            Err(error) => tracing::error!(%error, "handling a dead letter failed"),
        }
    }
}

async fn handle_dead_letter(runtime: &Arc<Runtime>, letter: &DeadLetter) -> Result<(), Error> {
    let Some(key) = &letter.attempt else {
        tracing::error!(reason = %letter.reason, body = %String::from_utf8_lossy(&letter.body),
            "dropping an undecodable task");
        return Ok(());
    };
    let message = match letter.reason.as_str() {
        "delivery_limit" => "the task was delivered too many times without finishing \
            (the workers running it crashed or were killed)"
            .to_owned(),
        reason => format!("RabbitMQ dead-lettered the task ({reason})"),
    };
    tracing::error!(run = %key.run_id, node = %key.node_id, attempt = key.attempt, %message,
        "marking a dead-lettered attempt failed");
    let outcome = AttemptOutcome {
        status: AttemptStatus::Failed,
        output: None,
        error: Some(ErrorInfo::new("dead_letter", message)),
        retryable: false,
        not_before: None,
        finished_at: Utc::now(),
        started: None,
    };
    if runtime.store.finish_attempt(key, &outcome).await? {
        driver::advance(runtime, &key.run_id).await?;
    }
    Ok(())
}

/// Wakes local waiters (webhooks answering `on_complete`) when any process finishes a run.
pub async fn forward_finished(runtime: Arc<Runtime>) {
    const PAUSE: Duration = Duration::from_secs(1);
    loop {
        let (sender, mut receiver) = mpsc::unbounded_channel::<String>();
        let forward = async {
            while let Some(run_id) = receiver.recv().await {
                runtime.signals.notify_finished(&run_id);
            }
        };
        tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            listened = runtime.store.listen_finished(sender) => {
                if let Err(error) = listened {
                    tracing::warn!(%error, "listening for finished runs failed; waiters poll meanwhile");
                }
            }
            _ = forward => {}
        }
        tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            _ = tokio::time::sleep(PAUSE) => {}
        }
    }
}
