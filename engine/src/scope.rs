//! What templates can see (`trigger`, `nodes`, `secrets`, `vars`, `run`, `workflow`; a `foreach`
//! item's `item` and `index` are laid over it by [`crate::template::ItemScope`]),
//! and the same scope with secrets hidden, whose renderings are what gets stored (see
//! [`crate::redaction`]).

use enrichflow_nodes::Secrets;
use serde_json::{Map, Value, json};

use crate::store::{AttemptRecord, AttemptStatus};
use crate::vars::Vars;

use crate::redaction::REDACTED;

/// The scope of a node attempt: the run's trigger and the latest state of every node that has
/// one. Nodes never reached are absent, so referring to them is an undefined-name error. The
/// trigger is moved in, not copied: it can be a megabyte-sized body.
pub fn for_run(
    trigger: Value,
    attempts: &[AttemptRecord],
    secrets: &Secrets,
    vars: &Vars,
    run_id: &str,
    workflow_id: &str,
) -> Value {
    let latest = crate::scheduler::latest_attempts(attempts);
    let nodes: Map<String, Value> = latest
        .into_iter()
        .filter(|(_, attempt)| attempt.status.is_finished())
        .map(|(id, attempt)| (id.to_owned(), node_view(attempt)))
        .collect();
    // Inserted, not written with `json!`, which would copy the trigger and the node outputs.
    let mut scope = Map::new();
    scope.insert("trigger".to_owned(), trigger);
    scope.insert("nodes".to_owned(), Value::Object(nodes));
    scope.insert("secrets".to_owned(), secrets_object(secrets));
    scope.insert("vars".to_owned(), vars_object(vars));
    scope.insert("run".to_owned(), json!({ "id": run_id }));
    scope.insert("workflow".to_owned(), json!({ "id": workflow_id }));
    Value::Object(scope)
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

fn secrets_object(secrets: &Secrets) -> Value {
    Value::Object(
        secrets
            .iter()
            .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
            .collect(),
    )
}

/// `vars.<NAME>`: strings, shown as they are; [`hide_secrets`] leaves them alone.
fn vars_object(vars: &Vars) -> Value {
    Value::Object(
        vars.iter()
            .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
            .collect(),
    )
}

/// Replaces the value of every secret in `scope` by [`REDACTED`]: a template rendered again
/// with it shows `[redacted]` exactly where, and only where, it used a secret.
pub fn hide_secrets(scope: &mut Value) {
    if let Some(Value::Object(secrets)) = scope.get_mut("secrets") {
        for value in secrets.values_mut() {
            *value = Value::String(REDACTED.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn hidden_secrets_keep_their_names_and_lose_their_values() {
        let secrets = Secrets::new(BTreeMap::from([(
            "TOKEN".to_owned(),
            "s3cr3t-value".to_owned(),
        )]));
        let mut scope = secrets_only(&secrets);
        hide_secrets(&mut scope);
        assert_eq!(scope, json!({ "secrets": { "TOKEN": "[redacted]" } }));
    }

    #[test]
    fn vars_are_in_the_run_scope_and_stay_visible_when_secrets_are_hidden() {
        let secrets = Secrets::new(BTreeMap::from([(
            "TOKEN".to_owned(),
            "s3cr3t-value".to_owned(),
        )]));
        let vars = Vars::new(BTreeMap::from([("SMTP_PORT".to_owned(), "587".to_owned())]));
        let mut scope = for_run(json!({}), &[], &secrets, &vars, "r1", "w1");
        assert_eq!(scope["vars"], json!({ "SMTP_PORT": "587" }));
        hide_secrets(&mut scope);
        assert_eq!(scope["secrets"], json!({ "TOKEN": "[redacted]" }));
        assert_eq!(scope["vars"], json!({ "SMTP_PORT": "587" }));
    }
}
