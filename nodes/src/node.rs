//! The `Node` trait every node type implements, built in or loaded as a plugin.

use async_trait::async_trait;
use serde_json::Value;

use crate::{ConfigError, NodeContext, NodeError};

/// One node type (`http.request`, `transform`, …). A single instance serves every attempt of every
/// run, concurrently, so implementations keep per-attempt state on the stack.
#[async_trait]
pub trait Node: Send + Sync + 'static {
    /// Checks a node's `with` block when the workflow is loaded, before any run exists.
    ///
    /// Values may still be templates: any string containing `{{` must be accepted wherever a
    /// value of any type may appear, because it is only rendered when the node runs. Unknown keys
    /// and missing required keys are errors.
    fn check_config(&self, with: &Value) -> Result<(), ConfigError>;

    /// Runs one attempt with the rendered `with` block and returns the node's output.
    ///
    /// An attempt may run more than once for the same `ctx.idempotency_key` (delivery is at least
    /// once), so side effects should carry that key where the receiving system can use it.
    async fn execute(&self, ctx: &NodeContext, with: Value) -> Result<Value, NodeError>;
}
