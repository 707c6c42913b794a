//! What a `foreach` attempt holds while it runs: its items' inputs and outputs as JSON list
//! text, built as items are rendered and finish, which is also what is stored (a lead list's
//! inputs and outputs as trees would cost ten times as much); and its progress, items done of
//! its total, counted as items finish and written to the store about once a second by a task
//! of its own, so neither an item nor the loop ever waits for the database (see
//! [`crate::store::ProgressStore`]).

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use enrichflow_nodes::{ErrorKind, NodeError};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::store::{AttemptKey, Json, Progress, Store, json};

/// A JSON list written one value at a time.
#[derive(Debug)]
struct ListText {
    text: String,
    len: usize,
    /// Where each value is in `text`, when kept (16 bytes an item: only inputs are read back).
    spans: Option<Vec<Range<usize>>>,
    /// The deepest value so far.
    depth: usize,
}

impl ListText {
    fn new() -> Self {
        Self {
            text: String::from("["),
            len: 0,
            spans: None,
            depth: 0,
        }
    }

    /// A list that keeps where each value is.
    fn with_spans() -> Self {
        Self {
            spans: Some(Vec::new()),
            ..Self::new()
        }
    }

    fn push(&mut self, value: &Value) {
        if self.len > 0 {
            self.text.push(',');
        }
        let start = self.text.len();
        // `Value`'s `Display` is serde_json's compact writer, straight into the text.
        let _ = write!(self.text, "{value}");
        if let Some(spans) = &mut self.spans {
            spans.push(start..self.text.len());
        }
        self.len += 1;
        self.depth = self.depth.max(json::depth(value));
    }

    fn finish(mut self) -> (Json, Vec<Range<usize>>) {
        self.text.push(']');
        (Json::from_text(self.text), self.spans.unwrap_or_default())
    }
}

/// The rendered inputs of a `foreach`'s items, in item order.
#[derive(Debug)]
pub struct Inputs(ListText);

impl Inputs {
    pub fn new() -> Self {
        Self(ListText::with_spans())
    }

    pub fn push(&mut self, input: &Value) {
        self.0.push(input);
    }

    /// How deep the list nests as stored: one level more than its deepest item.
    pub fn depth(&self) -> usize {
        self.0.depth.saturating_add(1)
    }

    /// The list as stored, and where each item's input is in it.
    pub fn finish(self) -> (Json, Vec<Range<usize>>) {
        self.0.finish()
    }
}

/// One item's input, read from the stored list when its turn comes.
pub fn item_input(list: &Json, span: &Range<usize>) -> Result<Value, NodeError> {
    list.text()
        .get(span.clone())
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| {
            NodeError::permanent(
                ErrorKind::Internal,
                "an item's input could not be read back",
            )
        })
}

/// The item outputs, in item order.
#[derive(Debug)]
pub struct Outputs(ListText);

impl Outputs {
    pub fn new() -> Self {
        Self(ListText::new())
    }

    /// Adds the next item's output, unless the list would then nest deeper than the store
    /// keeps.
    pub fn push(&mut self, output: &Value) -> Result<(), crate::store::Error> {
        json::check_item_depth("the node's output", output)?;
        self.0.push(output);
        Ok(())
    }

    pub fn finish(self) -> Json {
        self.0.finish().0
    }
}

/// The items of the list at `path` in the JSON `text` (`["body", "leads"]`), each as its text,
/// found without building anything else of `text` nor the items themselves. `None` when the
/// path does not lead to a list, or the text cannot be read that way: the caller then reads
/// the whole value as before, and says why it is not a list.
pub fn listed_in<'t>(text: &'t str, path: &[String]) -> Option<Vec<&'t RawValue>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let listed = ListAt { path }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    listed
}

/// Walks a JSON value down `path`, keeping only the list it ends at.
struct ListAt<'p> {
    path: &'p [String],
}

impl<'de> DeserializeSeed<'de> for ListAt<'_> {
    type Value = Option<Vec<&'de RawValue>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListAt<'_> {
    type Value = Option<Vec<&'de RawValue>>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        if !self.path.is_empty() {
            while items.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(None);
        }
        let mut listed = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(item) = items.next_element::<&RawValue>()? {
            listed.push(item);
        }
        Ok(Some(listed))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = members.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.path.split_first() {
                // A repeated key: the last one counts, as in the parsed value.
                Some((name, rest)) if *name == key => {
                    found = members.next_value_seed(ListAt { path: rest })?;
                }
                _ => {
                    members.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// One item of a list read by [`listed_in`].
pub fn listed_item(item: &RawValue) -> Result<Value, NodeError> {
    json::parse("foreach item", item.get())
        .map_err(|error| NodeError::permanent(ErrorKind::Internal, error.to_string()))
}

/// How often a running `foreach` attempt writes its progress, at most: a list of a million
/// items must not cost a million writes.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Counts the finished items of one attempt; dropping it stops the writes.
pub struct Reporter {
    done: Arc<AtomicU64>,
    _stop: DropGuard,
}

impl Reporter {
    /// Starts writing the progress of the attempt `key` of `total` items every `every` (the
    /// first write after one period, so a short loop writes nothing).
    pub fn start(store: Arc<dyn Store>, key: AttemptKey, total: u64, every: Duration) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(report(store, key, total, every, done.clone(), stop.clone()));
        Self {
            done,
            _stop: stop.drop_guard(),
        }
    }

    /// One more item finished.
    pub fn item_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

async fn report(
    store: Arc<dyn Store>,
    key: AttemptKey,
    total: u64,
    every: Duration,
    done: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    // A slow write delays the next one rather than being followed by a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut written = None;
    loop {
        tokio::select! {
            // A stopped reporter writes nothing more, even when a tick is due as well.
            biased;
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let progress = Progress {
            done: done.load(Ordering::Relaxed),
            total,
        };
        if written == Some(progress) {
            continue;
        }
        // Progress is for people watching: a failed write is retried at the next tick and
        // never fails the attempt.
        match store.set_progress(&key, progress).await {
            Ok(()) => written = Some(progress),
            Err(error) => tracing::debug!(run = %key.run_id, node = %key.node_id, %error,
                "could not record the progress of a foreach"),
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::store::{AttemptStatus, Attempts, RunStatus, Runs, SqliteStore};

    fn listed(text: &str, path: &[&str]) -> Option<Vec<String>> {
        let path: Vec<String> = path.iter().map(|name| (*name).to_owned()).collect();
        listed_in(text, &path).map(|items| items.iter().map(|item| item.get().to_owned()).collect())
    }

    #[test]
    fn a_list_is_read_from_the_text_item_by_item() {
        let text = r#"{"headers": {"x": [1]}, "body": {"source": "fair", "leads": [{"email": "a@x"}, 2, "three", [4]]}}"#;
        assert_eq!(
            listed(text, &["body", "leads"]),
            Some(vec![
                r#"{"email": "a@x"}"#.to_owned(),
                "2".to_owned(),
                r#""three""#.to_owned(),
                "[4]".to_owned()
            ])
        );
        let item = listed_in(text, &["body".to_owned(), "leads".to_owned()])
            .and_then(|items| items.first().map(|item| listed_item(item)))
            .map(|item| item.ok());
        assert_eq!(item, Some(Some(serde_json::json!({ "email": "a@x" }))));
        assert_eq!(listed("[]", &[]), Some(vec![]));
    }

    #[test]
    fn anything_but_a_list_at_the_path_is_none() {
        let text = r#"{"body": {"leads": {"a": 1}, "n": 1, "s": "x", "list": [1]}}"#;
        for path in [
            &["body", "leads"][..],
            &["body", "n"],
            &["body", "s"],
            &["body", "missing"],
            &["body", "list", "0"],
            &["nobody"],
        ] {
            assert_eq!(listed(text, path), None, "{path:?}");
        }
        assert_eq!(listed("{not json", &["body"]), None);
        assert_eq!(listed(r#"{"body": [1]} trailing"#, &["body"]), None);
    }

    #[test]
    fn names_are_read_as_the_parsed_value_reads_them() {
        // An escaped name is the same name; of a repeated name the last one counts.
        let text = r#"{"b\u006fdy": [1], "body": [2], "other": [3]}"#;
        assert_eq!(listed(text, &["body"]), Some(vec!["2".to_owned()]));
        let escaped = r#"{"le\u0061ds": [1]}"#;
        assert_eq!(listed(escaped, &["leads"]), Some(vec!["1".to_owned()]));
    }

    async fn store_with_running_attempt() -> (Arc<dyn Store>, AttemptKey) {
        use crate::store::tests::{attempt, key, run};
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("an in-memory store");
        store
            .create_run(&run(1, "w", RunStatus::Running))
            .await
            .expect("a run");
        let key = key(1, "each", 1);
        let attempt = attempt(key.clone(), AttemptStatus::Running);
        store.insert_attempt(&attempt).await.expect("an attempt");
        (Arc::new(store), key)
    }

    #[tokio::test]
    async fn progress_is_written_after_a_period_and_stops_with_the_reporter() {
        let (store, key) = store_with_running_attempt().await;
        let every = Duration::from_millis(20);
        let reporter = Reporter::start(store.clone(), key.clone(), 5, every);
        assert!(store.progress(&key.run_id).await.unwrap().is_empty());
        reporter.item_done();
        reporter.item_done();
        let written = async {
            loop {
                tokio::time::sleep(every).await;
                let progress = store.progress(&key.run_id).await.unwrap();
                if let Some((_, progress)) = progress.first() {
                    break *progress;
                }
            }
        };
        let progress = tokio::time::timeout(Duration::from_secs(30), written)
            .await
            .expect("written within many periods");
        assert_eq!(progress, Progress { done: 2, total: 5 });

        // Counted after the reporter is gone, an item is never written.
        let counter = reporter.done.clone();
        drop(reporter);
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(every * 10).await;
        let progress = store.progress(&key.run_id).await.unwrap();
        assert_eq!(progress, vec![(key, Progress { done: 2, total: 5 })]);
    }
}
