//! `transform`: reshapes data with templates; the output is the rendered `value`.

use async_trait::async_trait;
use serde_json::Value;

use crate::{ConfigError, Node, NodeContext, NodeError};

/// `with: { value: … }`. The engine renders templates before `execute`, so the node only hands
/// the rendered value back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transform;

#[async_trait]
impl Node for Transform {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        let Some(map) = with.as_object() else {
            return Err(ConfigError::new("", "expected a map with the key `value`"));
        };
        if let Some(key) = map.keys().find(|key| key.as_str() != "value") {
            return Err(ConfigError::new(
                key.clone(),
                format!("unknown key `{key}`; transform takes only `value`"),
            ));
        }
        if !map.contains_key("value") {
            return Err(ConfigError::new("value", "missing required key `value`"));
        }
        Ok(())
    }

    async fn execute(&self, _ctx: &NodeContext, mut with: Value) -> Result<Value, NodeError> {
        Ok(with
            .as_object_mut()
            .and_then(|map| map.remove("value"))
            .unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_only_value() {
        assert!(Transform.check_config(&json!({"value": 1})).is_ok());
        let error = Transform
            .check_config(&json!({"value": 1, "extra": 2}))
            .unwrap_err();
        assert_eq!(error.path, "extra");
        assert!(Transform.check_config(&json!({})).is_err());
        assert!(Transform.check_config(&json!("x")).is_err());
    }
}
