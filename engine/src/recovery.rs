//! Start-up recovery: whatever was in flight when the process stopped resumes from the last
//! committed state. Succeeded nodes are never run again. In the embedded mode open attempts are
//! queued again (the in-process queue died with the process); in the distributed mode they are
//! still on RabbitMQ or held by live workers, and the sweep (`dispatch`) catches the rest.

use std::sync::Arc;

use crate::driver;
use crate::engine::{Error, Role, Shared};
use crate::store::RunStatus;

/// Re-enqueues open attempts, re-arms run deadlines, advances running runs and admits queued ones.
pub async fn recover(shared: &Arc<Shared>) -> Result<(), Error> {
    let store = &shared.store;
    let runs = store.unfinished_runs().await?;
    let open = match shared.options.role {
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
        crate::dispatch::dispatch(shared, key).await?;
    }
    let mut queued_workflows = Vec::new();
    for run in &runs {
        match run.status {
            RunStatus::Running => {
                if let Some(deadline) = run.deadline_at {
                    driver::watch_deadline(shared, &run.id, deadline);
                }
                driver::advance(shared, &run.id).await?;
            }
            _ => {
                if !queued_workflows.contains(&run.workflow_id) {
                    queued_workflows.push(run.workflow_id.clone());
                }
            }
        }
    }
    for workflow_id in queued_workflows {
        let workflow = shared.catalog.current().get(&workflow_id);
        let workflow = match workflow {
            Some(workflow) => workflow,
            None => match runs.iter().find(|run| run.workflow_id == workflow_id) {
                Some(run) => shared.revisions.for_run(run, store.as_ref()).await?,
                None => continue,
            },
        };
        driver::admit(shared, &workflow).await?;
    }
    Ok(())
}
