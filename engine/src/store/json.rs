//! JSON as the store keeps it: a value nested deeper than [`MAX_DEPTH`] is never written, and a
//! stored value is read back whatever its depth up to [`MAX_READ_DEPTH`] (older versions wrote
//! values deeper than serde_json's default 128-level read limit, which then could not be read).

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Error, Result};

/// The deepest JSON value the store writes, counting every array and object level.
///
/// Chosen below serde_json's 128-level default read limit with room to spare for the levels
/// the run JSON adds around a stored value (`nodes.<id>.history[n].input` adds four), so that
/// a client reading the API with a default JSON parser can read every run.
pub const MAX_DEPTH: usize = 100;

/// The deepest stored value the store reads. Rows written before writes were bounded can be
/// deeper than [`MAX_DEPTH`]; they are read (on a stack that grows as needed), up to this depth,
/// beyond which the row is reported unreadable rather than risking the stack of whoever walks
/// the value later (dropping or printing a `Value` recurses once per level).
pub const MAX_READ_DEPTH: usize = 512;

/// The nesting depth of `value`: 0 for a scalar, 1 for `[]` or `[1]`, 2 for `[[1]]`. Walks
/// with an explicit stack, so a value of any depth is measured without recursion.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0usize)];
    while let Some((value, level)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        let level = level.saturating_add(1);
        deepest = deepest.max(level);
        pending.extend(children.map(|child| (child, level)));
    }
    deepest
}

/// Refuses a value the store would not write: `what` names it in the error (`the node's
/// output`).
pub fn check_depth(what: &str, value: &Value) -> Result<()> {
    within_depth(what, depth(value))
}

/// As [`check_depth`], for an item of a list that is stored whole, one level deeper.
pub fn check_item_depth(what: &str, item: &Value) -> Result<()> {
    within_depth(what, depth(item).saturating_add(1))
}

fn within_depth(what: &str, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::TooDeep {
            what: what.to_owned(),
            depth,
            limit: MAX_DEPTH,
        });
    }
    Ok(())
}

/// The text the store writes for `value`, once its depth is checked.
pub(super) fn to_text(what: &str, value: &Value) -> Result<String> {
    check_depth(what, value)?;
    Ok(value.to_string())
}

/// The text of an attempt's input or output to bind, unless nested deeper than the store
/// writes (see [`check_depth`]).
pub(super) fn checked_text(
    what: &str,
    json: Option<&super::Json>,
) -> Result<Option<std::sync::Arc<str>>> {
    json.map(|json| {
        check_text_depth(what, json.text())?;
        Ok(json.shared_text())
    })
    .transpose()
}

/// Refuses JSON text nested deeper than the store writes (see [`check_depth`]).
pub(super) fn check_text_depth(what: &str, text: &str) -> Result<()> {
    within_depth(what, text_depth(text))
}

/// As [`to_text`], for an optional value.
pub(super) fn to_optional_text(what: &str, value: Option<&Value>) -> Result<Option<String>> {
    value.map(|value| to_text(what, value)).transpose()
}

/// The nesting depth of JSON text, by a scan of its brackets outside strings. Never fails:
/// on text that is not JSON it measures something, and the parse then reports the error.
pub fn text_depth(text: &str) -> usize {
    shape(text.as_bytes(), |_| false).depth
}

/// The shape of JSON text as one scan of its brackets and commas outside strings sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The deepest nesting of arrays and objects; the outermost one is level 1.
    pub depth: usize,
    /// Containers plus their items (an object member counts once), the whole value included.
    pub values: usize,
}

/// Scans `bytes` once, without parsing or allocating; stops as soon as `enough` says the shape
/// seen so far decides the question (a limit passed). Malformed text is measured all the same.
pub fn shape(bytes: &[u8], enough: impl Fn(&Shape) -> bool) -> Shape {
    let mut seen = Shape {
        depth: 0,
        values: 1,
    };
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth = depth.saturating_add(1);
                seen.depth = seen.depth.max(depth);
                seen.values = seen.values.saturating_add(1);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => seen.values = seen.values.saturating_add(1),
            _ => continue,
        }
        if enough(&seen) {
            break;
        }
    }
    seen
}

/// Parses stored JSON of any depth up to [`MAX_READ_DEPTH`]; `column` names it in the error.
pub fn parse(column: &str, text: &str) -> Result<Value> {
    read(column, text)
}

/// Whether [`parse`] would read `text`, found without building what it holds.
pub(super) fn check_readable(column: &str, text: &str) -> Result<()> {
    read::<Readable>(column, text).map(drop)
}

/// Reads any JSON value as [`Value`] would, numbers range-checked, and keeps none of it
/// (`IgnoredAny` alone skips numbers unread: `1e400` would pass).
struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Readable)
    }
}

impl<'de> Visitor<'de> for Readable {
    type Value = Readable;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_str<E>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_unit<E>(self) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Readable, A::Error> {
        while items.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Readable, A::Error> {
        while members.next_entry::<IgnoredAny, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

fn read<T: DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    let depth = text_depth(text);
    if depth > MAX_READ_DEPTH {
        return Err(Error::Unreadable(format!(
            "{column}: JSON nested {depth} levels deep, more than the {MAX_READ_DEPTH} the store reads"
        )));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    // serde_json recurses once per level: the stacker moves the parse to a fresh stack segment
    // whenever the current one runs low, so a deep row cannot overflow a worker's stack.
    let value = T::deserialize(serde_stacker::Deserializer::new(&mut deserializer))
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| Error::Unreadable(format!("{column}: {error}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}]})), 4);
        assert_eq!(text_depth(r#"{"a": [1, {"b": {}}]}"#), 4);
        // Brackets inside strings, escaped quotes included, are not levels.
        assert_eq!(text_depth(r#"{"a": "[[[\"{{"}"#), 1);
    }

    #[test]
    fn rows_deeper_than_serde_json_reads_by_default_are_read() {
        let text = nested(300);
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "default limit"
        );
        let value = parse("trigger", &text).expect("readable");
        assert_eq!(depth(&value), 300);
    }

    #[test]
    fn rows_deeper_than_the_read_limit_are_unreadable() {
        let error = parse("input", &nested(MAX_READ_DEPTH + 1)).expect_err("too deep");
        assert!(matches!(error, Error::Unreadable(_)));
        assert!(error.to_string().contains("input: JSON nested 513 levels"));
    }

    #[test]
    fn invalid_text_is_unreadable_with_its_column() {
        for text in [r#"{"a":"#, r#""\ud800""#, "1 2"] {
            let error = parse("output", text).expect_err(text);
            assert!(error.to_string().contains("output: "), "{error}");
        }
    }

    #[test]
    fn writes_refuse_values_deeper_than_the_limit() {
        let ok: Value = serde_json::from_str(&nested(MAX_DEPTH)).expect("json");
        assert!(to_text("the trigger", &ok).is_ok());
        let deep: Value = parse("x", &nested(MAX_DEPTH + 1)).expect("json");
        let error = to_text("the node's output", &deep).expect_err("too deep");
        assert_eq!(
            error.to_string(),
            "the node's output nests 101 levels deep; the store keeps at most 100"
        );
    }
}
