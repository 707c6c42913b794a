//! The validated workflow: what the loader produces and everything else reads.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::graph::Dag;
use crate::template::ScopeReads;

/// A workflow id: `[a-z0-9_-]+`, unique across the workflows folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkflowId(String);

impl WorkflowId {
    /// Validates an id as written in a file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "invalid workflow id `{text}`: use lowercase letters, digits, `_` and `-`"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node id: `[A-Za-z_][A-Za-z0-9_]*`, so that `nodes.<id>.output` is a plain template path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// Validates an id as written in a file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut chars = text.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "invalid node id `{text}`: use letters, digits and `_`, not starting with a digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A loaded, validated workflow with its DAG.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub id: WorkflowId,
    pub name: String,
    pub description: String,
    /// JSON Schema the trigger payload must satisfy.
    pub inputs: Option<Value>,
    pub triggers: Vec<Trigger>,
    /// Limit for the whole run.
    pub timeout: Option<Duration>,
    /// Runs of this workflow in flight at once; `None` is unlimited.
    pub concurrency: Option<u32>,
    /// Nodes in file order.
    pub nodes: IndexMap<NodeId, NodeDef>,
    /// The run's result: a template value rendered when the run succeeds.
    pub output: Option<Value>,
    /// What `output` reads of the run's scope.
    pub output_reads: ScopeReads,
    /// Where the workflow came from, exactly.
    pub source: Source,
    /// The `needs` graph; acyclic by construction.
    pub dag: Dag,
}

/// The file a workflow was read from.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    /// The exact YAML text; stored as a revision so a run can show what it executed.
    pub text: String,
    /// Hex SHA-256 of `text`.
    pub hash: String,
}

// A workflow has a handful of triggers, built once at load; boxing the cron variant would only
// add an indirection to every read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Trigger {
    Webhook(WebhookTrigger),
    Cron(CronTrigger),
}

#[derive(Debug, Clone)]
pub struct WebhookTrigger {
    /// Without leading slash: `leads` answers `POST /hooks/leads`.
    pub path: String,
    /// Template of the HMAC secret (usually `{{ secrets.X }}`), rendered with only `secrets` in scope.
    pub secret: Option<String>,
    pub respond: Respond,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Respond {
    /// 202 with the run id as soon as the run is stored.
    Accepted,
    /// Wait for the run and answer with its output.
    OnComplete,
}

#[derive(Debug, Clone)]
pub struct CronTrigger {
    /// As written (5 or 6 fields).
    pub expression: String,
    /// Parsed, with seconds.
    pub schedule: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    /// `trigger.input` of the runs it starts.
    pub input: Value,
}

#[derive(Debug, Clone)]
pub struct NodeDef {
    pub id: NodeId,
    /// The registry name (`http.request`).
    pub kind: String,
    pub needs: Vec<NodeId>,
    /// Template value rendered before each attempt.
    pub with: Value,
    /// A bare expression (`if:`); the node is skipped when it is false.
    pub condition: Option<String>,
    pub retry: RetryPolicy,
    /// Limit for one attempt.
    pub timeout: Option<Duration>,
    pub on_error: OnError,
    /// Template value that must render to a list; one execution per item.
    pub foreach: Option<Value>,
    /// Items of a `foreach` in flight at once.
    pub parallelism: usize,
    /// What its templates (`with`, `if`, `foreach`) read of the run's scope; a `foreach` that
    /// names a list in the trigger is not counted (see `foreach_trigger_path`).
    pub reads: ScopeReads,
    /// The path under `trigger` of a `foreach` that names its list there as a plain path
    /// (`{{ trigger.body.leads }}`: `body`, `leads`). When no other template reads the
    /// trigger, the items are read from the trigger's stored text one at a time, and the
    /// trigger is never built as a whole (a lead list's tree costs several times its text).
    pub foreach_trigger_path: Option<Vec<String>>,
}

/// `retry: { attempts, backoff, max_backoff }`; exponential with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included; 1 means no retry.
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// A failed node fails the run.
    #[default]
    Fail,
    /// A failed node lets the run go on; dependents see `status: failed`.
    Continue,
}

impl Workflow {
    pub fn node(&self, id: &str) -> Option<&NodeDef> {
        self.nodes.get(id)
    }
}
