//! The engine's private state, split by owner so a signature says what it touches: the
//! [`Executor`] runs attempts, the [`RunLocks`] serialise the driver, the [`RunSignals`] reach
//! a run's in-flight attempts and its waiters, and the [`Runtime`] holds them with what every
//! loop shares (the store, the queue, the background tasks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use enrichflow_nodes::{Registry, Secrets, Services, egress};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::CatalogHandle;
use crate::engine::{EngineOptions, Role};
use crate::inputs::Schemas;
use crate::queue::Queue;
use crate::redaction::Redaction;
use crate::revisions::Revisions;
use crate::store::{self, RunRecord, Store};
use crate::template::Templates;
use crate::vars::Vars;
use crate::written::WrittenRuns;

/// The state every loop and handle call of one engine shares.
pub(crate) struct Runtime {
    /// Shared with the blocking threads that render inputs.
    pub executor: Arc<Executor>,
    pub locks: RunLocks,
    pub signals: RunSignals,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub catalog: CatalogHandle,
    pub revisions: Revisions,
    pub schemas: Schemas,
    pub options: EngineOptions,
    /// Woken when a retry is scheduled, so the retry timer re-reads the earliest due time.
    pub retry_due: Notify,
    /// Execution slots: one per local worker loop. A loop takes one for each delivery it
    /// executes; a ready dependent claimed to run beside the attempt that freed it takes one
    /// of its own, so local continuation never runs more attempts at once than `workers`.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The runs this process wrote last (distributed), to record their next outcomes from.
    pub written: WrittenRuns,
    /// Background tasks (advances, timers) awaited on shutdown.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// True once start-up recovery has re-enqueued what was open. New runs wait for it: a run
    /// created earlier would look "open" to recovery and have its first attempt enqueued twice.
    pub recovered: tokio::sync::watch::Sender<bool>,
}

/// What rendering a node's inputs and running the node need, and nothing of the run's
/// bookkeeping: read-only once built.
pub(crate) struct Executor {
    pub registry: Registry,
    pub templates: Templates,
    pub secrets: Secrets,
    /// The needles of `secrets`, built once.
    pub redaction: Redaction,
    /// Values templates read as `vars.<NAME>` (the engine options' `vars`).
    pub vars: Vars,
    pub http: reqwest::Client,
    /// Where nodes may connect (the engine options' `egress`).
    pub egress: egress::Policy,
    /// The cache and lead store nodes use.
    pub services: Services,
    /// Names this process as the holder of the attempts it runs (`host:pid:n`).
    pub worker_id: String,
}

impl Runtime {
    pub fn new(
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
        let executor = Executor {
            registry,
            templates,
            secrets: options.secrets.clone(),
            redaction: Redaction::new(&options.secrets),
            vars: options.vars.clone(),
            http,
            egress: options.egress.clone(),
            services,
            worker_id: worker_id(),
        };
        Runtime {
            executor: Arc::new(executor),
            locks: RunLocks::new(),
            signals: RunSignals::default(),
            store,
            queue,
            catalog,
            revisions,
            schemas: Schemas::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(options.workers.max(1))),
            options,
            retry_due: Notify::new(),
            written: WrittenRuns::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            recovered: tokio::sync::watch::Sender::new(false),
        }
    }
}

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

const LOCK_STRIPES: usize = 64;

/// The driver's in-process locks, striped by key.
pub(crate) struct RunLocks {
    /// Serialises `advance` per run, so one run is never decided twice at once.
    runs: Vec<tokio::sync::Mutex<()>>,
    /// Serialises admission of queued runs per workflow.
    admissions: Vec<tokio::sync::Mutex<()>>,
}

impl RunLocks {
    fn new() -> Self {
        let stripes = || (0..LOCK_STRIPES).map(|_| Default::default()).collect();
        RunLocks {
            runs: stripes(),
            admissions: stripes(),
        }
    }

    /// The lock of the run's stripe.
    pub fn run(&self, run_id: &str) -> &tokio::sync::Mutex<()> {
        &self.runs[stripe(run_id)]
    }

    /// The admission lock of the workflow's stripe.
    pub fn admission(&self, workflow_id: &str) -> &tokio::sync::Mutex<()> {
        &self.admissions[stripe(workflow_id)]
    }
}

fn stripe(key: &str) -> usize {
    let hash = key.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    hash % LOCK_STRIPES
}

/// What reaches a run from outside its driver: the token that stops its in-flight attempts,
/// and whoever waits for it to finish.
#[derive(Default)]
pub(crate) struct RunSignals {
    /// Cancelled when a run is cancelled or fails, stopping its in-flight attempts.
    run_tokens: Mutex<HashMap<String, CancellationToken>>,
    /// Senders to wake when a run finishes.
    waiters: Waiters,
}

impl RunSignals {
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

    /// Registers a waiter for the run, until the returned registration is dropped.
    pub fn wait_for<'a>(&'a self, run_id: &'a str) -> Waiting<'a> {
        Waiting::register(&self.waiters, run_id)
    }
}

/// The waiters of every run: senders woken when the run finishes, with the finished run when
/// this process finished it (then the waiter need not read it back).
type Waiters = Mutex<HashMap<String, Vec<oneshot::Sender<Option<Arc<RunRecord>>>>>>;

/// One `Engine::wait` call's registration. Dropping it removes its sender (and the run's entry
/// once no sender is left), so a wait that times out or is abandoned leaves nothing behind.
pub(crate) struct Waiting<'a> {
    waiters: &'a Waiters,
    run_id: &'a str,
    pub receiver: oneshot::Receiver<Option<Arc<RunRecord>>>,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Senders plus runs with a sender: zero when nothing is left behind.
    pub(crate) fn waiter_count(signals: &RunSignals) -> usize {
        let map = signals.waiters.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum::<usize>() + map.len()
    }

    #[test]
    fn a_dropped_wait_removes_only_its_own_sender() {
        let signals = RunSignals::default();
        let first = signals.wait_for("run-1");
        let second = signals.wait_for("run-1");
        assert_eq!(waiter_count(&signals), 3, "one run, two senders");
        drop(first);
        assert_eq!(waiter_count(&signals), 2, "one run, one sender");
        drop(second);
        assert_eq!(waiter_count(&signals), 0);
    }

    #[test]
    fn a_notified_run_leaves_nothing_when_its_waits_end() {
        let signals = RunSignals::default();
        let mut waiting = signals.wait_for("run-1");
        signals.notify_finished("run-1");
        assert_eq!(waiting.receiver.try_recv(), Ok(None));
        drop(waiting);
        assert_eq!(waiter_count(&signals), 0);
    }
}
