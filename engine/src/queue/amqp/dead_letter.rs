//! Messages RabbitMQ moved to the dead-letter queue, for the store to mark their attempts failed.

use lapin::message::Delivery as AmqpMessage;
use lapin::options::BasicAckOptions;
use lapin::types::AMQPValue;

use super::decode;
use crate::queue::Error;
use crate::store::AttemptKey;

/// A message from the dead-letter queue.
pub struct DeadLetter {
    /// The attempt, or `None` if the message was not a valid task.
    pub attempt: Option<AttemptKey>,
    /// Why RabbitMQ dead-lettered it (`x-first-death-reason`): `rejected` for an undecodable
    /// task, `delivery_limit` for one delivered too often, `unknown` if the header is missing.
    pub reason: String,
    /// The message body as published.
    pub body: Vec<u8>,
    message: AmqpMessage,
}

impl DeadLetter {
    pub(super) fn new(message: AmqpMessage) -> Self {
        let reason = message
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get("x-first-death-reason"))
            .map_or_else(|| "unknown".to_owned(), header_text);
        Self {
            attempt: decode(&message.data).ok(),
            reason,
            body: message.data.clone(),
            message,
        }
    }

    /// Removes the message from the dead-letter queue.
    pub async fn ack(self) -> Result<(), Error> {
        self.message.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

fn header_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(text) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        AMQPValue::ShortString(text) => text.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}
