//! Variables through the real binary: `ENRICHFLOW_VAR_<NAME>` and `--vars-file` reach templates
//! as `vars.<NAME>`, are stored as they are, and have no minimum length, unlike secrets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vars")
}

/// `enrichflow run` of the settings workflow with `env` set and the extra `args`.
fn run_settings(env: &[(&str, &str)], args: &[&str]) -> Output {
    let workflow = fixtures().join("settings.yaml");
    Command::new(env!("CARGO_BIN_EXE_enrichflow"))
        .arg("run")
        .arg(workflow)
        .args(args)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .expect("the enrichflow binary runs")
}

fn succeeded(output: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let run: Value = serde_json::from_slice(&output.stdout).expect("the run as JSON");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    run
}

#[test]
fn a_workflow_reads_vars_from_the_environment_over_the_file() {
    let file = fixtures().join("vars.env");
    let file = file.to_str().expect("a UTF-8 path");
    let output = run_settings(
        &[
            ("ENRICHFLOW_VAR_PORT", "25"),
            ("ENRICHFLOW_VAR_MODE", "tls"),
        ],
        &["--vars-file", file],
    );
    let run = succeeded(&output);
    assert_eq!(
        run["output"],
        json!({"port": 25, "mode": "tls", "host": "mail.example.com", "sender_set": false})
    );
    // Not secret: the stored input shows the values, not `[redacted]`.
    let input = &run["nodes"]["settings"]["history"][0]["input"]["value"];
    assert_eq!(input["mode"], "tls", "{run:#}");
    assert_eq!(input["host"], "mail.example.com", "{run:#}");
}

#[test]
fn undefined_vars_take_their_defaults() {
    let run = succeeded(&run_settings(&[], &[]));
    assert_eq!(
        run["output"],
        json!({"port": 587, "mode": "starttls", "host": "localhost", "sender_set": false})
    );
    let run = succeeded(&run_settings(&[("ENRICHFLOW_VAR_SENDER", "a@b.c")], &[]));
    assert_eq!(run["output"]["sender_set"], true);
}

#[test]
fn a_3_character_var_is_accepted_where_a_3_character_secret_is_refused() {
    let run = succeeded(&run_settings(&[("ENRICHFLOW_VAR_PORT", "587")], &[]));
    assert_eq!(run["output"]["port"], 587);

    let output = run_settings(&[("ENRICHFLOW_SECRET_PORT", "587")], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("secret PORT is shorter than 8 characters"),
        "{stderr}"
    );
    assert!(stderr.contains("ENRICHFLOW_VAR_PORT"), "{stderr}");
}

#[test]
fn a_malformed_vars_file_is_a_usage_error_naming_the_line() {
    let file = fixtures().join("malformed.env");
    let output = run_settings(&[], &["--vars-file", file.to_str().expect("a UTF-8 path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("malformed.env:2: expected NAME=value"),
        "{stderr}"
    );
}
