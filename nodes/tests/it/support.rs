//! What every node test needs: a context for attempt `attempt` of node `node_id` of run `run-1`.

use enrichflow_nodes::{NodeContext, Secrets, Services};
use tokio_util::sync::CancellationToken;

pub fn context(node_id: &str, attempt: u32) -> NodeContext {
    // reqwest is built without a default crypto provider; a second install is a harmless error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    NodeContext {
        run_id: "run-1".into(),
        workflow_id: "leads".into(),
        node_id: node_id.into(),
        attempt,
        idempotency_key: NodeContext::idempotency_key_for("run-1", node_id, attempt),
        cancellation: CancellationToken::new(),
        http: reqwest::Client::new(),
        secrets: Secrets::default(),
        services: Services::local(),
    }
}
