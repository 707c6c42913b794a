//! What of a run's scope a node's templates read, by top-level name, found once when the
//! workflow loads: the scope of an attempt is built with only that, so a node that reads
//! `item` and one upstream output never has the trigger parsed or the other outputs copied
//! (a list import is both).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{RESULT, Templates, has_template_syntax, read_paths, single_expression};

/// The parts of the scope some templates read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeReads {
    /// `trigger`.
    pub trigger: bool,
    /// The `nodes.<id>` read; `None` when `nodes` is read as a whole (`nodes[name]`,
    /// `nodes | items`), which static analysis cannot narrow.
    pub nodes: Option<BTreeSet<String>>,
}

impl ScopeReads {
    /// The whole scope: what a scope holds when nothing is known of the templates.
    pub fn everything() -> Self {
        Self {
            trigger: true,
            nodes: None,
        }
    }

    fn nothing() -> Self {
        Self {
            trigger: false,
            nodes: Some(BTreeSet::new()),
        }
    }

    /// Whether `nodes.<id>` is read.
    pub fn node(&self, id: &str) -> bool {
        self.nodes.as_ref().is_none_or(|ids| ids.contains(id))
    }

    /// Adds one dotted path a template reads. Its last name is dropped, as
    /// [`super::Reads`] drops it: it may be a method called on what comes before
    /// (`nodes.items()` reads every node, `nodes.a.output.keys()` reads `a`).
    fn add(&mut self, path: &str) {
        let read = path.rsplit_once('.').map_or(path, |(before, _)| before);
        let mut names = read.split('.');
        match (names.next(), names.next()) {
            (Some("trigger"), _) => self.trigger = true,
            (Some("nodes"), Some(id)) => {
                if let Some(ids) = &mut self.nodes {
                    ids.insert(id.to_owned());
                }
            }
            (Some("nodes"), None) => self.nodes = None,
            // The whole scope, read by a name analysis cannot see through.
            (None | Some(""), _) => *self = Self::everything(),
            // `secrets`, `vars`, `run`, `workflow` are small and always there; `item`,
            // `index`, loop variables and functions are not the run's.
            _ => {}
        }
    }
}

impl Templates {
    /// What the template strings inside `values` (map keys are not templates) and the bare
    /// `expressions` (`if:`) read of a run's scope. A text that does not compile reads
    /// everything here; loading the workflow reports its error.
    pub fn scope_reads(&self, values: &[&Value], expressions: &[&str]) -> ScopeReads {
        let mut sources = Vec::new();
        for value in values {
            template_sources(value, &mut sources);
        }
        sources.extend(expressions.iter().map(|expression| wrapped(expression)));
        let mut reads = ScopeReads::nothing();
        for source in sources {
            let Ok(template) = self.shared.environment.get_template(&source) else {
                return ScopeReads::everything();
            };
            for path in read_paths(&template, self.shared.limits) {
                reads.add(&path);
            }
        }
        reads
    }
}

/// The sources `render_value` compiles for the strings inside `value`.
fn template_sources(value: &Value, sources: &mut Vec<String>) {
    match value {
        Value::String(text) if has_template_syntax(text) => {
            sources.push(single_expression(text).map_or_else(|| text.clone(), wrapped))
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| template_sources(item, sources)),
        Value::Object(map) => map
            .values()
            .for_each(|item| template_sources(item, sources)),
        _ => {}
    }
}

/// The template an expression is evaluated as.
fn wrapped(expression: &str) -> String {
    format!("{{% set {RESULT} = ({expression}) %}}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reads(values: &[Value], expressions: &[&str]) -> ScopeReads {
        let templates = Templates::new();
        let values: Vec<&Value> = values.iter().collect();
        templates.scope_reads(&values, expressions)
    }

    fn nodes(ids: &[&str]) -> Option<BTreeSet<String>> {
        Some(ids.iter().map(|id| (*id).to_owned()).collect())
    }

    #[test]
    fn only_what_is_named_is_read() {
        let found = reads(
            &[json!({ "value": { "id": "{{ item.id }}", "n": "{{ index }}", "k": 3 } })],
            &[],
        );
        assert_eq!(
            found,
            ScopeReads {
                trigger: false,
                nodes: nodes(&[])
            }
        );
        let found = reads(
            &[json!(
                "{{ nodes.each.output | length }} of {{ trigger.body.source }}"
            )],
            &["nodes.score.output.tier == 'hot'"],
        );
        assert_eq!(
            found,
            ScopeReads {
                trigger: true,
                nodes: nodes(&["each", "score"])
            }
        );
    }

    #[test]
    fn reads_analysis_cannot_narrow_read_everything_they_may() {
        let dynamic = reads(
            &[json!(
                "{% for id, node in nodes | items %}{{ id }}{% endfor %}"
            )],
            &[],
        );
        assert!(
            dynamic.nodes.is_none() && dynamic.node("any"),
            "{dynamic:?}"
        );
        assert!(!dynamic.trigger);
        let indexed = reads(&[json!("{{ nodes[trigger.body.which].output }}")], &[]);
        assert_eq!(indexed, ScopeReads::everything());
        let sliced = reads(&[json!("{{ trigger.body.name[1:] }}")], &[]);
        assert!(sliced.trigger);
        // The last name of a path may be a method: `nodes.items()` reads every node.
        let method = reads(&[json!("{{ nodes.items() | list | length }}")], &[]);
        assert!(method.nodes.is_none(), "{method:?}");
        let method = reads(
            &[json!("{{ nodes.get('a').output }}")],
            &["nodes.b.output.keys()"],
        );
        assert!(method.nodes.is_none(), "{method:?}");
        let broken = reads(&[json!("{{ nodes.a.output ")], &[]);
        assert_eq!(broken, ScopeReads::everything());
    }
}
