//! Reading a `with` block twice with one set of rules: as written, when the workflow is loaded
//! (templates are still pending), and rendered, when an attempt runs. Every error names the path
//! of the offending value, so the loader can point at its line and column.

use serde_json::{Map, Value};

use crate::{ConfigError, ErrorKind, NodeError};

/// What a reader returns: `Ok(None)` when the value, or something inside it, is a template that
/// only the run can resolve.
pub(super) type Read<T> = Result<Option<T>, ConfigError>;

/// When a `with` block is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// At load time, as written: a template is accepted wherever any value may appear.
    Load,
    /// When an attempt runs, rendered: every value is final.
    Run,
}

impl Phase {
    /// Whether `value` is a template that the engine renders later; never true once rendered,
    /// so that a rendered string which happens to contain `{{` is read as the text it is.
    pub(super) fn is_pending(self, value: &Value) -> bool {
        self == Phase::Load && value.as_str().is_some_and(is_template_text)
    }
}

/// Whether `text` holds a minijinja expression or statement.
pub(super) fn is_template_text(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// `parent.key`, or `key` at the top of the block.
pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(super) fn at_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A map inside the block, with its path, for reading keys.
#[derive(Debug)]
pub(super) struct Fields<'a> {
    entries: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    /// The map `value` at `path`; `expected` describes it in the error when it is not a map.
    pub(super) fn read(value: &'a Value, path: &str, expected: &str) -> Result<Self, ConfigError> {
        match value {
            Value::Object(entries) => Ok(Self {
                entries,
                path: path.to_owned(),
            }),
            other => Err(ConfigError::new(
                path,
                format!("expected {expected}, found {}", describe(other)),
            )),
        }
    }

    /// Rejects the first key not in `known`.
    pub(super) fn only(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self
            .entries
            .keys()
            .find(|key| !known.contains(&key.as_str()))
        {
            Some(key) => Err(ConfigError::new(
                self.path(key),
                format!("unknown key `{key}`; expected one of {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// The value of a key that must be present.
    pub(super) fn required(&self, key: &str) -> Result<&'a Value, ConfigError> {
        self.entries.get(key).ok_or_else(|| {
            ConfigError::new(self.path(key), format!("missing required key `{key}`"))
        })
    }

    /// The value of a key that may be absent.
    pub(super) fn optional(&self, key: &str) -> Option<&'a Value> {
        self.entries.get(key)
    }

    /// Every key and value, in the order written.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&'a String, &'a Value)> + use<'a> {
        self.entries.iter()
    }

    /// The path of `key` inside this map.
    pub(super) fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// A finite number between `min` and `max`, both included.
pub(super) fn number_between(
    phase: Phase,
    value: &Value,
    path: &str,
    min: f64,
    max: f64,
) -> Read<f64> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let number = number(value, path)?;
    if !(min..=max).contains(&number) {
        return Err(ConfigError::new(
            path,
            format!("must be between {min} and {max}, found {number}"),
        ));
    }
    Ok(Some(number))
}

/// Any finite number.
pub(super) fn number(value: &Value, path: &str) -> Result<f64, ConfigError> {
    value
        .as_f64()
        .filter(|number| number.is_finite())
        .ok_or_else(|| {
            ConfigError::new(
                path,
                format!("expected a number, found {}", describe(value)),
            )
        })
}

/// A string, or a pending template.
pub(super) fn text<'a>(phase: Phase, value: &'a Value, path: &str) -> Read<&'a str> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    match value {
        Value::String(text) => Ok(Some(text)),
        other => Err(ConfigError::new(
            path,
            format!("expected a string, found {}", describe(other)),
        )),
    }
}

/// The result of reading a rendered block in [`Phase::Run`]. An invalid rendered block fails the
/// attempt for good: another attempt renders it the same way.
pub(super) fn rendered<T>(read: Read<T>) -> Result<T, NodeError> {
    let error = match read {
        Ok(Some(value)) => return Ok(value),
        // Unreachable: nothing is pending once rendered; kept as an error rather than a panic.
        Ok(None) => ConfigError::new("", "a value is still a template"),
        Err(error) => error,
    };
    let message = if error.path.is_empty() {
        format!("invalid `with` block: {}", error.message)
    } else {
        format!("`with.{}`: {}", error.path, error.message)
    };
    Err(NodeError::permanent(ErrorKind::Config, message))
}

/// How a value is named in messages: its JSON type, with short scalars quoted.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => format!("the boolean {flag}"),
        Value::Number(number) => format!("the number {number}"),
        Value::String(text) if text.chars().count() <= 40 => format!("the string `{text}`"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

/// Rounds to two decimals, the precision scores are shown with.
pub(super) fn round2(number: f64) -> f64 {
    (number * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_are_pending_only_at_load_time() {
        let template = json!("{{ lead.size }}");
        assert!(Phase::Load.is_pending(&template));
        assert!(Phase::Load.is_pending(&json!("{% if a %}1{% endif %}")));
        assert!(!Phase::Run.is_pending(&template));
        assert!(!Phase::Load.is_pending(&json!("plain")));
        assert!(!Phase::Load.is_pending(&json!(1)));
    }

    #[test]
    fn numbers_are_checked_against_their_range() {
        let read = |value: Value| number_between(Phase::Load, &value, "w", 0.0, 1.0);
        assert_eq!(read(json!(0.5)), Ok(Some(0.5)));
        assert_eq!(read(json!(1)), Ok(Some(1.0)));
        assert_eq!(read(json!("{{ x }}")), Ok(None));
        let error = read(json!(1.5)).expect_err("out of range");
        assert_eq!(error.message, "must be between 0 and 1, found 1.5");
        let error = read(json!("0.5")).expect_err("a string");
        assert_eq!(error.message, "expected a number, found the string `0.5`");
        let rendered = number_between(Phase::Run, &json!("{{ x }}"), "w", 0.0, 1.0);
        assert_eq!(rendered.expect_err("rendered text").path, "w");
    }

    #[test]
    fn fields_name_the_path_of_bad_keys() {
        let value = json!({"a": 1, "b": 2});
        let fields = Fields::read(&value, "top", "a map").expect("a map");
        assert_eq!(fields.only(&["a", "b"]), Ok(()));
        assert_eq!(fields.only(&["a"]).expect_err("b is unknown").path, "top.b");
        assert_eq!(
            fields.required("c").expect_err("c is missing").path,
            "top.c"
        );
        let error = Fields::read(&json!([1]), "", "a map of fields").expect_err("a list");
        assert_eq!(error.message, "expected a map of fields, found a list");
        assert_eq!(at_index("rules", 2), "rules[2]");
        assert_eq!(join("", "rules"), "rules");
    }

    #[test]
    fn rounds_to_two_decimals() {
        assert_eq!(round2(67.254_9), 67.25);
        assert_eq!(round2(12.5), 12.5);
        assert_eq!(round2(0.005), 0.01);
    }
}
