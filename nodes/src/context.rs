//! What a node attempt knows about where it runs: ids, cancellation, shared clients, secrets.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{Services, egress};

/// Secret values by name (`secrets.SLACK_WEBHOOK` is `Secrets::get("SLACK_WEBHOOK")`).
///
/// `Debug` never prints values, so a context can be logged safely.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Arc<BTreeMap<String, String>>,
}

impl Secrets {
    /// Wraps a name → value map.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self {
            values: Arc::new(values),
        }
    }

    /// The value of one secret, if it is defined.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every name and value, for building template scopes and redacting stored data.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when no secret is defined.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

/// The context of one node attempt.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The run this attempt belongs to.
    pub run_id: String,
    /// The workflow the run executes.
    pub workflow_id: String,
    /// The node's id inside the workflow.
    pub node_id: String,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// `run:node:attempt`: stable across redeliveries of the same attempt, so a receiver can drop
    /// duplicates.
    pub idempotency_key: String,
    /// Cancelled when the run is cancelled, times out, or the process shuts down.
    pub cancellation: CancellationToken,
    /// One HTTP client shared by every attempt (connection pooling), built by
    /// [`egress::Policy::client`] from [`NodeContext::egress`].
    pub http: reqwest::Client,
    /// Where outbound calls may go and their limits; every send goes through
    /// [`egress::Policy::send`].
    pub egress: egress::Policy,
    /// Secrets available to the workflow.
    pub secrets: Secrets,
    /// The cache and the lead store.
    pub services: Services,
}

impl NodeContext {
    /// Builds the idempotency key of an attempt.
    pub fn idempotency_key_for(run_id: &str, node_id: &str, attempt: u32) -> String {
        format!("{run_id}:{node_id}:{attempt}")
    }
}
