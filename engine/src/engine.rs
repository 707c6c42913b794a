//! The engine: one cheap handle over the store, the queue, the workflows and the workers.
//! Shape: `EngineOptions` → `Engine::build()` → `Engine::run(shutdown)`; the handle triggers,
//! waits for and cancels runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enrichflow_nodes::{Registry, Secrets, Services, egress};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::{Catalog, CatalogHandle};
use crate::inputs::Schemas;
use crate::queue::Queue;
use crate::revisions::Revisions;
use crate::store::{
    self, AttemptKey, AttemptRecord, AttemptStatus, Listed, Progress, RunQuery, RunRecord,
    RunStatus, Store, Trigger,
};
use crate::template::Templates;
use crate::workflow::Workflow;
use crate::{dispatch, driver, recovery, telemetry, view, worker};

/// Engine failures, as seen by the API and the CLI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
    #[error("the input does not match the workflow's schema: {}", .0.join("; "))]
    InvalidInput(Vec<String>),
    #[error("workflow revision `{0}` cannot be loaded: {1}")]
    Revision(String, String),
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

/// The state every part of the engine shares.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub catalog: CatalogHandle,
    pub registry: Registry,
    pub templates: Templates,
    pub secrets: Secrets,
    /// The needles of `secrets`, built once.
    pub redaction: crate::redaction::Redaction,
    pub http: reqwest::Client,
    /// The cache and lead store nodes use.
    pub services: Services,
    pub revisions: Revisions,
    pub schemas: Schemas,
    pub options: EngineOptions,
    /// Woken when a retry is scheduled, so the retry timer re-reads the earliest due time.
    pub retry_due: Notify,
    /// Senders to wake when a run finishes.
    pub waiters: Waiters,
    /// Names this process as the holder of the attempts it runs (`host:pid:n`).
    pub worker_id: String,
    /// Cancelled when a run is cancelled or fails, stopping its in-flight attempts.
    pub run_tokens: Mutex<HashMap<String, CancellationToken>>,
    /// Serialises `advance` per run (striped), so one run is never decided twice at once.
    pub run_locks: Vec<tokio::sync::Mutex<()>>,
    /// Execution slots: one per local worker loop. A loop takes one for each delivery it
    /// executes; a ready dependent claimed to run beside the attempt that freed it takes one
    /// of its own, so local continuation never runs more attempts at once than `workers`.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The runs this process wrote last (distributed), to record their next outcomes from.
    pub written: crate::written::WrittenRuns,
    /// Serialises admission of queued runs per workflow (striped).
    pub admit_locks: Vec<tokio::sync::Mutex<()>>,
    /// Background tasks (advances, timers) awaited on shutdown.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// True once start-up recovery has re-enqueued what was open. New runs wait for it: a run
    /// created earlier would look "open" to recovery and have its first attempt enqueued twice.
    pub recovered: tokio::sync::watch::Sender<bool>,
}

const LOCK_STRIPES: usize = 64;

/// How often a waiter in the distributed mode looks at the store besides being notified.
const FINISH_POLL: Duration = Duration::from_secs(1);

/// `host:pid:n`: unique among the engines of this process and readable in the run JSON.
fn worker_id() -> String {
    static ENGINES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let n = ENGINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{host}:{}:{n}", std::process::id())
}

impl Shared {
    pub fn run_token(&self, run_id: &str) -> CancellationToken {
        let mut tokens = self.run_tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.entry(run_id.to_owned()).or_default().clone()
    }

    pub fn drop_run_token(&self, run_id: &str) {
        let mut tokens = self.run_tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(run_id);
    }

    /// Wakes the run's waiters; they read the run from the store.
    pub fn notify_finished(&self, run_id: &str) {
        self.wake_waiters(run_id, None);
    }

    /// Wakes the run's waiters with `run` as it was just stored, finished.
    pub fn notify_finished_with(&self, run: RunRecord) {
        let id = run.id.clone();
        self.wake_waiters(&id, Some(Arc::new(run)));
    }

    fn wake_waiters(&self, run_id: &str, run: Option<Arc<RunRecord>>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for waiter in waiters.remove(run_id).unwrap_or_default() {
            let _ = waiter.send(run.clone());
        }
    }

    pub fn stripe(&self, key: &str) -> usize {
        let hash = key.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        hash % LOCK_STRIPES
    }
}

/// The engine handle. Cloning is cheap.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
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
        // Building fails only when the TLS backend cannot start, which `reqwest::Client::new`
        // would not survive either; a client without the policy's resolver is no fallback.
        let http = options
            .egress
            .client()
            .expect("the HTTP client builds once a TLS crypto provider is installed");
        let revisions = Revisions::new(registry.clone(), templates.clone());
        let services = store.services();
        // Embedded, this process alone writes the store: the runs it drives live in memory.
        let store: Arc<dyn Store> = if options.role == Role::Embedded {
            Arc::new(store::LiveStore::new(store))
        } else {
            store
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(options.workers.max(1)));
        let shared = Shared {
            store,
            queue,
            catalog,
            registry,
            templates,
            secrets: options.secrets.clone(),
            redaction: crate::redaction::Redaction::new(&options.secrets),
            http,
            services,
            revisions,
            schemas: Schemas::default(),
            options,
            worker_id: worker_id(),
            retry_due: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            run_tokens: Mutex::new(HashMap::new()),
            run_locks: (0..LOCK_STRIPES).map(|_| Default::default()).collect(),
            slots,
            written: Default::default(),
            admit_locks: (0..LOCK_STRIPES).map(|_| Default::default()).collect(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            recovered: tokio::sync::watch::Sender::new(false),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Recovers unfinished runs, runs the workers and the retry timer until `shutdown`, then
    /// lets in-flight attempts finish (up to the grace period).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let shared = self.shared;
        let role = shared.options.role;
        let workers = match role {
            // The embedded engine always needs someone to execute its attempts.
            Role::Embedded => shared.options.workers.max(1),
            Role::Server | Role::Worker => shared.options.workers,
        };
        // Workers first: recovery may enqueue more attempts than the queue holds.
        let mut loops: Vec<_> = (0..workers)
            .map(|_| tokio::spawn(worker::work(shared.clone())))
            .collect();
        if role != Role::Embedded && workers > 0 {
            loops.push(tokio::spawn(dispatch::heartbeat(shared.clone())));
        }
        if role != Role::Worker {
            loops.push(tokio::spawn(driver::retry_timer(shared.clone())));
        }
        if role == Role::Embedded {
            let interval = shared.options.sweep_interval;
            loops.push(tokio::spawn(crate::stalls::run(shared.clone(), interval)));
        }
        if role == Role::Server {
            let interval = shared.options.sweep_interval;
            loops.push(tokio::spawn(dispatch::sweep(shared.clone(), interval)));
            loops.push(tokio::spawn(dispatch::dead_letters(shared.clone())));
            loops.push(tokio::spawn(dispatch::forward_finished(shared.clone())));
        }
        let recovered = match role {
            Role::Worker => Ok(()),
            Role::Embedded | Role::Server => recovery::recover_or_stop(&shared, &shutdown).await,
        };
        // Even a failed recovery must not leave triggers waiting forever; the error stops `run`.
        shared.recovered.send_replace(true);
        recovered?;
        shutdown.cancelled().await;
        shared.shutdown.cancel();
        let grace = shared.options.shutdown_grace;
        let drained = async {
            for task in loops {
                let _ = task.await;
            }
            shared.tasks.close();
            shared.tasks.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace period over; open attempts resume on the next start");
        }
        Ok(())
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.shared.catalog.current()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    pub fn secrets(&self) -> &Secrets {
        &self.shared.secrets
    }

    pub fn templates(&self) -> &Templates {
        &self.shared.templates
    }

    /// Checks the payload against the workflow's schema, stores the run and starts it (or
    /// leaves it queued when the workflow's `concurrency` is reached). A run of the workflow
    /// holding the request's idempotency key within [`IDEMPOTENCY_WINDOW`] is returned instead,
    /// untouched.
    pub async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, Error> {
        let shared = &self.shared;
        self.recovery_done().await;
        let workflow = request.workflow;
        if workflow.inputs.is_some() {
            // Parsed only for a schema: without one, a large body never becomes a tree here.
            let trigger = request.trigger.value()?;
            let payload = trigger.get("body").or_else(|| trigger.get("input"));
            shared
                .schemas
                .check(&workflow, payload.unwrap_or(&Value::Null))?;
        }
        shared
            .revisions
            .remember(&workflow, shared.store.as_ref())
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
        if let store::Created::Existing(existing) = shared
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
            driver::started(shared, &workflow, &run, &first).await?;
            // As stored; the run moves on from here, and readers ask the store.
            return Ok(Triggered {
                run,
                replayed: false,
            });
        }
        driver::admit(shared, &workflow).await?;
        let run = shared.store.run(&run.id).await?.unwrap_or(run);
        Ok(Triggered {
            run,
            replayed: false,
        })
    }

    /// Waits until start-up recovery has run (at once afterwards).
    async fn recovery_done(&self) {
        let mut recovered = self.shared.recovered.subscribe();
        let _ = recovered.wait_for(|done| *done).await;
    }

    /// Waits until the run finishes or `timeout` passes; `None` if it is still going (or unknown).
    pub async fn wait(&self, run_id: &str, timeout: Duration) -> Result<Option<RunRecord>, Error> {
        // Removed from the waiters when this call ends in any way: finished, timed out, or
        // dropped because the client went away.
        let mut waiting = Waiting::register(&self.shared.waiters, run_id);
        // Registered before reading, so a finish between the read and the wait is not missed.
        if let Some(run) = self.shared.store.run(run_id).await?
            && run.status.is_finished()
        {
            return Ok(Some(run));
        }
        let finished = async {
            if self.shared.options.role == Role::Embedded {
                return (&mut waiting.receiver).await.ok().flatten();
            }
            // Another process may finish the run; its notification can be lost while the
            // listener reconnects, so look at the store now and then as well.
            loop {
                tokio::select! {
                    woken = &mut waiting.receiver => return woken.ok().flatten(),
                    _ = tokio::time::sleep(FINISH_POLL) => {}
                }
                if let Ok(Some(run)) = self.shared.store.run(run_id).await
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
            .shared
            .store
            .run(run_id)
            .await?
            .filter(|run| run.status.is_finished()))
    }

    /// Requests cancellation and says what it found.
    pub async fn cancel(&self, run_id: &str) -> Result<Cancellation, Error> {
        let shared = &self.shared;
        self.recovery_done().await;
        // False both for a finished run and for no run at all; the read below tells them apart.
        let requested = shared.store.request_cancel(run_id).await?;
        if requested {
            driver::advance(shared, run_id).await?;
        }
        Ok(match shared.store.run(run_id).await? {
            None => Cancellation::Unknown,
            Some(run) if requested => Cancellation::Requested(run),
            Some(run) => Cancellation::AlreadyFinished(run),
        })
    }

    /// Re-runs a failed or cancelled run from the nodes that did not finish (see `reopen`), on
    /// the workflow version it ran.
    pub async fn retry(&self, run_id: &str) -> Result<Retrial, Error> {
        let shared = &self.shared;
        self.recovery_done().await;
        let store = &shared.store;
        let Some(run) = store.run(run_id).await? else {
            return Ok(Retrial::Unknown);
        };
        if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
            return Ok(Retrial::NotRetryable(run));
        }
        let workflow = shared.revisions.for_run(&run, store.as_ref()).await?;
        let attempts = store.attempts(run_id).await?;
        let reopened = driver::reopen(shared, &workflow, &run, &attempts).await?;
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
        let store = &self.shared.store;
        let Some(run) = store.run(run_id).await? else {
            return Ok(None);
        };
        let attempts = store.attempts(run_id).await?;
        let workflow = self
            .shared
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
        Ok(self.shared.store.list_runs(query).await?)
    }

    /// Runs newest first, without triggers and outputs; an unreadable row is listed as such.
    pub async fn list_run_summaries(&self, query: &RunQuery) -> Result<Vec<Listed>, Error> {
        Ok(self.shared.store.list_run_summaries(query).await?)
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
            tokio::time::timeout(PROBE_TIMEOUT, self.shared.store.list_run_summaries(&probe));
        let unready = |detail: String| Unready {
            component: "database",
            detail,
        };
        match probe.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(unready(error.to_string())),
            Err(_) => return Err(unready(format!("no answer within {PROBE_TIMEOUT:?}"))),
        }
        self.shared.queue.health().map_err(|detail| Unready {
            component: "broker",
            detail,
        })
    }

    /// Tasks waiting in the queue, as the queue-depth gauge reports them.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.depth()
    }

    /// Updates the queue-depth gauge; called by the metrics endpoint.
    pub fn observe(&self) {
        telemetry::queue_depth(self.shared.queue.depth());
    }
}

/// The waiters of every run: senders woken when the run finishes, with the finished run when
/// this process finished it (then the waiter need not read it back).
pub(crate) type Waiters = Mutex<HashMap<String, Vec<oneshot::Sender<Option<Arc<RunRecord>>>>>>;

/// One [`Engine::wait`] call's registration. Dropping it removes its sender (and the run's entry
/// once no sender is left), so a wait that times out or is abandoned leaves nothing behind.
struct Waiting<'a> {
    waiters: &'a Waiters,
    run_id: &'a str,
    receiver: oneshot::Receiver<Option<Arc<RunRecord>>>,
}

impl<'a> Waiting<'a> {
    fn register(waiters: &'a Waiters, run_id: &'a str) -> Self {
        let (sender, receiver) = oneshot::channel();
        let mut map = waiters.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(run_id.to_owned()).or_default().push(sender);
        Waiting {
            waiters,
            run_id,
            receiver,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Closing the receiver closes its sender: that is how ours is told from the others.
        self.receiver.close();
        let mut map = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(senders) = map.get_mut(self.run_id) {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                map.remove(self.run_id);
            }
        }
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

    fn waiter_count(waiters: &Waiters) -> usize {
        let map = waiters.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum::<usize>() + map.len()
    }

    #[test]
    fn a_dropped_wait_removes_only_its_own_sender() {
        let waiters = Waiters::default();
        let first = Waiting::register(&waiters, "run-1");
        let second = Waiting::register(&waiters, "run-1");
        assert_eq!(waiter_count(&waiters), 3, "one run, two senders");
        drop(first);
        assert_eq!(waiter_count(&waiters), 2, "one run, one sender");
        drop(second);
        assert_eq!(waiter_count(&waiters), 0);
    }

    #[test]
    fn a_notified_run_leaves_nothing_when_its_waits_end() {
        let waiters = Waiters::default();
        let mut waiting = Waiting::register(&waiters, "run-1");
        let drained = waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove("run-1")
            .unwrap_or_default();
        for sender in drained {
            let _ = sender.send(None);
        }
        assert_eq!(waiting.receiver.try_recv(), Ok(None));
        drop(waiting);
        assert_eq!(waiter_count(&waiters), 0);
    }

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
        assert_eq!(waiter_count(&engine.shared.waiters), 0);
        // A client that goes away drops the wait before its own timeout.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(10),
            engine.wait("no-such-run", Duration::from_secs(3600)),
        )
        .await;
        assert!(abandoned.is_err(), "the outer timeout fires first");
        assert_eq!(waiter_count(&engine.shared.waiters), 0);
    }
}
