//! A local worker: takes attempts off the queue, executes them, commits the result, acknowledges,
//! and hands the run back to the driver.

use std::sync::Arc;
use std::time::Duration;

use crate::attempt;
use crate::driver;
use crate::engine::Shared;
use crate::store::AttemptKey;

/// Works until shutdown. An attempt already started is finished first; the queue is not drained.
pub async fn work(shared: Arc<Shared>) {
    loop {
        let delivery = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            delivery = shared.queue.receive() => delivery,
        };
        let Some(delivery) = delivery else {
            return;
        };
        let key = delivery.attempt().clone();
        match attempt::execute(&shared, &key).await {
            Ok(()) => {
                delivery.ack().await;
                // Advancing may wait on a full queue; doing it in a task keeps this worker
                // draining the queue, so the engine cannot deadlock on its own backpressure.
                let advance_shared = shared.clone();
                shared.tasks.spawn(async move {
                    driver::advance_logged(&advance_shared, &key.run_id).await;
                });
            }
            Err(error) => {
                tracing::error!(%error, run = %key.run_id, node = %key.node_id,
                    "attempt could not be recorded; queueing it again shortly");
                delivery.ack().await;
                requeue_later(&shared, key);
            }
        }
    }
}

/// Puts an attempt whose outcome could not be written back on the queue after a pause. The
/// attempt is still open in the store, so executing it again is safe (at least once); without
/// this, a passing database error would leave the run waiting until the next restart.
fn requeue_later(shared: &Arc<Shared>, key: AttemptKey) {
    const PAUSE: Duration = Duration::from_millis(500);
    let requeue_shared = shared.clone();
    shared.tasks.spawn(async move {
        tokio::select! {
            _ = requeue_shared.shutdown.cancelled() => {}
            _ = tokio::time::sleep(PAUSE) => {
                if let Err(error) = requeue_shared.queue.enqueue(key).await {
                    tracing::error!(%error, "queueing an attempt again failed; it resumes on restart");
                }
            }
        }
    });
}
