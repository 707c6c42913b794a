//! The distributed mode with real processes, Postgres and RabbitMQ: `serve` replicas and
//! `enrichflow worker` processes killed, stopped and restarted while runs are in flight.
//! Each test has its own database and queue prefix, removed afterwards.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};
use sqlx::Connection as _;
use wiremock::MockServer;

use crate::broker::PrivateBroker;
use crate::postgres::{TestDatabase, database};
use crate::private_postgres::PrivatePostgres;
use crate::process::{
    ServeProcess, SlowChain, WorkerProcess, arrival, finished_run, history, mount, trigger,
};

/// One deployment's shared services: a database and a queue prefix on a broker.
pub struct Deployment {
    /// A database of the shared server, dropped with the deployment; `None` on a private one.
    _database: Option<TestDatabase>,
    pub database_url: String,
    pub amqp_url: String,
    pub prefix: String,
    pub mocks: MockServer,
}

impl Deployment {
    /// A fresh database and prefix, or `None` (after saying so) without the test services.
    pub async fn new(test: &str) -> Option<Deployment> {
        let Ok(amqp_url) = std::env::var("ENRICHFLOW_TEST_AMQP_URL") else {
            println!("skipped {test}: ENRICHFLOW_TEST_AMQP_URL is not set");
            return None;
        };
        Self::on_broker(test, amqp_url).await
    }

    /// As [`Deployment::new`], on a given broker.
    pub async fn on_broker(test: &str, amqp_url: String) -> Option<Deployment> {
        crate::support::install_crypto();
        let database = database(test).await?;
        Some(Deployment {
            database_url: database.url.clone(),
            _database: Some(database),
            amqp_url,
            prefix: format!("enrichflow_it_{}", uuid::Uuid::now_v7().simple()),
            mocks: MockServer::start().await,
        })
    }

    /// A deployment on a private database server and a broker of its own choosing.
    pub async fn on_private(database_url: String, amqp_url: String) -> Deployment {
        crate::support::install_crypto();
        Deployment {
            _database: None,
            database_url,
            amqp_url,
            prefix: format!("enrichflow_it_{}", uuid::Uuid::now_v7().simple()),
            mocks: MockServer::start().await,
        }
    }

    fn workflows() -> PathBuf {
        crate::support::fixtures("distributed")
    }

    /// A `serve` replica without local workers.
    pub fn serve(&self, extra: &[&str]) -> ServeProcess {
        self.serve_workflows(&Self::workflows(), extra)
    }

    /// A `serve` replica without local workers, on another workflow folder.
    pub fn serve_workflows(&self, workflows: &std::path::Path, extra: &[&str]) -> ServeProcess {
        let mut args = vec!["--amqp-url", &self.amqp_url, "--queue-prefix", &self.prefix];
        args.extend_from_slice(extra);
        ServeProcess::start_with(workflows, &self.database_url, &self.mocks.uri(), &args)
    }

    /// An `enrichflow worker`.
    pub fn worker(&self, concurrency: usize, extra: &[&str]) -> WorkerProcess {
        let concurrency = concurrency.to_string();
        let mut args = vec![
            "--database-url",
            &self.database_url,
            "--amqp-url",
            &self.amqp_url,
            "--queue-prefix",
            &self.prefix,
            "--concurrency",
            &concurrency,
        ];
        args.extend_from_slice(extra);
        WorkerProcess::start(&self.mocks.uri(), &args)
    }
}

/// Dropped at the end of its test, after the processes declared after it (locals drop in reverse
/// order: a worker still running would declare the deleted queues again), and also when the test
/// panics, so nothing of a test outlives it on the shared services.
impl Drop for Deployment {
    fn drop(&mut self) {
        let (url, prefix) = (self.amqp_url.clone(), self.prefix.clone());
        let deleted = crate::support::block_on_aside(async move {
            delete_queues(&url, &prefix)
                .await
                .map_err(|e| e.to_string())
        });
        if let Err(error) = deleted {
            eprintln!("cannot delete the queues of {}: {error}", self.prefix);
        }
    }
}

impl Deployment {
    /// A `serve` replica and `n` workers of `concurrency` each, once all of them consume.
    async fn serve_and_workers(
        &self,
        n: usize,
        concurrency: usize,
    ) -> (ServeProcess, Vec<WorkerProcess>) {
        let server = self.serve(&[]);
        let workers: Vec<_> = (0..n).map(|_| self.worker(concurrency, &[])).collect();
        self.wait_for_consumers(u32::try_from(n).expect("a few workers"))
            .await;
        (server, workers)
    }

    /// Waits until `n` processes consume the attempts queue, so that work started next can
    /// reach each of them.
    async fn wait_for_consumers(&self, n: u32) {
        let connection = Connection::connect(&self.amqp_url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let queue = format!("{}.attempts", self.prefix);
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            // A passive declare of a queue not declared yet closes its channel: one per look.
            let channel = connection.create_channel().await.expect("a channel");
            let declared = channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await;
            if declared.is_ok_and(|queue| queue.consumer_count() >= n) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} consumers did not attach to {queue} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = connection.close(200, "done".into()).await;
    }
}

async fn delete_queues(url: &str, prefix: &str) -> Result<(), lapin::Error> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in [
        format!("{prefix}.attempts"),
        format!("{prefix}.attempts.dead"),
    ] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    channel
        .exchange_delete(
            format!("{prefix}.attempts.dead").as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    connection.close(200, "done".into()).await
}

/// Starts `n` runs of the `call` workflow; returns their ids.
async fn start_calls(client: &reqwest::Client, base_url: &str, n: usize) -> Vec<String> {
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        runs.push(trigger(client, base_url, "call").await);
    }
    runs
}

/// Calls a webhook that answers `on_complete`; returns the run's id and the answer.
async fn on_complete(
    client: &reqwest::Client,
    base_url: &str,
    hook: &str,
    body: Value,
) -> (String, Value) {
    let response = client
        .post(format!("{base_url}/hooks/{hook}"))
        .json(&body)
        .send()
        .await
        .expect("POST the webhook");
    assert_eq!(response.status(), 200);
    let run_id = response.headers()["x-enrichflow-run-id"]
        .to_str()
        .expect("a run id")
        .to_owned();
    (run_id, response.json().await.expect("JSON"))
}

/// The `worker` of every attempt in the run JSON.
fn workers_of(run: &Value) -> Vec<String> {
    run["nodes"]
        .as_object()
        .into_iter()
        .flat_map(|nodes| nodes.values())
        .flat_map(|node| node["history"].as_array().cloned().unwrap_or_default())
        .filter_map(|attempt| attempt["worker"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_webhook_answers_on_complete_with_what_workers_elsewhere_computed() {
    let Some(deployment) = Deployment::new("on_complete_across_processes").await else {
        return;
    };
    let server = deployment.serve(&[]);
    let _worker = deployment.worker(4, &[]);
    let client = reqwest::Client::new();
    for n in [1, 10, 100] {
        let (_, body) = on_complete(&client, &server.base_url, "chain", json!({ "n": n })).await;
        assert_eq!(
            body,
            json!(n + 4),
            "five nodes, each adding one after the first"
        );
    }
    drop(server);
}

#[tokio::test]
async fn three_workers_share_the_load() {
    let Some(deployment) = Deployment::new("three_workers_share_the_load").await else {
        return;
    };
    let delays = vec![Duration::from_millis(200); 30];
    let (calls, _arrivals) = mount(&deployment.mocks, "call", delays).await;
    let (server, workers) = deployment.serve_and_workers(3, 2).await;
    let client = reqwest::Client::new();
    let runs = start_calls(&client, &server.base_url, 30).await;
    let mut seen = HashSet::new();
    for run_id in &runs {
        let run = finished_run(&client, &server.base_url, run_id).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        seen.extend(workers_of(&run));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 30, "each node ran once");
    assert_eq!(seen.len(), 3, "every worker took attempts: {seen:?}");
    drop(workers);
    drop(server);
}

#[tokio::test]
async fn a_worker_runs_the_rest_of_a_chain_itself() {
    let Some(deployment) = Deployment::new("worker_runs_the_chain").await else {
        return;
    };
    let (server, workers) = deployment.serve_and_workers(2, 2).await;
    let client = reqwest::Client::new();
    let mut seen = HashSet::new();
    for n in 0..10 {
        let (run_id, _) = on_complete(&client, &server.base_url, "chain", json!({ "n": n })).await;
        let run = finished_run(&client, &server.base_url, &run_id).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let holders: HashSet<_> = workers_of(&run).into_iter().collect();
        // Through RabbitMQ each of the five hops could go to either worker.
        assert_eq!(holders.len(), 1, "one worker ran the whole chain: {run:#}");
        seen.extend(holders);
    }
    assert_eq!(seen.len(), 2, "both workers took first nodes: {seen:?}");
    drop(workers);
    drop(server);
}

#[tokio::test]
async fn a_wide_fan_out_spreads_over_the_workers() {
    let Some(deployment) = Deployment::new("wide_fan_out_spreads").await else {
        return;
    };
    let (server, workers) = deployment.serve_and_workers(2, 2).await;
    let client = reqwest::Client::new();
    let (run_id, answer) = on_complete(&client, &server.base_url, "fan-out", json!({})).await;
    assert_eq!(answer, json!(21));
    let run = finished_run(&client, &server.base_url, &run_id).await;
    let holders: HashSet<_> = workers_of(&run).into_iter().collect();
    // The worker that ran `a` kept at most two rounds of its two slots; the rest went through
    // RabbitMQ, which hands messages to both consumers in turn.
    assert_eq!(holders.len(), 2, "both workers ran nodes: {run:#}");
    drop(workers);
    drop(server);
}

#[tokio::test]
async fn a_run_cancelled_while_a_worker_runs_its_chain_stays_cancelled() {
    let Some(deployment) = Deployment::new("cancel_mid_chain").await else {
        return;
    };
    let slow = Duration::from_secs(2);
    let mut chain = SlowChain::mount(&deployment.mocks, slow).await;
    let server = deployment.serve(&[]);
    let _worker = deployment.worker(2, &[]);
    let client = reqwest::Client::new();
    // `slow` runs on the worker that ran `first`, claimed in `first`'s commit.
    let run_id = chain.start(&client, &server.base_url).await;
    let cancelled = client
        .post(format!("{}/api/v1/runs/{run_id}/cancel", server.base_url))
        .send()
        .await
        .expect("POST cancel");
    assert_eq!(cancelled.status(), 202);
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "cancelled", "{run:#}");
    // The worker finishes `slow` from the run as it last wrote it: the cancel changed the run
    // since, so that outcome must not be written, and `last` must not run.
    tokio::time::sleep(slow + Duration::from_secs(1)).await;
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert_eq!(history(&run, "slow"), ["cancelled"], "{run:#}");
    assert!(
        !history(&run, "last").contains(&"succeeded".to_owned()),
        "{run:#}"
    );
    assert_eq!(chain.slow_calls.load(Ordering::SeqCst), 1);
    drop(server);
}

#[tokio::test]
async fn a_claimed_node_waiting_for_a_slot_does_not_start_once_its_run_is_cancelled() {
    let Some(deployment) = Deployment::new("claimed_waits_then_cancelled").await else {
        return;
    };
    let slow = Duration::from_secs(2);
    let (_, mut slow_arrived) = mount(&deployment.mocks, "slow", vec![slow]).await;
    let (other_calls, _) = mount(&deployment.mocks, "other", Vec::new()).await;
    let server = deployment.serve(&[]);
    // One slot: `slow` runs in the slot `a` leaves, `other` is claimed and waits for it.
    let _worker = deployment.worker(1, &[]);
    let client = reqwest::Client::new();
    let run_id = trigger(&client, &server.base_url, "cancel-fan").await;
    arrival(&mut slow_arrived).await;
    let cancelled = client
        .post(format!("{}/api/v1/runs/{run_id}/cancel", server.base_url))
        .send()
        .await
        .expect("POST cancel");
    assert_eq!(cancelled.status(), 202);
    // `slow` ends, its slot frees, and the waiting claim looks at the run before it starts.
    tokio::time::sleep(slow + Duration::from_secs(2)).await;
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert_eq!(
        other_calls.load(Ordering::SeqCst),
        0,
        "a node of a cancelled run started: {run:#}"
    );
    drop(server);
}

#[tokio::test]
async fn a_worker_killed_in_the_middle_of_an_attempt_is_replaced_and_the_run_succeeds() {
    let Some(deployment) = Deployment::new("worker_killed_mid_attempt").await else {
        return;
    };
    let mut chain = SlowChain::mount(&deployment.mocks, Duration::from_secs(60)).await;
    // The worker that ran `first` claimed `slow` in the same commit (local continuation), so
    // it is its lease, not a redelivery, that hands `slow` on: short here to keep the test short.
    let lease = ["--lease", "3s"];
    let server = deployment.serve(&lease);
    let doomed = deployment.worker(2, &lease);
    let client = reqwest::Client::new();
    let run_id = chain.start(&client, &server.base_url).await;
    doomed.signal("-KILL");
    let _replacement = deployment.worker(2, &lease);
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        chain.first_calls.load(Ordering::SeqCst),
        1,
        "finished nodes never run again"
    );
    assert_eq!(
        chain.slow_calls.load(Ordering::SeqCst),
        2,
        "the interrupted attempt ran again"
    );
    assert_eq!(
        history(&run, "slow"),
        ["succeeded"],
        "one attempt, redelivered"
    );
    drop(doomed);
    drop(server);
}

#[tokio::test]
async fn a_server_killed_in_the_middle_of_a_run_loses_nothing() {
    let Some(deployment) = Deployment::new("server_killed_mid_run").await else {
        return;
    };
    let mut chain = SlowChain::mount(&deployment.mocks, Duration::from_secs(2)).await;
    let doomed = deployment.serve(&[]);
    let _worker = deployment.worker(2, &[]);
    let client = reqwest::Client::new();
    let run_id = chain.start(&client, &doomed.base_url).await;
    drop(doomed); // SIGKILL
    let replica = deployment.serve(&[]);
    let run = finished_run(&client, &replica.base_url, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["output"], json!({"ok": 0}));
    assert_eq!(chain.first_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        chain.slow_calls.load(Ordering::SeqCst),
        1,
        "the worker was not disturbed"
    );
    drop(replica);
}

#[tokio::test]
async fn a_stopped_worker_loses_its_lease_and_another_worker_finishes_the_attempt() {
    let Some(deployment) = Deployment::new("stopped_worker_loses_lease").await else {
        return;
    };
    let mut chain = SlowChain::mount(&deployment.mocks, Duration::from_secs(1)).await;
    let lease = ["--lease", "2s"];
    let server = deployment.serve(&lease);
    // Concurrency 1: with its one delivery unacknowledged, RabbitMQ sends it nothing more.
    let frozen = deployment.worker(1, &lease);
    let client = reqwest::Client::new();
    let run_id = chain.start(&client, &server.base_url).await;
    // Stopped, not dead: its connection to RabbitMQ stays open, so only the lease can tell.
    frozen.signal("-STOP");
    let _healthy = deployment.worker(2, &lease);
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(chain.slow_calls.load(Ordering::SeqCst), 2);
    let holders = workers_of(&run);
    assert_eq!(
        holders.len(),
        3,
        "first, slow and last each show one worker: {holders:?}"
    );
    drop(frozen);
    drop(server);
}

#[tokio::test]
async fn sigterm_lets_a_worker_finish_its_attempt_before_it_exits() {
    let Some(deployment) = Deployment::new("worker_sigterm").await else {
        return;
    };
    let mut chain = SlowChain::mount(&deployment.mocks, Duration::from_secs(1)).await;
    let server = deployment.serve(&[]);
    let leaving = deployment.worker(2, &[]);
    let client = reqwest::Client::new();
    let run_id = chain.start(&client, &server.base_url).await;
    let status = leaving.terminate();
    assert!(status.success(), "the worker exits cleanly: {status}");
    // The last node, which it had kept for itself, is published for whoever comes next rather
    // than left to wait for its lease to run out.
    let mut database = sqlx::PgConnection::connect(&deployment.database_url)
        .await
        .expect("connect to the test database");
    let last: (String, bool) = sqlx::query_as(
        "SELECT status, dispatched FROM node_attempts WHERE run_id = $1 AND node_id = 'last'",
    )
    .bind(&run_id)
    .fetch_one(&mut database)
    .await
    .expect("the last node's attempt");
    assert_eq!(last, ("running".to_owned(), true));
    let _next = deployment.worker(2, &[]);
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        chain.slow_calls.load(Ordering::SeqCst),
        1,
        "the attempt was finished, not redone"
    );
    drop(server);
}

/// Polls `/readyz` until it answers `status`; returns the last body.
async fn readiness(client: &reqwest::Client, base_url: &str, status: u16) -> Value {
    for _ in 0..200 {
        let response = client
            .get(format!("{base_url}/readyz"))
            .send()
            .await
            .expect("GET /readyz");
        if response.status() == status {
            return response.json().await.expect("JSON");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz did not answer {status} within 10 s");
}

#[tokio::test]
async fn restarting_rabbitmq_while_runs_flow_loses_none() {
    let Some(broker) = PrivateBroker::start().await else {
        return;
    };
    let Some(deployment) = Deployment::on_broker("rabbitmq_restart", broker.url()).await else {
        return;
    };
    let delays = vec![Duration::from_millis(100); 60];
    let (calls, _arrivals) = mount(&deployment.mocks, "call", delays).await;
    let server = deployment.serve(&[]);
    let workers = [deployment.worker(2, &[]), deployment.worker(2, &[])];
    let client = reqwest::Client::new();
    let mut runs = start_calls(&client, &server.base_url, 20).await;
    broker.stop().await;
    let down = readiness(&client, &server.base_url, 503).await;
    assert_eq!(down["down"], json!(["broker"]));
    // Webhooks still take runs while the broker is away; their attempts wait in the outbox.
    runs.extend(start_calls(&client, &server.base_url, 10).await);
    broker.start_again().await;
    readiness(&client, &server.base_url, 200).await;
    runs.extend(start_calls(&client, &server.base_url, 10).await);
    for run_id in &runs {
        let run = finished_run(&client, &server.base_url, run_id).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    assert!(
        calls.load(Ordering::SeqCst) >= runs.len(),
        "every run called"
    );
    drop(workers);
    drop(server);
}

/// Publishes `body` to the dead-letter exchange as RabbitMQ does when it gives up on a task.
async fn dead_letter(deployment: &Deployment, body: &[u8], reason: &str) {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let connection = Connection::connect(&deployment.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let mut headers = FieldTable::default();
    headers.insert(
        "x-first-death-reason".into(),
        AMQPValue::LongString(reason.into()),
    );
    let exchange = format!("{}.attempts.dead", deployment.prefix);
    channel
        .basic_publish(
            exchange.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    connection.close(200, "done".into()).await.expect("close");
}

#[tokio::test]
async fn an_attempt_rabbitmq_gave_up_on_fails_its_run_with_the_reason() {
    let Some(deployment) = Deployment::new("dead_letter_fails_attempt").await else {
        return;
    };
    // No worker: the attempt waits in the queue until RabbitMQ "gives up" on it.
    let server = deployment.serve(&[]);
    let client = reqwest::Client::new();
    let run_id = trigger(&client, &server.base_url, "call").await;
    dead_letter(&deployment, b"not a task", "rejected").await;
    let task = json!({ "run_id": run_id, "node_id": "call", "attempt": 1 });
    dead_letter(&deployment, task.to_string().as_bytes(), "delivery_limit").await;
    let run = finished_run(&client, &server.base_url, &run_id).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = &run["nodes"]["call"]["error"];
    assert_eq!(error["kind"], "dead_letter", "{run:#}");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains("delivered too many times"), "{message}");
    drop(server);
}

#[tokio::test]
async fn restarting_postgres_while_runs_flow_loses_none() {
    let Ok(amqp_url) = std::env::var("ENRICHFLOW_TEST_AMQP_URL") else {
        println!("skipped: ENRICHFLOW_TEST_AMQP_URL is not set");
        return;
    };
    let Some(postgres) = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("start PostgreSQL")
    else {
        return;
    };
    let deployment = Deployment::on_private(postgres.url(), amqp_url).await;
    let delays = vec![Duration::from_millis(100); 60];
    let (calls, _arrivals) = mount(&deployment.mocks, "call", delays).await;
    let server = deployment.serve(&[]);
    let workers = [deployment.worker(2, &[]), deployment.worker(2, &[])];
    let client = reqwest::Client::new();
    let mut runs = start_calls(&client, &server.base_url, 20).await;
    postgres.stop();
    let down = readiness(&client, &server.base_url, 503).await;
    assert_eq!(down["down"], json!(["database"]));
    // Nothing can be recorded, so a webhook is refused (and the sender retries), not lost.
    let refused = client
        .post(format!("{}/hooks/call", server.base_url))
        .json(&json!({}))
        .send()
        .await
        .expect("POST during the outage");
    assert_eq!(refused.status(), 503, "{:?}", refused.text().await);
    postgres.start_again();
    readiness(&client, &server.base_url, 200).await;
    runs.extend(start_calls(&client, &server.base_url, 10).await);
    for run_id in &runs {
        let run = finished_run(&client, &server.base_url, run_id).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    assert!(
        calls.load(Ordering::SeqCst) >= runs.len(),
        "every run called"
    );
    drop(workers);
    drop(server);
}
