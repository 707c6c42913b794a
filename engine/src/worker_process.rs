//! `enrichflow worker`: a process that only executes attempts from RabbitMQ and advances their
//! runs (distributed mode). It needs no workflow folder: each run carries its revision, read from
//! the store.

use std::sync::Arc;
use std::time::Duration;

use enrichflow_nodes::{Registry, Secrets};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogHandle};
use crate::engine::{Engine, EngineOptions, Role};
use crate::queue::{AmqpOptions, Broker, Queue};
use crate::store;
use crate::template::{Limits, Templates};

/// Everything `worker` needs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub database_url: String,
    pub pool: store::PoolOptions,
    pub amqp: AmqpOptions,
    pub concurrency: usize,
    pub secrets: Secrets,
    /// Values templates read as `vars.<NAME>`.
    pub vars: crate::vars::Vars,
    pub lease: Duration,
    pub shutdown_grace: Duration,
    pub egress: enrichflow_nodes::egress::Policy,
    pub templates: Limits,
}

/// Why `worker` could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::Error),
    #[error(
        "`enrichflow worker` needs the Postgres database of the `serve` replicas: --database-url postgres://…"
    )]
    NeedsPostgres,
}

/// Connects and executes attempts until `shutdown`; then stops taking new ones, finishes those
/// in flight (up to the grace period) and hands back what it had prefetched.
pub async fn run(options: WorkerOptions, shutdown: CancellationToken) -> Result<(), Error> {
    if !store::is_postgres_url(&options.database_url) {
        return Err(Error::NeedsPostgres);
    }
    let store = store::connect_with(&options.database_url, options.pool).await?;
    let concurrency = options.concurrency.max(1);
    let amqp = AmqpOptions {
        prefetch: u16::try_from(concurrency).unwrap_or(u16::MAX),
        ..options.amqp
    };
    let broker = Arc::new(Broker::connect(amqp).await?);
    let engine_options = EngineOptions {
        role: Role::Worker,
        workers: concurrency,
        shutdown_grace: options.shutdown_grace,
        secrets: options.secrets,
        vars: options.vars,
        lease: options.lease,
        egress: options.egress,
        ..EngineOptions::default()
    };
    let engine = Engine::build(
        engine_options,
        store,
        broker.clone() as Arc<dyn Queue>,
        CatalogHandle::new(Catalog::from_workflows(Vec::new())),
        Registry::with_builtins(),
        Templates::with_limits(options.templates),
    );
    tracing::info!(concurrency, "worker started");
    let result = engine.run(shutdown).await;
    broker.close().await;
    Ok(result?)
}
