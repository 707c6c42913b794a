//! Workflow validation, data-driven from `tests/fixtures/workflows`: every file in `valid/`
//! loads; every `invalid/<case>.yaml` fails with exactly the lines of `invalid/<case>.expected`;
//! the files of `invalid/across/` clash as `invalid/across.expected` says.
//!
//! Run with `UPDATE_EXPECT=1` to rewrite the `.expected` files from what the loader reports,
//! then review the diff.

use std::path::{Path, PathBuf};

use enrichflow::template::Templates;
use enrichflow::workflow::{self, LoadError, Workflow};
use enrichflow_nodes::Registry;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workflows")
}

/// The workflow files of a fixture folder as (path relative to `fixtures()`, text).
fn files(folder: &str) -> Vec<(PathBuf, String)> {
    let files = workflow::workflow_files(&fixtures().join(folder)).expect("fixture folder");
    files
        .into_iter()
        .map(|file| {
            let name = file.file_name().expect("a file name").to_owned();
            let text = std::fs::read_to_string(&file).expect("a readable fixture");
            (Path::new(folder).join(name), text)
        })
        .collect()
}

/// Loads `text` under its relative path, so that error lines do not depend on the checkout.
fn load(relative: &Path, text: &str) -> Result<Workflow, Vec<LoadError>> {
    workflow::load_str(
        relative,
        text,
        &Registry::with_builtins(),
        &Templates::new(),
    )
}

/// Compares `errors` with `<expected>` (relative to `fixtures()`), or rewrites it when
/// `UPDATE_EXPECT` is set. Returns a description of the mismatch.
fn check(expected: &Path, errors: &[LoadError]) -> Option<String> {
    let actual: String = errors.iter().map(|error| format!("{error}\n")).collect();
    let file = fixtures().join(expected);
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&file, &actual).expect("writable fixtures");
        return None;
    }
    let wanted = std::fs::read_to_string(&file).unwrap_or_default();
    (wanted != actual).then(|| {
        format!(
            "{}\n--- expected\n{wanted}--- actual\n{actual}",
            expected.display()
        )
    })
}

#[test]
fn valid_workflows_load_and_do_not_clash() {
    let mut loaded = Vec::new();
    for (path, text) in files("valid") {
        match load(&path, &text) {
            Ok(workflow) => loaded.push(workflow),
            Err(errors) => panic!("{} should be valid:\n{errors:#?}", path.display()),
        }
    }
    assert!(loaded.len() >= 4, "the valid fixtures are missing");
    let all: Vec<&Workflow> = loaded.iter().collect();
    assert_eq!(workflow::check_across(&all), []);
}

#[test]
fn load_paths_reads_a_folder_of_yaml_and_yml_files() {
    let folder = fixtures().join("valid");
    let loads = workflow::load_paths(
        std::slice::from_ref(&folder),
        &Registry::with_builtins(),
        &Templates::new(),
    );
    let names: Vec<String> = loads
        .iter()
        .map(|load| {
            load.path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "lead-enrichment.yaml",
            "minimal.yaml",
            "nightly-digest.yaml",
            "webhook-echo.yml"
        ]
    );
    assert!(loads.iter().all(|load| load.result.is_ok()));
    let missing = fixtures().join("no-such-file.yaml");
    let loads = workflow::load_paths(&[missing], &Registry::with_builtins(), &Templates::new());
    let errors = loads[0].result.as_ref().expect_err("a missing file fails");
    assert!(
        errors[0].message.starts_with("cannot read the file"),
        "{errors:?}"
    );
}

#[test]
fn invalid_workflows_report_exactly_the_expected_errors() {
    let mut mismatches = Vec::new();
    let cases = files("invalid");
    assert!(cases.len() >= 15, "the invalid fixtures are missing");
    for (path, text) in cases {
        let errors = match load(&path, &text) {
            Ok(_) => {
                mismatches.push(format!("{} loaded but should not", path.display()));
                continue;
            }
            Err(errors) => errors,
        };
        mismatches.extend(check(&path.with_extension("expected"), &errors));
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn clashes_across_files_are_reported_in_the_later_file() {
    let loaded: Vec<Workflow> = files("invalid/across")
        .iter()
        .map(|(path, text)| load(path, text).expect("each file is valid on its own"))
        .collect();
    let all: Vec<&Workflow> = loaded.iter().collect();
    let errors = workflow::check_across(&all);
    if let Some(mismatch) = check(Path::new("invalid/across.expected"), &errors) {
        panic!("{mismatch}");
    }
}

/// A chain `n0 <- n1 <- … <- n{count-1}`, each node reading its need's output.
fn chain(count: usize) -> String {
    let mut text =
        String::from("id: chain\nnodes:\n  n0: { type: transform, with: { value: 1 } }\n");
    for index in 1..count {
        let need = index - 1;
        text.push_str(&format!(
            "  n{index}: {{ type: transform, needs: [n{need}], with: {{ value: \"{{{{ nodes.n{need}.output }}}}\" }} }}\n"
        ));
    }
    text
}

/// Loading used to be quadratic in the node count (15.7 s for this chain); it must complete
/// (the time is measured in docs/behaviour.md, not asserted here).
#[test]
fn a_chain_of_the_most_nodes_allowed_loads() {
    let text = chain(workflow::MAX_NODES);
    let loaded = load(Path::new("chain.yaml"), &text).expect("a valid chain");
    assert_eq!(loaded.dag.len(), workflow::MAX_NODES);
    let order = loaded.dag.topological_order();
    assert_eq!(
        (order[0].as_str(), order[order.len() - 1].as_str()),
        ("n0", "n9999")
    );
}

#[test]
fn a_reference_far_up_a_long_chain_is_still_checked() {
    let mut text = chain(2000);
    // `n0` is upstream of the last node; a new root is upstream of nothing.
    text.push_str("  last: { type: transform, needs: [n1999], with: { value: [\"{{ nodes.n0.output }}\", \"{{ nodes.root.output }}\"] } }\n");
    text.push_str("  root: { type: transform, with: { value: 1 } }\n");
    let errors: Vec<String> = load(Path::new("chain.yaml"), &text)
        .expect_err("`root` is not upstream of `last`")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "chain.yaml:2003:85: nodes.last.with.value[1]: `nodes.root` is not upstream of `last`, so it may not have run yet: add `root` to `needs`"
        ]
    );
}

#[test]
fn more_nodes_than_allowed_is_one_located_error() {
    let mut text = String::from("id: many\nnodes:\n");
    for index in 0..=workflow::MAX_NODES {
        text.push_str(&format!(
            "  n{index}: {{ type: transform, with: {{ value: 1 }} }}\n"
        ));
    }
    let errors: Vec<String> = load(Path::new("many.yaml"), &text)
        .expect_err("too many nodes")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        ["many.yaml:2:1: nodes: a workflow may have at most 10000 nodes, found 10001"]
    );
}

#[test]
fn a_file_larger_than_allowed_is_refused_without_reading_it_whole() {
    let file = std::env::temp_dir().join(format!("enrichflow-large-{}.yaml", uuid::Uuid::now_v7()));
    // Valid YAML (comments) past the limit: only the size is wrong.
    let line = format!("#{}\n", "x".repeat(1023));
    let text = format!(
        "id: large\n{}",
        line.repeat(workflow::MAX_FILE_BYTES / line.len() + 1)
    );
    std::fs::write(&file, &text).expect("a writable temp folder");
    let result = workflow::load_file(&file, &Registry::with_builtins(), &Templates::new());
    std::fs::remove_file(&file).expect("removable");
    let errors = result.expect_err("too large");
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].column), (1, 1));
    assert_eq!(
        errors[0].message,
        "the file is larger than 10485760 bytes (10 MiB), the most a workflow may be"
    );
}

/// The cycle search used to recurse once per node and overflowed a thread's stack.
#[test]
fn a_cycle_through_every_node_is_reported_as_one_chain() {
    let mut text = chain(workflow::MAX_NODES);
    text = text.replacen(
        "n0: { type: transform,",
        &format!(
            "n0: {{ type: transform, needs: [n{}],",
            workflow::MAX_NODES - 1
        ),
        1,
    );
    let errors = load(Path::new("ring.yaml"), &text).expect_err("a cycle");
    assert_eq!(errors.len(), 1, "{:?}", errors.first());
    let message = &errors[0].message;
    assert!(
        message.starts_with("`needs` forms a cycle: n0 -> n9999 -> n9998 -> ")
            && message.ends_with(" -> n1 -> n0"),
        "{}",
        &message[..200]
    );
    assert_eq!((errors[0].line, errors[0].column), (3, 34));
}
