//! The engine: one cheap handle over the store, the queue, the workflows and the workers.
//! Shape: `EngineOptions` → `Engine::build()` → `Engine::run(shutdown)`; the handle triggers,
//! waits for and cancels runs.

use std::sync::Arc;
use std::time::Duration;

use enrichflow_nodes::{Registry, Secrets, egress};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogHandle};
use crate::queue::Queue;
use crate::runtime::Runtime;
use crate::store::{
    self, AttemptKey, AttemptRecord, AttemptStatus, Listed, Progress, RunQuery, RunRecord,
    RunStatus, Store, Trigger,
};
use crate::template::Templates;
use crate::workflow::Workflow;
use crate::{dispatch, driver, inputs, recovery, revisions, telemetry, view, worker};

/// Engine failures, as seen by the API and the CLI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
    #[error(transparent)]
    InvalidInput(#[from] inputs::Error),
    /// Only `revisions::Error::Unloadable`: a store error stays an [`Error::Store`].
    #[error(transparent)]
    Revision(revisions::Error),
    /// The engine panicked while executing an attempt (a bug): the attempt fails, the worker
    /// goes on.
    #[error("the engine panicked: {0}")]
    Panicked(String),
    /// The idempotency key names a run started with a different body.
    #[error("idempotency key `{0}` was already used with a different body")]
    KeyReused(String),
}

impl Error {
    /// True when a write was rolled back only with the batch it shared (see
    /// `store::Error::RolledBack`): writing it again is expected to work at once.
    pub fn is_rolled_back(&self) -> bool {
        matches!(self, Error::Store(store::Error::RolledBack(_)))
    }

    /// True when the same call may succeed later (the database or the broker is unreachable);
    /// false when no retry helps: data that cannot be read, a revision this process cannot
    /// parse. A worker queues the attempt again, or fails it.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(error) => error.is_retryable(),
            Error::Queue(_) => true,
            Error::InvalidInput(_)
            | Error::Revision(..)
            | Error::KeyReused(_)
            | Error::Panicked(_) => false,
        }
    }
}

impl From<revisions::Error> for Error {
    /// Flattened, so that callers tell an unreachable database (retry, 503) or an unreadable
    /// row from an unloadable revision by the variant alone, wherever the store was read.
    fn from(error: revisions::Error) -> Self {
        match error {
            revisions::Error::Store(error) => Error::Store(error),
            unloadable @ revisions::Error::Unloadable(..) => Error::Revision(unloadable),
        }
    }
}

/// What this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything in one process, on an in-process queue; start-up recovery queues the open
    /// attempts again.
    Embedded,
    /// A `serve` replica of the distributed mode: triggers, retry timer, the sweep of the outbox,
    /// leases and deadlines, dead letters. Its local workers (often none) take from RabbitMQ.
    Server,
    /// `enrichflow worker`: executes attempts from RabbitMQ and advances their runs.
    Worker,
}

/// How to build an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub role: Role,
    /// Local workers executing node attempts.
    pub workers: usize,
    /// How long shutdown waits for in-flight attempts before leaving them to recovery.
    pub shutdown_grace: Duration,
    pub secrets: Secrets,
    /// Values templates read as `vars.<NAME>`; not secret, never redacted.
    pub vars: crate::vars::Vars,
    /// Distributed mode: a running attempt whose worker has not renewed it for this long is
    /// given to another worker. Workers renew it three times per lease.
    pub lease: Duration,
    /// How often a `serve` replica sweeps for attempts to publish again (distributed), and
    /// for runs nothing is left to advance (both modes, see `stalls`).
    pub sweep_interval: Duration,
    /// Where nodes may connect and the limits of their HTTP calls; private networks are
    /// refused by default.
    pub egress: egress::Policy,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            role: Role::Embedded,
            workers: 8,
            shutdown_grace: Duration::from_secs(30),
            secrets: Secrets::default(),
            vars: crate::vars::Vars::default(),
            lease: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(2),
            egress: egress::Policy::default(),
        }
    }
}

/// What starts a run.
#[derive(Debug, Clone)]
pub struct TriggerRequest {
    pub workflow: Arc<Workflow>,
    /// `trigger` in templates and in the run JSON (`{"type": "webhook", "body": …}`), as text.
    /// The workflow's `inputs` schema checks its `body`, or a cron trigger's `input`.
    pub trigger: Trigger,
    /// Triggers of one workflow with the same key within [`IDEMPOTENCY_WINDOW`] share one run:
    /// the first creates it, the others get it back (`Idempotency-Key`, cron ticks).
    pub idempotency_key: Option<String>,
    /// A hash of the body, stored with the key: a later trigger with the key and another hash
    /// is refused ([`Error::KeyReused`]). `None` compares with nothing.
    pub idempotency_body_hash: Option<String>,
}

/// How long a run keeps its idempotency key after it was created. Long enough for any client
/// retry; bounded so that a key reused days later (a daily batch id) starts a new run.
pub const IDEMPOTENCY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// What [`Engine::trigger`] did.
#[derive(Debug, Clone)]
pub struct Triggered {
    /// The new run, or the earlier run holding the same idempotency key, as stored now.
    pub run: RunRecord,
    /// The key named an earlier run: nothing was created or started.
    pub replayed: bool,
}

/// A dependency that does not answer: its public name, and the detail for the log only.
#[derive(Debug, Clone)]
pub struct Unready {
    pub component: &'static str,
    pub detail: String,
}

/// What a cancel request found.
#[derive(Debug, Clone)]
pub enum Cancellation {
    /// No such run.
    Unknown,
    /// The run had already ended; nothing changed.
    AlreadyFinished(RunRecord),
    /// The run was marked for cancellation; it is shown as it is afterwards (a queued run, or
    /// one whose attempts stopped at once, is already `cancelled`).
    Requested(RunRecord),
}

/// What a retry request found.
#[derive(Debug, Clone)]
pub enum Retrial {
    /// No such run.
    Unknown,
    /// The run is queued, running or succeeded; nothing changed.
    NotRetryable(RunRecord),
    /// The run is running again from its failed, cancelled and unreached nodes; it is shown as
    /// it is afterwards.
    Reopened(RunRecord),
}

/// How often a waiter in the distributed mode looks at the store besides being notified.
const FINISH_POLL: Duration = Duration::from_secs(1);

/// The engine handle. Cloning is cheap.
#[derive(Clone)]
pub struct Engine {
    runtime: Arc<Runtime>,
}

impl Engine {
    /// Wires the parts together; starts nothing until [`Engine::run`].
    pub fn build(
        options: EngineOptions,
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        catalog: CatalogHandle,
        registry: Registry,
        templates: Templates,
    ) -> Self {
        let runtime = Runtime::new(options, store, queue, catalog, registry, templates);
        Self {
            runtime: Arc::new(runtime),
        }
    }

    /// Recovers unfinished runs, runs the workers and the retry timer until `shutdown`, then
    /// lets in-flight attempts finish (up to the grace period).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let runtime = self.runtime;
        let role = runtime.options.role;
        let workers = match role {
            // The embedded engine always needs someone to execute its attempts.
            Role::Embedded => runtime.options.workers.max(1),
            Role::Server | Role::Worker => runtime.options.workers,
        };
        // Workers first: recovery may enqueue more attempts than the queue holds.
        let mut loops: Vec<_> = (0..workers)
            .map(|_| tokio::spawn(worker::work(runtime.clone())))
            .collect();
        if role != Role::Embedded && workers > 0 {
            loops.push(tokio::spawn(dispatch::heartbeat(runtime.clone())));
        }
        if role != Role::Worker {
            loops.push(tokio::spawn(driver::retry_timer(runtime.clone())));
        }
        if role == Role::Embedded {
            let interval = runtime.options.sweep_interval;
            loops.push(tokio::spawn(crate::stalls::run(runtime.clone(), interval)));
        }
        if role == Role::Server {
            let interval = runtime.options.sweep_interval;
            loops.push(tokio::spawn(dispatch::sweep(runtime.clone(), interval)));
            loops.push(tokio::spawn(dispatch::dead_letters(runtime.clone())));
            loops.push(tokio::spawn(dispatch::forward_finished(runtime.clone())));
        }
        let recovered = match role {
            Role::Worker => Ok(()),
            Role::Embedded | Role::Server => recovery::recover_or_stop(&runtime, &shutdown).await,
        };
        // Even a failed recovery must not leave triggers waiting forever; the error stops `run`.
        runtime.recovered.send_replace(true);
        recovered?;
        shutdown.cancelled().await;
        runtime.shutdown.cancel();
        let grace = runtime.options.shutdown_grace;
        let drained = async {
            for task in loops {
                let _ = task.await;
            }
            runtime.tasks.close();
            runtime.tasks.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace period over; open attempts resume on the next start");
        }
        Ok(())
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.runtime.catalog.current()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.runtime.store
    }

    pub fn secrets(&self) -> &Secrets {
        &self.runtime.executor.secrets
    }

    pub fn templates(&self) -> &Templates {
        &self.runtime.executor.templates
    }

    /// Checks the payload against the workflow's schema, stores the run and starts it (or
    /// leaves it queued when the workflow's `concurrency` is reached). A run of the workflow
    /// holding the request's idempotency key within [`IDEMPOTENCY_WINDOW`] is returned instead,
    /// untouched.
    pub async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, Error> {
        let runtime = &self.runtime;
        self.recovery_done().await;
        let workflow = request.workflow;
        if workflow.inputs.is_some() {
            // Parsed only for a schema: without one, a large body never becomes a tree here.
            let trigger = request.trigger.value()?;
            let payload = trigger.get("body").or_else(|| trigger.get("input"));
            runtime
                .schemas
                .check(&workflow, payload.unwrap_or(&Value::Null))?;
        }
        runtime
            .revisions
            .remember(&workflow, runtime.store.as_ref())
            .await?;
        // Without a `concurrency` limit a run starts at once: it is stored running, in one
        // write, rather than stored queued and then started.
        let now = driver::now();
        let admitted = workflow.concurrency.is_none();
        let run = RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            workflow_id: workflow.id.to_string(),
            revision: workflow.source.hash.clone(),
            status: if admitted {
                RunStatus::Running
            } else {
                RunStatus::Queued
            },
            // Client data is stored as sent: rewriting it would tell the client which of its
            // values equal a secret.
            trigger: request.trigger,
            output: None,
            error: None,
            created_at: now,
            started_at: admitted.then_some(now),
            finished_at: None,
            deadline_at: if admitted {
                driver::deadline(&workflow, now)
            } else {
                None
            },
            cancel_requested: false,
            idempotency_key: request.idempotency_key,
            idempotency_body_hash: request.idempotency_body_hash,
        };
        let fresh_since = run.created_at - IDEMPOTENCY_WINDOW;
        let first = if admitted {
            driver::first_attempts(&workflow, &run)
        } else {
            Vec::new()
        };
        if let store::Created::Existing(existing) = runtime
            .store
            .create_run_then(&run, fresh_since, &first)
            .await?
        {
            if let (Some(first), Some(now)) =
                (&existing.idempotency_body_hash, &run.idempotency_body_hash)
                && first != now
            {
                let key = run.idempotency_key.unwrap_or_default();
                return Err(Error::KeyReused(key));
            }
            return Ok(Triggered {
                run: *existing,
                replayed: true,
            });
        }
        if admitted {
            driver::started(runtime, &workflow, &run, &first).await?;
            // As stored; the run moves on from here, and readers ask the store.
            return Ok(Triggered {
                run,
                replayed: false,
            });
        }
        driver::admit(runtime, &workflow).await?;
        let run = runtime.store.run(&run.id).await?.unwrap_or(run);
        Ok(Triggered {
            run,
            replayed: false,
        })
    }

    /// Waits until start-up recovery has run (at once afterwards).
    async fn recovery_done(&self) {
        let mut recovered = self.runtime.recovered.subscribe();
        let _ = recovered.wait_for(|done| *done).await;
    }

    /// Waits until the run finishes or `timeout` passes; `None` if it is still going (or unknown).
    pub async fn wait(&self, run_id: &str, timeout: Duration) -> Result<Option<RunRecord>, Error> {
        // Removed from the waiters when this call ends in any way: finished, timed out, or
        // dropped because the client went away.
        let mut waiting = self.runtime.signals.wait_for(run_id);
        // Registered before reading, so a finish between the read and the wait is not missed.
        if let Some(run) = self.runtime.store.run(run_id).await?
            && run.status.is_finished()
        {
            return Ok(Some(run));
        }
        let finished = async {
            if self.runtime.options.role == Role::Embedded {
                return (&mut waiting.receiver).await.ok().flatten();
            }
            // Another process may finish the run; its notification can be lost while the
            // listener reconnects, so look at the store now and then as well.
            loop {
                tokio::select! {
                    woken = &mut waiting.receiver => return woken.ok().flatten(),
                    _ = tokio::time::sleep(FINISH_POLL) => {}
                }
                if let Ok(Some(run)) = self.runtime.store.run(run_id).await
                    && run.status.is_finished()
                {
                    return Some(Arc::new(run));
                }
            }
        };
        match tokio::time::timeout(timeout, finished).await {
            Err(_) => return Ok(None),
            // As this process just stored it: no need to read it back.
            Ok(Some(run)) => return Ok(Some(Arc::unwrap_or_clone(run))),
            Ok(None) => {}
        }
        Ok(self
            .runtime
            .store
            .run(run_id)
            .await?
            .filter(|run| run.status.is_finished()))
    }

    /// Requests cancellation and says what it found.
    pub async fn cancel(&self, run_id: &str) -> Result<Cancellation, Error> {
        let runtime = &self.runtime;
        self.recovery_done().await;
        // False both for a finished run and for no run at all; the read below tells them apart.
        let requested = runtime.store.request_cancel(run_id).await?;
        if requested {
            driver::advance(runtime, run_id).await?;
        }
        Ok(match runtime.store.run(run_id).await? {
            None => Cancellation::Unknown,
            Some(run) if requested => Cancellation::Requested(run),
            Some(run) => Cancellation::AlreadyFinished(run),
        })
    }

    /// Re-runs a failed or cancelled run from the nodes that did not finish (see `reopen`), on
    /// the workflow version it ran.
    pub async fn retry(&self, run_id: &str) -> Result<Retrial, Error> {
        let runtime = &self.runtime;
        self.recovery_done().await;
        let store = &runtime.store;
        let Some(run) = store.run(run_id).await? else {
            return Ok(Retrial::Unknown);
        };
        if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
            return Ok(Retrial::NotRetryable(run));
        }
        let workflow = runtime.revisions.for_run(&run, store.as_ref()).await?;
        let attempts = store.attempts(run_id).await?;
        let reopened = driver::reopen(runtime, &workflow, &run, &attempts).await?;
        // Not reopened: another request reopened it first; either way, show it as it is now.
        let now = store.run(run_id).await?.unwrap_or(run);
        Ok(if reopened {
            Retrial::Reopened(now)
        } else {
            Retrial::NotRetryable(now)
        })
    }

    /// The run JSON of SPEC, or `None` if there is no such run.
    pub async fn run_json(&self, run_id: &str) -> Result<Option<Value>, Error> {
        let shown = self.run_shown(run_id).await?;
        Ok(shown.map(|shown| serde_json::to_value(shown.view()).unwrap_or(Value::Null)))
    }

    /// What the run JSON of SPEC shows, to write it (see [`view::run_view`]), or `None` if
    /// there is no such run.
    pub async fn run_shown(&self, run_id: &str) -> Result<Option<RunShown>, Error> {
        let store = &self.runtime.store;
        let Some(run) = store.run(run_id).await? else {
            return Ok(None);
        };
        let attempts = store.attempts(run_id).await?;
        let workflow = self
            .runtime
            .revisions
            .for_run(&run, store.as_ref())
            .await
            .ok();
        // Only a running attempt shows its progress: a finished run needs no extra read.
        let progress = if attempts.iter().any(|a| a.status == AttemptStatus::Running) {
            store.progress(run_id).await?
        } else {
            Vec::new()
        };
        Ok(Some(RunShown {
            run,
            attempts,
            workflow,
            progress,
        }))
    }

    /// Runs newest first, whole.
    pub async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, Error> {
        Ok(self.runtime.store.list_runs(query).await?)
    }

    /// Runs newest first, without triggers and outputs; an unreadable row is listed as such.
    pub async fn list_run_summaries(&self, query: &RunQuery) -> Result<Vec<Listed>, Error> {
        Ok(self.runtime.store.list_run_summaries(query).await?)
    }

    /// Ok when the store and the queue answer; otherwise what is down, for `/readyz`.
    pub async fn ready(&self) -> Result<(), Unready> {
        let probe = RunQuery {
            limit: 1,
            ..RunQuery::default()
        };
        // Short: a probe queued behind a pool waiting out its acquire timeout says little more.
        const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
        let probe =
            tokio::time::timeout(PROBE_TIMEOUT, self.runtime.store.list_run_summaries(&probe));
        let unready = |detail: String| Unready {
            component: "database",
            detail,
        };
        match probe.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(unready(error.to_string())),
            Err(_) => return Err(unready(format!("no answer within {PROBE_TIMEOUT:?}"))),
        }
        self.runtime.queue.health().map_err(|detail| Unready {
            component: "broker",
            detail,
        })
    }

    /// Tasks waiting in the queue, as the queue-depth gauge reports them.
    pub fn queue_depth(&self) -> usize {
        self.runtime.queue.depth()
    }

    /// Updates the queue-depth gauge; called by the metrics endpoint.
    pub fn observe(&self) {
        telemetry::queue_depth(self.runtime.queue.depth());
    }
}

/// A run with everything its run JSON shows.
pub struct RunShown {
    pub run: RunRecord,
    pub attempts: Vec<AttemptRecord>,
    pub workflow: Option<Arc<Workflow>>,
    pub progress: Vec<(AttemptKey, Progress)>,
}

impl RunShown {
    /// The run JSON, to write.
    pub fn view(&self) -> view::Fields<'_> {
        view::run_view(
            &self.run,
            &self.attempts,
            self.workflow.as_deref(),
            &self.progress,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::tests::waiter_count;

    async fn engine() -> Engine {
        // Building the engine's HTTP client needs a crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = crate::store::SqliteStore::connect("sqlite::memory:")
            .await
            .expect("an in-memory store");
        Engine::build(
            EngineOptions::default(),
            Arc::new(store),
            Arc::new(crate::queue::MemoryQueue::new(4)),
            CatalogHandle::new(Catalog::default()),
            Registry::with_builtins(),
            Templates::new(),
        )
    }

    #[tokio::test]
    async fn waits_that_time_out_or_are_abandoned_leave_no_waiter() {
        let engine = engine().await;
        // An unknown run never finishes: the wait times out.
        let waited = engine.wait("no-such-run", Duration::from_millis(10)).await;
        assert!(matches!(waited, Ok(None)), "{waited:?}");
        assert_eq!(waiter_count(&engine.runtime.signals), 0);
        // A client that goes away drops the wait before its own timeout.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(10),
            engine.wait("no-such-run", Duration::from_secs(3600)),
        )
        .await;
        assert!(abandoned.is_err(), "the outer timeout fires first");
        assert_eq!(waiter_count(&engine.runtime.signals), 0);
    }
}
