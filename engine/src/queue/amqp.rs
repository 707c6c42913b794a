//! The RabbitMQ queue of distributed mode: attempt ids as JSON on a durable quorum queue, with
//! publisher confirms, manual acknowledgement and a dead-letter queue.
//!
//! Topology, declared idempotently by [`AmqpQueue::connect`] (`<prefix>` is
//! [`AmqpOptions::queue_prefix`]):
//! - `<prefix>.attempts`: a quorum queue of `{"run_id","node_id","attempt"}` messages. After
//!   `delivery_limit` deliveries RabbitMQ dead-letters a message instead of redelivering it.
//! - `<prefix>.attempts.dead`: a fanout exchange and a quorum queue bound to it, receiving what
//!   was rejected (undecodable) or passed the delivery limit.
//!
//! Declaring an existing queue with other arguments (say another delivery limit) fails with
//! RabbitMQ's `PRECONDITION_FAILED`; change the prefix or delete the queue to change them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lapin::message::Delivery as AmqpMessage;
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::{Delivery, Error, Queue};
use crate::store::AttemptKey;

mod consumer;
mod dead_letter;
#[cfg(test)]
mod tests;
mod topology;

pub use dead_letter::DeadLetter;

use consumer::LazyConsumer;
use topology::{declare_topology, refresh_depth};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// How to reach RabbitMQ and what to declare there.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// `amqp://user:password@host:5672/%2f`, or `amqps://…` for TLS (rustls with ring).
    pub url: String,
    /// First part of every queue and exchange name.
    pub queue_prefix: String,
    /// Unacknowledged deliveries RabbitMQ hands this consumer at once: the worker's concurrency.
    pub prefetch: u16,
    /// Deliveries of one message after which RabbitMQ dead-letters it instead of redelivering it.
    pub delivery_limit: u32,
    /// Time allowed for connecting and declaring before `connect` gives up.
    pub connect_timeout: Duration,
    /// How often [`Queue::depth`] is refreshed from the broker.
    pub depth_refresh_interval: Duration,
}

impl AmqpOptions {
    /// Options with defaults: prefix `enrichflow`, prefetch 16, delivery limit 10, a 10 s
    /// connect timeout and a depth refreshed every 5 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            queue_prefix: "enrichflow".to_owned(),
            prefetch: 16,
            delivery_limit: 10,
            connect_timeout: Duration::from_secs(10),
            depth_refresh_interval: Duration::from_secs(5),
        }
    }

    fn attempts_queue(&self) -> String {
        format!("{}.attempts", self.queue_prefix)
    }

    /// The dead-letter exchange and the dead-letter queue share this name.
    fn dead_letter_queue(&self) -> String {
        format!("{}.attempts.dead", self.queue_prefix)
    }
}

/// The wire form of an [`AttemptKey`].
#[derive(Serialize, Deserialize)]
struct WireAttempt {
    run_id: String,
    node_id: String,
    attempt: u32,
}

fn encode(attempt: &AttemptKey) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&WireAttempt {
        run_id: attempt.run_id.clone(),
        node_id: attempt.node_id.clone(),
        attempt: attempt.attempt,
    })
}

fn decode(body: &[u8]) -> Result<AttemptKey, serde_json::Error> {
    let wire: WireAttempt = serde_json::from_slice(body)?;
    Ok(AttemptKey {
        run_id: wire.run_id,
        node_id: wire.node_id,
        attempt: wire.attempt,
    })
}

/// A queue of attempts on RabbitMQ. Consuming starts at the first [`Queue::receive`], so a
/// process that only enqueues (`serve`) never holds deliveries.
pub struct AmqpQueue {
    connection: Connection,
    publish_channel: Channel,
    attempts: LazyConsumer,
    dead_letters: LazyConsumer,
    attempts_queue: String,
    /// Ready messages at the last refresh; see [`Queue::depth`].
    depth: Arc<AtomicUsize>,
    depth_refresher: JoinHandle<()>,
    /// Held here too so that aborting the refresher does not close the channel behind
    /// `connection.close`, which then fails on a channel already closing.
    _depth_channel: Channel,
}

impl AmqpQueue {
    /// Connects, declares the topology and opens the channels, within `connect_timeout`.
    pub async fn connect(options: AmqpOptions) -> Result<Self, Error> {
        let connect_timeout = options.connect_timeout;
        tokio::time::timeout(connect_timeout, Self::open(options))
            .await
            .map_err(|_| Error::ConnectTimeout(connect_timeout))?
    }

    async fn open(options: AmqpOptions) -> Result<Self, Error> {
        let properties = ConnectionProperties::default().with_connection_name("enrichflow".into());
        let connection = Connection::connect(&options.url, properties)
            .await
            .map_err(Error::Connect)?;
        let publish_channel = connection.create_channel().await?;
        let ready = declare_topology(&publish_channel, &options).await?;
        publish_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let attempts_queue = options.attempts_queue();
        let attempts =
            LazyConsumer::open(&connection, attempts_queue.clone(), options.prefetch).await?;
        let dead_letters =
            LazyConsumer::open(&connection, options.dead_letter_queue(), options.prefetch).await?;
        let depth = Arc::new(AtomicUsize::new(ready));
        let depth_channel = connection.create_channel().await?;
        let depth_refresher = tokio::spawn(refresh_depth(
            depth_channel.clone(),
            attempts_queue.clone(),
            options.depth_refresh_interval,
            depth.clone(),
        ));
        Ok(Self {
            connection,
            publish_channel,
            attempts,
            dead_letters,
            attempts_queue,
            depth,
            depth_refresher,
            _depth_channel: depth_channel,
        })
    }

    /// The next dead-lettered message, waiting for one; `None` once the connection is closed.
    /// Acknowledge it once the store has marked its attempt failed.
    pub async fn receive_dead_letter(&self) -> Option<DeadLetter> {
        let message = self.dead_letters.next().await?;
        Some(DeadLetter::new(message))
    }

    /// Whether the connection is up (it may still fail at the next operation).
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// Closes the connection. Deliveries not acknowledged go back to the queue for others.
    pub async fn close(&self) -> Result<(), Error> {
        self.depth_refresher.abort();
        self.connection.close(200, "closing".into()).await?;
        Ok(())
    }
}

impl Drop for AmqpQueue {
    fn drop(&mut self) {
        self.depth_refresher.abort();
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    /// Publishes a persistent message and waits for RabbitMQ's confirm.
    async fn enqueue(&self, attempt: AttemptKey) -> Result<(), Error> {
        let body = encode(&attempt).map_err(Error::Encode)?;
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into());
        // `mandatory` makes a missing queue an error instead of a silently dropped message.
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = self
            .publish_channel
            .basic_publish(
                "".into(),
                self.attempts_queue.as_str().into(),
                options,
                &body,
                properties,
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(Error::NotTaken("the broker refused it"));
        }
        if confirm.take_message().is_some() {
            return Err(Error::NotTaken("no queue to route it to"));
        }
        Ok(())
    }

    /// The next decodable attempt. Undecodable messages are rejected without requeue, which
    /// dead-letters them, and skipped. `None` once the connection is closed or lost (reconnecting
    /// is the caller's business). Cancelling a `receive` while it rejects a bad message leaves
    /// that message unacknowledged until the connection closes, when RabbitMQ requeues it.
    async fn receive(&self) -> Option<Box<dyn Delivery>> {
        loop {
            let message = self.attempts.next().await?;
            match decode(&message.data) {
                Ok(attempt) => return Some(Box::new(AmqpDelivery { attempt, message })),
                Err(error) => {
                    tracing::warn!(%error, queue = self.attempts_queue, "dead-lettering an undecodable task");
                    let reject = BasicRejectOptions { requeue: false };
                    if let Err(error) = message.reject(reject).await {
                        tracing::warn!(%error, "cannot reject an undecodable task");
                    }
                }
            }
        }
    }

    /// Messages ready in the queue (not counting unacknowledged ones) as of the declare at
    /// `connect` or the last refresh, every `depth_refresh_interval`: an approximation for the
    /// queue-depth gauge, not a figure to decide on.
    fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

struct AmqpDelivery {
    attempt: AttemptKey,
    message: AmqpMessage,
}

#[async_trait]
impl Delivery for AmqpDelivery {
    fn attempt(&self) -> &AttemptKey {
        &self.attempt
    }

    async fn ack(self: Box<Self>) {
        // A lost ack only means the attempt is delivered again, which at-least-once allows.
        if let Err(error) = self.message.ack(BasicAckOptions::default()).await {
            tracing::warn!(%error, attempt = ?self.attempt, "cannot acknowledge a task");
        }
    }
}
