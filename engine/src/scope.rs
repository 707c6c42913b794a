//! What templates can see (`trigger`, `nodes`, `secrets`, `run`, `workflow`, `item`, `index`),
//! and the redaction that keeps secret values out of everything the engine stores or prints.

use enrichflow_nodes::Secrets;
use serde_json::{Map, Value, json};

use crate::store::{AttemptRecord, AttemptStatus};

/// What replaces a secret value in stored data, logs and API responses.
pub const REDACTED: &str = "[redacted]";

/// The scope of a node attempt: the run's trigger and the latest state of every node that has
/// one. Nodes never reached are absent, so referring to them is an undefined-name error.
pub fn for_run(
    trigger: &Value,
    attempts: &[AttemptRecord],
    secrets: &Secrets,
    run_id: &str,
    workflow_id: &str,
) -> Value {
    let latest = crate::scheduler::latest_attempts(attempts);
    let nodes: Map<String, Value> = latest
        .into_iter()
        .filter(|(_, attempt)| attempt.status.is_finished())
        .map(|(id, attempt)| (id.to_owned(), node_view(attempt)))
        .collect();
    json!({
        "trigger": trigger,
        "nodes": nodes,
        "secrets": secrets_object(secrets),
        "run": { "id": run_id },
        "workflow": { "id": workflow_id },
    })
}

/// `nodes.<id>`: skipped and failed nodes expose `output: null`.
fn node_view(attempt: &AttemptRecord) -> Value {
    let output = match attempt.status {
        AttemptStatus::Succeeded => attempt.output.clone().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    json!({
        "status": attempt.status.as_str(),
        "output": output,
        "error": attempt.error,
    })
}

/// The scope of a webhook secret template: only `secrets`.
pub fn secrets_only(secrets: &Secrets) -> Value {
    json!({ "secrets": secrets_object(secrets) })
}

/// A copy of `scope` with `item` and `index` set, for one `foreach` execution.
pub fn with_item(scope: &Value, item: &Value, index: usize) -> Value {
    let mut scope = scope.clone();
    if let Some(map) = scope.as_object_mut() {
        map.insert("item".into(), item.clone());
        map.insert("index".into(), json!(index));
    }
    scope
}

fn secrets_object(secrets: &Secrets) -> Value {
    Value::Object(
        secrets
            .iter()
            .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
            .collect(),
    )
}

/// Replaces every occurrence of a secret value inside the strings of `value`.
pub fn redact(value: Value, secrets: &Secrets) -> Value {
    if secrets.is_empty() {
        return value;
    }
    match value {
        Value::String(text) => Value::String(redact_text(&text, secrets)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| redact(v, secrets)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, v)| (redact_text(&key, secrets), redact(v, secrets)))
                .collect(),
        ),
        other => other,
    }
}

/// Replaces every occurrence of a secret value inside `text`. Empty values are ignored, since
/// replacing them would mangle every string.
pub fn redact_text(text: &str, secrets: &Secrets) -> String {
    let mut text = text.to_owned();
    for (_, secret) in secrets.iter() {
        if !secret.is_empty() && text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secrets() -> Secrets {
        Secrets::new(BTreeMap::from([
            ("TOKEN".to_owned(), "s3cr3t".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]))
    }

    #[test]
    fn redacts_nested_strings_and_keys() {
        let value = json!({"s3cr3t": ["Bearer s3cr3t", 1, {"x": "s3cr3t"}], "n": null});
        let redacted = redact(value, &secrets());
        assert_eq!(
            redacted,
            json!({"[redacted]": ["Bearer [redacted]", 1, {"x": "[redacted]"}], "n": null})
        );
    }

    #[test]
    fn empty_secrets_change_nothing() {
        assert_eq!(redact_text("abc", &secrets()), "abc");
    }

    #[test]
    fn item_scope_adds_item_and_index() {
        let scope = with_item(&json!({"trigger": {}}), &json!({"a": 1}), 3);
        assert_eq!(scope["item"]["a"], 1);
        assert_eq!(scope["index"], 3);
    }
}
