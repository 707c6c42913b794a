//! The example workflows of the repository's `workflows/` folder work as shipped: each one
//! validates, and runs to success on its sample input `tests/fixtures/examples/<id>.json`,
//! producing the output of `<id>.output.json`. A new example without both files fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use enrichflow::oneshot;
use enrichflow::store::RunStatus;
use enrichflow::template::Templates;
use enrichflow::workflow::{self, Workflow};
use enrichflow_nodes::{Registry, Secrets};
use serde_json::Value;

use crate::support::{fixtures, install_crypto};

/// Stands in for the run's id in expected outputs, which cannot know it.
const RUN_ID: &str = "<run id>";

fn workflows_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

/// Every example, loaded; panics with every error of every file that does not load.
fn examples() -> Vec<(PathBuf, Workflow)> {
    let folder = workflows_folder();
    let loads = workflow::load_paths(
        std::slice::from_ref(&folder),
        &Registry::with_builtins(),
        &Templates::new(),
    );
    let mut workflows = Vec::new();
    let mut errors = Vec::new();
    for load in loads {
        match load.result {
            Ok(workflow) => workflows.push((load.path, workflow)),
            Err(found) => errors.extend(found.iter().map(ToString::to_string)),
        }
    }
    assert!(
        errors.is_empty(),
        "invalid examples:\n{}",
        errors.join("\n")
    );
    assert!(
        !workflows.is_empty(),
        "no workflows in {}",
        folder.display()
    );
    workflows
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

/// `value` with the run's id replaced by [`RUN_ID`] inside every string.
fn without_run_id(value: Value, run_id: &str) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace(run_id, RUN_ID)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| without_run_id(item, run_id))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (key, without_run_id(item, run_id)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn every_example_workflow_is_valid_and_ids_and_hooks_are_unique() {
    let examples = examples();
    let workflows: Vec<&Workflow> = examples.iter().map(|(_, workflow)| workflow).collect();
    let conflicts: Vec<String> = workflow::check_across(&workflows)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(conflicts.is_empty(), "{}", conflicts.join("\n"));
}

#[tokio::test]
async fn every_example_workflow_runs_on_its_sample_input() {
    install_crypto();
    let folder = fixtures("examples");
    let examples = examples();
    let missing: Vec<String> = examples
        .iter()
        .flat_map(|(_, workflow)| {
            [
                format!("{}.json", workflow.id),
                format!("{}.output.json", workflow.id),
            ]
        })
        .filter(|name| !folder.join(name).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "every example needs a sample input and its expected output in {}; missing: {}",
        folder.display(),
        missing.join(", ")
    );
    for (path, workflow) in &examples {
        let id = workflow.id.as_str();
        let input = read_json(&folder.join(format!("{id}.json")));
        let expected = read_json(&folder.join(format!("{id}.output.json")));
        let (run, status) = oneshot::run_file(path, input, Secrets::default())
            .await
            .unwrap_or_else(|error| panic!("{id} could not run: {error:?}"));
        assert_eq!(status, RunStatus::Succeeded, "{id}: {run:#}");
        let run_id = run["id"].as_str().expect("a run id");
        assert_eq!(
            without_run_id(run["output"].clone(), run_id),
            expected,
            "the output of {id}"
        );
    }
}

#[test]
fn every_example_fixture_belongs_to_an_example() {
    let ids: BTreeSet<String> = examples()
        .iter()
        .map(|(_, workflow)| workflow.id.to_string())
        .collect();
    let folder = fixtures("examples");
    let entries = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", folder.display()));
    for entry in entries {
        let name = entry.expect("a folder entry").file_name();
        let name = name.to_string_lossy();
        let id = name
            .strip_suffix(".output.json")
            .or_else(|| name.strip_suffix(".json"))
            .unwrap_or_else(|| panic!("{name} is not an example fixture"));
        assert!(
            ids.contains(id),
            "{name}: no example workflow has the id `{id}`"
        );
    }
}
