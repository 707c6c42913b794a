//! A RabbitMQ consumer on its own channel, started when first needed.

use futures::StreamExt;
use lapin::message::Delivery as AmqpMessage;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::Mutex;

use crate::queue::Error;

/// A consumer on its own channel, started at the first `next`.
pub(super) struct LazyConsumer {
    channel: Channel,
    queue: String,
    consumer: Mutex<Option<Consumer>>,
}

impl LazyConsumer {
    pub(super) async fn open(
        connection: &Connection,
        queue: String,
        prefetch: u16,
    ) -> Result<Self, Error> {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        Ok(Self {
            channel,
            queue,
            consumer: Mutex::new(None),
        })
    }

    /// The next message; `None` when the channel or connection is gone.
    pub(super) async fn next(&self) -> Option<AmqpMessage> {
        // Callers take turns on the one consumer, as with the in-memory queue's receiver.
        let mut consumer = self.consumer.lock().await;
        if consumer.is_none() {
            let tag = format!("enrichflow-{}", uuid::Uuid::now_v7().simple());
            let started = self
                .channel
                .basic_consume(
                    self.queue.as_str().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await;
            match started {
                Ok(started) => *consumer = Some(started),
                Err(error) => {
                    tracing::warn!(%error, queue = self.queue, "cannot consume from RabbitMQ");
                    return None;
                }
            }
        }
        match consumer.as_mut()?.next().await? {
            Ok(message) => Some(message),
            Err(error) => {
                tracing::warn!(%error, queue = self.queue, "the RabbitMQ consumer stopped");
                None
            }
        }
    }
}
