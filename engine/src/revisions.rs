//! Which workflow a run executes: the exact revision it started with, even after the file changed
//! or the process restarted (re-read from the stored YAML).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use enrichflow_nodes::Registry;

use crate::store::{self, RunRecord, Store};
use crate::template::Templates;
use crate::workflow::{self, Workflow};

/// Why a run's workflow revision is not at hand.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The revision is not stored, or this process cannot load it: no retry helps.
    #[error("workflow revision `{0}` cannot be loaded: {1}")]
    Unloadable(String, String),
}

/// Workflows by revision hash, and which revisions are already stored.
pub struct Revisions {
    registry: Registry,
    templates: Templates,
    loaded: Mutex<HashMap<String, Arc<Workflow>>>,
    stored: Mutex<HashSet<String>>,
}

impl Revisions {
    pub fn new(registry: Registry, templates: Templates) -> Self {
        Self {
            registry,
            templates,
            loaded: Mutex::new(HashMap::new()),
            stored: Mutex::new(HashSet::new()),
        }
    }

    /// Stores the workflow's YAML once per process and remembers the parsed workflow.
    pub async fn remember(&self, workflow: &Arc<Workflow>, store: &dyn Store) -> Result<(), Error> {
        let hash = &workflow.source.hash;
        self.lock_loaded()
            .entry(hash.clone())
            .or_insert_with(|| workflow.clone());
        if self.lock_stored().contains(hash) {
            return Ok(());
        }
        store
            .save_revision(workflow.id.as_str(), hash, &workflow.source.text)
            .await?;
        self.lock_stored().insert(hash.clone());
        Ok(())
    }

    /// The workflow revision a run executes.
    pub async fn for_run(
        &self,
        run: &RunRecord,
        store: &dyn Store,
    ) -> Result<Arc<Workflow>, Error> {
        if let Some(workflow) = self.lock_loaded().get(&run.revision) {
            return Ok(workflow.clone());
        }
        let text = store
            .revision(&run.revision)
            .await?
            .ok_or_else(|| Error::Unloadable(run.revision.clone(), "not stored".into()))?;
        let path = Path::new(&run.workflow_id).with_extension("yaml");
        let workflow = workflow::load_str(&path, &text, &self.registry, &self.templates).map_err(
            |errors| {
                let first = errors.first().map(ToString::to_string).unwrap_or_default();
                Error::Unloadable(run.revision.clone(), first)
            },
        )?;
        let workflow = Arc::new(workflow);
        self.lock_loaded()
            .insert(run.revision.clone(), workflow.clone());
        Ok(workflow)
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Workflow>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_stored(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }
}
