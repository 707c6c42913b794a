//! What every node test needs: a context for attempt `attempt` of node `node_id` of run `run-1`.

use enrichflow_nodes::{NodeContext, Secrets, Services, egress};
use tokio_util::sync::CancellationToken;

/// A context whose calls may reach loopback, where the tests' fake servers listen.
pub fn context(node_id: &str, attempt: u32) -> NodeContext {
    context_with(node_id, attempt, egress::Policy::allow_private_networks())
}

/// A context under `policy`, with the client the engine would build from it.
pub fn context_with(node_id: &str, attempt: u32, policy: egress::Policy) -> NodeContext {
    // reqwest is built without a default crypto provider; a second install is a harmless error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    NodeContext {
        run_id: "run-1".into(),
        workflow_id: "leads".into(),
        node_id: node_id.into(),
        attempt,
        idempotency_key: NodeContext::idempotency_key_for("run-1", node_id, attempt),
        cancellation: CancellationToken::new(),
        http: policy.client().expect("the client builds"),
        egress: policy,
        secrets: Secrets::default(),
        services: Services::local(),
    }
}
