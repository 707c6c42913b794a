//! The `enrichflow` binary: parses the command line and maps outcomes to exit codes
//! (0 success, 1 a run failed or a workflow is invalid, 2 bad usage or unreachable service).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use enrichflow::api::{ApiOptions, JsonLimits, ServerOptions};
use enrichflow::cli::{
    Cli, Command, DistributedArgs, MigrateArgs, RunArgs, ServeArgs, ValidateArgs, WorkerArgs,
};
use enrichflow::queue::AmqpOptions;
use enrichflow::serve::{self, ServeOptions};
use enrichflow::store::{PoolOptions, RunStatus};
use enrichflow::template::Templates;
use enrichflow::worker_process::{self, WorkerOptions};
use enrichflow::workflow::{self, FileLoad};
use enrichflow::{EngineOptions, oneshot, secrets, telemetry, vars};
use enrichflow_nodes::Registry;
use tokio_util::sync::CancellationToken;

/// jemalloc rather than glibc's malloc: with its background thread on (see [`main`]), memory
/// freed after a burst of large bodies goes back to the OS within seconds of going idle; glibc
/// kept it (measured in docs/behaviour.md, "Limits: stored data and memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const FAILED: u8 = 1;
const USAGE: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    telemetry::init_logging();
    // Purging in a thread of jemalloc's own, on a timer, is what returns memory while idle:
    // without it jemalloc purges only when the process allocates again.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "jemalloc's background thread did not start");
    }
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Validate(args) => Ok(validate(args)),
        Command::Run(args) => run(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Worker(args) => worker(args).await,
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(USAGE)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let secrets = secrets::load(args.secrets_file.as_deref())?;
    let vars = vars::load(args.vars_file.as_deref())?;
    let amqp = args
        .amqp_url
        .map(|url| amqp_options(url, &args.distributed));
    // In the distributed mode `enrichflow worker` processes execute the nodes.
    let default_workers = if amqp.is_some() { 0 } else { 8 };
    let options = ServeOptions {
        workflows: args.workflows,
        database_url: args.database_url,
        pool: PoolOptions {
            max_connections: args.distributed.database_pool_size,
            durability: args.durability,
        },
        listen: args.listen,
        engine: EngineOptions {
            workers: args.workers.unwrap_or(default_workers),
            secrets,
            vars,
            lease: args.distributed.lease,
            egress: args.egress.policy(),
            ..EngineOptions::default()
        },
        api: ApiOptions {
            body_limit: args.body_limit,
            on_complete_timeout: args.webhook_timeout,
            body_read_timeout: args.http.body_read_timeout,
            json: JsonLimits {
                max_depth: count(args.http.json_max_depth),
                max_values: count(args.http.json_max_values),
            },
            max_concurrent_requests: count(args.http.max_concurrent_requests),
            server: ServerOptions {
                header_read_timeout: args.http.header_read_timeout,
                max_connections: count(args.http.max_connections),
            },
        },
        queue_capacity: 10_000,
        amqp,
        templates: args.templates.limits(),
    };
    let shutdown = CancellationToken::new();
    let server = serve::start(options, shutdown.clone()).await?;
    eprintln!("enrichflow listening on http://{}", server.addr);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests, finishing in-flight attempts");
        shutdown.cancel();
    });
    server.wait().await?;
    Ok(0)
}

async fn worker(args: WorkerArgs) -> anyhow::Result<u8> {
    let options = WorkerOptions {
        secrets: secrets::load(args.secrets_file.as_deref())?,
        vars: vars::load(args.vars_file.as_deref())?,
        amqp: amqp_options(args.amqp_url, &args.distributed),
        database_url: args.database_url,
        pool: PoolOptions {
            max_connections: args.distributed.database_pool_size,
            ..PoolOptions::default()
        },
        concurrency: args.concurrency,
        lease: args.distributed.lease,
        shutdown_grace: args.shutdown_grace,
        egress: args.egress.policy(),
        templates: args.templates.limits(),
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new attempts, finishing in-flight ones");
        signal.cancel();
    });
    worker_process::run(options, shutdown).await?;
    Ok(0)
}

fn amqp_options(url: String, distributed: &DistributedArgs) -> AmqpOptions {
    AmqpOptions {
        queue_prefix: distributed.queue_prefix.clone(),
        ..AmqpOptions::new(url)
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn validate(args: ValidateArgs) -> u8 {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("./workflows")]
    } else {
        args.paths
    };
    if let Some(missing) = paths.iter().find(|path| !path.exists()) {
        eprintln!(
            "error: cannot read {}: no such file or directory",
            missing.display()
        );
        return USAGE;
    }
    let registry = Registry::with_builtins();
    let templates = Templates::new();
    let loads = workflow::load_paths(&paths, &registry, &templates);
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    for FileLoad { result, .. } in &loads {
        match result {
            Ok(workflow) => valid.push(workflow),
            Err(file_errors) => errors.extend(file_errors.iter().cloned()),
        }
    }
    errors.extend(workflow::check_across(&valid));
    for error in &errors {
        println!("{error}");
    }
    if errors.is_empty() {
        eprintln!("{} workflow(s) valid", valid.len());
        0
    } else {
        FAILED
    }
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let input = match args.input.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
        }
        None => args.input,
    };
    let body: serde_json::Value =
        serde_json::from_str(&input).context("--input is not valid JSON")?;
    let options = EngineOptions {
        secrets: secrets::load(args.secrets_file.as_deref())?,
        vars: vars::load(args.vars_file.as_deref())?,
        egress: args.egress.policy(),
        ..EngineOptions::default()
    };
    match oneshot::run_file_with(&args.file, body, options).await {
        Ok((json, status)) => {
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(if status == RunStatus::Succeeded {
                0
            } else {
                FAILED
            })
        }
        Err(oneshot::Error::Invalid(errors)) => {
            for error in errors {
                println!("{error}");
            }
            Ok(FAILED)
        }
        Err(error) => Err(error.into()),
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<u8> {
    // Connecting applies the migrations this binary carries.
    enrichflow::store::connect(&args.database_url).await?;
    eprintln!("database is up to date");
    Ok(0)
}

/// A count from the command line (a `u32`, so clap can check its range) as a `usize`.
fn count(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
