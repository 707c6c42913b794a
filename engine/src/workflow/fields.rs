//! Typed reading of the located YAML tree. Every reader records what is wrong in [`Problems`]
//! and returns `None`, so the parser carries on and reports every error in one pass.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::template::Templates;

use super::duration;
use super::error::LoadError;
use super::located::{Entry, Node, Position, Yaml};
use super::suggest;

/// The most errors listed for one file; a generated or hostile file could have millions.
pub const MAX_ERRORS: usize = 1000;

/// Errors after which "did you mean" hints are no longer computed: each compares the word with
/// every candidate, and a file with thousands of misspelt ids would multiply that.
const MAX_SUGGESTIONS: usize = 100;

/// The errors found so far in one file.
pub struct Problems {
    file: PathBuf,
    errors: Vec<LoadError>,
    /// How many errors were found beyond [`MAX_ERRORS`], and where the first of them was.
    unlisted: usize,
    first_unlisted: Position,
}

impl Problems {
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            errors: Vec::new(),
            unlisted: 0,
            first_unlisted: Position::default(),
        }
    }

    pub fn add(&mut self, at: Position, path: &str, message: impl Into<String>) {
        if self.errors.len() >= MAX_ERRORS {
            if self.unlisted == 0 {
                self.first_unlisted = at;
            }
            self.unlisted = self.unlisted.saturating_add(1);
            return;
        }
        self.errors.push(LoadError {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The candidate `word` was probably meant to be, while few errors have been found.
    pub fn suggestion<'a>(
        &self,
        word: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        if self.errors.len() >= MAX_SUGGESTIONS {
            return None;
        }
        suggest::closest(word, candidates)
    }

    /// The errors in file order (stable for errors at the same place), then how many more
    /// there were when there were too many to list.
    pub fn into_errors(mut self) -> Vec<LoadError> {
        self.errors.sort_by_key(|error| (error.line, error.column));
        if self.unlisted > 0 {
            let message = format!(
                "{} more problems in this file are not listed (at most {MAX_ERRORS} are)",
                self.unlisted
            );
            self.errors.push(LoadError {
                file: self.file.clone(),
                line: self.first_unlisted.line,
                column: self.first_unlisted.column,
                path: String::new(),
                message,
            });
        }
        self.errors
    }

    pub fn string<'a>(&mut self, node: &'a Node, path: &str) -> Option<&'a str> {
        match &node.value {
            Yaml::String(text) => Some(text),
            _ => self.wrong_type(node, path, "a string"),
        }
    }

    /// A whole number of at least 1 and at most `max`.
    pub fn positive(&mut self, node: &Node, path: &str, max: u64) -> Option<u64> {
        let Yaml::Number(number) = &node.value else {
            return self.wrong_type(node, path, "a whole number");
        };
        if number.is_f64() {
            self.add(
                node.at,
                path,
                format!("expected a whole number, found {number}"),
            );
            return None;
        }
        match number.as_u64() {
            Some(value) if (1..=max).contains(&value) => Some(value),
            Some(value) if value > max => {
                self.add(
                    node.at,
                    path,
                    format!("must be at most {max}, found {value}"),
                );
                None
            }
            _ => {
                self.add(node.at, path, format!("must be at least 1, found {number}"));
                None
            }
        }
    }

    /// A duration of at most `max` (see `duration`'s maxima).
    pub fn duration(&mut self, node: &Node, path: &str, max: Duration) -> Option<Duration> {
        let text = self.duration_text(node, path)?;
        duration::parse(text, max)
            .map_err(|message| self.add(node.at, path, message))
            .ok()
    }

    /// For limits such as timeouts, where zero makes no sense.
    pub fn positive_duration(
        &mut self,
        node: &Node,
        path: &str,
        max: Duration,
    ) -> Option<Duration> {
        let text = self.duration_text(node, path)?;
        duration::parse_positive(text, max)
            .map_err(|message| self.add(node.at, path, message))
            .ok()
    }

    fn duration_text<'a>(&mut self, node: &'a Node, path: &str) -> Option<&'a str> {
        match &node.value {
            Yaml::String(text) => Some(text),
            _ => self.wrong_type(node, path, "a duration such as `10s`"),
        }
    }

    /// Checks the template syntax of every string in `node` (not map keys).
    pub fn templates(&mut self, templates: &Templates, node: &Node, path: &str) {
        each_string(node, path, &mut |string, text, path| {
            if let Err(error) = templates.check_template(text) {
                self.add(string.at, path, error.to_string());
            }
        });
    }

    pub fn wrong_type<T>(&mut self, node: &Node, path: &str, expected: &str) -> Option<T> {
        self.add(
            node.at,
            path,
            format!("expected {expected}, found {}", node.kind()),
        );
        None
    }
}

/// A map being read: knows its path and where to report keys that are missing.
pub struct Fields<'a> {
    entries: &'a [Entry],
    path: String,
    at: Position,
}

impl<'a> Fields<'a> {
    /// `at` is where a missing key is reported: usually the key that holds this map.
    pub fn read(problems: &mut Problems, node: &'a Node, path: &str, at: Position) -> Option<Self> {
        match &node.value {
            Yaml::Map(entries) => Some(Self {
                entries,
                path: path.to_owned(),
                at,
            }),
            _ => problems.wrong_type(node, path, "a map"),
        }
    }

    /// Reports every key not in `allowed`.
    pub fn only(&self, problems: &mut Problems, allowed: &[&str]) {
        for entry in self.entries {
            if !allowed.contains(&entry.key.as_str()) {
                let message = format!(
                    "unknown key `{}` (expected one of: {})",
                    entry.key,
                    allowed.join(", ")
                );
                problems.add(entry.key_at, &self.path(&entry.key), message);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    pub fn require(&self, problems: &mut Problems, key: &str) -> Option<&'a Entry> {
        let found = self.get(key);
        if found.is_none() {
            problems.add(self.at, &self.path, format!("missing required key `{key}`"));
        }
        found
    }

    pub fn entries(&self) -> &'a [Entry] {
        self.entries
    }

    /// The path of `key` in this map.
    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// Calls `visit(node, text, path)` for every string inside `node`, however deeply nested;
/// map keys are not visited (they are never templates).
pub fn each_string(node: &Node, path: &str, visit: &mut impl FnMut(&Node, &str, &str)) {
    match &node.value {
        Yaml::String(text) => visit(node, text, path),
        Yaml::List(items) => {
            for (index, item) in items.iter().enumerate() {
                each_string(item, &at_index(path, index), visit);
            }
        }
        Yaml::Map(entries) => {
            for entry in entries {
                each_string(&entry.value, &join(path, &entry.key), visit);
            }
        }
        Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) => {}
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub fn at_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The position of a value inside `node` named by a dotted path (`headers.Accept`,
/// `items.0` or `items[0]`): the key for a map entry, the value for a list item.
pub fn locate(node: &Node, path: &str) -> Option<Position> {
    find(node, path).map(|(at, _)| at)
}

/// The value at `path` inside `node`, and the position [`locate`] reports for it.
pub fn find<'a>(node: &'a Node, path: &str) -> Option<(Position, &'a Node)> {
    let mut found = None;
    let mut current = node;
    let segments = path
        .split('.')
        .flat_map(|segment| segment.split(['[', ']']))
        .filter(|segment| !segment.is_empty());
    for segment in segments {
        let at = match &current.value {
            Yaml::Map(entries) => {
                let entry = entries.iter().find(|entry| entry.key == segment)?;
                current = &entry.value;
                entry.key_at
            }
            Yaml::List(items) => {
                current = items.get(segment.parse::<usize>().ok()?)?;
                current.at
            }
            _ => return None,
        };
        found = Some((at, current));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::located;

    fn messages(problems: Problems) -> Vec<String> {
        problems
            .into_errors()
            .iter()
            .map(|error| {
                format!(
                    "{}:{} {}: {}",
                    error.line, error.column, error.path, error.message
                )
            })
            .collect()
    }

    #[test]
    fn typed_readers_report_what_they_expected() {
        let root = located::parse("a: [1]\nb: 0\nc: 1.5\nd: 7\ne: 99\nf: 5x\n").unwrap();
        let mut problems = Problems::new(Path::new("f.yaml"));
        let fields = Fields::read(&mut problems, &root, "", Position::default()).unwrap();
        let value = |key: &str| &fields.get(key).unwrap().value;
        assert_eq!(problems.string(value("a"), "a"), None);
        assert_eq!(problems.positive(value("b"), "b", 10), None);
        assert_eq!(problems.positive(value("c"), "c", 10), None);
        assert_eq!(problems.positive(value("d"), "d", 10), Some(7));
        assert_eq!(problems.positive(value("e"), "e", 10), None);
        assert_eq!(problems.duration(value("f"), "f", Duration::MAX), None);
        fields.only(&mut problems, &["a", "b", "c", "d", "e"]);
        assert_eq!(fields.require(&mut problems, "g").map(|_| ()), None);
        assert_eq!(
            messages(problems),
            [
                "0:0 : missing required key `g`",
                "1:4 a: expected a string, found a list",
                "2:4 b: must be at least 1, found 0",
                "3:4 c: expected a whole number, found 1.5",
                "5:4 e: must be at most 10, found 99",
                "6:1 f: unknown key `f` (expected one of: a, b, c, d, e)",
                "6:4 f: invalid duration `5x`: unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (write e.g. `250ms`, `10s`, `5m`)",
            ]
        );
    }

    #[test]
    fn errors_beyond_the_limit_are_counted_not_listed() {
        let mut problems = Problems::new(Path::new("f.yaml"));
        for line in 1..=MAX_ERRORS + 5 {
            let at = Position {
                line: line as u64,
                column: 1,
            };
            problems.add(at, "x", "wrong");
        }
        assert_eq!(problems.suggestion("transfrom", ["transform"]), None);
        let errors = problems.into_errors();
        assert_eq!(errors.len(), MAX_ERRORS + 1);
        assert_eq!(
            errors[MAX_ERRORS].to_string(),
            "f.yaml:1001:1: 5 more problems in this file are not listed (at most 1000 are)"
        );
    }

    #[test]
    fn locates_nested_config_paths() {
        let root =
            located::parse("headers:\n  Accept: x\nitems:\n  - url: a\n  - url: b\n").unwrap();
        assert_eq!(
            locate(&root, "headers.Accept"),
            Some(Position { line: 2, column: 3 })
        );
        assert_eq!(
            locate(&root, "items[1].url"),
            Some(Position { line: 5, column: 5 })
        );
        assert_eq!(
            locate(&root, "items.0"),
            Some(Position { line: 4, column: 5 })
        );
        assert_eq!(locate(&root, "nope"), None);
    }
}
