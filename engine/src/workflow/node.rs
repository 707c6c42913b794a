//! One entry of `nodes:`: its type, `needs`, `with`, `if`, retry and `foreach` settings, and the
//! node type's own check of its `with` block.

use enrichflow_nodes::Registry;
use serde_json::Value;

use crate::template::Templates;

use super::duration;
use super::fields::{Fields, Problems, at_index, join, locate};
use super::located::{Entry, Node, Position, Yaml};
use super::model::{NodeDef, NodeId, OnError, RetryPolicy};
use super::references::{self, Reference};
use super::suggest;

const KEYS: &[&str] = &[
    "type",
    "needs",
    "with",
    "if",
    "retry",
    "timeout",
    "on_error",
    "foreach",
    "parallelism",
];
const RETRY_KEYS: &[&str] = &["attempts", "backoff", "max_backoff"];

/// A node as read, with what the workflow-level checks need: its `needs` as written and where.
pub struct ParsedNode {
    pub def: NodeDef,
    /// Each `needs` entry that is a string, with its position and path.
    pub needs: Vec<(String, Position, String)>,
    /// The `nodes.<id>` its templates (`with`, `if`, `foreach`) read.
    pub references: Vec<Reference>,
}

/// Parses `nodes.<id>`; `None` only when the id itself is invalid (its body is still checked).
pub fn parse(
    problems: &mut Problems,
    registry: &Registry,
    templates: &Templates,
    entry: &Entry,
) -> Option<ParsedNode> {
    let path = join("nodes", &entry.key);
    let id = NodeId::parse(&entry.key)
        .map_err(|message| problems.add(entry.key_at, &path, message))
        .ok();
    let fields = Fields::read(problems, &entry.value, &path, entry.key_at)?;
    fields.only(problems, KEYS);

    let kind = fields
        .require(problems, "type")
        .and_then(|found| problems.string(&found.value, &fields.path("type")))
        .unwrap_or_default();
    let needs = fields
        .get("needs")
        .map(|found| needs(problems, &found.value, &fields.path("needs")))
        .unwrap_or_default();
    let with = fields.get("with");
    if let Some(with) = with {
        problems.templates(templates, &with.value, &fields.path("with"));
    }
    let with_json = with.map_or_else(
        || Value::Object(Default::default()),
        |with| with.value.to_json(),
    );
    check_type(problems, registry, &fields, kind, with, &with_json);

    let condition = fields
        .get("if")
        .and_then(|found| condition(problems, templates, found, &fields));
    let retry = fields
        .get("retry")
        .and_then(|found| retry(problems, found, &fields.path("retry")))
        .unwrap_or_default();
    let timeout = fields.get("timeout").and_then(|found| {
        let path = fields.path("timeout");
        problems.positive_duration(&found.value, &path, duration::MAX_ATTEMPT_TIMEOUT)
    });
    let on_error = fields
        .get("on_error")
        .and_then(|found| on_error(problems, found, &fields.path("on_error")))
        .unwrap_or_default();
    let foreach = fields
        .get("foreach")
        .and_then(|found| foreach(problems, templates, found, &fields));
    let parallelism = parallelism(problems, &fields, foreach.is_some());
    let references = node_references(templates, &fields);
    let foreach_trigger_path = foreach.as_ref().and_then(trigger_path);
    // A list named in the trigger is read from the trigger's text (see `NodeDef`): it is not
    // a read that makes the scope hold the trigger.
    let foreach_read = foreach.as_ref().filter(|_| foreach_trigger_path.is_none());
    let reads = templates.scope_reads(
        &[Some(&with_json), foreach_read]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        condition.as_deref().as_slice(),
    );

    let def = NodeDef {
        id: id?,
        kind: kind.to_owned(),
        // Filled in by the workflow parser once every node id is known.
        needs: Vec::new(),
        with: with_json,
        condition,
        retry,
        timeout,
        on_error,
        foreach,
        parallelism,
        reads,
        foreach_trigger_path,
    };
    Some(ParsedNode {
        def,
        needs,
        references,
    })
}

/// What the node's templates read from `nodes`, with where.
fn node_references(templates: &Templates, fields: &Fields<'_>) -> Vec<Reference> {
    let mut found = Vec::new();
    for key in ["with", "foreach"] {
        if let Some(entry) = fields.get(key) {
            references::collect(templates, &entry.value, &fields.path(key), &mut found);
        }
    }
    if let Some(entry) = fields.get("if")
        && let Yaml::String(expression) = &entry.value.value
    {
        found.extend(
            templates
                .expression_node_references(expression)
                .into_iter()
                .map(|node| Reference {
                    node,
                    at: entry.value.at,
                    path: fields.path("if"),
                }),
        );
    }
    found
}

/// `needs: [a, b]`, or a single `needs: a`.
fn needs(problems: &mut Problems, node: &Node, path: &str) -> Vec<(String, Position, String)> {
    let items: Vec<(&Node, String)> = match &node.value {
        Yaml::String(_) => vec![(node, path.to_owned())],
        Yaml::List(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| (item, at_index(path, index)))
            .collect(),
        _ => {
            return problems
                .wrong_type(node, path, "a list of node ids")
                .unwrap_or_default();
        }
    };
    items
        .into_iter()
        .filter_map(|(item, path)| Some((problems.string(item, &path)?.to_owned(), item.at, path)))
        .collect()
}

/// Looks the type up and lets it check its `with` block; errors point into `with`.
fn check_type(
    problems: &mut Problems,
    registry: &Registry,
    fields: &Fields<'_>,
    kind: &str,
    with: Option<&Entry>,
    with_json: &Value,
) {
    let Some(type_entry) = fields.get("type").filter(|_| !kind.is_empty()) else {
        return;
    };
    let Some(node_type) = registry.get(kind) else {
        let message = match suggest::closest(kind, registry.kinds()) {
            Some(close) => format!("unknown node type `{kind}` (did you mean `{close}`?)"),
            None => {
                let known: Vec<&str> = registry.kinds().collect();
                format!(
                    "unknown node type `{kind}` (known types: {})",
                    known.join(", ")
                )
            }
        };
        problems.add(type_entry.value.at, &fields.path("type"), message);
        return;
    };
    if let Err(error) = node_type.check_config(with_json) {
        let with_path = fields.path("with");
        let path = if error.path.is_empty() {
            with_path
        } else {
            join(&with_path, &error.path)
        };
        let at = with
            .map(|with| locate(&with.value, &error.path).unwrap_or(with.key_at))
            .unwrap_or(type_entry.key_at);
        problems.add(at, &path, error.message);
    }
}

/// `if:` is a bare expression; a YAML boolean is taken as the expression `true`/`false`.
fn condition(
    problems: &mut Problems,
    templates: &Templates,
    entry: &Entry,
    fields: &Fields<'_>,
) -> Option<String> {
    let path = fields.path("if");
    let expression = match &entry.value.value {
        Yaml::Bool(flag) => flag.to_string(),
        Yaml::String(text) => text.clone(),
        _ => return problems.wrong_type(&entry.value, &path, "an expression"),
    };
    match templates.check_expression(&expression) {
        Ok(()) => Some(expression),
        Err(error) => {
            problems.add(entry.value.at, &path, error.to_string());
            None
        }
    }
}

fn retry(problems: &mut Problems, entry: &Entry, path: &str) -> Option<RetryPolicy> {
    let fields = Fields::read(problems, &entry.value, path, entry.key_at)?;
    fields.only(problems, RETRY_KEYS);
    let defaults = RetryPolicy::default();
    let read = |key: &str| fields.get(key).map(|found| (found, fields.path(key)));
    let attempts = match read("attempts") {
        None => Some(defaults.attempts),
        Some((found, path)) => problems
            .positive(&found.value, &path, u64::from(u32::MAX))
            .and_then(|attempts| u32::try_from(attempts).ok()),
    };
    let backoff = match read("backoff") {
        None => Some(defaults.backoff),
        Some((found, path)) => problems.duration(&found.value, &path, duration::MAX_BACKOFF),
    };
    let max_backoff = match read("max_backoff") {
        None => Some(defaults.max_backoff.max(backoff.unwrap_or_default())),
        Some((found, path)) => problems.duration(&found.value, &path, duration::MAX_BACKOFF),
    };
    let (attempts, backoff, max_backoff) = (attempts?, backoff?, max_backoff?);
    if max_backoff < backoff {
        let at = fields
            .get("max_backoff")
            .map_or(entry.key_at, |found| found.value.at);
        problems.add(
            at,
            &fields.path("max_backoff"),
            "must not be shorter than `backoff`",
        );
        return None;
    }
    Some(RetryPolicy {
        attempts,
        backoff,
        max_backoff,
    })
}

fn on_error(problems: &mut Problems, entry: &Entry, path: &str) -> Option<OnError> {
    match problems.string(&entry.value, path)? {
        "fail" => Some(OnError::Fail),
        "continue" => Some(OnError::Continue),
        other => {
            let message = format!("expected `fail` or `continue`, found `{other}`");
            problems.add(entry.value.at, path, message);
            None
        }
    }
}

/// A template that renders to a list, or a literal list.
fn foreach(
    problems: &mut Problems,
    templates: &Templates,
    entry: &Entry,
    fields: &Fields<'_>,
) -> Option<Value> {
    let path = fields.path("foreach");
    if !matches!(entry.value.value, Yaml::String(_) | Yaml::List(_)) {
        return problems.wrong_type(&entry.value, &path, "a template or a list");
    }
    problems.templates(templates, &entry.value, &path);
    Some(entry.value.to_json())
}

/// Defaults to 1: items run one after another unless the workflow asks for more, which is
/// the polite choice towards the rate-limited APIs enrichment nodes call.
fn parallelism(problems: &mut Problems, fields: &Fields<'_>, has_foreach: bool) -> usize {
    let Some(found) = fields.get("parallelism") else {
        return 1;
    };
    let path = fields.path("parallelism");
    let parallelism = problems.positive(&found.value, &path, 10_000);
    if !has_foreach && fields.get("foreach").is_none() {
        problems.add(found.key_at, &path, "`parallelism` needs `foreach`");
    }
    parallelism
        .and_then(|value| usize::try_from(value).ok())
        .unwrap_or(1)
}

/// The path under `trigger` that `foreach` names, when it is a plain path into the trigger
/// (`{{ trigger.body.leads }}`: `body`, `leads`).
fn trigger_path(foreach: &Value) -> Option<Vec<String>> {
    match Templates::named_path(foreach)?.split_first() {
        Some((&"trigger", rest)) => Some(rest.iter().map(|name| (*name).to_owned()).collect()),
        _ => None,
    }
}
