//! What the engine lends nodes beyond HTTP and secrets: a cache with expiry (paid provider
//! answers) and the lead store. The traits live here so nodes stay free of SQL; the engine
//! implements them on its store, in both the embedded and the distributed mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use crate::leads::LeadStore;

/// A store operation a node asked for failed (the database is down, a constraint broke).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ServiceError(pub String);

/// Values kept for a while under `(namespace, key)`, shared by every run (and, with Postgres,
/// every process).
#[async_trait]
pub trait Cache: Send + Sync {
    /// The value stored under the key, unless it has expired.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, ServiceError>;
    /// Stores `value` for `ttl`, replacing what was there.
    async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        ttl: Duration,
    ) -> Result<(), ServiceError>;
}

/// The services of one engine, cloned into every [`crate::NodeContext`].
#[derive(Clone)]
pub struct Services {
    /// Answers worth keeping for a while (paid provider lookups).
    pub cache: Arc<dyn Cache>,
    /// The engine's lead tables.
    pub leads: Arc<dyn LeadStore>,
}

impl Services {
    /// A process-local cache and no lead store: for tests and tools that run nodes without a
    /// database.
    pub fn local() -> Self {
        Self {
            cache: Arc::new(MemoryCache::default()),
            leads: Arc::new(NoLeadStore),
        }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Services")
    }
}

/// A cache in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<(String, String), (Value, Instant)>>,
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, ServiceError> {
        let entries = self.entries.lock().map_err(poisoned)?;
        let entry = entries.get(&(namespace.to_owned(), key.to_owned()));
        Ok(entry
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone()))
    }

    async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        ttl: Duration,
    ) -> Result<(), ServiceError> {
        let mut entries = self.entries.lock().map_err(poisoned)?;
        let now = Instant::now();
        entries.retain(|_, (_, expires)| *expires > now);
        // Checked: `Instant + Duration` panics past the clock's range; nodes bound their TTLs,
        // and a TTL beyond the range is not worth keeping anything for.
        let Some(expires) = now.checked_add(ttl) else {
            return Ok(());
        };
        entries.insert(
            (namespace.to_owned(), key.to_owned()),
            (value.clone(), expires),
        );
        Ok(())
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> ServiceError {
    ServiceError("the in-memory cache is unusable after a panic".into())
}

/// The lead store of a context that has none.
#[derive(Debug)]
pub struct NoLeadStore;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn memory_cache_forgets_expired_values() {
        let cache = MemoryCache::default();
        cache
            .put("p", "k", &json!(1), Duration::from_secs(60))
            .await
            .unwrap();
        cache
            .put("p", "gone", &json!(2), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(cache.get("p", "k").await.unwrap(), Some(json!(1)));
        assert_eq!(cache.get("other", "k").await.unwrap(), None);
        assert_eq!(cache.get("p", "gone").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_ttl_past_the_clock_is_not_a_panic() {
        let cache = MemoryCache::default();
        cache
            .put("p", "k", &json!(1), Duration::MAX)
            .await
            .expect("no panic and no error");
        assert_eq!(cache.get("p", "k").await.unwrap(), None);
    }
}
