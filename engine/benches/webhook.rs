//! Benchmark: runs/s and latency of a 5-node `transform` workflow triggered through the webhook
//! with `respond: on_complete`, every run persisted. Run with
//! `cargo bench -p enrichflow --bench webhook`; `BENCH_SECONDS`, `BENCH_CLIENTS`, `BENCH_WORKERS`
//! and `BENCH_DATABASE_DIR` (default: the temp dir) tune it.
//!
//! The distributed mode: with `BENCH_DATABASE_URL=postgres://…` (a server where a database may
//! be created) and `BENCH_AMQP_URL=amqp://…`, the webhook goes to a `serve` without local workers
//! and `BENCH_REMOTE_WORKERS` (default 1) `enrichflow worker` processes execute the nodes; the
//! database and queues are created for the run and removed afterwards.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichflow::EngineOptions;
use enrichflow::api::ApiOptions;
use enrichflow::queue::AmqpOptions;
use enrichflow::serve::{self, ServeOptions};
use sqlx::{AssertSqlSafe, Connection};
use tokio_util::sync::CancellationToken;

const NODES: f64 = 5.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds = env_number("BENCH_SECONDS", 10);
    let clients = env_number("BENCH_CLIENTS", 16) as usize;
    // BENCH_DATABASE_DIR=/dev/shm separates the engine's own cost from the disk's.
    let directory = std::env::var_os("BENCH_DATABASE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let database = directory.join(format!("enrichflow-bench-{}.db", uuid::Uuid::now_v7()));
    let distributed = Distributed::from_env().await?;
    let shutdown = CancellationToken::new();
    let options = ServeOptions {
        pool: enrichflow::store::PoolOptions::default(),
        workflows: Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures"),
        database_url: match &distributed {
            Some(distributed) => distributed.database_url.clone(),
            None => format!("sqlite://{}", database.display()),
        },
        listen: "127.0.0.1:0".parse()?,
        engine: EngineOptions {
            workers: match &distributed {
                Some(_) => 0,
                None => env_number("BENCH_WORKERS", 8) as usize,
            },
            ..EngineOptions::default()
        },
        api: ApiOptions::default(),
        queue_capacity: 10_000,
        amqp: distributed.as_ref().map(|distributed| AmqpOptions {
            queue_prefix: distributed.prefix.clone(),
            ..AmqpOptions::new(distributed.amqp_url.clone())
        }),
        templates: enrichflow::template::Limits::default(),
    };
    let server = serve::start(options, shutdown.clone()).await?;
    let mut workers = match &distributed {
        Some(distributed) => distributed.spawn_workers()?,
        None => Vec::new(),
    };
    let url = format!("http://{}/hooks/bench", server.addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;

    // Sequential runs: the latency of one run alone, i.e. the engine's overhead per node.
    let sequential = measure(
        &client,
        &url,
        1,
        Duration::from_secs(seconds.div_ceil(3).max(1)),
    )
    .await?;
    let concurrent = measure(&client, &url, clients, Duration::from_secs(seconds)).await?;

    let mode = match &distributed {
        Some(distributed) => format!(
            "Postgres + RabbitMQ, {} worker process(es)",
            distributed.workers
        ),
        None => "SQLite".to_owned(),
    };
    println!(
        "5-node transform workflow via webhook (respond: on_complete), {mode}, every run persisted"
    );
    report("1 client", &sequential);
    report(&format!("{clients} clients"), &concurrent);
    println!(
        "overhead per node (1 client, p50 / 5 nodes): {:.1} µs",
        percentile(&sequential.latencies, 0.50).as_secs_f64() * 1e6 / NODES
    );

    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    shutdown.cancel();
    server.wait().await?;
    if let Some(distributed) = distributed {
        distributed.remove().await?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    Ok(())
}

struct Sample {
    latencies: Vec<Duration>,
    elapsed: Duration,
    failures: usize,
}

async fn measure(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    length: Duration,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let deadline = started + length;
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let client = client.clone();
        let url = url.to_owned();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = client_index as u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .json(&serde_json::json!({"n": n}))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    _ => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                n += clients as u64;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    latencies.sort();
    Ok(Sample {
        latencies,
        elapsed: started.elapsed(),
        failures: failures.load(std::sync::atomic::Ordering::Relaxed),
    })
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

fn report(label: &str, sample: &Sample) {
    let runs = sample.latencies.len();
    println!(
        "{label:>10}: {runs} runs in {:.1} s = {:.0} runs/s; p50 {:.2} ms, p99 {:.2} ms; {} failed",
        sample.elapsed.as_secs_f64(),
        runs as f64 / sample.elapsed.as_secs_f64(),
        percentile(&sample.latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&sample.latencies, 0.99).as_secs_f64() * 1e3,
        sample.failures,
    );
}

/// The services of a distributed run of the benchmark, created for it.
struct Distributed {
    admin_url: String,
    name: String,
    database_url: String,
    amqp_url: String,
    prefix: String,
    workers: usize,
}

impl Distributed {
    async fn from_env() -> anyhow::Result<Option<Distributed>> {
        let (Ok(admin_url), Ok(amqp_url)) = (
            std::env::var("BENCH_DATABASE_URL"),
            std::env::var("BENCH_AMQP_URL"),
        ) else {
            return Ok(None);
        };
        let id = uuid::Uuid::now_v7().simple();
        let name = format!("enrichflow_bench_{id}");
        let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        Ok(Some(Distributed {
            database_url: format!("{base}/{name}"),
            admin_url,
            name,
            amqp_url,
            prefix: format!("enrichflow_bench_{id}"),
            workers: env_number("BENCH_REMOTE_WORKERS", 1) as usize,
        }))
    }

    fn spawn_workers(&self) -> anyhow::Result<Vec<std::process::Child>> {
        let concurrency = env_number("BENCH_WORKERS", 8).to_string();
        (0..self.workers)
            .map(|_| {
                std::process::Command::new(env!("CARGO_BIN_EXE_enrichflow"))
                    .args(["worker", "--database-url", &self.database_url])
                    .args(["--amqp-url", &self.amqp_url, "--queue-prefix", &self.prefix])
                    .args(["--concurrency", &concurrency])
                    .env("RUST_LOG", "warn")
                    .spawn()
                    .map_err(anyhow::Error::from)
            })
            .collect()
    }

    async fn remove(self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::raw_sql(AssertSqlSafe(drop))
            .execute(&mut admin)
            .await?;
        let connection =
            lapin::Connection::connect(&self.amqp_url, lapin::ConnectionProperties::default())
                .await?;
        let channel = connection.create_channel().await?;
        for queue in [
            format!("{}.attempts", self.prefix),
            format!("{}.attempts.dead", self.prefix),
        ] {
            channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await?;
        }
        channel
            .exchange_delete(
                format!("{}.attempts.dead", self.prefix).as_str().into(),
                Default::default(),
            )
            .await?;
        Ok(())
    }
}
