//! Workflows: YAML files read from a folder, validated into [`Workflow`]s with their DAG.

mod graph;
mod model;

pub use graph::Dag;
pub use model::{
    CronTrigger, NodeDef, NodeId, OnError, Respond, RetryPolicy, Source, Trigger, WebhookTrigger,
    Workflow, WorkflowId,
};
