//! The in-process queue of embedded mode, shared by the local workers: one lane per workflow,
//! served in turn, so a workflow flooded with work (a burst of leads, or hostile traffic on one
//! webhook) delays the others by at most one task per lane, not by its whole backlog.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

use super::{Delivery, Error, Queue};
use crate::store::AttemptKey;

/// A bounded multi-consumer queue. Acknowledgement is a no-op: if the process dies, the store
/// still lists the attempt as open and recovery enqueues it again.
#[derive(Clone)]
pub struct MemoryQueue {
    lanes: Arc<Mutex<Lanes>>,
    /// Room left; taken by `enqueue`, given back by `receive`.
    room: Arc<Semaphore>,
    /// Woken when a task is added.
    added: Arc<Notify>,
    capacity: usize,
}

/// Tasks waiting, per lane, and the lanes with tasks in the order they are served.
#[derive(Default)]
struct Lanes {
    tasks: HashMap<String, VecDeque<AttemptKey>>,
    turns: VecDeque<String>,
    waiting: usize,
}

impl Lanes {
    fn push(&mut self, lane: &str, attempt: AttemptKey) {
        let tasks = self.tasks.entry(lane.to_owned()).or_default();
        if tasks.is_empty() {
            self.turns.push_back(lane.to_owned());
        }
        tasks.push_back(attempt);
        self.waiting = self.waiting.saturating_add(1);
    }

    /// The first task of the lane whose turn it is; that lane goes to the back of the line.
    fn pop(&mut self) -> Option<AttemptKey> {
        let lane = self.turns.pop_front()?;
        let tasks = self.tasks.get_mut(&lane)?;
        let attempt = tasks.pop_front();
        if tasks.is_empty() {
            self.tasks.remove(&lane);
        } else {
            self.turns.push_back(lane);
        }
        self.waiting = self.waiting.saturating_sub(1);
        attempt
    }
}

impl MemoryQueue {
    /// A queue holding at most `capacity` waiting tasks.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            lanes: Arc::new(Mutex::new(Lanes::default())),
            room: Arc::new(Semaphore::new(capacity)),
            added: Arc::new(Notify::new()),
            capacity,
        }
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
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
        self.enqueue_in("", attempt).await
    }

    async fn enqueue_in(&self, lane: &str, attempt: AttemptKey) -> Result<(), Error> {
        let permit = self.room.acquire().await.map_err(|_| Error::Closed)?;
        // The room is given back when the task is received.
        permit.forget();
        self.lanes().push(lane, attempt);
        self.added.notify_one();
        Ok(())
    }

    async fn receive(&self) -> Option<Box<dyn Delivery>> {
        loop {
            let added = self.added.notified();
            let mut added = std::pin::pin!(added);
            // Registered before looking, so a task added in between still wakes this receiver.
            added.as_mut().enable();
            let (taken, more) = {
                let mut lanes = self.lanes();
                (lanes.pop(), lanes.waiting > 0)
            };
            if let Some(attempt) = taken {
                self.room.add_permits(1);
                // A wake-up this receiver consumed may have been meant for a task still waiting.
                if more {
                    self.added.notify_one();
                }
                return Some(Box::new(MemoryDelivery(attempt)));
            }
            added.await;
        }
    }

    fn depth(&self) -> usize {
        self.lanes().waiting.min(self.capacity)
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
    async fn lanes_take_turns() {
        let queue = MemoryQueue::new(16);
        for n in 1..=3 {
            queue.enqueue_in("flood", key(n)).await.expect("enqueue");
        }
        queue.enqueue_in("other", key(10)).await.expect("enqueue");
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(queue.receive().await.expect("a task").attempt().attempt);
        }
        assert_eq!(order, [1, 10, 2, 3]);
        assert_eq!(queue.depth(), 0);
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
