//! Property tests of the workflow loader: whatever text it is given — arbitrary YAML-ish
//! text, mutated copies of the shipped workflows, generated workflows with hostile values —
//! it never panics, and every error it reports is located (`file:line:col`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use enrichflow::template::Templates;
use enrichflow::workflow::{self, LoadError};
use enrichflow_nodes::Registry;
use proptest::prelude::*;

/// Fragments that matter to the loader: YAML syntax, keys it reads, hostile values.
const TOKENS: &[&str] = &[
    ":",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "? ",
    "|\n",
    ">\n",
    "~",
    "null",
    "true",
    "0",
    "-1",
    "1.5",
    "4294967296",
    "99999999999999999999",
    "id: x",
    "nodes:",
    "needs: ",
    "needs: [a, b]",
    "type: transform",
    "with: ",
    "value: ",
    "if: ",
    "retry: ",
    "attempts: ",
    "backoff: ",
    "max_backoff: ",
    "timeout: ",
    "on_error: ",
    "foreach: ",
    "parallelism: ",
    "triggers:",
    "webhook: ",
    "cron: ",
    "path: ",
    "schedule: ",
    "timezone: ",
    "output: ",
    "inputs: ",
    "concurrency: ",
    "10000000years",
    "18446744073709551615s",
    "0s",
    "1ns",
    "30days",
    "24h",
    "25h",
    "{{ nodes.a.output }}",
    "{{ nodes.",
    "{% for x in y %}",
    "{{",
    "}}",
    "{%",
    "%}",
    "* * * * *",
    "0 0 30 2 *",
    "Mars/Olympus",
    "é",
    "\u{0}",
    "\t",
];

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::with_builtins)
}

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(Templates::new)
}

/// Loads `text`; a panic fails the property (proptest catches it and shrinks the input).
fn load(text: &str) -> Result<workflow::Workflow, Vec<LoadError>> {
    workflow::load_str(Path::new("fuzz.yaml"), text, registry(), templates())
}

/// Every error names the file, a line and a column within the text.
fn located(text: &str, errors: &[LoadError]) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty(), "a failed load reports why");
    let lines = u64::try_from(text.lines().count())
        .unwrap_or(u64::MAX)
        .max(1);
    for error in errors {
        let shown = error.to_string();
        prop_assert!(error.line >= 1 && error.column >= 1, "not located: {shown}");
        // A syntax error may point just past the last line (end of input).
        prop_assert!(
            error.line <= lines + 1,
            "line {} of {lines}: {shown}",
            error.line
        );
        prop_assert!(
            shown.starts_with(&format!("fuzz.yaml:{}:{}: ", error.line, error.column)),
            "{shown}"
        );
    }
    Ok(())
}

fn check(text: &str) -> Result<(), TestCaseError> {
    match load(text) {
        Ok(loaded) => {
            // A workflow that loads has a consistent DAG: each node after its needs.
            let order = loaded.dag.topological_order();
            prop_assert_eq!(order.len(), loaded.nodes.len());
            for (position, id) in order.iter().enumerate() {
                for need in &loaded.nodes[id].needs {
                    let before = order[..position].contains(need);
                    prop_assert!(before, "{} runs before its need {}", id, need);
                }
            }
            Ok(())
        }
        Err(errors) => located(text, &errors),
    }
}

/// The shipped workflows and the valid fixtures, as starting points for mutation.
fn seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let folders: [PathBuf; 2] = [
            root.join("../workflows"),
            root.join("tests/fixtures/workflows/valid"),
        ];
        let texts: Vec<String> = folders
            .iter()
            .flat_map(|folder| workflow::workflow_files(folder).expect("a workflow folder"))
            .map(|file| std::fs::read_to_string(file).expect("a readable workflow"))
            .collect();
        assert!(texts.len() >= 8, "the seed workflows are missing");
        texts
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, length: usize },
    Insert { at: usize, token: &'static str },
    Duplicate { at: usize, length: usize },
    SwapLines { first: usize, second: usize },
    Replace { at: usize, token: &'static str },
}

fn token() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(TOKENS)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1..40usize).prop_map(|(at, length)| Mutation::Delete { at, length }),
        (at, token()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (at, 1..200usize).prop_map(|(at, length)| Mutation::Duplicate { at, length }),
        (at, any::<usize>()).prop_map(|(first, second)| Mutation::SwapLines { first, second }),
        (at, token()).prop_map(|(at, token)| Mutation::Replace { at, token }),
    ]
}

/// Applies `mutation` to `text`, on bytes (any UTF-8 damage is replaced, as reading a file
/// would not be: `load_str` takes text).
fn mutate(text: &str, mutation: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let len = bytes.len().max(1);
    match *mutation {
        Mutation::Delete { at, length } => {
            let start = at % len;
            let end = (start + length).min(bytes.len());
            bytes.drain(start.min(end)..end);
        }
        Mutation::Insert { at, token } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, token.bytes());
        }
        Mutation::Duplicate { at, length } => {
            let start = at % len;
            let end = (start + length).min(bytes.len());
            let copy = bytes[start.min(end)..end].to_vec();
            bytes.splice(end..end, copy);
        }
        Mutation::SwapLines { first, second } => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let count = lines.len();
                lines.swap(first % count, second % count);
            }
            return lines.join("\n");
        }
        Mutation::Replace { at, token } => {
            let start = at % len;
            let end = (start + token.len()).min(bytes.len());
            bytes.splice(start.min(end)..end, token.bytes());
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A node of a generated workflow: needs and references among `n0..n7` (some missing, some
/// cyclic), and durations and numbers from hostile ranges.
fn node(index: usize) -> impl Strategy<Value = String> {
    let id = Just(format!("n{index}"));
    let needs = proptest::collection::vec(0..8usize, 0..3);
    let reads = proptest::option::of(0..8usize);
    let duration = prop_oneof![
        Just("1s".to_owned()),
        Just("24h".to_owned()),
        Just("10000000years".to_owned()),
        Just("0s".to_owned()),
        Just("x".to_owned()),
        (0..u64::MAX).prop_map(|n| format!("{n}s")),
        (0..u64::MAX).prop_map(|n| format!("{n}days")),
    ];
    let attempts = prop_oneof![
        Just(1i128),
        Just(4_294_967_295),
        any::<i64>().prop_map(i128::from)
    ];
    (id, needs, reads, duration.clone(), duration, attempts).prop_map(
        |(id, needs, reads, timeout, backoff, attempts)| {
            let needs: Vec<String> = needs.iter().map(|need| format!("n{need}")).collect();
            let value = match reads {
                Some(read) => format!("\"{{{{ nodes.n{read}.output }}}}\""),
                None => "1".to_owned(),
            };
            format!(
                "  {id}:\n    type: transform\n    needs: [{}]\n    with: {{ value: {value} }}\n    timeout: {timeout}\n    retry: {{ attempts: {attempts}, backoff: {backoff} }}\n",
                needs.join(", ")
            )
        },
    )
}

fn generated_workflow() -> impl Strategy<Value = String> {
    let timeout = prop_oneof![
        Just("5m".to_owned()),
        Just("10000000years".to_owned()),
        (0..u64::MAX).prop_map(|n| format!("{n}ms")),
    ];
    (1..8usize)
        .prop_flat_map(|count| {
            let nodes: Vec<_> = (0..count).map(node).collect();
            nodes
        })
        .prop_flat_map(move |nodes| (Just(nodes), timeout.clone()))
        .prop_map(|(nodes, timeout)| {
            format!(
                "id: generated\ntimeout: {timeout}\nnodes:\n{}",
                nodes.concat()
            )
        })
}

// 256 cases per property by default; `PROPTEST_CASES=5000` for a longer search.
proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_errors_are_located(text in "\\PC{0,200}") {
        check(&text)?;
    }

    #[test]
    fn yaml_ish_token_soup_never_panics(tokens in proptest::collection::vec(token(), 0..60)) {
        check(&tokens.concat())?;
    }

    #[test]
    fn mutated_shipped_workflows_never_panic(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds();
        let mut text = seeds[seed.index(seeds.len())].clone();
        for mutation in &mutations {
            text = mutate(&text, mutation);
        }
        check(&text)?;
    }

    #[test]
    fn generated_workflows_with_hostile_values_load_or_fail_located(text in generated_workflow()) {
        check(&text)?;
    }
}

/// The seeds themselves load: mutations start from valid workflows.
#[test]
fn every_seed_loads() {
    for text in seeds() {
        if let Err(errors) = load(text) {
            panic!("a seed does not load: {errors:#?}");
        }
    }
}
