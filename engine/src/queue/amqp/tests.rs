//! Tests of the RabbitMQ queue against the broker at `ENRICHFLOW_TEST_AMQP_URL`, each under its
//! own queue prefix, deleted afterwards even when the test fails.

use std::future::Future;
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

use super::*;

const URL_VARIABLE: &str = "ENRICHFLOW_TEST_AMQP_URL";
const PATIENCE: Duration = Duration::from_secs(10);

fn key(run_id: &str, attempt: u32) -> AttemptKey {
    AttemptKey {
        run_id: run_id.to_owned(),
        node_id: "fetch_company".to_owned(),
        attempt,
    }
}

fn options(url: &str, prefix: &str) -> AmqpOptions {
    AmqpOptions {
        queue_prefix: prefix.to_owned(),
        prefetch: 4,
        connect_timeout: Duration::from_secs(5),
        ..AmqpOptions::new(url)
    }
}

/// Runs `check(url, prefix)` in its own task, deletes the prefix's queues and exchange, then
/// re-raises the check's panic, if any.
async fn with_broker<Check, Checked>(check: Check)
where
    Check: FnOnce(String, String) -> Checked,
    Checked: Future<Output = ()> + Send + 'static,
{
    let Ok(url) = std::env::var(URL_VARIABLE) else {
        println!("skipped: {URL_VARIABLE} is not set");
        return;
    };
    let prefix = format!("enrichflow_test_{}", uuid::Uuid::now_v7().simple());
    let outcome = tokio::spawn(check(url.clone(), prefix.clone())).await;
    let cleaned = delete_topology(&url, &prefix).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
    cleaned.expect("delete the test queues");
}

async fn delete_topology(url: &str, prefix: &str) -> Result<(), lapin::Error> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let options = options(url, prefix);
    for queue in [options.attempts_queue(), options.dead_letter_queue()] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    channel
        .exchange_delete(
            options.dead_letter_queue().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    connection.close(200, "done".into()).await
}

async fn connect(url: &str, prefix: &str) -> AmqpQueue {
    AmqpQueue::connect(options(url, prefix))
        .await
        .expect("connect to RabbitMQ")
}

async fn receive(queue: &AmqpQueue) -> Box<dyn Delivery> {
    tokio::time::timeout(PATIENCE, queue.receive())
        .await
        .expect("a task within the patience")
        .expect("the queue is open")
}

#[tokio::test]
async fn a_task_round_trips_with_its_key() {
    with_broker(|url, prefix| async move {
        let queue = connect(&url, &prefix).await;
        let sent = AttemptKey {
            run_id: "0193-run/ü \"quoted\"".to_owned(),
            node_id: "enrich.company".to_owned(),
            attempt: 7,
        };
        queue.enqueue(sent.clone()).await.expect("enqueue");
        let delivery = receive(&queue).await;
        assert_eq!(delivery.attempt(), &sent);
        delivery.ack().await;
        queue.close().await.expect("close");

        // The acknowledged task is gone: a fresh declare counts no message.
        let reopened = connect(&url, &prefix).await;
        assert_eq!(reopened.depth(), 0);
        reopened.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn one_consumer_receives_in_order_and_depth_counts_waiting_tasks() {
    with_broker(|url, prefix| async move {
        let producer = connect(&url, &prefix).await;
        for attempt in 1..=5 {
            producer
                .enqueue(key("run", attempt))
                .await
                .expect("enqueue");
        }
        let consumer = connect(&url, &prefix).await;
        assert_eq!(consumer.depth(), 5, "the declare at connect counts them");
        for attempt in 1..=5 {
            let delivery = receive(&consumer).await;
            assert_eq!(delivery.attempt(), &key("run", attempt));
            delivery.ack().await;
        }
        producer.close().await.expect("close");
        consumer.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn an_unacknowledged_task_is_redelivered_once_its_consumer_goes_away() {
    with_broker(|url, prefix| async move {
        let first_worker = connect(&url, &prefix).await;
        first_worker.enqueue(key("run", 1)).await.expect("enqueue");
        let delivery = receive(&first_worker).await;
        assert_eq!(delivery.attempt(), &key("run", 1));
        drop(delivery);
        first_worker.close().await.expect("close");

        let second_worker = connect(&url, &prefix).await;
        let redelivered = receive(&second_worker).await;
        assert_eq!(redelivered.attempt(), &key("run", 1));
        redelivered.ack().await;
        second_worker.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_and_receive_goes_on() {
    with_broker(|url, prefix| async move {
        let queue = connect(&url, &prefix).await;
        let raw = b"not a task".as_slice();
        let confirm = queue
            .publish_channel
            .basic_publish(
                "".into(),
                queue.attempts_queue.as_str().into(),
                BasicPublishOptions::default(),
                raw,
                BasicProperties::default().with_delivery_mode(PERSISTENT),
            )
            .await
            .expect("publish raw bytes")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
        queue.enqueue(key("run", 2)).await.expect("enqueue");

        let delivery = receive(&queue).await;
        assert_eq!(
            delivery.attempt(),
            &key("run", 2),
            "the bad message is skipped"
        );
        delivery.ack().await;

        let dead = tokio::time::timeout(PATIENCE, queue.receive_dead_letter())
            .await
            .expect("a dead letter within the patience")
            .expect("the queue is open");
        assert_eq!(dead.body, raw);
        assert_eq!(dead.attempt, None);
        assert_eq!(dead.reason, "rejected");
        dead.ack().await.expect("ack the dead letter");
        queue.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn a_task_delivered_past_the_limit_is_dead_lettered_with_its_key() {
    with_broker(|url, prefix| async move {
        let options = AmqpOptions {
            delivery_limit: 1,
            ..options(&url, &prefix)
        };
        let producer = AmqpQueue::connect(options.clone()).await.expect("connect");
        producer.enqueue(key("run", 3)).await.expect("enqueue");
        producer.close().await.expect("close");

        // Each worker takes the task and goes away without acknowledging it, until RabbitMQ
        // gives up on the task and dead-letters it.
        let mut n_deliveries = 0;
        let dead = loop {
            assert!(
                n_deliveries <= 3,
                "still redelivered after {n_deliveries} deliveries"
            );
            let worker = AmqpQueue::connect(options.clone()).await.expect("connect");
            let outcome = tokio::time::timeout(PATIENCE, async {
                tokio::select! {
                    delivery = worker.receive() => Err(delivery.expect("the queue is open")),
                    dead = worker.receive_dead_letter() => Ok(dead.expect("the queue is open")),
                }
            })
            .await
            .expect("a delivery or a dead letter within the patience");
            match outcome {
                Ok(dead) => break (worker, dead),
                Err(delivery) => {
                    assert_eq!(delivery.attempt(), &key("run", 3));
                    n_deliveries += 1;
                    drop(delivery);
                    worker.close().await.expect("close");
                }
            }
        };
        let (worker, dead) = dead;
        assert_eq!(
            n_deliveries, 2,
            "delivered once, then once more within the limit"
        );
        assert_eq!(dead.attempt, Some(key("run", 3)));
        assert_eq!(dead.reason, "delivery_limit");
        dead.ack().await.expect("ack the dead letter");
        worker.close().await.expect("close");
    })
    .await;
}

// These need no broker: a refused port, a malformed URL, and a server that never answers.

#[tokio::test]
async fn connecting_to_a_closed_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let error = AmqpQueue::connect(options(&url, "unused"))
        .await
        .err()
        .expect("no broker there");
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert!(error.to_string().starts_with("cannot connect to RabbitMQ"));
}

#[tokio::test]
async fn a_malformed_url_is_a_connect_error() {
    let error = AmqpQueue::connect(options("rabbit://nowhere::", "unused"))
        .await
        .err()
        .expect("not a URL");
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
}

#[tokio::test]
async fn a_silent_server_times_out_instead_of_hanging() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accepts connections and never says a word.
    let silent_server = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let options = AmqpOptions {
        connect_timeout: Duration::from_millis(300),
        ..options(&format!("amqp://127.0.0.1:{port}/%2f"), "unused")
    };
    let started = Instant::now();
    let error = AmqpQueue::connect(options)
        .await
        .err()
        .expect("a silent server");
    assert!(matches!(error, Error::ConnectTimeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    silent_server.abort();
}
