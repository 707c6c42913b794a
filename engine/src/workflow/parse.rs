//! The located YAML tree of one file → a [`Workflow`], with every problem collected: the
//! top-level keys here, triggers and nodes in their own modules, then the `needs` graph.

use std::collections::HashSet;

use enrichflow_nodes::Registry;

use crate::template::Templates;

use super::duration;
use super::fields::{Fields, Problems, locate};
use super::graph::Dag;
use super::located::{Entry, Node, Position};
use super::model::{NodeId, Source, Workflow, WorkflowId};
use super::node::{self, ParsedNode};
use super::references;
use super::trigger;

const KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "inputs",
    "triggers",
    "timeout",
    "concurrency",
    "nodes",
    "output",
];

/// The most nodes a workflow may have.
pub const MAX_NODES: usize = 10_000;

/// The workflow, or `None` with the reasons in `problems`.
pub fn workflow(
    problems: &mut Problems,
    root: &Node,
    source: Source,
    registry: &Registry,
    templates: &Templates,
) -> Option<Workflow> {
    let start = Position { line: 1, column: 1 };
    let fields = Fields::read(problems, root, "", start)?;
    fields.only(problems, KEYS);
    let id = fields.require(problems, "id").and_then(|entry| {
        let text = problems.string(&entry.value, "id")?;
        WorkflowId::parse(text)
            .map_err(|message| problems.add(entry.value.at, "id", message))
            .ok()
    });
    let mut text = |key: &str| {
        let entry = fields.get(key)?;
        problems.string(&entry.value, key).map(str::to_owned)
    };
    let name = text("name");
    let description = text("description").unwrap_or_default();
    let inputs = fields
        .get("inputs")
        .and_then(|entry| inputs(problems, entry));
    let triggers = fields
        .get("triggers")
        .map(|entry| trigger::parse_all(problems, templates, &entry.value))
        .unwrap_or_default();
    let timeout = fields.get("timeout").and_then(|entry| {
        problems.positive_duration(&entry.value, "timeout", duration::MAX_RUN_TIMEOUT)
    });
    let concurrency = fields.get("concurrency").and_then(|entry| {
        let limit = problems.positive(&entry.value, "concurrency", u64::from(u32::MAX))?;
        u32::try_from(limit).ok()
    });
    let mut output_references = Vec::new();
    let output = fields.get("output").map(|entry| {
        problems.templates(templates, &entry.value, "output");
        references::collect(templates, &entry.value, "output", &mut output_references);
        entry.value.to_json()
    });
    let mut parsed = fields
        .require(problems, "nodes")
        .map(|entry| nodes(problems, registry, templates, entry))
        .unwrap_or_default();
    let dag = graph(problems, &mut parsed);
    if let Some(dag) = &dag {
        let read = parsed.iter().flat_map(|node| &node.references);
        let upstream = dag.upstream_of(references::targets(read));
        for node in &parsed {
            let id = Some(node.def.id.as_str());
            references::check(problems, dag, &upstream, id, &node.references);
        }
        references::check(problems, dag, &upstream, None, &output_references);
    }

    if !problems.is_empty() {
        return None;
    }
    let id = id?;
    Some(Workflow {
        name: name.unwrap_or_else(|| id.to_string()),
        id,
        description,
        inputs,
        triggers,
        timeout,
        concurrency,
        nodes: parsed
            .into_iter()
            .map(|node| (node.def.id.clone(), node.def))
            .collect(),
        output_reads: templates.scope_reads(&output.iter().collect::<Vec<_>>(), &[]),
        output,
        source,
        dag: dag?,
    })
}

/// A JSON Schema, compiled once here so a broken one is a load error rather than a 422 later.
fn inputs(problems: &mut Problems, entry: &Entry) -> Option<serde_json::Value> {
    let schema = entry.value.to_json();
    if !schema.is_object() {
        return problems.wrong_type(&entry.value, "inputs", "a map (a JSON Schema)");
    }
    if let Err(error) = jsonschema::validator_for(&schema) {
        let pointer = error.instance_path().to_string();
        let inner = pointer.trim_start_matches('/').replace('/', ".");
        let at = locate(&entry.value, &inner).unwrap_or(entry.value.at);
        let path = if inner.is_empty() {
            "inputs".to_owned()
        } else {
            format!("inputs.{inner}")
        };
        problems.add(at, &path, format!("invalid JSON Schema: {error}"));
        return None;
    }
    Some(schema)
}

/// Every node with a valid id, in file order, its `needs` resolved against the others.
fn nodes(
    problems: &mut Problems,
    registry: &Registry,
    templates: &Templates,
    entry: &Entry,
) -> Vec<ParsedNode> {
    let Some(fields) = Fields::read(problems, &entry.value, "nodes", entry.key_at) else {
        return Vec::new();
    };
    if fields.entries().is_empty() {
        problems.add(entry.key_at, "nodes", "a workflow needs at least one node");
    }
    if fields.entries().len() > MAX_NODES {
        let message = format!(
            "a workflow may have at most {MAX_NODES} nodes, found {}",
            fields.entries().len()
        );
        problems.add(entry.key_at, "nodes", message);
        return Vec::new();
    }
    let mut parsed: Vec<ParsedNode> = fields
        .entries()
        .iter()
        .filter_map(|node| node::parse(problems, registry, templates, node))
        .collect();
    // Needs naming a node whose id is invalid are not reported twice.
    let written: HashSet<&str> = fields
        .entries()
        .iter()
        .map(|node| node.key.as_str())
        .collect();
    let valid: HashSet<NodeId> = parsed.iter().map(|node| node.def.id.clone()).collect();
    for node in &mut parsed {
        let mut seen = HashSet::new();
        for (name, at, path) in &node.needs {
            if let Some(need) = valid.get(name.as_str()) {
                if seen.insert(need) {
                    node.def.needs.push(need.clone());
                }
            } else if !written.contains(name.as_str()) {
                let names = fields.entries().iter().map(|node| node.key.as_str());
                let message = match problems.suggestion(name, names) {
                    Some(close) => format!("unknown node `{name}` (did you mean `{close}`?)"),
                    None => format!("unknown node `{name}`"),
                };
                problems.add(*at, path, message);
            }
        }
    }
    parsed
}

/// The DAG, or `None` with each cycle reported at the `needs` entry that starts it.
fn graph(problems: &mut Problems, parsed: &mut [ParsedNode]) -> Option<Dag> {
    let cycles = match Dag::build(
        parsed
            .iter()
            .map(|node| (&node.def.id, node.def.needs.as_slice())),
    ) {
        Ok(dag) => return Some(dag),
        Err(cycles) => cycles,
    };
    for cycle in cycles {
        let (first, second) = (&cycle.chain[0], &cycle.chain[1]);
        let entry = parsed
            .iter()
            .find(|node| node.def.id == *first)
            .and_then(|node| {
                node.needs
                    .iter()
                    .find(|(name, _, _)| name == second.as_str())
            });
        if let Some((_, at, path)) = entry {
            problems.add(*at, path, format!("`needs` forms a cycle: {cycle}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use serde_json::json;

    use super::super::load_str;
    use super::super::model::{OnError, Respond, RetryPolicy, Trigger};
    use super::*;

    fn load(text: &str) -> Result<Workflow, Vec<String>> {
        load_str(
            Path::new("t.yaml"),
            text,
            &Registry::with_builtins(),
            &Templates::new(),
        )
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_foreach_over_a_list_in_the_trigger_reads_it_from_the_text_unless_with_reads_the_trigger()
    -> Result<(), Vec<String>> {
        let text = r#"
id: import
nodes:
  items:
    type: transform
    foreach: "{{ trigger.body.leads }}"
    with: { value: "{{ item.email }}/{{ index }}" }
  around:
    type: transform
    foreach: "{{ trigger.body.leads }}"
    with: { value: "{{ trigger.body.source }}/{{ item }}" }
  computed:
    type: transform
    foreach: "{{ trigger.body.leads | reverse }}"
    with: { value: "{{ item }}" }
"#;
        let workflow = load(text)?;
        let node = |id: &str| workflow.node(id).expect("the node");
        let path = Some(vec!["body".to_owned(), "leads".to_owned()]);
        assert_eq!(node("items").foreach_trigger_path, path);
        assert!(
            !node("items").reads.trigger,
            "the list is read from the text"
        );
        assert_eq!(node("around").foreach_trigger_path, path);
        assert!(node("around").reads.trigger, "`with` reads the trigger");
        assert_eq!(node("computed").foreach_trigger_path, None);
        assert!(node("computed").reads.trigger);
        Ok(())
    }

    #[test]
    fn reads_every_field() {
        let text = r#"
id: lead-enrichment
name: Lead enrichment
description: Enrich leads.
inputs: { type: object, required: [email] }
triggers:
  - webhook: { path: leads, secret: "{{ secrets.HOOK }}", respond: on_complete }
  - cron: { schedule: "*/15 * * * *", timezone: Europe/Berlin, input: { source: backfill } }
timeout: 5m
concurrency: 50
nodes:
  score:
    type: transform
    needs: company
    if: nodes.company.output.status == 200
    with: { value: "{{ nodes.company.output.body }}" }
    on_error: continue
  company:
    type: http.request
    with: { url: "https://example.com/{{ trigger.body.domain }}" }
    retry: { attempts: 5, backoff: 250ms, max_backoff: 1m }
    timeout: 10s
  each:
    type: transform
    foreach: "{{ trigger.body.contacts }}"
    parallelism: 4
    with: { value: "{{ item }}" }
output: "{{ nodes.score.output }}"
"#;
        let workflow = load(text).unwrap();
        assert_eq!(workflow.id.as_str(), "lead-enrichment");
        assert_eq!(workflow.name, "Lead enrichment");
        assert_eq!(
            workflow.inputs,
            Some(json!({"type": "object", "required": ["email"]}))
        );
        assert_eq!(workflow.timeout, Some(Duration::from_secs(300)));
        assert_eq!(workflow.concurrency, Some(50));
        assert_eq!(workflow.output, Some(json!("{{ nodes.score.output }}")));
        let [Trigger::Webhook(hook), Trigger::Cron(cron)] = workflow.triggers.as_slice() else {
            panic!("two triggers: {:?}", workflow.triggers)
        };
        assert_eq!(hook.path, "leads");
        assert_eq!(hook.secret.as_deref(), Some("{{ secrets.HOOK }}"));
        assert_eq!(hook.respond, Respond::OnComplete);
        assert_eq!(cron.expression, "*/15 * * * *");
        assert_eq!(cron.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(cron.input, json!({"source": "backfill"}));
        let order: Vec<&str> = workflow
            .dag
            .topological_order()
            .iter()
            .map(NodeId::as_str)
            .collect();
        assert_eq!(order, ["company", "score", "each"]);
        let score = &workflow.nodes["score"];
        assert_eq!(score.needs, [NodeId::parse("company").unwrap()]);
        assert_eq!(
            score.condition.as_deref(),
            Some("nodes.company.output.status == 200")
        );
        assert_eq!(score.on_error, OnError::Continue);
        let company = &workflow.nodes["company"];
        assert_eq!(company.kind, "http.request");
        let retry = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(60),
        };
        assert_eq!(company.retry, retry);
        assert_eq!(company.timeout, Some(Duration::from_secs(10)));
        let each = &workflow.nodes["each"];
        assert_eq!(each.foreach, Some(json!("{{ trigger.body.contacts }}")));
        assert_eq!(each.parallelism, 4);
    }

    #[test]
    fn fills_in_defaults() {
        let text = "id: tiny\ntriggers:\n  - webhook: { path: t }\n  - cron: { schedule: '0 9 * * *' }\nnodes:\n  a: { type: transform, with: { value: 1 } }\n  b: { type: transform, foreach: [1, 2], with: { value: 2 } }\n";
        let workflow = load(text).unwrap();
        assert_eq!(workflow.name, "tiny");
        assert_eq!(workflow.description, "");
        assert_eq!(
            (
                workflow.inputs.as_ref(),
                workflow.timeout,
                workflow.concurrency
            ),
            (None, None, None)
        );
        let [Trigger::Webhook(hook), Trigger::Cron(cron)] = workflow.triggers.as_slice() else {
            panic!("two triggers")
        };
        assert_eq!(
            (hook.respond, hook.secret.as_deref()),
            (Respond::Accepted, None)
        );
        assert_eq!((cron.timezone, &cron.input), (chrono_tz::UTC, &json!({})));
        let a = &workflow.nodes["a"];
        assert_eq!(a.retry, RetryPolicy::default());
        assert_eq!(
            (a.on_error, a.parallelism, a.timeout, &a.condition),
            (OnError::Fail, 1, None, &None)
        );
        assert_eq!(workflow.nodes["b"].parallelism, 1);
        assert_eq!(workflow.source.hash.len(), 64);
    }

    #[test]
    fn a_long_backoff_raises_the_default_ceiling() {
        let text = "id: x\nnodes:\n  a: { type: transform, with: { value: 1 }, retry: { attempts: 2, backoff: 5m } }\n";
        let retry = load(text).unwrap().nodes["a"].retry;
        assert_eq!(
            (retry.backoff, retry.max_backoff),
            (Duration::from_secs(300), Duration::from_secs(300))
        );
    }

    #[test]
    fn if_accepts_a_boolean_and_needs_are_deduplicated() {
        let text = "id: x\nnodes:\n  a: { type: transform, with: { value: 1 } }\n  b: { type: transform, needs: [a, a], if: false, with: { value: 1 } }\n";
        let workflow = load(text).unwrap();
        assert_eq!(workflow.nodes["b"].condition.as_deref(), Some("false"));
        assert_eq!(workflow.nodes["b"].needs.len(), 1);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = "id: Bad Id\nnodes:\n  a: { type: transfrom, needs: [ghost] }\n  b: { type: transform, with: { value: 1 }, retry: { attempts: 0 } }\n";
        let errors = load(text).unwrap_err();
        assert_eq!(
            errors,
            [
                "t.yaml:1:5: id: invalid workflow id `Bad Id`: use lowercase letters, digits, `_` and `-`",
                "t.yaml:3:14: nodes.a.type: unknown node type `transfrom` (did you mean `transform`?)",
                "t.yaml:3:33: nodes.a.needs[0]: unknown node `ghost`",
                "t.yaml:4:64: nodes.b.retry.attempts: must be at least 1, found 0",
            ]
        );
    }
}
