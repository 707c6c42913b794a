//! A YAML document as a tree whose every value and key knows its line and column, so that the
//! parser can point at the exact place of each problem (serde-saphyr's `Spanned` supplies them).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::{MessageFormatter, Spanned};

/// A place in the file; 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// A YAML value and where it starts. For a block map that is its first key.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub at: Position,
    pub value: Yaml,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    List(Vec<Node>),
    /// In file order; duplicate keys are a YAML error already.
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_at: Position,
    pub value: Node,
}

/// A YAML syntax error: message and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: Position,
    pub message: String,
}

/// Parses a whole document; an empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    match serde_saphyr::from_str::<Spanned<Raw>>(text) {
        Ok(spanned) => Ok(Node::from(spanned)),
        Err(error) => {
            let at = error
                .location()
                .map(|location| Position {
                    line: location.line(),
                    column: location.column(),
                })
                .filter(|at| at.line > 0)
                .unwrap_or(Position { line: 1, column: 1 });
            // The user formatter words things for people and leaves the location to us.
            let message = serde_saphyr::UserMessageFormatter
                .format_message(error.without_snippet())
                .into_owned();
            Err(SyntaxError { at, message })
        }
    }
}

impl Node {
    /// The value as JSON (positions dropped); a non-finite float becomes null.
    pub fn to_json(&self) -> Value {
        match &self.value {
            Yaml::Null => Value::Null,
            Yaml::Bool(flag) => Value::Bool(*flag),
            Yaml::Number(number) => Value::Number(number.clone()),
            Yaml::String(text) => Value::String(text.clone()),
            Yaml::List(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Yaml::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|entry| (entry.key.clone(), entry.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// What kind of value this is, for "expected …, found …" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Yaml::Null => "nothing",
            Yaml::Bool(_) => "a boolean",
            Yaml::Number(_) => "a number",
            Yaml::String(_) => "a string",
            Yaml::List(_) => "a list",
            Yaml::Map(_) => "a map",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Yaml::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Yaml::Map(entries) => entries.iter().find(|entry| entry.key == key),
            _ => None,
        }
    }
}

impl From<Spanned<Raw>> for Node {
    fn from(spanned: Spanned<Raw>) -> Self {
        let at = position(&spanned);
        let value = match spanned.value {
            Raw::Null => Yaml::Null,
            Raw::Bool(flag) => Yaml::Bool(flag),
            Raw::Number(number) => Yaml::Number(number),
            Raw::String(text) => Yaml::String(text),
            Raw::List(items) => Yaml::List(items.into_iter().map(Node::from).collect()),
            Raw::Map(entries) => Yaml::Map(
                entries
                    .into_iter()
                    .map(|(key, value)| Entry {
                        key_at: position(&key),
                        key: key.value,
                        value: Node::from(value),
                    })
                    .collect(),
            ),
        };
        Node { at, value }
    }
}

/// `referenced` rather than `defined`, so a value reached through an alias is reported where
/// the alias is used.
fn position<T>(spanned: &Spanned<T>) -> Position {
    Position {
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
    }
}

/// What serde-saphyr fills in; [`Node`] is the same without the `Spanned` wrappers.
enum Raw {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    List(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Raw, E> {
        Ok(Raw::Number(number.into()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Raw, E> {
        Ok(Raw::Number(number.into()))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Raw, E> {
        Ok(serde_json::Number::from_f64(number).map_or(Raw::Null, Raw::Number))
    }

    fn visit_str<E>(self, text: &str) -> Result<Raw, E> {
        Ok(Raw::String(text.to_owned()))
    }

    fn visit_string<E>(self, text: String) -> Result<Raw, E> {
        Ok(Raw::String(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Raw::Map(entries))
    }

    fn visit_bytes<E: de::Error>(self, _bytes: &[u8]) -> Result<Raw, E> {
        Err(E::custom("binary values are not supported"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(line: u64, column: u64) -> Position {
        Position { line, column }
    }

    #[test]
    fn every_key_and_value_has_its_position() {
        let text =
            "id: x\nnodes:\n  a:\n    needs: [b, c]\n    with: { n: 1.5, ok: true, none: ~ }\n";
        let root = parse(text).unwrap();
        let nodes = root.get("nodes").unwrap();
        assert_eq!(nodes.key_at, at(2, 1));
        let a = nodes.value.get("a").unwrap();
        assert_eq!(a.key_at, at(3, 3));
        let needs = &a.value.get("needs").unwrap().value;
        let Yaml::List(items) = &needs.value else {
            panic!("needs is a list")
        };
        assert_eq!(items[1].at, at(4, 16));
        assert_eq!(items[1].value, Yaml::String("c".to_owned()));
        let with = a.value.get("with").unwrap();
        assert_eq!(
            with.value.to_json(),
            json!({"n": 1.5, "ok": true, "none": null})
        );
        assert_eq!(with.value.get("ok").unwrap().value.at, at(5, 25));
    }

    #[test]
    fn aliases_are_reported_where_they_are_used() {
        let root = parse("base: &b { q: 1 }\nuse: *b\n").unwrap();
        let used = root.get("use").unwrap();
        assert_eq!(used.value.at.line, 2);
        assert_eq!(used.value.to_json(), json!({"q": 1}));
    }

    #[test]
    fn syntax_errors_have_a_position_and_a_plain_message() {
        let error = parse("id: x\nnodes:\n  a: [1, 2\n").unwrap_err();
        assert_eq!(error.at, at(3, 6));
        assert_eq!(error.message, "unclosed bracket '['");
        let error = parse("id: x\nid: y\n").unwrap_err();
        assert_eq!(error.at, at(2, 1));
        assert!(error.message.contains("duplicate"), "{}", error.message);
    }

    #[test]
    fn an_empty_document_is_null() {
        assert_eq!(parse("").unwrap().value, Yaml::Null);
        assert_eq!(parse("# only a comment\n").unwrap().value, Yaml::Null);
    }
}
