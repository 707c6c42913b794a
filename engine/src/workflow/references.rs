//! Which nodes a workflow's templates read (`nodes.<id>`), and where, so that a reference to a
//! node that does not exist, or that has not finished when the template renders, is a load error
//! instead of a run-time `template` error.

use crate::template::Templates;

use super::fields::{Problems, each_string};
use super::graph::{Dag, Upstream};
use super::located::{Node, Position};

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
/// (its needs, their needs, …), since no other node is guaranteed to have finished. `upstream`
/// answers for every referenced node ([`targets`]).
pub fn check(
    problems: &mut Problems,
    dag: &Dag,
    upstream: &Upstream,
    node: Option<&str>,
    references: &[Reference],
) {
    for reference in references {
        let name = reference.node.as_str();
        if !dag.contains(name) {
            let known = dag.topological_order().iter().map(|id| id.as_str());
            let message = match problems.suggestion(name, known) {
                Some(close) => {
                    format!("unknown node `{name}` in `nodes.{name}` (did you mean `{close}`?)")
                }
                None => format!("unknown node `{name}` in `nodes.{name}`"),
            };
            problems.add(reference.at, &reference.path, message);
        } else if node == Some(name) {
            let message = format!("a node cannot read its own `nodes.{name}`");
            problems.add(reference.at, &reference.path, message);
        } else if let Some(node) = node
            && !upstream.contains(node, name)
        {
            let message = format!(
                "`nodes.{name}` is not upstream of `{node}`, so it may not have run yet: add `{name}` to `needs`"
            );
            problems.add(reference.at, &reference.path, message);
        }
    }
}

/// The nodes read by any of `references`, for [`Dag::upstream_of`].
pub fn targets<'a>(references: impl IntoIterator<Item = &'a Reference>) -> Vec<&'a str> {
    let mut names: Vec<&str> = references
        .into_iter()
        .map(|reference| reference.node.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}
