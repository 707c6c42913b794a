//! The runs this process wrote last, as that write left them, with the version it returned.
//!
//! A worker driving a run records its next outcome from here, without the run's lock or a
//! read, as long as the store confirms no other process has changed the run since
//! ([`crate::store::Store::finish_attempt_if_current`]); when one has, the entry is gone and
//! the ordinary, locked way reads the run again. Only a store that keeps versions fills it
//! (Postgres): embedded, `store::LiveStore` holds every run in memory instead.
//!
//! Entries are taken and put back under the run's stripe of `RunLocks::run`, so two
//! attempts of one run finishing at once in this process see each other's outcome. An entry is
//! the same allocation the claimed attempts of that write hold: keeping it copies nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::driver::Known;

/// At most this many runs are held; past it the map starts again empty. A run dropped this way
/// is only read again from the store, so a bound is enough (no recency order to keep).
const MOST: usize = 4096;

#[derive(Default)]
pub struct WrittenRuns {
    runs: Mutex<HashMap<String, Arc<Known>>>,
}

impl WrittenRuns {
    /// The run as this process last wrote it, if it holds it; the entry leaves the map.
    pub fn take(&self, run_id: &str) -> Option<Arc<Known>> {
        self.lock().remove(run_id)
    }

    /// The version of the run as this process last wrote it, if it holds the run.
    pub fn version(&self, run_id: &str) -> Option<i64> {
        self.lock().get(run_id).and_then(|known| known.version)
    }

    /// Holds `known`, the run as a write of this process just left it, if it has a version.
    pub fn keep(&self, known: Arc<Known>) {
        if known.version.is_none() {
            return;
        }
        let mut runs = self.lock();
        if runs.len() >= MOST && !runs.contains_key(&known.run.id) {
            runs.clear();
        }
        runs.insert(known.run.id.clone(), known);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Known>>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
