//! Runs nothing is left to advance. An advance whose write failed (the database briefly
//! unavailable, a batch rolled back by another write) can leave a run `running` with no open
//! attempt, and no event would ever move it again: no attempt will finish, no retry is due.
//! This sweep finds runs that have been quiet for [`STALL_GRACE`] and advances them. The
//! embedded engine runs it as a loop of its own; a distributed `serve` replica runs it within
//! `dispatch::sweep`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::dispatch::earlier_by;
use crate::driver;
use crate::engine::Error;
use crate::runtime::Runtime;

/// How long a run must have had no open attempt and no activity before it counts as stalled:
/// far longer than an advance takes, so a run being advanced right now is never picked.
pub const STALL_GRACE: Duration = Duration::from_secs(5);

/// Advances stalled runs every `interval` until shutdown.
pub async fn run(runtime: Arc<Runtime>, interval: Duration) {
    loop {
        tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = advance_stalled(&runtime).await {
            tracing::error!(%error, "advancing stalled runs failed");
        }
    }
}

/// Advances every run that has stalled.
pub async fn advance_stalled(runtime: &Arc<Runtime>) -> Result<(), Error> {
    let quiet_before = earlier_by(Utc::now(), STALL_GRACE);
    for run_id in runtime.store.stalled_runs(quiet_before).await? {
        tracing::warn!(run = %run_id, "advancing a run nothing was left to advance");
        driver::advance(runtime, &run_id).await?;
    }
    Ok(())
}
