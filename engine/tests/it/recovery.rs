//! Start-up recovery and new work: a run triggered while the engine is still recovering must not
//! have its first attempt enqueued twice (once by the trigger, once as "open" by recovery).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use enrichflow::catalog::{Catalog, CatalogHandle};
use enrichflow::queue::MemoryQueue;
use enrichflow::store::{RunQuery, RunStatus, Runs, SqliteStore};
use enrichflow::template::Templates;
use enrichflow::{Engine, EngineOptions, TriggerRequest, workflow};
use enrichflow_nodes::{Registry, Secrets};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

struct Count(Arc<AtomicUsize>);

impl Respond for Count {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.fetch_add(1, Ordering::SeqCst);
        // Slow enough that two executions of one attempt would overlap.
        ResponseTemplate::new(200).set_delay(Duration::from_millis(100))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_triggered_during_recovery_executes_its_node_once() {
    crate::support::install_crypto();
    let mock = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    Mock::given(path("/once"))
        .respond_with(Count(calls.clone()))
        .mount(&mock)
        .await;

    let file = crate::support::fixtures("recovery").join("once.yaml");
    let text = std::fs::read_to_string(&file).expect("fixture");
    let registry = Registry::with_builtins();
    let templates = Templates::new();
    let workflow =
        Arc::new(workflow::load_str(&file, &text, &registry, &templates).expect("valid"));
    let store = Arc::new(
        SqliteStore::connect("sqlite::memory:")
            .await
            .expect("store"),
    );
    let options = EngineOptions {
        workers: 4,
        secrets: Secrets::new(BTreeMap::from([("BASE_URL".to_owned(), mock.uri())])),
        // The fake upstream listens on loopback.
        egress: enrichflow_nodes::egress::Policy::allow_private_networks(),
        ..EngineOptions::default()
    };
    let engine = Engine::build(
        options,
        store.clone(),
        Arc::new(MemoryQueue::new(16)),
        CatalogHandle::new(Catalog::from_workflows(vec![workflow.clone()])),
        registry,
        templates,
    );

    let request = TriggerRequest {
        workflow,
        trigger: json!({"type": "manual", "body": {}}).into(),
        idempotency_key: None,
        idempotency_body_hash: None,
    };
    let mut triggering = tokio::spawn({
        let engine = engine.clone();
        async move { engine.trigger(request).await }
    });
    // Nothing runs the engine yet, so recovery has not happened: the trigger must wait. This
    // waits for something that must not happen, so a bounded wait is the only way to see it.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut triggering).await;
    assert!(early.is_err(), "the trigger finished before recovery ran");
    let before = store.list_runs(&RunQuery::default()).await.expect("list");
    assert!(before.is_empty(), "a run was stored before recovery ran");

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(shutdown.clone()));
    let run = triggering.await.expect("joined").expect("triggered").run;
    let finished = engine
        .wait(&run.id, Duration::from_secs(10))
        .await
        .expect("store")
        .expect("the run finishes");
    assert_eq!(finished.status, RunStatus::Succeeded);
    shutdown.cancel();
    running.await.expect("joined").expect("clean shutdown");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the attempt executed twice"
    );
}
