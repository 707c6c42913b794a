//! The `needs` graph of a workflow (the only module that touches petgraph).

use petgraph::graph::DiGraph;

use super::model::NodeId;

/// The DAG of a workflow: an edge `a -> b` means `b` needs `a`.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    graph: DiGraph<NodeId, ()>,
}
