//! The progress of a running `foreach` attempt: items done of its total, counted as items
//! finish and written to the store about once a second by a task of its own, so neither an
//! item nor the loop ever waits for the database (see [`crate::store::ProgressStore`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::store::{AttemptKey, Progress, Store};

/// How often a running `foreach` attempt writes its progress, at most: a list of a million
/// items must not cost a million writes.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Counts the finished items of one attempt; dropping it stops the writes.
pub struct Reporter {
    done: Arc<AtomicU64>,
    _stop: DropGuard,
}

impl Reporter {
    /// Starts writing the progress of the attempt `key` of `total` items every `every` (the
    /// first write after one period, so a short loop writes nothing).
    pub fn start(store: Arc<dyn Store>, key: AttemptKey, total: u64, every: Duration) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(report(store, key, total, every, done.clone(), stop.clone()));
        Self {
            done,
            _stop: stop.drop_guard(),
        }
    }

    /// One more item finished.
    pub fn item_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

async fn report(
    store: Arc<dyn Store>,
    key: AttemptKey,
    total: u64,
    every: Duration,
    done: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    // A slow write delays the next one rather than being followed by a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut written = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let progress = Progress {
            done: done.load(Ordering::Relaxed),
            total,
        };
        if written == Some(progress) {
            continue;
        }
        // Progress is for people watching: a failed write is retried at the next tick and
        // never fails the attempt.
        match store.set_progress(&key, progress).await {
            Ok(()) => written = Some(progress),
            Err(error) => tracing::debug!(run = %key.run_id, node = %key.node_id, %error,
                "could not record the progress of a foreach"),
        }
    }
}
