//! The `needs` graph of a workflow (the only module that touches petgraph).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use super::model::NodeId;

/// The DAG of a workflow: an edge `a -> b` means `b` needs `a`. Node indices follow file order,
/// which breaks ties wherever an order is not forced by `needs`.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    graph: DiGraph<NodeId, ()>,
    index: HashMap<NodeId, NodeIndex>,
    order: Vec<NodeId>,
}

/// The answer of [`Dag::upstream_of`]: whether a node needs one of the targets, transitively.
#[derive(Debug)]
pub struct Upstream {
    index: HashMap<NodeId, NodeIndex>,
    /// The bit of each target.
    bits: HashMap<NodeIndex, usize>,
    /// Words per node.
    words: usize,
    sets: Vec<u64>,
}

impl Upstream {
    /// Whether `ancestor` (one of the targets) is upstream of `node`; false for anything else.
    pub fn contains(&self, node: &str, ancestor: &str) -> bool {
        let (Some(node), Some(ancestor)) = (self.index.get(node), self.index.get(ancestor)) else {
            return false;
        };
        let Some(bit) = self.bits.get(ancestor) else {
            return false;
        };
        let word = self.sets[node.index() * self.words + bit / 64];
        word & (1 << (bit % 64)) != 0
    }
}

/// A cycle in `needs`, in the direction of `needs`: `a -> b -> a` means `a` needs `b` and `b`
/// needs `a`. The first node is repeated at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub chain: Vec<NodeId>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.chain.iter().map(NodeId::as_str).collect();
        f.write_str(&names.join(" -> "))
    }
}

impl Dag {
    /// Builds the graph from nodes in file order with their `needs`. Needs naming nodes that do
    /// not exist are skipped: the parser reports them with their position.
    pub fn build<'a>(
        nodes: impl IntoIterator<Item = (&'a NodeId, &'a [NodeId])>,
    ) -> Result<Dag, Vec<Cycle>> {
        let nodes: Vec<(&NodeId, &[NodeId])> = nodes.into_iter().collect();
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for (id, _) in &nodes {
            index.insert((*id).clone(), graph.add_node((*id).clone()));
        }
        // A set rather than petgraph's `update_edge`, which scans the need's edges each time
        // and so is quadratic for a node many others need.
        let mut edges = HashSet::new();
        for (id, needs) in &nodes {
            let dependent = index[*id];
            for &need in needs.iter().filter_map(|need| index.get(need)) {
                if edges.insert((need, dependent)) {
                    graph.add_edge(need, dependent, ());
                }
            }
        }
        let mut dag = Dag {
            graph,
            index,
            order: Vec::new(),
        };
        let cycles = dag.cycles();
        if !cycles.is_empty() {
            return Err(cycles);
        }
        dag.order = dag.topological_order_by_file_order();
        Ok(dag)
    }

    /// Every node, each after all of its needs; ties in file order.
    pub fn topological_order(&self) -> &[NodeId] {
        &self.order
    }

    /// The nodes `id` needs, in file order.
    pub fn needs(&self, id: &str) -> Vec<&NodeId> {
        self.neighbours(id, Direction::Incoming)
    }

    /// The nodes that need `id`, in file order.
    pub fn dependents(&self, id: &str) -> Vec<&NodeId> {
        self.neighbours(id, Direction::Outgoing)
    }

    /// Every edge as `(need, dependent)`, sorted by file order; what the API shows as the DAG.
    pub fn edges(&self) -> Vec<(&NodeId, &NodeId)> {
        let mut edges: Vec<(NodeIndex, NodeIndex)> = self
            .graph
            .raw_edges()
            .iter()
            .map(|edge| (edge.source(), edge.target()))
            .collect();
        edges.sort_by_key(|&(source, target)| (target, source));
        edges
            .into_iter()
            .map(|(source, target)| (&self.graph[source], &self.graph[target]))
            .collect()
    }

    /// Nodes that need nothing, in file order.
    pub fn roots(&self) -> Vec<&NodeId> {
        self.graph
            .node_indices()
            .filter(|&node| {
                self.graph
                    .neighbors_directed(node, Direction::Incoming)
                    .next()
                    .is_none()
            })
            .map(|node| &self.graph[node])
            .collect()
    }

    /// Whether the workflow has a node `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Which of `targets` each node needs, directly or through other needs: one bitset per
    /// node over `targets` only, filled in topological order, so the cost is
    /// edges × targets / 64 rather than a walk of every node's ancestors.
    pub fn upstream_of<'a>(&self, targets: impl IntoIterator<Item = &'a str>) -> Upstream {
        let mut bits: HashMap<NodeIndex, usize> = HashMap::new();
        for target in targets {
            if let Some(&node) = self.index.get(target) {
                let next = bits.len();
                bits.entry(node).or_insert(next);
            }
        }
        let words = bits.len().div_ceil(64);
        let mut sets = vec![0u64; words * self.graph.node_count()];
        for id in &self.order {
            let node = self.index[id].index();
            for need in self
                .graph
                .neighbors_directed(self.index[id], Direction::Incoming)
            {
                for word in 0..words {
                    sets[node * words + word] |= sets[need.index() * words + word];
                }
                if let Some(bit) = bits.get(&need) {
                    sets[node * words + bit / 64] |= 1 << (bit % 64);
                }
            }
        }
        Upstream {
            index: self.index.clone(),
            bits,
            words,
            sets,
        }
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    fn neighbours(&self, id: &str, direction: Direction) -> Vec<&NodeId> {
        let Some(&node) = self.index.get(id) else {
            return Vec::new();
        };
        let mut found: Vec<NodeIndex> = self.graph.neighbors_directed(node, direction).collect();
        found.sort();
        found.into_iter().map(|other| &self.graph[other]).collect()
    }

    /// Kahn's algorithm with a min-heap on the index, so independent nodes keep file order.
    fn topological_order_by_file_order(&self) -> Vec<NodeId> {
        let mut waiting: Vec<usize> = self
            .graph
            .node_indices()
            .map(|node| {
                self.graph
                    .neighbors_directed(node, Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = self
            .graph
            .node_indices()
            .filter(|node| waiting[node.index()] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::with_capacity(waiting.len());
        while let Some(Reverse(node)) = ready.pop() {
            order.push(self.graph[node].clone());
            for dependent in self.graph.neighbors_directed(node, Direction::Outgoing) {
                waiting[dependent.index()] -= 1;
                if waiting[dependent.index()] == 0 {
                    ready.push(Reverse(dependent));
                }
            }
        }
        order
    }

    /// One cycle per strongly connected component that has one: the shortest through its
    /// first node in file order, so the report is small and stable.
    ///
    /// Kosaraju's algorithm, not Tarjan's: petgraph's Tarjan recurses once per node of a path,
    /// so a long `needs` chain overflowed the 2 MiB stack of a runtime or test thread.
    fn cycles(&self) -> Vec<Cycle> {
        let mut cycles: Vec<(NodeIndex, Cycle)> = petgraph::algo::kosaraju_scc(&self.graph)
            .into_iter()
            .filter(|component| {
                component.len() > 1 || self.graph.contains_edge(component[0], component[0])
            })
            .map(|component| {
                let start = component.iter().copied().min().unwrap_or_default();
                (start, self.shortest_cycle(start, &component))
            })
            .collect();
        cycles.sort_by_key(|(start, _)| *start);
        cycles.into_iter().map(|(_, cycle)| cycle).collect()
    }

    /// Breadth-first along `needs` (incoming edges) from `start` back to `start`.
    fn shortest_cycle(&self, start: NodeIndex, component: &[NodeIndex]) -> Cycle {
        let component: HashSet<NodeIndex> = component.iter().copied().collect();
        let mut came_from: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        'search: while let Some(node) = queue.pop_front() {
            let mut needs: Vec<NodeIndex> = self
                .graph
                .neighbors_directed(node, Direction::Incoming)
                .filter(|need| component.contains(need))
                .collect();
            needs.sort();
            for need in needs {
                if need == start {
                    came_from.insert(start, node);
                    break 'search;
                }
                if let Entry::Vacant(slot) = came_from.entry(need) {
                    slot.insert(node);
                    queue.push_back(need);
                }
            }
        }
        // Walk back from `start` to itself, then reverse into needs order.
        let mut chain = vec![self.graph[start].clone()];
        let mut node = came_from.get(&start).copied().unwrap_or(start);
        while node != start {
            chain.push(self.graph[node].clone());
            node = came_from.get(&node).copied().unwrap_or(start);
        }
        chain.push(self.graph[start].clone());
        chain.reverse();
        Cycle { chain }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> NodeId {
        NodeId::parse(text).unwrap()
    }

    /// `spec` is `node:need,need node:…` in file order.
    fn build(spec: &str) -> Result<Dag, Vec<Cycle>> {
        let nodes: Vec<(NodeId, Vec<NodeId>)> = spec
            .split_whitespace()
            .map(|node| {
                let (name, needs) = node.split_once(':').unwrap_or((node, ""));
                let needs = needs
                    .split(',')
                    .filter(|need| !need.is_empty())
                    .map(id)
                    .collect();
                (id(name), needs)
            })
            .collect();
        Dag::build(nodes.iter().map(|(node, needs)| (node, needs.as_slice())))
    }

    fn names(ids: &[&NodeId]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn orders_by_needs_then_file_order() {
        let dag = build("report:score,mail score:enrich enrich mail").unwrap();
        let order: Vec<&str> = dag.topological_order().iter().map(NodeId::as_str).collect();
        assert_eq!(order, ["enrich", "score", "mail", "report"]);
        assert_eq!(names(&dag.needs("report")), ["score", "mail"]);
        assert_eq!(names(&dag.dependents("enrich")), ["score"]);
        assert_eq!(names(&dag.roots()), ["enrich", "mail"]);
        let edges: Vec<String> = dag
            .edges()
            .iter()
            .map(|(a, b)| format!("{a}->{b}"))
            .collect();
        assert_eq!(edges, ["score->report", "mail->report", "enrich->score"]);
        assert!(dag.needs("nope").is_empty());
        assert_eq!(dag.len(), 4);
    }

    #[test]
    fn upstream_is_transitive_and_limited_to_the_targets() {
        let dag = build("a b:a c:b d:a e").unwrap();
        let upstream = dag.upstream_of(["a", "b", "ghost"]);
        let cases = [
            ("c", "a", true),
            ("c", "b", true),
            ("d", "a", true),
            ("d", "b", false),
            ("e", "a", false),
            ("a", "a", false),
            // Not a target, so not answered.
            ("c", "c", false),
            ("d", "c", false),
            ("ghost", "a", false),
        ];
        for (node, ancestor, expected) in cases {
            assert_eq!(
                upstream.contains(node, ancestor),
                expected,
                "{ancestor} of {node}"
            );
        }
        assert!(dag.contains("e") && !dag.contains("ghost"));
    }

    #[test]
    fn upstream_spans_more_than_one_word_of_targets() {
        let spec: Vec<String> = (0..200)
            .map(|i| match i {
                0 => "n0".to_owned(),
                _ => format!("n{i}:n{}", i - 1),
            })
            .collect();
        let dag = build(&spec.join(" ")).unwrap();
        let names: Vec<String> = (0..200).map(|i| format!("n{i}")).collect();
        let upstream = dag.upstream_of(names.iter().map(String::as_str));
        assert!(upstream.contains("n199", "n0"));
        assert!(upstream.contains("n199", "n198"));
        assert!(upstream.contains("n130", "n129"));
        assert!(!upstream.contains("n129", "n130"));
    }

    #[test]
    fn duplicate_needs_make_one_edge() {
        let a = id("a");
        let needs = [a.clone(), a.clone()];
        let nodes = [(&a, &[][..]), (&id("b"), &needs[..])];
        let dag = Dag::build(nodes.iter().map(|(node, needs)| (*node, *needs))).unwrap();
        assert_eq!(dag.edges().len(), 1);
    }

    #[test]
    fn unknown_needs_are_left_to_the_parser() {
        let dag = build("a:ghost b:a").unwrap();
        assert!(dag.needs("a").is_empty());
    }

    #[test]
    fn a_cycle_is_reported_as_its_chain() {
        let cycles = build("a:c b:a c:b d").unwrap_err();
        let chains: Vec<String> = cycles.iter().map(ToString::to_string).collect();
        assert_eq!(chains, ["a -> c -> b -> a"]);
    }

    #[test]
    fn each_cycle_is_reported_once_and_self_needs_are_cycles() {
        let cycles = build("x:y y:x,z z:y solo:solo fine").unwrap_err();
        let chains: Vec<String> = cycles.iter().map(ToString::to_string).collect();
        assert_eq!(chains, ["x -> y -> x", "solo -> solo"]);
    }
}
