//! What `AmqpQueue::connect` declares, and the task that keeps the queue depth fresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::AmqpOptions;
use crate::queue::Error;

pub(super) async fn declare_topology(
    channel: &Channel,
    options: &AmqpOptions,
) -> Result<usize, Error> {
    let dead_letter_queue = options.dead_letter_queue();
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            dead_letter_queue.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            dead_letter_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            quorum_arguments(),
        )
        .await?;
    channel
        .queue_bind(
            dead_letter_queue.as_str().into(),
            dead_letter_queue.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let mut arguments = quorum_arguments();
    let delivery_limit = i32::try_from(options.delivery_limit).unwrap_or(i32::MAX);
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(delivery_limit),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dead_letter_queue.as_str().into()),
    );
    let attempts = channel
        .queue_declare(
            options.attempts_queue().as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await?;
    Ok(attempts.message_count() as usize)
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments
}

/// Keeps `depth` at the queue's ready-message count with a passive declare every `interval`.
pub(super) async fn refresh_depth(
    channel: Channel,
    queue: String,
    interval: Duration,
    depth: Arc<AtomicUsize>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(declared) => depth.store(declared.message_count() as usize, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(%error, queue, "stopped refreshing the queue depth");
                return;
            }
        }
    }
}
