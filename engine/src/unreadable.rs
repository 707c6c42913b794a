//! A run whose stored rows cannot be decoded fails alone, with an error of kind `store`,
//! instead of failing every list, the start-up recovery, or a worker retrying it forever.

use std::sync::Arc;

use chrono::Utc;

use crate::engine::Error;
use crate::runtime::Runtime;
use crate::store::{ErrorInfo, RunStatus};

/// The error kind of a run failed because its stored data cannot be read.
pub const KIND: &str = "store";

/// `result` of work on the run `run_id`, unless it failed because a row of that run cannot be
/// decoded: then the run is failed (see [`fail_run`]) and the work counts as done, since
/// trying again would read the same row.
pub async fn fail_if_unreadable<T: Default>(
    runtime: &Arc<Runtime>,
    run_id: &str,
    result: Result<T, Error>,
) -> Result<T, Error> {
    match result {
        Err(Error::Store(error)) if error.is_unreadable() => {
            fail_run(runtime, run_id, &error.to_string()).await?;
            Ok(T::default())
        }
        other => other,
    }
}

/// Fails the run `run_id`, whose stored data cannot be read for the reason `reason`: its open
/// attempts are cancelled, the run ends `failed` with an error of kind [`KIND`], and whoever
/// waits on it is told. Writing needs none of the unreadable columns.
pub async fn fail_run(runtime: &Arc<Runtime>, run_id: &str, reason: &str) -> Result<(), Error> {
    tracing::error!(run = %run_id, error = %reason, "failing a run whose stored data cannot be read");
    let store = &runtime.store;
    let now = Utc::now();
    store.cancel_open_attempts(run_id, now).await?;
    let error = ErrorInfo::new(KIND, reason);
    if store
        .finish_run(run_id, RunStatus::Failed, None, Some(&error), now)
        .await?
    {
        runtime.signals.run_token(run_id).cancel();
        runtime.signals.drop_run_token(run_id);
        runtime.signals.notify_finished(run_id);
    }
    Ok(())
}

/// True for the error of work on one run that says a row of that run cannot be read.
pub fn is_unreadable(error: &Error) -> bool {
    matches!(error, Error::Store(error) if error.is_unreadable())
}
