//! The set of loaded workflows: an immutable snapshot looked up by id and webhook path, a cheap
//! handle to the current snapshot, and the watcher that reloads the folder when it changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use enrichflow_nodes::Registry;
use tokio_util::sync::CancellationToken;

use crate::template::Templates;
use crate::workflow::{self, LoadError, Trigger, WebhookTrigger, Workflow};

/// How often the watcher looks at the folder.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Workflows by id and by webhook path. Never changes; a reload builds a new one.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// In load order: files sorted by name.
    workflows: Vec<Arc<Workflow>>,
    by_id: HashMap<String, usize>,
    /// Webhook path → (workflow index, trigger index).
    by_webhook: HashMap<String, (usize, usize)>,
    /// The folder as it was just before it was read; `None` when not loaded from a folder.
    fingerprint: Option<Fingerprint>,
}

/// File names, modification times and sizes: enough to notice an edit without reading files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<SystemTime>, u64)>);

impl Catalog {
    /// A catalog of the given workflows; of two with the same id or webhook path the first wins.
    pub fn from_workflows(workflows: Vec<Arc<Workflow>>) -> Catalog {
        Self::assemble(workflows).0
    }

    /// Loads every workflow file in `dir`. Invalid files are left out and reported.
    pub fn load(
        dir: &Path,
        registry: &Registry,
        templates: &Templates,
    ) -> (Catalog, Vec<LoadError>) {
        Catalog::default().reload(dir, registry, templates)
    }

    /// Loads `dir` again. A file that fails now keeps the version in `self`, so a typo saved
    /// in an editor does not take a live workflow down; a deleted file's workflow disappears.
    /// Of two workflows that clash (id or webhook path), the one `self` already served from
    /// that file wins, then the one in the earlier file.
    pub fn reload(
        &self,
        dir: &Path,
        registry: &Registry,
        templates: &Templates,
    ) -> (Catalog, Vec<LoadError>) {
        let fingerprint = Fingerprint::of(dir);
        let files = match workflow::workflow_files(dir) {
            Ok(files) => files,
            Err(error) => {
                // Keep serving what we have; the folder may be back on the next poll.
                let mut unchanged = self.clone();
                unchanged.fingerprint = fingerprint.ok();
                let message = format!("cannot read the workflows folder: {error}");
                return (unchanged, vec![LoadError::whole_file(dir, message)]);
            }
        };
        let mut errors = Vec::new();
        let mut loaded = Vec::new();
        for file in files {
            match workflow::load_file(&file, registry, templates) {
                Ok(workflow) => loaded.push(Arc::new(workflow)),
                Err(file_errors) => {
                    errors.extend(file_errors);
                    loaded.extend(
                        self.workflows
                            .iter()
                            .find(|old| old.source.path == file)
                            .cloned(),
                    );
                }
            }
        }
        let served_before = |workflow: &Arc<Workflow>| {
            self.get(workflow.id.as_str())
                .is_some_and(|old| old.source.path == workflow.source.path)
        };
        // A stable sort keeps file order within each group.
        loaded.sort_by_key(|workflow| !served_before(workflow));
        let (mut catalog, conflicts) = Self::assemble(loaded);
        catalog.fingerprint = fingerprint.ok();
        errors.extend(conflicts);
        (catalog, errors)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Workflow>> {
        self.by_id
            .get(id)
            .map(|&index| self.workflows[index].clone())
    }

    /// The workflow whose webhook answers `POST /hooks/{path}`, and that trigger.
    pub fn webhook(&self, path: &str) -> Option<(Arc<Workflow>, &WebhookTrigger)> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let &(index, trigger) = self.by_webhook.get(path)?;
        let workflow = &self.workflows[index];
        match &workflow.triggers[trigger] {
            Trigger::Webhook(webhook) => Some((workflow.clone(), webhook)),
            Trigger::Cron(_) => None,
        }
    }

    /// Every workflow, in load order.
    pub fn list(&self) -> &[Arc<Workflow>] {
        &self.workflows
    }

    /// Indexes `workflows` in order, leaving out each one that clashes with an earlier one.
    fn assemble(workflows: Vec<Arc<Workflow>>) -> (Catalog, Vec<LoadError>) {
        let borrowed: Vec<&Workflow> = workflows.iter().map(Arc::as_ref).collect();
        let conflicts = workflow::conflicts(&borrowed);
        let mut catalog = Catalog::default();
        for (index, workflow) in workflows.iter().enumerate() {
            if conflicts.iter().any(|(loser, _)| *loser == index) {
                continue;
            }
            let position = catalog.workflows.len();
            catalog.by_id.insert(workflow.id.to_string(), position);
            for (trigger, hook) in workflow.triggers.iter().enumerate() {
                if let Trigger::Webhook(hook) = hook {
                    catalog
                        .by_webhook
                        .insert(hook.path.clone(), (position, trigger));
                }
            }
            catalog.workflows.push(workflow.clone());
        }
        (
            catalog,
            conflicts.into_iter().map(|(_, error)| error).collect(),
        )
    }
}

impl Fingerprint {
    fn of(dir: &Path) -> std::io::Result<Fingerprint> {
        let mut files = Vec::new();
        for file in workflow::workflow_files(dir)? {
            let metadata = std::fs::metadata(&file)?;
            files.push((file, metadata.modified().ok(), metadata.len()));
        }
        Ok(Fingerprint(files))
    }
}

/// The current catalog, shared by everything that looks workflows up; cheap to clone.
#[derive(Debug, Clone)]
pub struct CatalogHandle {
    current: Arc<RwLock<Arc<Catalog>>>,
}

impl CatalogHandle {
    pub fn new(catalog: Catalog) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(catalog))),
        }
    }

    /// The snapshot in force now; it stays valid (and unchanged) however long it is held.
    pub fn current(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn replace(&self, catalog: Catalog) {
        let catalog = Arc::new(catalog);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = catalog;
    }

    /// Polls `dir` every second and reloads it when a file was added, removed or changed;
    /// problems are logged. Returns when `shutdown` is cancelled.
    pub async fn watch(
        self,
        dir: PathBuf,
        registry: Registry,
        templates: Templates,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            let current = self.current();
            let (dir, registry, templates) = (dir.clone(), registry.clone(), templates.clone());
            // Reading and parsing files is blocking work; keep it off the async workers.
            let reloaded = tokio::task::spawn_blocking(move || {
                let unchanged = Fingerprint::of(&dir).ok() == current.fingerprint;
                (!unchanged).then(|| current.reload(&dir, &registry, &templates))
            })
            .await;
            match reloaded {
                Ok(Some((catalog, errors))) => {
                    for error in &errors {
                        tracing::warn!("{error}");
                    }
                    tracing::info!(workflows = catalog.list().len(), "workflows reloaded");
                    self.replace(catalog);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "reloading workflows failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A fresh folder under the system temp dir, removed on drop.
    struct Folder(PathBuf);

    impl Folder {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "enrichflow-catalog-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }

        fn remove(&self, name: &str) {
            std::fs::remove_file(self.0.join(name)).unwrap();
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn flow(id: &str, hook: &str, value: &str) -> String {
        format!(
            "id: {id}\ntriggers:\n  - webhook: {{ path: {hook} }}\nnodes:\n  only:\n    type: transform\n    with: {{ value: {value} }}\n"
        )
    }

    fn load(folder: &Folder) -> (Catalog, Vec<String>) {
        let (catalog, errors) =
            Catalog::load(&folder.0, &Registry::with_builtins(), &Templates::new());
        (catalog, errors.iter().map(ToString::to_string).collect())
    }

    fn reload(catalog: &Catalog, folder: &Folder) -> (Catalog, Vec<String>) {
        let (catalog, errors) =
            catalog.reload(&folder.0, &Registry::with_builtins(), &Templates::new());
        (catalog, errors.iter().map(ToString::to_string).collect())
    }

    fn ids(catalog: &Catalog) -> Vec<&str> {
        catalog
            .list()
            .iter()
            .map(|workflow| workflow.id.as_str())
            .collect()
    }

    fn value(catalog: &Catalog, id: &str) -> serde_json::Value {
        catalog.get(id).unwrap().nodes["only"].with["value"].clone()
    }

    #[test]
    fn loads_a_folder_and_looks_workflows_up() {
        let folder = Folder::new();
        folder.write("b.yaml", &flow("beta", "b", "2"));
        folder.write("a.yml", &flow("alpha", "crm/a", "1"));
        folder.write("notes.txt", "not a workflow");
        folder.write("broken.yaml", "id: [");
        let (catalog, errors) = load(&folder);
        assert_eq!(ids(&catalog), ["alpha", "beta"]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("broken.yaml:1:"), "{errors:?}");
        let (workflow, hook) = catalog.webhook("/crm/a").unwrap();
        assert_eq!(
            (workflow.id.as_str(), hook.path.as_str()),
            ("alpha", "crm/a")
        );
        assert!(catalog.webhook("nope").is_none());
        assert!(catalog.get("gamma").is_none());
    }

    #[test]
    fn a_file_that_breaks_keeps_its_last_good_version() {
        let folder = Folder::new();
        folder.write("a.yaml", &flow("alpha", "a", "1"));
        folder.write("b.yaml", &flow("beta", "b", "1"));
        let (catalog, _) = load(&folder);
        folder.write("a.yaml", &flow("alpha", "a", "2"));
        folder.write("b.yaml", "id: beta\nnodes: {}\n");
        let (catalog, errors) = reload(&catalog, &folder);
        assert_eq!(value(&catalog, "alpha"), serde_json::json!(2));
        assert_eq!(value(&catalog, "beta"), serde_json::json!(1));
        assert_eq!(errors.len(), 1, "{errors:?}");
        folder.remove("b.yaml");
        let (catalog, errors) = reload(&catalog, &folder);
        assert_eq!(ids(&catalog), ["alpha"]);
        assert!(errors.is_empty());
        assert!(catalog.webhook("b").is_none());
    }

    #[test]
    fn clashes_keep_the_workflow_served_before() {
        let folder = Folder::new();
        folder.write("m.yaml", &flow("alpha", "a", "1"));
        let (catalog, _) = load(&folder);
        // Sorts first, but `m.yaml` already served `alpha`.
        folder.write("a.yaml", &flow("alpha", "other", "2"));
        folder.write("z.yaml", &flow("zeta", "a", "3"));
        let (catalog, errors) = reload(&catalog, &folder);
        assert_eq!(ids(&catalog), ["alpha"]);
        assert_eq!(value(&catalog, "alpha"), serde_json::json!(1));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("a.yaml:1:5: id: workflow id `alpha` is already used by"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("z.yaml:3:22: triggers[0].webhook.path: webhook path `a`"),
            "{errors:?}"
        );
    }

    #[test]
    fn from_workflows_keeps_the_first_of_a_clash() {
        let load = |text: &str| {
            let workflow = workflow::load_str(
                Path::new("x.yaml"),
                text,
                &Registry::with_builtins(),
                &Templates::new(),
            );
            Arc::new(workflow.unwrap())
        };
        let catalog =
            Catalog::from_workflows(vec![load(&flow("a", "h", "1")), load(&flow("b", "h", "2"))]);
        assert_eq!(ids(&catalog), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_reloads_a_changed_folder_until_shutdown() {
        let folder = Folder::new();
        folder.write("a.yaml", &flow("alpha", "a", "1"));
        let (catalog, _) = load(&folder);
        let handle = CatalogHandle::new(catalog);
        let shutdown = CancellationToken::new();
        let watcher = tokio::spawn(handle.clone().watch(
            folder.0.clone(),
            Registry::with_builtins(),
            Templates::new(),
            shutdown.clone(),
        ));
        folder.write("b.yaml", &flow("beta", "b", "1"));
        // The paused clock jumps straight to each poll.
        let mut polls = 0;
        while handle.current().get("beta").is_none() {
            polls += 1;
            assert!(polls < 10, "the watcher did not pick up b.yaml");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        assert_eq!(ids(&handle.current()), ["alpha", "beta"]);
        shutdown.cancel();
        watcher.await.unwrap();
    }
}
