//! Redaction of secret values: what keeps secrets out of everything the engine stores, prints or
//! answers, without rewriting what clients send (which would make redaction an oracle).
//!
//! The needles of every secret are built once per secrets set, into one Aho-Corasick automaton
//! matched ASCII case-insensitively: the value, the value with spaces as `+`, and its base64
//! cores (both alphabets, every alignment). The text is searched as written and in its decoded
//! views (percent, HTML, JSON escapes), so mixed escaping is caught too. Each search only counts
//! the secrets the template at hand reads ([`SecretUse`]).

mod derived;
mod forms;
mod reads;
mod views;

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use enrichflow_nodes::Secrets;
use serde_json::Value;

pub use derived::{Redactor, compared, shown};
use forms::Form;
pub use reads::SecretUse;
use views::{Decoding, View};

/// What replaces a secret value in stored data, logs and API responses.
pub const REDACTED: &str = "[redacted]";

/// The shortest secret value accepted at start: shorter ones cannot be told apart from ordinary
/// data, so redacting them would rewrite unrelated text.
pub const MIN_SECRET_LENGTH: usize = 8;

/// The needles of one secrets set; built once, shared by every attempt.
#[derive(Debug)]
pub struct Redaction {
    /// Secret names, in index order.
    names: Vec<String>,
    matcher: Matcher,
    /// Per automaton pattern: which secret it belongs to, and how it encodes it.
    patterns: Vec<(usize, Form)>,
}

#[derive(Debug)]
enum Matcher {
    /// No secret has a value.
    Empty,
    Automaton(AhoCorasick),
    /// The automaton could not be built (too many needles): every string an attempt that reads
    /// a secret produces is replaced whole, which fails closed.
    Whole,
}

impl Redaction {
    pub fn new(secrets: &Secrets) -> Self {
        let mut names = Vec::new();
        let mut needles = Vec::new();
        let mut patterns = Vec::new();
        for (index, (name, value)) in secrets.iter().enumerate() {
            names.push(name.to_owned());
            for (needle, form) in forms::needles(value) {
                needles.push(needle);
                patterns.push((index, form));
            }
        }
        let matcher = if needles.is_empty() {
            Matcher::Empty
        } else {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&needles)
                .map_or(Matcher::Whole, Matcher::Automaton)
        };
        Self {
            names,
            matcher,
            patterns,
        }
    }

    /// The secrets read by template values (every string inside them) and template texts.
    pub fn read_by(&self, values: &[&Value], texts: &[&str]) -> SecretUse {
        let mut used = SecretUse::none();
        for value in values {
            used.add_value(value, &self.names);
        }
        for text in texts {
            used.add_text(text, &self.names);
        }
        used
    }

    /// `text` with every occurrence of a `used` secret, in any form searched for, replaced by
    /// [`REDACTED`].
    pub fn text<'t>(&self, text: &'t str, used: &SecretUse) -> Cow<'t, str> {
        if used.is_none() || text.is_empty() {
            return Cow::Borrowed(text);
        }
        let automaton = match &self.matcher {
            Matcher::Empty => return Cow::Borrowed(text),
            Matcher::Whole => return Cow::Borrowed(REDACTED),
            Matcher::Automaton(automaton) => automaton,
        };
        // `is_match` uses the automaton's fast prefilters; the overlapping search that finds
        // every match, and the view that maps a match back to the text, only run after a hit.
        let mut ranges = Vec::new();
        if automaton.is_match(text) {
            self.collect(automaton, text, None, used, &mut ranges);
        }
        for decoding in Decoding::ALL {
            let hit =
                views::decoded(text, decoding).is_some_and(|bytes| automaton.is_match(&bytes));
            if let Some(view) = views::view(text, decoding).filter(|_| hit) {
                self.collect(automaton, text, Some(&view), used, &mut ranges);
            }
        }
        if ranges.is_empty() {
            return Cow::Borrowed(text);
        }
        Cow::Owned(replace_ranges(text, ranges))
    }

    /// `text` with every secret hidden: for the engine's own messages (a database or revision
    /// error), which carry no client data and so cannot make redaction an oracle.
    pub fn engine_text(&self, text: &str) -> String {
        self.text(text, &SecretUse::all(self.names.len()))
            .into_owned()
    }

    /// `value` with [`Redaction::text`] applied to every string and object key.
    pub fn value(&self, value: Value, used: &SecretUse) -> Value {
        if used.is_none() {
            return value;
        }
        match value {
            Value::String(text) => match self.text(&text, used) {
                Cow::Borrowed(_) => Value::String(text),
                Cow::Owned(redacted) => Value::String(redacted),
            },
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.value(v, used)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(key, v)| (self.text(&key, used).into_owned(), self.value(v, used)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// Adds the ranges of `text` where a used secret was found, searching `view` (or the text
    /// itself).
    fn collect(
        &self,
        automaton: &AhoCorasick,
        text: &str,
        view: Option<&View>,
        used: &SecretUse,
        ranges: &mut Vec<(usize, usize)>,
    ) {
        let haystack = view.map_or(text.as_bytes(), |view| view.bytes.as_slice());
        for found in automaton.find_overlapping_iter(haystack) {
            let (secret, form) = self.patterns[found.pattern().as_usize()];
            if !used.contains(secret) {
                continue;
            }
            let (start, end) = match view {
                Some(view) => view.origin(found.start(), found.end()),
                None => (found.start(), found.end()),
            };
            let (start, end) = match form {
                // The characters around a base64 core still carry bits of the secret (and the
                // rest of a credential such as `user:`): hide the whole base64 word.
                Form::Base64 => base64_word(text.as_bytes(), start, end),
                Form::Plain => (start, end),
            };
            ranges.push(char_bounds(text, start, end));
        }
    }
}

fn is_base64_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'-' | b'_' | b'=')
}

fn base64_word(text: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start > 0 && is_base64_byte(text[start - 1]) {
        start -= 1;
    }
    while end < text.len() && is_base64_byte(text[end]) {
        end += 1;
    }
    (start, end)
}

/// The smallest range of whole characters that covers `start..end`.
fn char_bounds(text: &str, mut start: usize, mut end: usize) -> (usize, usize) {
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// `text` with each range (overlapping and touching ones merged) replaced by [`REDACTED`].
fn replace_ranges(text: &str, mut ranges: Vec<(usize, usize)>) -> String {
    ranges.sort_unstable();
    let mut redacted = String::with_capacity(text.len());
    let mut copied = 0;
    let mut open: Option<(usize, usize)> = None;
    for (start, end) in ranges {
        match &mut open {
            Some((_, open_end)) if start <= *open_end => *open_end = (*open_end).max(end),
            _ => {
                if let Some((open_start, open_end)) = open {
                    redacted.push_str(&text[copied..open_start]);
                    redacted.push_str(REDACTED);
                    copied = open_end;
                }
                open = Some((start, end));
            }
        }
    }
    if let Some((open_start, open_end)) = open {
        redacted.push_str(&text[copied..open_start]);
        redacted.push_str(REDACTED);
        copied = open_end;
    }
    redacted.push_str(&text[copied..]);
    redacted
}

#[cfg(test)]
mod tests;
