//! The redaction of one attempt (or one run `output`): the stored form of a rendered template,
//! and the values rendered from secrets, recognised again in what the node returns.
//!
//! What a template rendered is stored as it renders with every secret replaced by
//! `[redacted]`, so only the positions that came from a secret are hidden, whatever the client
//! sent and whatever filter was applied (`replace`, `reverse`, …). Each string that differs
//! between the two renderings is a *derived* value: when the node's output or error contains it
//! (a transform's output, an upstream echoing a header), it is shown as it is stored.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

use super::{MIN_SECRET_LENGTH, REDACTED, Redaction, SecretUse};
use crate::template::{RunScope, Templates};

/// The longest derived value recorded: filters of a secret are short, and a longer string (a
/// body with a secret inside) would make the automaton large; the secret inside it is still
/// found by the needles.
pub const MAX_DERIVED_LENGTH: usize = 4096;

/// The most bytes of derived values one attempt records (a `foreach` of many items).
pub const MAX_DERIVED_TOTAL: usize = 256 * 1024;

/// Derived values by value, with what the stored input shows for each, within the caps above.
#[derive(Default)]
struct Pairs {
    shown_for: BTreeMap<String, String>,
    bytes: usize,
}

impl Pairs {
    fn insert(&mut self, real: &str, shown: &str) {
        let length = real.len();
        if !(MIN_SECRET_LENGTH..=MAX_DERIVED_LENGTH).contains(&length)
            || self.bytes + length > MAX_DERIVED_TOTAL
            || self.shown_for.contains_key(real)
        {
            return;
        }
        self.bytes += length;
        self.shown_for.insert(real.to_owned(), shown.to_owned());
    }
}

/// Redacts what one attempt produced: its output and error messages.
#[derive(Debug)]
pub struct Redactor<'r> {
    redaction: &'r Redaction,
    used: SecretUse,
    derived: Derived,
}

/// The derived values of an attempt.
#[derive(Debug)]
enum Derived {
    None,
    /// Matches the derived values; the strings are what the stored input shows for each.
    Found(AhoCorasick, Vec<String>),
    /// Too many to match: every string is replaced whole, which fails closed.
    Whole,
}

impl<'r> Redactor<'r> {
    /// Redacts the `used` secrets in any form searched for; no derived values.
    pub fn new(redaction: &'r Redaction, used: SecretUse) -> Self {
        Self {
            redaction,
            used,
            derived: Derived::None,
        }
    }

    /// `value` with derived values shown as stored, then every used secret redacted.
    pub fn value(&self, value: Value) -> Value {
        if self.used.is_none() {
            return value;
        }
        let value = match &self.derived {
            Derived::None => value,
            Derived::Found(automaton, shown) => replace_derived(value, &|text: String| {
                if automaton.is_match(&text) {
                    automaton.replace_all(&text, shown)
                } else {
                    text
                }
            }),
            Derived::Whole => replace_derived(value, &|_| REDACTED.to_owned()),
        };
        self.redaction.value(value, &self.used)
    }

    /// `text` redacted like [`Redactor::value`] redacts a string.
    pub fn text(&self, text: &str) -> String {
        match self.value(Value::String(text.to_owned())) {
            Value::String(text) => text,
            _ => REDACTED.to_owned(),
        }
    }

    fn with_derived(mut self, pairs: Pairs) -> Self {
        if pairs.shown_for.is_empty() {
            return self;
        }
        let (values, shown): (Vec<String>, Vec<String>) = pairs.shown_for.into_iter().unzip();
        self.derived = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&values)
            .map_or(Derived::Whole, |automaton| Derived::Found(automaton, shown));
        self
    }
}

/// The stored form of `template` rendered as `real`: each string of the template that mentions
/// `secrets` is rendered again with `hidden_scope` (the scope with every secret replaced by
/// `[redacted]`); everything else is `real` as it is, not rendered twice. A string that does not
/// render with the hidden scope (`{{ secrets.PORT | int }}`) is stored as `[redacted]`. `used`
/// are the secrets the attempt's templates read; none means nothing to hide.
pub fn shown<'r>(
    redaction: &'r Redaction,
    used: SecretUse,
    templates: &Templates,
    template: &Value,
    real: Value,
    hidden_scope: &RunScope,
) -> (Value, Redactor<'r>) {
    if used.is_none() {
        return (real, Redactor::new(redaction, used));
    }
    let mut pairs = Pairs::default();
    let shown = render_hidden(templates, template, real, hidden_scope, &mut pairs);
    (shown, Redactor::new(redaction, used).with_derived(pairs))
}

/// The stored form of `real` when the whole template was rendered again as `shown` (a
/// `foreach`); when that failed, every used secret is redacted from `real` instead.
pub fn compared<'r>(
    redaction: &'r Redaction,
    used: SecretUse,
    real: Value,
    shown: Option<Value>,
) -> (Value, Redactor<'r>) {
    if used.is_none() {
        return (real, Redactor::new(redaction, used));
    }
    let shown = shown.unwrap_or_else(|| redaction.value(real.clone(), &used));
    let mut pairs = Pairs::default();
    derived_pairs(&real, &shown, &mut pairs);
    (shown, Redactor::new(redaction, used).with_derived(pairs))
}

fn render_hidden(
    templates: &Templates,
    template: &Value,
    real: Value,
    hidden_scope: &RunScope,
    pairs: &mut Pairs,
) -> Value {
    match (template, real) {
        (Value::String(text), real) if text.contains("secrets") => {
            let shown = templates
                .render_run(template, hidden_scope)
                .unwrap_or_else(|_| Value::String(REDACTED.to_owned()));
            derived_pairs(&real, &shown, pairs);
            shown
        }
        (Value::Array(templates_in), Value::Array(items)) if templates_in.len() == items.len() => {
            Value::Array(
                templates_in
                    .iter()
                    .zip(items)
                    .map(|(t, item)| render_hidden(templates, t, item, hidden_scope, pairs))
                    .collect(),
            )
        }
        (Value::Object(templates_in), Value::Object(map)) => Value::Object(
            map.into_iter()
                .map(|(key, item)| {
                    let shown = match templates_in.get(&key) {
                        Some(t) => render_hidden(templates, t, item, hidden_scope, pairs),
                        None => item,
                    };
                    (key, shown)
                })
                .collect(),
        ),
        (_, real) => real,
    }
}

/// Records each string of `real` that differs from its place in `shown`, with what `shown`
/// has there (`[redacted]` where the shapes part). Values shorter than [`MIN_SECRET_LENGTH`]
/// are not recorded: replacing them would rewrite ordinary short strings; nor are values over
/// the caps above.
fn derived_pairs(real: &Value, shown: &Value, pairs: &mut Pairs) {
    match (real, shown) {
        (Value::String(real), Value::String(shown)) => {
            if real != shown {
                pairs.insert(real, shown);
            }
        }
        (Value::Array(real), Value::Array(shown)) if real.len() == shown.len() => {
            for (real, shown) in real.iter().zip(shown) {
                derived_pairs(real, shown, pairs);
            }
        }
        (Value::Object(real), Value::Object(shown)) => {
            for (key, real) in real {
                derived_pairs(real, shown.get(key).unwrap_or(&Value::Null), pairs);
            }
        }
        (real, _) => every_string(real, pairs),
    }
}

fn every_string(real: &Value, pairs: &mut Pairs) {
    match real {
        Value::String(text) => pairs.insert(text, REDACTED),
        Value::Array(items) => items.iter().for_each(|item| every_string(item, pairs)),
        Value::Object(map) => map.values().for_each(|item| every_string(item, pairs)),
        _ => {}
    }
}

fn replace_derived(value: Value, replace: &dyn Fn(String) -> String) -> Value {
    match value {
        Value::String(text) => Value::String(replace(text)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| replace_derived(item, replace))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (replace(key), replace_derived(item, replace)))
                .collect(),
        ),
        other => other,
    }
}
