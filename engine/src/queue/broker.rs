//! RabbitMQ that survives restarts: one [`AmqpQueue`] at a time, replaced with backoff when its
//! connection drops. While disconnected, enqueueing fails at once (the store's outbox publishes
//! the task later) and receiving waits for the next connection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AmqpOptions, AmqpQueue, DeadLetter, Delivery, Error, Queue};
use crate::store::AttemptKey;

/// How often the connection's state is looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Current = Option<Arc<AmqpQueue>>;

/// A reconnecting RabbitMQ queue.
pub struct Broker {
    current: watch::Sender<Current>,
    closed: CancellationToken,
    supervisor: JoinHandle<()>,
}

impl Broker {
    /// Connects once (a wrong URL or a broker that is down fails here, where the operator sees
    /// it) and keeps the connection up afterwards.
    pub async fn connect(options: AmqpOptions) -> Result<Self, Error> {
        let first = AmqpQueue::connect(options.clone()).await?;
        let current = watch::Sender::new(Some(Arc::new(first)));
        let closed = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(options, current.clone(), closed.clone()));
        Ok(Self {
            current,
            closed,
            supervisor,
        })
    }

    fn current(&self) -> Current {
        self.current.borrow().clone()
    }

    /// The live connection, waiting through a reconnect; `None` once closed.
    async fn connected(&self) -> Option<Arc<AmqpQueue>> {
        let mut current = self.current.subscribe();
        tokio::select! {
            _ = self.closed.cancelled() => None,
            queue = current.wait_for(Option::is_some) => queue.ok().and_then(|queue| queue.clone()),
        }
    }

    /// A connection that stopped delivering is dropped so the supervisor opens another; waits
    /// until it has (or the broker is closed).
    async fn replace(&self, broken: &Arc<AmqpQueue>) {
        if self.closed.is_cancelled() {
            return;
        }
        if broken.is_connected() {
            let _ = broken.close().await;
        }
        let mut current = self.current.subscribe();
        tokio::select! {
            _ = self.closed.cancelled() => {}
            _ = current.wait_for(|queue| !queue.as_ref().is_some_and(|queue| Arc::ptr_eq(queue, broken))) => {}
        }
    }

    /// Stops reconnecting and closes the connection; deliveries not acknowledged go back to
    /// RabbitMQ for other workers.
    pub async fn close(&self) {
        self.closed.cancel();
        self.supervisor.abort();
        if let Some(queue) = self.current.send_replace(None)
            && let Err(error) = queue.close().await
        {
            tracing::debug!(%error, "closing the RabbitMQ connection");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.closed.cancel();
        self.supervisor.abort();
    }
}

/// Watches the connection and reconnects with exponential backoff when it is lost.
async fn supervise(
    options: AmqpOptions,
    current: watch::Sender<Current>,
    closed: CancellationToken,
) {
    loop {
        while current
            .borrow()
            .as_ref()
            .is_some_and(|queue| queue.is_connected())
        {
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
        current.send_replace(None);
        tracing::warn!("RabbitMQ connection lost; reconnecting");
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = tokio::select! {
                _ = closed.cancelled() => return,
                attempt = AmqpQueue::connect(options.clone()) => attempt,
            };
            match attempt {
                Ok(queue) => {
                    tracing::info!("RabbitMQ connection restored");
                    current.send_replace(Some(Arc::new(queue)));
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "reconnecting to RabbitMQ failed");
                    tokio::select! {
                        _ = closed.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[async_trait]
impl Queue for Broker {
    async fn enqueue(&self, attempt: AttemptKey) -> Result<(), Error> {
        match self.current() {
            Some(queue) => queue.enqueue(attempt).await,
            None => Err(Error::Disconnected),
        }
    }

    async fn receive(&self) -> Option<Box<dyn Delivery>> {
        loop {
            let queue = self.connected().await?;
            if let Some(delivery) = queue.receive().await {
                return Some(delivery);
            }
            self.replace(&queue).await;
        }
    }

    fn depth(&self) -> usize {
        self.current().map_or(0, |queue| queue.depth())
    }

    fn durable(&self) -> bool {
        true
    }

    fn health(&self) -> Result<(), String> {
        match self.current() {
            Some(queue) if queue.is_connected() => Ok(()),
            _ => Err("not connected to RabbitMQ".to_owned()),
        }
    }

    async fn dead_letter(&self) -> Option<DeadLetter> {
        loop {
            let queue = self.connected().await?;
            if let Some(letter) = queue.receive_dead_letter().await {
                return Some(letter);
            }
            self.replace(&queue).await;
        }
    }
}
