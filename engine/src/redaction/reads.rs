//! Which secrets a template reads, from its text: `secrets.NAME` and `secrets['NAME']` name one;
//! any other use of `secrets` (a loop, a filter, `{% set s = secrets %}`) counts as all of them.
//!
//! Templates only see the scope paths they name (see `template::Reads`), so a template whose text
//! does not contain the word `secrets` cannot see any secret; a mention inside a string literal
//! or plain text counts too, which can only make redaction wider.

use serde_json::Value;

/// A set of secrets, by their index in [`super::Redaction`]'s list of names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretUse {
    read: Vec<bool>,
}

impl SecretUse {
    /// No secret.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every one of `count` secrets.
    pub fn all(count: usize) -> Self {
        Self {
            read: vec![true; count],
        }
    }

    /// True when no secret is in the set.
    pub fn is_none(&self) -> bool {
        !self.read.contains(&true)
    }

    pub fn contains(&self, index: usize) -> bool {
        self.read.get(index).copied().unwrap_or(false)
    }

    /// Adds the secrets `text` reads; `names` are the secrets' names in index order.
    pub fn add_text(&mut self, text: &str, names: &[String]) {
        if !text.contains("secrets") {
            return;
        }
        self.read.resize(names.len(), false);
        for access in accesses(text) {
            match access {
                Access::Named(name) => {
                    if let Some(index) = names.iter().position(|n| n == name) {
                        self.read[index] = true;
                    }
                }
                Access::Any => self.read.fill(true),
            }
        }
    }

    /// Adds the secrets read by every string inside a template value.
    pub fn add_value(&mut self, value: &Value, names: &[String]) {
        match value {
            Value::String(text) => self.add_text(text, names),
            Value::Array(items) => items.iter().for_each(|item| self.add_value(item, names)),
            Value::Object(map) => map.values().for_each(|item| self.add_value(item, names)),
            _ => {}
        }
    }
}

/// One mention of `secrets` in a text.
#[derive(Debug, PartialEq, Eq)]
enum Access<'t> {
    Named(&'t str),
    Any,
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Every mention of the name `secrets` (not `my_secrets` or `secrets2`).
fn accesses(text: &str) -> Vec<Access<'_>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("secrets") {
        let start = from + offset;
        let end = start + "secrets".len();
        from = end;
        let glued_before = start > 0 && is_name_byte(bytes[start - 1]);
        let glued_after = bytes.get(end).is_some_and(|b| is_name_byte(*b));
        if !glued_before && !glued_after {
            found.push(named(&text[end..]).map_or(Access::Any, Access::Named));
        }
    }
    found
}

/// The name in `.NAME` or `['NAME']` / `["NAME"]` at the start of `rest`.
fn named(rest: &str) -> Option<&str> {
    let rest = rest.trim_start();
    if let Some(after_dot) = rest.strip_prefix('.') {
        let after_dot = after_dot.trim_start();
        let length = after_dot.bytes().take_while(|b| is_name_byte(*b)).count();
        return (length > 0).then(|| &after_dot[..length]);
    }
    let inside = rest.strip_prefix('[')?.trim_start();
    let quote = inside.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let quoted = &inside[1..];
    let close = quoted.find(quote)?;
    quoted[close + 1..]
        .trim_start()
        .starts_with(']')
        .then(|| &quoted[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["TOKEN", "KEY", "URL"].map(str::to_owned).to_vec()
    }

    fn read(text: &str) -> Vec<usize> {
        let mut used = SecretUse::none();
        used.add_text(text, &names());
        (0..3).filter(|index| used.contains(*index)).collect()
    }

    #[test]
    fn named_accesses_mark_one_secret() {
        assert_eq!(read("Bearer {{ secrets.TOKEN }}"), vec![0]);
        assert_eq!(read("{{ secrets [ 'KEY' ] | upper }}"), vec![1]);
        assert_eq!(
            read("{{ secrets[\"URL\"] }}/{{ secrets . KEY }}"),
            vec![1, 2]
        );
        assert_eq!(read("{{ secrets.UNKNOWN }}"), Vec::<usize>::new());
    }

    #[test]
    fn other_uses_mark_every_secret() {
        assert_eq!(read("{{ secrets | tojson }}"), vec![0, 1, 2]);
        assert_eq!(read("{{ secrets[name] }}"), vec![0, 1, 2]);
        assert_eq!(read("{% set s = secrets %}{{ s.KEY }}"), vec![0, 1, 2]);
    }

    #[test]
    fn other_names_and_plain_text_without_the_word_read_nothing() {
        assert!(read("{{ my_secrets.TOKEN }} {{ secrets2 }} {{ trigger.body }}").is_empty());
        let mut used = SecretUse::none();
        used.add_value(
            &serde_json::json!({"a": ["x", {"b": "{{ secrets.URL }}"}]}),
            &names(),
        );
        assert!(used.contains(2) && !used.contains(0));
    }
}
