//! Reading workflow files and folders, and the checks that span several files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use enrichflow_nodes::Registry;
use sha2::{Digest, Sha256};

use crate::template::Templates;

use super::error::LoadError;
use super::fields::{Problems, find};
use super::located::{self, Position};
use super::model::{Source, Trigger, Workflow};
use super::parse;

/// The largest workflow file read: far beyond any hand-written workflow, small enough that
/// parsing and checking it stay quick.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;

/// One file given to [`load_paths`] and what became of it.
#[derive(Debug)]
pub struct FileLoad {
    pub path: PathBuf,
    pub result: Result<Workflow, Vec<LoadError>>,
}

/// Parses and validates one workflow; `path` is only used to name the file in errors and in
/// [`Source`].
pub fn load_str(
    path: &Path,
    text: &str,
    registry: &Registry,
    templates: &Templates,
) -> Result<Workflow, Vec<LoadError>> {
    let mut problems = Problems::new(path);
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![too_large(path)]);
    }
    let root = match located::parse(text) {
        Ok(root) => root,
        Err(error) => {
            problems.add(error.at, "", format!("invalid YAML: {}", error.message));
            return Err(problems.into_errors());
        }
    };
    let source = Source {
        path: path.to_path_buf(),
        text: text.to_owned(),
        hash: hex::encode(Sha256::digest(text.as_bytes())),
    };
    match parse::workflow(&mut problems, &root, source, registry, templates) {
        Some(workflow) if problems.is_empty() => Ok(workflow),
        _ => Err(problems.into_errors()),
    }
}

/// Reads and loads one file.
pub fn load_file(
    path: &Path,
    registry: &Registry,
    templates: &Templates,
) -> Result<Workflow, Vec<LoadError>> {
    let text = read_limited(path).map_err(|error| {
        vec![LoadError::whole_file(
            path,
            format!("cannot read the file: {error}"),
        )]
    })?;
    load_str(path, &text, registry, templates)
}

/// The file's text, reading at most one byte more than [`MAX_FILE_BYTES`] (enough for
/// [`load_str`] to refuse it), so a huge file or a device is never read whole.
fn read_limited(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let limit = u64::try_from(MAX_FILE_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn too_large(path: &Path) -> LoadError {
    LoadError {
        line: 1,
        column: 1,
        ..LoadError::whole_file(
            path,
            format!(
                "the file is larger than {MAX_FILE_BYTES} bytes (10 MiB), the most a workflow may be"
            ),
        )
    }
}

/// Loads files and folders; a folder means its `*.yaml` and `*.yml` files, sorted by name,
/// not recursing into subfolders. An unreadable folder is reported as one failed load.
pub fn load_paths(paths: &[PathBuf], registry: &Registry, templates: &Templates) -> Vec<FileLoad> {
    let mut loads = Vec::new();
    for path in paths {
        if !path.is_dir() {
            let result = load_file(path, registry, templates);
            loads.push(FileLoad {
                path: path.clone(),
                result,
            });
            continue;
        }
        match workflow_files(path) {
            Ok(files) => loads.extend(files.into_iter().map(|file| FileLoad {
                result: load_file(&file, registry, templates),
                path: file,
            })),
            Err(error) => loads.push(FileLoad {
                path: path.clone(),
                result: Err(vec![LoadError::whole_file(
                    path,
                    format!("cannot read the folder: {error}"),
                )]),
            }),
        }
    }
    loads
}

/// The workflow files directly inside `folder`, sorted.
pub fn workflow_files(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Workflow ids and webhook paths must be unique across files. Each clash is reported in the
/// later of the two workflows (in the order given), naming the earlier one's file.
pub fn check_across(workflows: &[&Workflow]) -> Vec<LoadError> {
    conflicts(workflows)
        .into_iter()
        .map(|(_, error)| error)
        .collect()
}

/// The clashes as (index of the later workflow, error).
pub(crate) fn conflicts(workflows: &[&Workflow]) -> Vec<(usize, LoadError)> {
    let mut ids: HashMap<&str, &Workflow> = HashMap::new();
    let mut hooks: HashMap<&str, &Workflow> = HashMap::new();
    let mut found = Vec::new();
    for (index, workflow) in workflows.iter().copied().enumerate() {
        if let Some(first) = ids.get(workflow.id.as_str()) {
            let message = format!(
                "workflow id `{}` is already used by {}",
                workflow.id,
                first.source.path.display()
            );
            found.push((index, located_error(workflow, "id", message)));
            continue;
        }
        let mut clashes = Vec::new();
        for (trigger_index, trigger) in workflow.triggers.iter().enumerate() {
            let Trigger::Webhook(webhook) = trigger else {
                continue;
            };
            if let Some(first) = hooks.get(webhook.path.as_str()) {
                let message = format!(
                    "webhook path `{}` is already used by {} in {}",
                    webhook.path,
                    first.id,
                    first.source.path.display()
                );
                let path = format!("triggers[{trigger_index}].webhook.path");
                clashes.push(located_error(workflow, &path, message));
            }
        }
        if clashes.is_empty() {
            ids.insert(workflow.id.as_str(), workflow);
            for trigger in &workflow.triggers {
                if let Trigger::Webhook(webhook) = trigger {
                    hooks.insert(webhook.path.as_str(), workflow);
                }
            }
        }
        found.extend(clashes.into_iter().map(|error| (index, error)));
    }
    found
}

/// An error at `path` in the workflow's file. The model keeps no positions, so the text is
/// parsed again; that only happens for the rare clash.
fn located_error(workflow: &Workflow, path: &str, message: String) -> LoadError {
    let at = located::parse(&workflow.source.text)
        .ok()
        .and_then(|root| find(&root, path).map(|(_, value)| value.at))
        .unwrap_or(Position { line: 1, column: 1 });
    LoadError {
        file: workflow.source.path.clone(),
        line: at.line,
        column: at.column,
        path: path.to_owned(),
        message,
    }
}
