//! Crash soak: under 16-client webhook load, `serve` (and, distributed, a worker) is killed with
//! SIGKILL at random instants and restarted on the same store, again and again; the last restart
//! happens without load. Then every run the server acknowledged exists and succeeded, no attempt
//! is left open, no node whose success was committed was executed again, and the repeated calls
//! the crashes caused are few (a counting fake upstream sees every call).
//!
//! `ENRICHFLOW_CRASH_SOAK_ROUNDS` sets the number of kills (default 30); the seed of the random
//! instants is printed and `ENRICHFLOW_CRASH_SOAK_SEED` replays it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::distributed::Deployment;
use crate::process::{ServeProcess, WorkerProcess};
use crate::support;

/// Clients posting webhooks at once, each one request after another.
const CLIENTS: usize = 16;
/// Kills per variant unless `ENRICHFLOW_CRASH_SOAK_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 30;
/// How long a process lives before it is killed, in milliseconds (drawn uniformly).
const LIFETIME_MS: std::ops::Range<u64> = 300..3000;
/// The longest an upstream call takes (drawn uniformly from zero), so kills land inside calls
/// as well as between them.
const UPSTREAM_DELAY_MS: u64 = 20;
/// How long the runs may take to finish after the last restart: generous, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(120);
/// Local workers of the embedded `serve`; attempts executed at once by the distributed worker.
const WORKERS: usize = 4;
/// The nodes of `crash_soak/crash.yaml` that call the upstream.
const CALLING_NODES: [&str; 3] = ["lookup", "score", "deliver"];
/// Every node of the workflow.
const NODES: [&str; 5] = ["lookup", "score", "join", "deliver", "answer"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_serve_at_random_instants_loses_no_run_and_repeats_no_committed_node() {
    support::install_crypto();
    let upstream = MockServer::start().await;
    let calls = Upstream::mount(&upstream).await;
    let folder = TempFolder::new();
    let database = format!("sqlite://{}", folder.path.join("crash.db").display());
    let workers = WORKERS.to_string();
    let start_serve = || {
        ServeProcess::start_with(
            &workflows(),
            &database,
            &upstream.uri(),
            &["--workers", &workers],
        )
    };
    let mut processes = Processes::new(start_serve(), None);
    let schedule = Schedule::from_env(&[Victim::Serve]);
    let soaked = soak(
        &mut processes,
        &schedule,
        start_serve,
        || -> WorkerProcess { unreachable!("the embedded soak has no worker") },
    )
    .await;
    let base = processes.serve_url();
    // Each kill of `serve` interrupts at most the attempts its workers were executing.
    let allowance = soaked.kills(Victim::Serve) * WORKERS;
    verify("embedded", &base, &calls, &soaked, allowance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_serve_and_a_worker_at_random_instants_loses_no_run_and_repeats_no_committed_node()
{
    let Some(deployment) = Deployment::new("crash_soak").await else {
        return;
    };
    let calls = Upstream::mount(&deployment.mocks).await;
    let start_serve = || deployment.serve_workflows(&workflows(), &[]);
    let start_worker = || deployment.worker(WORKERS, &[]);
    let mut processes = Processes::new(start_serve(), Some(start_worker()));
    let schedule = Schedule::from_env(&[Victim::Serve, Victim::Worker]);
    let soaked = soak(&mut processes, &schedule, start_serve, start_worker).await;
    let base = processes.serve_url();
    // `serve` executes no attempt here; each kill of the worker interrupts at most its
    // concurrency.
    let allowance = soaked.kills(Victim::Worker) * WORKERS;
    verify("distributed", &base, &calls, &soaked, allowance).await;
    drop(processes);
}

fn workflows() -> std::path::PathBuf {
    support::fixtures("crash_soak")
}

/// Which process a round kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Serve,
    Worker,
}

/// The kills of one soak: how many, whom, and the random lifetimes before each.
struct Schedule {
    seed: u64,
    kills: Vec<(Victim, Duration)>,
}

impl Schedule {
    /// `ENRICHFLOW_CRASH_SOAK_ROUNDS` kills (default 30), taking `victims` in turn.
    fn from_env(victims: &[Victim]) -> Schedule {
        let rounds = env_number("ENRICHFLOW_CRASH_SOAK_ROUNDS").unwrap_or(DEFAULT_ROUNDS as u64);
        let seed = env_number("ENRICHFLOW_CRASH_SOAK_SEED").unwrap_or_else(rand::random);
        let mut rng = StdRng::seed_from_u64(seed);
        let kills = victims
            .iter()
            .copied()
            .cycle()
            .take(usize::try_from(rounds).unwrap_or(usize::MAX))
            .map(|victim| {
                let lifetime = Duration::from_millis(rng.random_range(LIFETIME_MS));
                (victim, lifetime)
            })
            .collect();
        Schedule { seed, kills }
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}")),
    )
}

/// The processes under test; dropping them kills them.
struct Processes {
    serve: Option<ServeProcess>,
    worker: Option<WorkerProcess>,
}

impl Processes {
    fn new(serve: ServeProcess, worker: Option<WorkerProcess>) -> Processes {
        Processes {
            serve: Some(serve),
            worker,
        }
    }

    fn serve_url(&self) -> String {
        self.serve
            .as_ref()
            .map(|serve| serve.base_url.clone())
            .expect("serve is running")
    }
}

/// What the load saw: the acknowledged runs, the answers no client should get, the kills.
struct Soaked {
    acks: Vec<Ack>,
    unexpected: Vec<String>,
    kills: Vec<Victim>,
    seed: u64,
}

impl Soaked {
    fn kills(&self, victim: Victim) -> usize {
        self.kills.iter().filter(|&&v| v == victim).count()
    }
}

/// Loads the server with [`CLIENTS`] clients and kills the processes as `schedule` says, each
/// restarted at once (`serve` on a new port, which the clients follow). The last kill stops the
/// load before its restart, so that recovery alone must finish what is open.
async fn soak(
    processes: &mut Processes,
    schedule: &Schedule,
    start_serve: impl Fn() -> ServeProcess,
    start_worker: impl Fn() -> WorkerProcess,
) -> Soaked {
    eprintln!(
        "crash soak: {} kills, seed {} (ENRICHFLOW_CRASH_SOAK_SEED replays it)",
        schedule.kills.len(),
        schedule.seed
    );
    let target = Arc::new(Target(RwLock::new(Some(processes.serve_url()))));
    let ledger = Arc::new(Ledger::default());
    let stop = CancellationToken::new();
    let mut clients = JoinSet::new();
    for client in 0..CLIENTS {
        clients.spawn(load(client, target.clone(), ledger.clone(), stop.clone()));
    }
    let mut kills = Vec::new();
    for (round, &(victim, lifetime)) in schedule.kills.iter().enumerate() {
        tokio::time::sleep(lifetime).await;
        // Dropping a process sends it SIGKILL and reaps it.
        match victim {
            Victim::Serve => {
                target.set(None);
                processes.serve = None;
            }
            Victim::Worker => processes.worker = None,
        }
        kills.push(victim);
        if round + 1 == schedule.kills.len() {
            stop.cancel();
            while let Some(joined) = clients.join_next().await {
                joined.expect("a client does not panic");
            }
        }
        // Starting blocks until the process listens; the clients go on on other threads.
        match victim {
            Victim::Serve => {
                let serve = tokio::task::block_in_place(&start_serve);
                target.set(Some(serve.base_url.clone()));
                processes.serve = Some(serve);
            }
            Victim::Worker => processes.worker = Some(tokio::task::block_in_place(&start_worker)),
        }
    }
    stop.cancel();
    while let Some(joined) = clients.join_next().await {
        joined.expect("a client does not panic");
    }
    let ledger = Arc::into_inner(ledger).expect("the clients are done");
    Soaked {
        acks: ledger.acks.into_inner().expect("no client panicked"),
        unexpected: ledger.unexpected.into_inner().expect("no client panicked"),
        kills,
        seed: schedule.seed,
    }
}

/// The URL of the `serve` now running; `None` while it is being restarted.
struct Target(RwLock<Option<String>>);

impl Target {
    fn get(&self) -> Option<String> {
        self.0.read().expect("the target lock").clone()
    }

    fn set(&self, url: Option<String>) {
        *self.0.write().expect("the target lock") = url;
    }
}

/// A run the server acknowledged: it answered with the run's id.
#[derive(Debug, Clone)]
struct Ack {
    run_id: String,
    /// What the client posted as `n`; the run's output repeats it.
    n: String,
    /// The output an on-complete webhook answered with.
    output: Option<Value>,
}

#[derive(Default)]
struct Ledger {
    acks: Mutex<Vec<Ack>>,
    unexpected: Mutex<Vec<String>>,
}

/// One client until `stop`: the even ones post to the accepted webhook and then follow the run
/// until it ends (as a caller polling for its result would), the odd ones post to the
/// on-complete webhook. So the load stays at [`CLIENTS`] runs in flight rather than a backlog
/// growing without bound. A request a kill cut off is not acknowledged; at `stop` the request
/// in flight is dropped.
async fn load(client: usize, target: Arc<Target>, ledger: Arc<Ledger>, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client");
    let hook = if client.is_multiple_of(2) {
        "crash-accepted"
    } else {
        "crash-complete"
    };
    for sent in 0.. {
        let Some(base) = target.get() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(10)) => continue,
            }
        };
        let n = format!("{client}-{sent}");
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            answer = post(&http, &base, hook, &n) => answer,
        };
        match answer {
            Answer::Acked(ack) => {
                let run_id = ack.run_id.clone();
                let follow = ack.output.is_none();
                ledger.acks.lock().expect("ledger").push(ack);
                if follow {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = follow_run(&http, &target, &base, &run_id) => {}
                    }
                }
            }
            // Killed, restarting, or shedding load: try again shortly.
            Answer::Lost => tokio::time::sleep(Duration::from_millis(10)).await,
            Answer::Unexpected(what) => ledger.unexpected.lock().expect("ledger").push(what),
        }
    }
}

/// Polls the run until it ends, `serve` is replaced, or a while has passed: the run is checked
/// after the soak in any case.
async fn follow_run(http: &reqwest::Client, target: &Target, base: &str, run_id: &str) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while Instant::now() < give_up && target.get().as_deref() == Some(base) {
        let url = format!("{base}/api/v1/runs/{run_id}");
        let Ok(response) = http.get(&url).send().await else {
            return;
        };
        let run: Value = response.json().await.unwrap_or(Value::Null);
        if matches!(
            run["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

enum Answer {
    Acked(Ack),
    Lost,
    Unexpected(String),
}

/// Posts `{"n": n}` to `/hooks/{hook}` and sorts the answer.
async fn post(http: &reqwest::Client, base: &str, hook: &str, n: &str) -> Answer {
    let Ok(response) = http
        .post(format!("{base}/hooks/{hook}"))
        .json(&json!({ "n": n }))
        .send()
        .await
    else {
        return Answer::Lost;
    };
    let status = response.status().as_u16();
    // On every success answer; the client knows the run from here on.
    let header_id = response
        .headers()
        .get("x-enrichflow-run-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // A body cut off by a kill leaves `Value::Null`.
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let body_id = body["run_id"].as_str().map(str::to_owned);
    let (run_id, output) = match status {
        202 => (header_id.or(body_id), None),
        200 => (header_id, Some(body.clone()).filter(|body| !body.is_null())),
        // The on-complete wait ran out (a kill elsewhere held the run up): still acknowledged.
        504 => (body_id, None),
        429 | 503 => return Answer::Lost,
        _ => return Answer::Unexpected(format!("{hook} answered {status}: {body}")),
    };
    match run_id {
        Some(run_id) => Answer::Acked(Ack {
            run_id,
            n: n.to_owned(),
            output,
        }),
        None => Answer::Unexpected(format!("{hook} answered {status} without a run id: {body}")),
    }
}

/// The counting fake upstream: every call to `/calls/{run}/{node}` is recorded, and answered
/// `{"call": k}` for the k-th call of that node of that run, after a short random delay.
#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<Mutex<Calls>>,
}

/// The calls of each (run, node), in the order they arrived.
type Calls = HashMap<(String, String), Vec<Call>>;

#[derive(Debug, Clone)]
struct Call {
    at: DateTime<Utc>,
    /// The `Idempotency-Key` the engine sent (it names the attempt).
    key: String,
}

impl Upstream {
    async fn mount(server: &MockServer) -> Upstream {
        let upstream = Upstream::default();
        Mock::given(path_regex(r"^/calls/[^/]+/[a-z]+$"))
            .respond_with(upstream.clone())
            .mount(server)
            .await;
        upstream
    }

    fn calls(&self) -> Calls {
        self.calls.lock().expect("the upstream's lock").clone()
    }
}

impl Respond for Upstream {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut parts = request.url.path().rsplit('/');
        let node = parts.next().unwrap_or_default().to_owned();
        let run = parts.next().unwrap_or_default().to_owned();
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let call = {
            let mut calls = self.calls.lock().expect("the upstream's lock");
            let made = calls.entry((run, node)).or_default();
            made.push(Call {
                at: Utc::now(),
                key,
            });
            made.len()
        };
        let delay = rand::rng().random_range(0..=UPSTREAM_DELAY_MS);
        ResponseTemplate::new(200)
            .set_body_json(json!({ "call": call }))
            .set_delay(Duration::from_millis(delay))
    }
}

/// Waits until no stored run is open, then checks every run against the acknowledgements and
/// the upstream's calls. `allowance` is the most repeated upstream calls the kills can explain.
async fn verify(variant: &str, base: &str, upstream: &Upstream, soaked: &Soaked, allowance: usize) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client");
    assert!(
        soaked.unexpected.is_empty(),
        "{variant}: clients got answers a crash never explains (seed {}): {:#?}",
        soaked.seed,
        &soaked.unexpected[..soaked.unexpected.len().min(20)]
    );
    let stored = wait_until_finished(&http, base, variant).await;
    let calls = upstream.calls();
    let mut ids: BTreeSet<String> = stored.iter().cloned().collect();
    ids.extend(soaked.acks.iter().map(|ack| ack.run_id.clone()));
    // A run that reached the upstream was started by the engine: it must be stored too.
    ids.extend(calls.keys().map(|(run, _)| run.clone()));
    let runs = fetch_runs(&http, base, &ids).await;

    let mut violations = Vec::new();
    for ack in &soaked.acks {
        check_ack(ack, runs.get(&ack.run_id), &mut violations);
    }
    for (id, run) in &runs {
        match run {
            Some(run) => check_run(id, run, &calls, &mut violations),
            None => violations.push(format!("run {id} called the upstream but is not stored")),
        }
    }
    let repeated: usize = calls
        .values()
        .map(|made| made.len().saturating_sub(1))
        .sum();
    let total: usize = calls.values().map(Vec::len).sum();
    let on_complete = soaked.acks.iter().filter(|a| a.output.is_some()).count();
    eprintln!(
        "crash soak ({variant}): {} kills ({} of serve), {} acknowledged runs ({on_complete} \
         answered on completion), {} stored, {total} upstream calls, {repeated} repeated after \
         a kill (at most {allowance} allowed), {} violations",
        soaked.kills.len(),
        soaked.kills(Victim::Serve),
        soaked.acks.len(),
        stored.len(),
        violations.len(),
    );
    assert!(
        violations.is_empty(),
        "{variant} crash soak (seed {}), {} violations, the first: {:#?}",
        soaked.seed,
        violations.len(),
        &violations[..violations.len().min(20)]
    );
    assert!(!soaked.acks.is_empty(), "{variant}: the load was served");
    assert!(
        repeated <= allowance,
        "{variant}: {repeated} upstream calls were repeated, more than the {} kills can explain \
         ({allowance}: each kill interrupts at most {WORKERS} attempts)",
        soaked.kills.len()
    );
}

/// An acknowledged run exists, and an answered output is what the store kept.
fn check_ack(ack: &Ack, run: Option<&Option<Value>>, violations: &mut Vec<String>) {
    let Some(Some(run)) = run else {
        violations.push(format!("acknowledged run {} is not stored", ack.run_id));
        return;
    };
    if let Some(answered) = &ack.output
        && answered != &run["output"]
    {
        violations.push(format!(
            "run {} answered {answered} but stored {}",
            ack.run_id, run["output"]
        ));
    }
    let n = &run["output"]["joined"]["n"];
    if n != ack.n.as_str() {
        violations.push(format!(
            "run {} was posted n = {} but its output says {n}",
            ack.run_id, ack.n
        ));
    }
}

/// The run succeeded, every attempt is closed, each node succeeded exactly once, and no node
/// called the upstream after the call whose answer was committed.
fn check_run(id: &str, run: &Value, calls: &Calls, violations: &mut Vec<String>) {
    if run["status"] != "succeeded" {
        violations.push(format!(
            "run {id} did not succeed: {} (error {})",
            attempts_by_node(run),
            run["error"]
        ));
    }
    for node in NODES {
        let history = run["nodes"][node]["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let open = history.iter().any(|a| {
            !matches!(
                a["status"].as_str(),
                Some("succeeded" | "failed" | "skipped" | "cancelled")
            )
        });
        if open {
            violations.push(format!(
                "run {id} node {node} has an open attempt: {}",
                attempts_by_node(run)
            ));
        }
        let succeeded = history
            .iter()
            .filter(|a| a["status"] == "succeeded")
            .count();
        let last_succeeded = history.last().is_some_and(|a| a["status"] == "succeeded");
        if succeeded != 1 || !last_succeeded {
            let statuses: Vec<&Value> = history.iter().map(|a| &a["status"]).collect();
            violations.push(format!(
                "run {id} node {node}: attempts {statuses:?}, not one success, last"
            ));
        }
        if CALLING_NODES.contains(&node)
            && let Some(committed) = history.last()
        {
            check_calls(id, node, committed, calls, violations);
        }
    }
    check_inputs(id, run, violations);
}

/// Each call number in the run's output is the one its node committed: a dependent started
/// only from its needs' committed outcomes, never from an execution that was lost.
fn check_inputs(id: &str, run: &Value, violations: &mut Vec<String>) {
    let output = &run["output"];
    for (node, seen) in [
        ("lookup", &output["joined"]["lookup"]),
        ("score", &output["joined"]["score"]),
        ("deliver", &output["deliver"]),
    ] {
        let committed = run["nodes"][node]["history"]
            .as_array()
            .and_then(|history| history.last())
            .map(|attempt| &attempt["output"]["body"]["call"]);
        if committed != Some(seen) {
            violations.push(format!(
                "run {id}: its dependents saw call {seen} of {node}, but call {} is committed",
                committed.unwrap_or(&Value::Null)
            ));
        }
    }
}

/// The committed attempt's output names the call it came from; that must be the node's last.
fn check_calls(
    id: &str,
    node: &str,
    committed: &Value,
    calls: &Calls,
    violations: &mut Vec<String>,
) {
    let made = calls
        .get(&(id.to_owned(), node.to_owned()))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(call) = committed["output"]["body"]["call"].as_u64() else {
        violations.push(format!(
            "run {id} node {node}: the committed output names no call: {}",
            committed["output"]
        ));
        return;
    };
    let call = usize::try_from(call).unwrap_or(usize::MAX);
    if call == 0 || call > made.len() {
        violations.push(format!(
            "run {id} node {node}: the committed output names call {call} of {}",
            made.len()
        ));
    } else if call < made.len() {
        let later: Vec<String> = made[call..]
            .iter()
            .map(|c| format!("{} ({})", c.at.to_rfc3339(), c.key))
            .collect();
        violations.push(format!(
            "run {id} node {node} ran again after its success was committed: call {call} of {} \
             committed (attempt {}, finished {}), later calls {later:?}",
            made.len(),
            committed["attempt"],
            committed["finished_at"],
        ));
    }
}

/// Polls the run list until no run is queued or running; returns every stored run's id.
async fn wait_until_finished(http: &reqwest::Client, base: &str, variant: &str) -> Vec<String> {
    let give_up = Instant::now() + PATIENCE;
    loop {
        let runs = list_runs(http, base).await;
        let open: Vec<&String> = runs
            .iter()
            .filter(|(_, status)| matches!(status.as_str(), "queued" | "running"))
            .map(|(id, _)| id)
            .collect();
        if open.is_empty() {
            return runs.into_iter().map(|(id, _)| id).collect();
        }
        if Instant::now() > give_up {
            let shown: BTreeSet<String> = open.iter().take(5).map(|id| id.to_string()).collect();
            let details: Vec<String> = fetch_runs(http, base, &shown)
                .await
                .iter()
                .map(|(id, run)| match run {
                    Some(run) => format!("{id}: {}", attempts_by_node(run)),
                    None => format!("{id}: gone"),
                })
                .collect();
            panic!(
                "{variant}: {} of {} runs are still open {PATIENCE:?} after the last restart, \
                 e.g. {details:#?}",
                open.len(),
                runs.len(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The run's status and each node's attempt statuses, oldest first, on one line.
fn attempts_by_node(run: &Value) -> String {
    let nodes: Vec<String> = NODES
        .iter()
        .map(|node| {
            let statuses: Vec<&str> = run["nodes"][node]["history"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|attempt| attempt["status"].as_str())
                .collect();
            format!("{node} {statuses:?}")
        })
        .collect();
    format!("{} with {}", run["status"], nodes.join(", "))
}

/// Every stored run as (id, status), following the cursor.
async fn list_runs(http: &reqwest::Client, base: &str) -> Vec<(String, String)> {
    let mut runs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/runs?limit=500");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = get_json(http, &url).await;
        for run in page["runs"].as_array().into_iter().flatten() {
            let id = run["id"].as_str().unwrap_or_default().to_owned();
            let status = run["status"].as_str().unwrap_or_default().to_owned();
            runs.push((id, status));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return runs,
        }
    }
}

/// `GET /api/v1/runs/{id}` of each id, a few at once; `None` for a run that is not stored.
async fn fetch_runs(
    http: &reqwest::Client,
    base: &str,
    ids: &BTreeSet<String>,
) -> BTreeMap<String, Option<Value>> {
    futures::stream::iter(ids.iter().cloned())
        .map(|id| async move {
            let url = format!("{base}/api/v1/runs/{id}");
            let response = http.get(&url).send().await.expect("GET a run");
            let run = match response.status().as_u16() {
                404 => None,
                200 => Some(response.json().await.expect("run JSON")),
                status => panic!("GET {url} answered {status}"),
            };
            (id, run)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.expect("the API answers");
    assert!(
        response.status().is_success(),
        "GET {url} answered {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

/// A temporary folder for the SQLite file and its WAL, removed on drop.
struct TempFolder {
    path: std::path::PathBuf,
}

impl TempFolder {
    fn new() -> TempFolder {
        let path = std::env::temp_dir().join(format!("enrichflow-crash-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&path).expect("a temporary folder");
        TempFolder { path }
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new(&self.path));
    }
}
