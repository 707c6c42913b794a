//! The registry of node types by name; built-ins are listed in one place.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Node;
use crate::builtin;

/// Node types by their `type:` name.
#[derive(Clone, Default)]
pub struct Registry {
    nodes: BTreeMap<String, Arc<dyn Node>>,
}

impl Registry {
    /// A registry with no node types.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A registry with every built-in node type. This is the one list of built-ins.
    pub fn with_builtins() -> Self {
        let mut registry = Self::empty();
        let (company, person) = builtin::enrichment_nodes();
        registry.register("enrich.company", Arc::new(company));
        registry.register("enrich.email", Arc::new(builtin::EnrichEmail));
        registry.register("enrich.person", Arc::new(person));
        registry.register("http.request", Arc::new(builtin::HttpRequest));
        registry.register("leads.upsert", Arc::new(builtin::LeadsUpsert));
        registry.register("notify.email", Arc::new(builtin::NotifyEmail));
        registry.register("notify.slack", Arc::new(builtin::NotifySlack));
        registry.register("notify.webhook", Arc::new(builtin::NotifyWebhook));
        registry.register("score.rules", Arc::new(builtin::ScoreRules));
        registry.register("score.weighted", Arc::new(builtin::ScoreWeighted));
        registry.register("transform", Arc::new(builtin::Transform));
        registry
    }

    /// Adds or replaces a node type.
    pub fn register(&mut self, kind: impl Into<String>, node: Arc<dyn Node>) {
        self.nodes.insert(kind.into(), node);
    }

    /// The node type registered under `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Node>> {
        self.nodes.get(kind).cloned()
    }

    /// Every registered type name, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.nodes.keys()).finish()
    }
}
