//! The in-process queue of embedded mode: a bounded channel shared by the local workers.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};

use super::{Delivery, Error, Queue};
use crate::store::AttemptKey;

/// A bounded multi-consumer queue. Acknowledgement is a no-op: if the process dies, the store
/// still lists the attempt as open and recovery enqueues it again.
#[derive(Clone)]
pub struct MemoryQueue {
    sender: mpsc::Sender<AttemptKey>,
    receiver: Arc<Mutex<mpsc::Receiver<AttemptKey>>>,
}

impl MemoryQueue {
    /// A queue holding at most `capacity` waiting tasks.
    pub fn new(capacity: usize) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        Self {
            sender,
            receiver: Arc::new(Mutex::new(receiver)),
        }
    }
}

struct MemoryDelivery(AttemptKey);

#[async_trait]
impl Delivery for MemoryDelivery {
    fn attempt(&self) -> &AttemptKey {
        &self.0
    }

    async fn ack(self: Box<Self>) {}
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn enqueue(&self, attempt: AttemptKey) -> Result<(), Error> {
        self.sender.send(attempt).await.map_err(|_| Error::Closed)
    }

    async fn receive(&self) -> Option<Box<dyn Delivery>> {
        let attempt = self.receiver.lock().await.recv().await?;
        Some(Box::new(MemoryDelivery(attempt)))
    }

    fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> AttemptKey {
        AttemptKey {
            run_id: "r".into(),
            node_id: "n".into(),
            attempt: n,
        }
    }

    #[tokio::test]
    async fn delivers_in_order_and_reports_depth() {
        let queue = MemoryQueue::new(4);
        queue.enqueue(key(1)).await.expect("enqueue");
        queue.enqueue(key(2)).await.expect("enqueue");
        assert_eq!(queue.depth(), 2);
        let first = queue.receive().await.expect("a task");
        assert_eq!(first.attempt().attempt, 1);
        first.ack().await;
        assert_eq!(queue.depth(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_applies_backpressure() {
        let queue = MemoryQueue::new(1);
        queue.enqueue(key(1)).await.expect("enqueue");
        let blocked = futures::FutureExt::now_or_never(queue.enqueue(key(2)));
        assert!(blocked.is_none(), "the second enqueue must wait");
        assert!(queue.receive().await.is_some());
        queue.enqueue(key(2)).await.expect("room again");
    }
}
