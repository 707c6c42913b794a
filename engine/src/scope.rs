//! What templates can see (`trigger`, `nodes`, `secrets`, `vars`, `run`, `workflow`; a `foreach`
//! item's `item` and `index` are laid over it by [`crate::template::ItemScope`]),
//! and the same scope with secrets hidden, whose renderings are what gets stored (see
//! [`crate::redaction`]).

use enrichflow_nodes::Secrets;
use serde_json::{Map, Value, json};

use crate::store::{AttemptRecord, AttemptStatus, Json, Trigger};
use crate::template::{RunScope, ScopeReads};
use crate::vars::Vars;

use crate::redaction::REDACTED;

/// The run as the templates of one node (or the run's `output`) see it: the run's trigger and
/// the latest state of every node that has one. Nodes never reached are absent, so referring
/// to them is an undefined-name error. Only what `reads` says the templates read is there:
/// the trigger is parsed only when read, and a node's output is there only when read, as its
/// stored text (either can be a list import; see [`RunScope`]). A trigger that cannot be
/// parsed is an unreadable run.
pub fn for_run(
    trigger: &Trigger,
    reads: &ScopeReads,
    attempts: &[AttemptRecord],
    secrets: &Secrets,
    vars: &Vars,
    run_id: &str,
    workflow_id: &str,
) -> Result<RunScope, crate::store::Error> {
    let trigger = if reads.trigger {
        trigger.value()?
    } else {
        trigger.check()?;
        Value::Null
    };
    let latest = crate::scheduler::latest_attempts(attempts);
    let mut nodes = Map::new();
    let mut outputs = std::collections::BTreeMap::new();
    for (id, attempt) in latest {
        if !(attempt.status.is_finished() && reads.node(id)) {
            continue;
        }
        let (view, output) = node_view(attempt);
        nodes.insert(id.to_owned(), view);
        if let Some(output) = output {
            outputs.insert(id.to_owned(), output);
        }
    }
    // Inserted, not written with `json!`, which would copy the trigger and the node outputs.
    let mut scope = Map::new();
    scope.insert("trigger".to_owned(), trigger);
    scope.insert("nodes".to_owned(), Value::Object(nodes));
    scope.insert("secrets".to_owned(), secrets_object(secrets));
    scope.insert("vars".to_owned(), vars_object(vars));
    scope.insert("run".to_owned(), json!({ "id": run_id }));
    scope.insert("workflow".to_owned(), json!({ "id": workflow_id }));
    Ok(RunScope {
        value: Value::Object(scope),
        outputs,
    })
}

/// `nodes.<id>`, and its output kept as text: skipped and failed nodes expose `output: null`.
fn node_view(attempt: &AttemptRecord) -> (Value, Option<Json>) {
    let view = |output| {
        let mut view = Map::new();
        view.insert("status".to_owned(), json!(attempt.status.as_str()));
        view.insert("error".to_owned(), json!(attempt.error));
        if let Some(output) = output {
            view.insert("output".to_owned(), output);
        }
        Value::Object(view)
    };
    match (attempt.status, &attempt.output) {
        (AttemptStatus::Succeeded, Some(output)) => (view(None), Some(output.clone())),
        _ => (view(Some(Value::Null)), None),
    }
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
pub fn hide_secrets(scope: &mut RunScope) {
    if let Some(Value::Object(secrets)) = scope.value.get_mut("secrets") {
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
        let mut scope = RunScope::plain(secrets_only(&secrets));
        hide_secrets(&mut scope);
        assert_eq!(scope.value, json!({ "secrets": { "TOKEN": "[redacted]" } }));
    }

    #[test]
    fn vars_are_in_the_run_scope_and_stay_visible_when_secrets_are_hidden() {
        let secrets = Secrets::new(BTreeMap::from([(
            "TOKEN".to_owned(),
            "s3cr3t-value".to_owned(),
        )]));
        let vars = Vars::new(BTreeMap::from([("SMTP_PORT".to_owned(), "587".to_owned())]));
        let trigger = Trigger::from(json!({}));
        let everything = ScopeReads::everything();
        let mut scope = for_run(&trigger, &everything, &[], &secrets, &vars, "r1", "w1")
            .expect("a readable trigger");
        assert_eq!(scope.value["vars"], json!({ "SMTP_PORT": "587" }));
        hide_secrets(&mut scope);
        assert_eq!(scope.value["secrets"], json!({ "TOKEN": "[redacted]" }));
        assert_eq!(scope.value["vars"], json!({ "SMTP_PORT": "587" }));
    }

    #[test]
    fn only_what_the_templates_read_is_in_the_scope() {
        use crate::store::tests::{attempt, key};
        let done = |node: &str, output: Value| {
            let mut record = attempt(key(1, node, 1), AttemptStatus::Succeeded);
            record.output = Some(crate::store::Json::from(output));
            record
        };
        let attempts = [done("a", json!([1, 2])), done("b", json!("big"))];
        let reads = ScopeReads {
            trigger: false,
            nodes: Some(["a".to_owned()].into()),
        };
        let (secrets, vars) = (Secrets::default(), Vars::default());
        let readable = Trigger::from(json!({ "body": {} }));
        let scope = for_run(&readable, &reads, &attempts, &secrets, &vars, "r1", "w1")
            .expect("a readable trigger");
        assert_eq!(scope.value["trigger"], Value::Null);
        // The output is there as its stored text, not built.
        assert_eq!(
            scope.value["nodes"],
            json!({ "a": { "status": "succeeded", "error": null } })
        );
        let outputs: Vec<(&str, &str)> = scope
            .outputs
            .iter()
            .map(|(id, output)| (id.as_str(), output.text()))
            .collect();
        assert_eq!(outputs, [("a", "[1,2]")]);
        // Unread, an unreadable trigger still makes the run unreadable.
        let unreadable = Trigger::from_stored("{not json".to_owned());
        assert!(for_run(&unreadable, &reads, &attempts, &secrets, &vars, "r1", "w1").is_err());
        let everything = ScopeReads::everything();
        let scope = for_run(
            &readable,
            &everything,
            &attempts,
            &secrets,
            &vars,
            "r1",
            "w1",
        )
        .expect("a readable trigger");
        assert_eq!(scope.value["trigger"], json!({ "body": {} }));
        assert_eq!(scope.outputs["b"].text(), r#""big""#);
    }
}
