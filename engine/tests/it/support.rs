//! Helpers shared by the integration tests: fixture paths and an in-process test server (the
//! engine on a temporary SQLite file plus the HTTP API on a free port).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use enrichflow::api::{self, ApiOptions};
use enrichflow::catalog::{Catalog, CatalogHandle};
use enrichflow::queue::MemoryQueue;
use enrichflow::store::{SqliteStore, Store};
use enrichflow::template::Templates;
use enrichflow::{Engine, EngineOptions, telemetry};
use enrichflow_nodes::{Registry, egress};
use tokio_util::sync::CancellationToken;

/// The folder of one area's fixtures: `tests/fixtures/<area>`.
pub fn fixtures(area: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(area)
}

/// Installs the ring crypto provider, without which building a reqwest client panics.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs a future to completion on a runtime of its own in another thread: for clean-up in
/// `Drop`, which may run inside a test's runtime (where blocking on it would panic), including
/// while a failed test unwinds.
pub fn block_on_aside<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a clean-up runtime")
            .block_on(future)
    })
    .join()
    .expect("the clean-up thread does not panic")
}

/// How to start a [`TestServer`]; the default is what most tests want.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub api: ApiOptions,
    pub engine: EngineOptions,
    /// Whether `/metrics` is served (the process-wide Prometheus recorder).
    pub metrics: bool,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            api: ApiOptions::default(),
            engine: EngineOptions {
                workers: 4,
                shutdown_grace: Duration::from_secs(1),
                // The fake upstreams of the tests listen on loopback.
                egress: egress::Policy::allow_private_networks(),
                ..EngineOptions::default()
            },
            metrics: true,
        }
    }
}

/// The engine and its API on `127.0.0.1:<free port>`, over a fresh SQLite file. Dropping it
/// stops both and deletes the database with its folder.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub base_url: String,
    pub engine: Engine,
    pub shutdown: CancellationToken,
    /// The SQLite file, alone in a temporary folder.
    pub database: PathBuf,
    /// A client for the server (the crypto provider is installed).
    pub client: reqwest::Client,
}

impl TestServer {
    /// Serves the workflows of `workflows_dir` with the default options; panics on any
    /// set-up failure, including a workflow that does not load.
    pub async fn start(workflows_dir: &Path) -> TestServer {
        Self::start_with(workflows_dir, TestOptions::default()).await
    }

    pub async fn start_with(workflows_dir: &Path, options: TestOptions) -> TestServer {
        Self::start_with_store(workflows_dir, options, |store| store).await
    }

    /// Like [`TestServer::start_with`], with the store wrapped by `wrap` (to inject faults).
    pub async fn start_with_store(
        workflows_dir: &Path,
        options: TestOptions,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> TestServer {
        Self::start_with_parts(
            workflows_dir,
            options,
            Registry::with_builtins(),
            Templates::new(),
            wrap,
        )
        .await
    }

    /// Like [`TestServer::start_with_store`], with node types and template limits of the
    /// test's own (a node that panics, a tighter fuel budget).
    pub async fn start_with_parts(
        workflows_dir: &Path,
        options: TestOptions,
        registry: Registry,
        templates: Templates,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> TestServer {
        install_crypto();
        // Installed before the engine records anything, so every series is exported.
        let metrics = telemetry::prometheus().filter(|_| options.metrics);
        // A folder of its own, removed on drop: a connection the pool opens while the server
        // shuts down cannot re-create the database file in a folder that is gone.
        let folder = std::env::temp_dir().join(format!("enrichflow-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        let database = folder.join("enrichflow.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", database.display()))
            .await
            .expect("the test database opens");
        let (catalog, errors) = Catalog::load(workflows_dir, &registry, &templates);
        assert!(errors.is_empty(), "fixtures must load: {errors:#?}");
        let engine = Engine::build(
            options.engine,
            wrap(Arc::new(store)),
            Arc::new(MemoryQueue::new(1024)),
            CatalogHandle::new(catalog),
            registry,
            templates,
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(engine.clone().run(shutdown.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let server_options = options.api.server.clone();
        let router = api::router(engine.clone(), options.api, metrics);
        tokio::spawn(api::serve(
            listener,
            router,
            server_options,
            shutdown.clone(),
        ));
        TestServer {
            addr,
            base_url: format!("http://{addr}"),
            engine,
            shutdown,
            database,
            client: reqwest::Client::new(),
        }
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(folder) = self.database.parent() {
            // Twice, in case a closing connection wrote a file while the first pass ran.
            if std::fs::remove_dir_all(folder).is_err() {
                let _ = std::fs::remove_dir_all(folder);
            }
        }
    }
}

/// What one POST of `{"tag": …}` got back.
#[derive(Debug)]
pub struct TaggedAnswer {
    pub tag: String,
    pub status: reqwest::StatusCode,
    /// The `x-enrichflow-run-id` header, when the run was created.
    pub run_id: Option<String>,
    pub body: String,
}

/// `clients` concurrent clients, each POSTing `{"tag": tag(client, n)}` to `path` for `n` in
/// `0..runs`, one after another: the load of the tests that break writes under concurrency.
pub async fn post_tags(
    server: &TestServer,
    path: &str,
    clients: usize,
    runs: usize,
    tag: impl Fn(usize, usize) -> String,
) -> Vec<TaggedAnswer> {
    let tag = &tag;
    let each = (0..clients).map(|client| async move {
        let mut answers = Vec::new();
        for n in 0..runs {
            let tag = tag(client, n);
            let response = server
                .client
                .post(server.url(path))
                .json(&serde_json::json!({ "tag": tag }))
                .send()
                .await
                .expect("POST");
            let status = response.status();
            let run_id = response
                .headers()
                .get("x-enrichflow-run-id")
                .and_then(|id| id.to_str().ok())
                .map(str::to_owned);
            let body = response.text().await.expect("a body");
            answers.push(TaggedAnswer {
                tag,
                status,
                run_id,
                body,
            });
        }
        answers
    });
    futures::future::join_all(each)
        .await
        .into_iter()
        .flatten()
        .collect()
}
