//! Dispatch of node attempts to workers. A task carries ids only; the store holds the state, so
//! a lost task is recovered by re-enqueueing open attempts from the store.

mod amqp;
mod broker;
mod memory;

use async_trait::async_trait;

pub use amqp::{AmqpOptions, AmqpQueue, DeadLetter};
pub use broker::Broker;
pub use memory::MemoryQueue;

use crate::store::AttemptKey;

/// Queue failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the queue is closed")]
    Closed,
    #[error("cannot connect to RabbitMQ: {0}")]
    Connect(#[source] lapin::Error),
    #[error("RabbitMQ did not accept the connection within {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error("RabbitMQ is not connected; reconnecting")]
    Disconnected,
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ did not take the task: {0}")]
    NotTaken(&'static str),
    #[error("cannot encode the task: {0}")]
    Encode(#[source] serde_json::Error),
}

/// One delivered task. Acknowledge it once its result is committed to the store; a task that is
/// never acknowledged may be delivered again.
#[async_trait]
pub trait Delivery: Send {
    fn attempt(&self) -> &AttemptKey;
    async fn ack(self: Box<Self>);
}

/// A queue of node attempts. Implementations: in-process (embedded), RabbitMQ (distributed).
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Adds a task; waits while the queue is full (backpressure).
    async fn enqueue(&self, attempt: AttemptKey) -> Result<(), Error>;
    /// Adds a task to a lane (its workflow): an in-process queue serves lanes in turn.
    async fn enqueue_in(&self, lane: &str, attempt: AttemptKey) -> Result<(), Error> {
        let _ = lane;
        self.enqueue(attempt).await
    }
    /// The next task; `None` once the queue is closed and drained.
    async fn receive(&self) -> Option<Box<dyn Delivery>>;
    /// Tasks waiting, for the queue-depth gauge.
    fn depth(&self) -> usize;
    /// Whether an enqueued task outlives this process. A durable queue's tasks are marked
    /// dispatched in the store once taken (the outbox); an in-process queue's tasks are recovered
    /// from the store's open attempts at the next start instead.
    fn durable(&self) -> bool {
        false
    }
    /// Ok when tasks can be enqueued and received; otherwise why not, for `/readyz`.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// The next task the broker gave up on (undecodable, or delivered too often). An in-process
    /// queue never gives up on a task, so by default this waits forever.
    async fn dead_letter(&self) -> Option<DeadLetter> {
        std::future::pending().await
    }
}
