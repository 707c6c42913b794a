//! Start-up recovery: whatever was in flight when the process stopped resumes from the last
//! committed state. Succeeded nodes are never run again. In the embedded mode open attempts are
//! queued again (the in-process queue died with the process); in the distributed mode they are
//! still on RabbitMQ or held by live workers, and the sweep (`dispatch`) catches the rest.
//!
//! One run's trouble is that run's alone: a run whose rows cannot be read is failed, a run whose
//! workflow revision cannot be loaded is left as it is and logged, and recovery goes on with
//! the others. Only what stops every run (the database or the queue) stops recovery.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::driver;
use crate::engine::{Error, Role};
use crate::runtime::Runtime;
use crate::store::{Listed, RunStatus, RunSummary};
use crate::unreadable;

/// Runs [`recover`]; when it fails, says so at once and cancels `shutdown`, so that start-up
/// stops (the caller returns the error, `serve` exits non-zero) instead of serving with runs
/// that will never resume.
pub async fn recover_or_stop(
    runtime: &Arc<Runtime>,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let recovered = recover(runtime).await;
    if let Err(error) = &recovered {
        tracing::error!(%error, "start-up recovery failed; stopping");
        shutdown.cancel();
    }
    recovered
}

/// Re-enqueues open attempts, re-arms run deadlines, advances running runs and admits queued ones.
pub async fn recover(runtime: &Arc<Runtime>) -> Result<(), Error> {
    let store = &runtime.store;
    let mut runs = Vec::new();
    for listed in store.unfinished_runs().await? {
        match listed {
            Listed::Run(run) => runs.push(run),
            // Failed first, so that its open attempts are cancelled before they are queued.
            Listed::Unreadable { id, error } => unreadable::fail_run(runtime, &id, &error).await?,
        }
    }
    let open = match runtime.options.role {
        Role::Embedded => store.open_attempts().await?,
        Role::Server | Role::Worker => Vec::new(),
    };
    if !runs.is_empty() {
        tracing::info!(
            runs = runs.len(),
            attempts = open.len(),
            "resuming unfinished runs"
        );
    }
    for key in open {
        crate::dispatch::dispatch(runtime, key).await?;
    }
    let mut queued_workflows: Vec<&RunSummary> = Vec::new();
    for run in &runs {
        match run.status {
            RunStatus::Running => {
                if let Some(deadline) = run.deadline_at {
                    driver::watch_deadline(runtime, &run.id, deadline);
                }
                let advanced = driver::advance(runtime, &run.id).await;
                only_this_run(&run.id, advanced)?;
            }
            _ => {
                if !queued_workflows
                    .iter()
                    .any(|queued| queued.workflow_id == run.workflow_id)
                {
                    queued_workflows.push(run);
                }
            }
        }
    }
    for run in queued_workflows {
        let admitted = admit(runtime, run).await;
        only_this_run(&run.id, admitted)?;
    }
    Ok(())
}

/// Admits the queued runs of `run`'s workflow, in its current version, or else the version
/// `run` was queued with.
async fn admit(runtime: &Arc<Runtime>, run: &RunSummary) -> Result<(), Error> {
    let current = runtime.catalog.current().get(&run.workflow_id);
    let workflow = match current {
        Some(workflow) => workflow,
        None => {
            let Some(record) = runtime.store.run(&run.id).await? else {
                return Ok(());
            };
            runtime
                .revisions
                .for_run(&record, runtime.store.as_ref())
                .await?
        }
    };
    driver::admit(runtime, &workflow).await
}

/// `result` of recovering one run: an error that concerns that run only (its workflow revision
/// cannot be loaded; its rows cannot be read, when it reaches here) is logged and recovery goes
/// on; any other error stops it.
fn only_this_run(run_id: &str, result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Err(error @ Error::Revision(..)) => {
            tracing::error!(run = %run_id, %error, "cannot resume a run");
            Ok(())
        }
        Err(error) if unreadable::is_unreadable(&error) => {
            tracing::error!(run = %run_id, %error, "cannot resume a run");
            Ok(())
        }
        other => other,
    }
}
