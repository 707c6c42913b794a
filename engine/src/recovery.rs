//! Start-up recovery: whatever was in flight when the process stopped resumes from the last
//! committed state. Succeeded nodes are never run again; open attempts are queued again.

use std::sync::Arc;

use crate::driver;
use crate::engine::{Error, Shared};
use crate::store::RunStatus;

/// Re-enqueues open attempts, re-arms run deadlines, advances running runs and admits queued ones.
pub async fn recover(shared: &Arc<Shared>) -> Result<(), Error> {
    let store = &shared.store;
    let runs = store.unfinished_runs().await?;
    let open = store.open_attempts().await?;
    if !runs.is_empty() {
        tracing::info!(
            runs = runs.len(),
            attempts = open.len(),
            "resuming unfinished runs"
        );
    }
    for key in open {
        shared.queue.enqueue(key).await?;
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
