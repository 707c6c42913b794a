//! A local worker: takes attempts off the queue, executes them, commits the result, acknowledges,
//! and hands the run back to the driver.

use std::sync::Arc;

use crate::attempt;
use crate::driver;
use crate::engine::Shared;

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
            // Not acknowledged: the attempt stays open in the store and is retried by recovery.
            Err(error) => {
                tracing::error!(%error, run = %key.run_id, node = %key.node_id, "attempt could not be recorded")
            }
        }
    }
}
