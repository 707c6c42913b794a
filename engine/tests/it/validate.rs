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
