//! The command line as a user types it: output and exit codes of `validate` and `run`
//! (0 success, 1 invalid workflow or failed run, 2 bad usage or unreadable file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn enrichflow(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enrichflow"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .output()
        .expect("the enrichflow binary runs")
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

#[test]
fn validate_accepts_the_shipped_examples() {
    let output = enrichflow(&["validate", "workflows"], &repository());
    assert_eq!(
        code(&output),
        0,
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn validate_prints_every_error_with_its_location_and_exits_1() {
    let fixtures = crate::support::fixtures("workflows");
    let output = enrichflow(&["validate", "invalid/many_errors.yaml"], &fixtures);
    assert_eq!(code(&output), 1);
    let expected = std::fs::read_to_string(fixtures.join("invalid/many_errors.expected"))
        .expect("expected errors");
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

#[test]
fn validate_of_a_missing_path_is_a_usage_error() {
    let output = enrichflow(&["validate", "no/such/file.yaml"], &repository());
    assert_eq!(code(&output), 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("no/such/file.yaml"));
}

#[test]
fn run_prints_the_run_json_and_exits_0_on_success() {
    let output = enrichflow(
        &[
            "run",
            "workflows/hello.yaml",
            "--input",
            r#"{"name":"Ada"}"#,
        ],
        &repository(),
    );
    assert_eq!(
        code(&output),
        0,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run: Value = serde_json::from_slice(&output.stdout).expect("the run as JSON");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["workflow"], "hello");
    assert_eq!(run["trigger"]["type"], "manual");
    assert_eq!(run["output"]["greeting"], "Hello, Ada!");
    assert_eq!(run["nodes"]["greet"]["status"], "succeeded");
}

#[test]
fn run_reads_its_input_from_a_file() {
    let input =
        std::env::temp_dir().join(format!("enrichflow-input-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&input, r#"{"name":"Grace"}"#).expect("write input");
    let argument = format!("@{}", input.display());
    let output = enrichflow(
        &["run", "workflows/hello.yaml", "--input", &argument],
        &repository(),
    );
    let _ = std::fs::remove_file(&input);
    assert_eq!(code(&output), 0);
    let run: Value = serde_json::from_slice(&output.stdout).expect("the run as JSON");
    assert_eq!(run["output"]["greeting"], "Hello, Grace!");
}

#[test]
fn a_failed_run_exits_1_and_still_prints_the_run() {
    let fixtures = crate::support::fixtures("rules");
    let output = enrichflow(&["run", "undefined.yaml"], &fixtures);
    assert_eq!(code(&output), 1);
    let run: Value = serde_json::from_slice(&output.stdout).expect("the run as JSON");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["kind"], "template");
}

#[test]
fn bad_usage_exits_2() {
    let repository = repository();
    for args in [
        vec!["run", "no-such-file.yaml"],
        vec!["run", "workflows/hello.yaml", "--input", "{not json"],
        vec!["no-such-command"],
    ] {
        let output = enrichflow(&args, &repository);
        assert_eq!(code(&output), 2, "{args:?}");
    }
}
