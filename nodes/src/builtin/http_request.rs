//! `http.request`: any HTTP call. (Being written; see the nodes helper.)

use async_trait::async_trait;
use serde_json::Value;

use crate::{ConfigError, ErrorKind, Node, NodeContext, NodeError};

/// Any HTTP call.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRequest;

#[async_trait]
impl Node for HttpRequest {
    fn check_config(&self, _with: &Value) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn execute(&self, _ctx: &NodeContext, _with: Value) -> Result<Value, NodeError> {
        Err(NodeError::permanent(ErrorKind::Node, "not yet implemented"))
    }
}
