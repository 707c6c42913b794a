//! Errors of the engine itself while executing an attempt: those that can never pass (a
//! workflow revision this process cannot parse) fail the attempt and its run instead of being
//! queued again for ever; passing ones are covered by `faults`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use enrichflow::catalog::{Catalog, CatalogHandle};
use enrichflow::queue::MemoryQueue;
use enrichflow::store::{
    AttemptKey, AttemptRecord, AttemptStatus, Attempts, RunRecord, RunStatus, SqliteStore, Store,
};
use enrichflow::template::Templates;
use enrichflow::{Engine, EngineOptions};
use enrichflow_nodes::Registry;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A revision stored by some other version of the engine, which this one cannot parse.
const UNPARSEABLE: &str = "id: elsewhere\nnodes:\n  a: { type: plugin.only_elsewhere }\n";

async fn running_run_of(store: &dyn Store, revision: &str) -> (RunRecord, AttemptKey) {
    store
        .save_revision("elsewhere", revision, UNPARSEABLE)
        .await
        .expect("revision saved");
    let now = Utc::now();
    let run = RunRecord {
        id: uuid::Uuid::now_v7().to_string(),
        workflow_id: "elsewhere".into(),
        revision: revision.into(),
        status: RunStatus::Running,
        trigger: json!({"type": "manual"}).into(),
        output: None,
        error: None,
        created_at: now,
        started_at: Some(now),
        finished_at: None,
        deadline_at: None,
        cancel_requested: false,
        idempotency_key: None,
        idempotency_body_hash: None,
    };
    store.create_run(&run).await.expect("run created");
    let key = AttemptKey {
        run_id: run.id.clone(),
        node_id: "a".into(),
        attempt: 1,
    };
    let attempt = AttemptRecord {
        key: key.clone(),
        status: AttemptStatus::Queued,
        input: None,
        output: None,
        error: None,
        retryable: false,
        not_before: None,
        created_at: now,
        started_at: None,
        finished_at: None,
        worker: None,
    };
    store
        .insert_attempt(&attempt)
        .await
        .expect("attempt inserted");
    (run, key)
}

/// Recovery queues the open attempt and advances the run; neither can load the revision. The
/// run used to stay `running` while its attempt went round the queue every 500 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_revision_cannot_be_parsed_fails_instead_of_looping() {
    crate::support::install_crypto();
    let store = Arc::new(
        SqliteStore::connect("sqlite::memory:")
            .await
            .expect("store"),
    );
    let (run, key) = running_run_of(store.as_ref(), "unparseable-revision").await;
    let engine = Engine::build(
        EngineOptions {
            workers: 2,
            ..EngineOptions::default()
        },
        store.clone(),
        Arc::new(MemoryQueue::new(16)),
        CatalogHandle::new(Catalog::from_workflows(Vec::new())),
        Registry::with_builtins(),
        Templates::new(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(shutdown.clone()));

    let finished = engine
        .wait(&run.id, Duration::from_secs(20))
        .await
        .expect("the store answers")
        .expect("the run finishes");
    assert_eq!(finished.status, RunStatus::Failed);
    let error = finished.error.expect("a reason");
    assert_eq!(error.kind, "revision");
    assert!(
        error.message.contains("cannot be loaded")
            && error
                .message
                .contains("unknown node type `plugin.only_elsewhere`"),
        "{}",
        error.message
    );
    let attempts = store.attempts(&run.id).await.expect("attempts");
    let attempt = attempts
        .iter()
        .find(|attempt| attempt.key == key)
        .expect("the attempt");
    assert!(attempt.status.is_finished(), "{:?}", attempt.status);

    shutdown.cancel();
    running
        .await
        .expect("the engine task")
        .expect("a clean shutdown");
}
