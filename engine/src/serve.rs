//! `enrichflow serve`: the engine, the HTTP API, cron triggers and the workflow-folder watcher in
//! one process, stopped together by one cancellation token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use enrichflow_nodes::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiOptions};
use crate::catalog::{Catalog, CatalogHandle};
use crate::engine::{Engine, EngineOptions, Role};
use crate::queue::{AmqpOptions, Broker, MemoryQueue, Queue};
use crate::store;
use crate::template::{Limits, Templates};
use crate::workflow::LoadError;
use crate::{cron, telemetry};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub workflows: PathBuf,
    pub database_url: String,
    pub pool: store::PoolOptions,
    pub listen: SocketAddr,
    pub engine: EngineOptions,
    pub api: ApiOptions,
    /// Tasks the in-process queue holds before triggers wait (backpressure).
    pub queue_capacity: usize,
    /// RabbitMQ (distributed mode); `None` for the in-process queue.
    pub amqp: Option<AmqpOptions>,
    pub templates: Limits,
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot read the workflows folder {0}: {1}")]
    Workflows(PathBuf, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
    #[error(
        "the distributed mode (--amqp-url) needs a Postgres database shared by every process: \
         --database-url postgres://…"
    )]
    NeedsPostgres,
    #[error("the server task stopped abnormally: {0}")]
    Crashed(String),
}

/// A started server: where it listens and how to wait for it.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Engine,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Server {
    /// Waits until the server has shut down.
    pub async fn wait(self) -> Result<(), Error> {
        self.task
            .await
            .unwrap_or_else(|join| Err(Error::Crashed(join.to_string())))
    }
}

/// Opens the store, loads the workflows, binds the listener and starts every part; returns once
/// the server accepts connections. Everything stops when `shutdown` is cancelled.
pub async fn start(options: ServeOptions, shutdown: CancellationToken) -> Result<Server, Error> {
    if options.amqp.is_some() && !store::is_postgres_url(&options.database_url) {
        return Err(Error::NeedsPostgres);
    }
    let store = store::connect_with(&options.database_url, options.pool).await?;
    let registry = Registry::with_builtins();
    let templates = Templates::with_limits(options.templates);
    if !options.workflows.is_dir() {
        let error = std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory");
        return Err(Error::Workflows(options.workflows.clone(), error));
    }
    let (catalog, errors) = Catalog::load(&options.workflows, &registry, &templates);
    report(&errors);
    tracing::info!(workflows = catalog.list().len(), folder = %options.workflows.display(), "workflows loaded");
    let catalog = CatalogHandle::new(catalog);
    let (queue, broker, engine_options) = match &options.amqp {
        None => {
            let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(options.queue_capacity));
            (queue, None, options.engine.clone())
        }
        Some(amqp) => {
            let broker = Arc::new(Broker::connect(amqp.clone()).await?);
            let engine_options = EngineOptions {
                role: Role::Server,
                ..options.engine.clone()
            };
            (
                broker.clone() as Arc<dyn Queue>,
                Some(broker),
                engine_options,
            )
        }
    };
    let engine = Engine::build(
        engine_options,
        store,
        queue,
        catalog.clone(),
        registry.clone(),
        templates.clone(),
    );
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|error| Error::Listen(options.listen, error))?;
    let addr = listener
        .local_addr()
        .map_err(|error| Error::Listen(options.listen, error))?;
    let router = api::router(engine.clone(), options.api.clone(), telemetry::prometheus());
    tracing::info!(%addr, "listening");

    tokio::spawn(catalog.watch(
        options.workflows.clone(),
        registry,
        templates,
        shutdown.clone(),
    ));
    tokio::spawn(cron::run(engine.clone(), shutdown.clone()));
    let engine_task = tokio::spawn(engine.clone().run(shutdown.clone()));
    let http_shutdown = shutdown.clone();
    let server_options = options.api.server.clone();
    let task = tokio::spawn(async move {
        api::serve(listener, router, server_options, http_shutdown).await;
        let result = match engine_task.await {
            Ok(result) => result.map_err(Error::from),
            Err(join) => {
                tracing::error!(error = %join, "engine task failed");
                Ok(())
            }
        };
        if let Some(broker) = broker {
            broker.close().await;
        }
        result
    });
    Ok(Server { addr, engine, task })
}

fn report(errors: &[LoadError]) {
    for error in errors {
        tracing::warn!("{error}");
    }
}
