//! Which nodes a workflow's templates read (`nodes.<id>`), and where, so that a reference to a
//! node that does not exist, or that has not finished when the template renders, is a load error
//! instead of a run-time `template` error.

use std::collections::HashSet;

use crate::template::Templates;

use super::fields::{Problems, each_string};
use super::graph::Dag;
use super::located::{Node, Position};
use super::suggest;

/// One `nodes.<id>` read by a template.
#[derive(Debug, Clone)]
pub struct Reference {
    pub node: String,
    pub at: Position,
    pub path: String,
}

/// The references of every template string inside `node` (map keys are not templates).
pub fn collect(templates: &Templates, node: &Node, path: &str, found: &mut Vec<Reference>) {
    each_string(node, path, &mut |string, text, path| {
        let read = templates.node_references(text).into_iter();
        found.extend(read.map(|id| Reference {
            node: id,
            at: string.at,
            path: path.to_owned(),
        }));
    });
}

/// Every referenced node must exist; a node's own templates may only read nodes upstream of it
/// (its needs, their needs, …), since no other node is guaranteed to have finished.
pub fn check(problems: &mut Problems, dag: &Dag, node: Option<&str>, references: &[Reference]) {
    let known: Vec<&str> = dag
        .topological_order()
        .iter()
        .map(|id| id.as_str())
        .collect();
    let upstream = node.map(|id| ancestors(dag, id));
    for reference in references {
        let name = reference.node.as_str();
        if !known.contains(&name) {
            let message = match suggest::closest(name, known.iter().copied()) {
                Some(close) => {
                    format!("unknown node `{name}` in `nodes.{name}` (did you mean `{close}`?)")
                }
                None => format!("unknown node `{name}` in `nodes.{name}`"),
            };
            problems.add(reference.at, &reference.path, message);
        } else if node == Some(name) {
            let message = format!("a node cannot read its own `nodes.{name}`");
            problems.add(reference.at, &reference.path, message);
        } else if let (Some(node), Some(upstream)) = (node, &upstream)
            && !upstream.contains(name)
        {
            let message = format!(
                "`nodes.{name}` is not upstream of `{node}`, so it may not have run yet: add `{name}` to `needs`"
            );
            problems.add(reference.at, &reference.path, message);
        }
    }
}

/// The nodes `id` needs, directly or through other needs.
fn ancestors<'a>(dag: &'a Dag, id: &str) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    let mut pending: Vec<&str> = dag
        .needs(id)
        .into_iter()
        .map(|need| need.as_str())
        .collect();
    while let Some(next) = pending.pop() {
        if seen.insert(next) {
            pending.extend(dag.needs(next).into_iter().map(|need| need.as_str()));
        }
    }
    seen
}
