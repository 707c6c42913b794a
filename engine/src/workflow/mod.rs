//! Workflows: YAML files read from a folder, validated into [`Workflow`]s with their DAG.
//!
//! The YAML is first read into a tree that keeps every value's line and column (`located`),
//! then parsed into the model with every problem collected (`parse`, `trigger`, `node`), so
//! that a user sees all errors of a file at once, each with file, line, column and key path.
//!
//! Defaults: `name` is the id, `description` is empty, `retry` is one attempt (backoff 1s,
//! ceiling 1m, raised to `backoff` when that is longer), `on_error: fail`, `parallelism: 1`
//! (a `foreach` runs its items one at a time unless asked otherwise, which is kind to the
//! rate-limited APIs enrichment calls), webhooks `respond: accepted`, cron `timezone: UTC` and
//! `input: {}`. `needs` may be a single id; `if` may be a YAML boolean; a webhook path may
//! start with `/`. `parallelism` without `foreach` is an error, as is a workflow without nodes.
//!
//! Limits, so that no file can make loading slow or a run panic: a file is at most 10 MiB
//! and 10,000 nodes (checking is linear in its size); a run `timeout` at most 30 days, a node
//! `timeout`, `retry.backoff` and `retry.max_backoff` at most 24 hours.

mod duration;
mod error;
mod fields;
mod graph;
mod load;
mod located;
mod model;
mod node;
mod parse;
mod references;
mod suggest;
mod trigger;

pub use duration::{MAX_ATTEMPT_TIMEOUT, MAX_BACKOFF, MAX_RUN_TIMEOUT};
pub use error::LoadError;
pub use fields::MAX_ERRORS;
pub use graph::{Cycle, Dag, Upstream};
pub(crate) use load::conflicts;
pub use load::{
    FileLoad, MAX_FILE_BYTES, check_across, load_file, load_paths, load_str, workflow_files,
};
pub use model::{
    CronTrigger, NodeDef, NodeId, OnError, Respond, RetryPolicy, Source, Trigger, WebhookTrigger,
    Workflow, WorkflowId,
};
pub use parse::MAX_NODES;
