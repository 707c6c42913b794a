//! `enrichflow run`: one workflow file, one run, in-process, on a throw-away in-memory store.

use std::path::Path;
use std::sync::Arc;

use enrichflow_nodes::{Registry, Secrets};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogHandle};
use crate::engine::{Engine, EngineOptions, TriggerRequest};
use crate::queue::MemoryQueue;
use crate::store::{self, RunStatus, SqliteStore};
use crate::template::Templates;
use crate::workflow::{self, LoadError};

/// Why a one-shot run could not happen (as opposed to a run that failed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("the workflow is invalid")]
    Invalid(Vec<LoadError>),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::Error),
}

/// Runs the workflow in `file` with `body` as `trigger.body`; returns the run JSON and its status.
pub async fn run_file(
    file: &Path,
    body: Value,
    secrets: Secrets,
) -> Result<(Value, RunStatus), Error> {
    let options = EngineOptions {
        secrets,
        ..EngineOptions::default()
    };
    run_file_with(file, body, options).await
}

/// [`run_file`] with engine options of its own (the egress policy of `enrichflow run`'s flags,
/// or a test's fake upstreams on loopback).
pub async fn run_file_with(
    file: &Path,
    body: Value,
    options: EngineOptions,
) -> Result<(Value, RunStatus), Error> {
    let text = std::fs::read_to_string(file)
        .map_err(|error| Error::Read(file.display().to_string(), error))?;
    let registry = Registry::with_builtins();
    let templates = Templates::new();
    let workflow =
        workflow::load_str(file, &text, &registry, &templates).map_err(Error::Invalid)?;
    let workflow = Arc::new(workflow);
    let store = Arc::new(SqliteStore::connect("sqlite::memory:").await?);
    let engine = Engine::build(
        options,
        store,
        Arc::new(MemoryQueue::new(1024)),
        CatalogHandle::new(Catalog::from_workflows(vec![workflow.clone()])),
        registry,
        templates,
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(shutdown.clone()));
    let request = TriggerRequest {
        workflow,
        trigger: json!({ "type": "manual", "body": body }).into(),
        idempotency_key: None,
        idempotency_body_hash: None,
    };
    let result = execute(&engine, request).await;
    shutdown.cancel();
    let _ = running.await;
    result
}

async fn execute(engine: &Engine, request: TriggerRequest) -> Result<(Value, RunStatus), Error> {
    let run = engine.trigger(request).await?.run;
    // The run's own `timeout` bounds it; without one it may take as long as its nodes do.
    let finished = loop {
        if let Some(run) = engine
            .wait(&run.id, std::time::Duration::from_secs(3600))
            .await?
        {
            break run;
        }
    };
    let json = engine.run_json(&finished.id).await?.unwrap_or(Value::Null);
    Ok((json, finished.status))
}
