//! Where secrets come from: `ENRICHFLOW_SECRET_<NAME>` environment variables and, optionally, a
//! file of `NAME=value` lines. The environment wins over the file. Values shorter than
//! [`MIN_SECRET_LENGTH`] are refused.

use std::collections::BTreeMap;
use std::path::Path;

use enrichflow_nodes::Secrets;

use crate::redaction::MIN_SECRET_LENGTH;

const PREFIX: &str = "ENRICHFLOW_SECRET_";

/// A secrets file could not be read or has a malformed line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read secrets file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected NAME=value")]
    Malformed { path: String, line: usize },
    #[error(
        "secret {name} is shorter than {MIN_SECRET_LENGTH} characters: a value that short cannot be \
         told apart from ordinary data, so it cannot be kept out of what the engine stores; \
         use a longer value, or set a value that is not secret (a port, a mode) as the variable \
         ENRICHFLOW_VAR_{name} and read it as vars.{name}"
    )]
    TooShort { name: String },
}

/// Secrets from the process environment and an optional file.
pub fn load(file: Option<&Path>) -> Result<Secrets, Error> {
    let mut values = match file {
        Some(path) => from_file(path)?,
        None => BTreeMap::new(),
    };
    values.extend(from_vars(std::env::vars()));
    check_lengths(&values)?;
    Ok(Secrets::new(values))
}

/// Refuses values of 1 to 7 characters. Characters, not bytes: the redaction matches bytes,
/// but a short value of multi-byte characters is as easy to guess and as common in text.
fn check_lengths(values: &BTreeMap<String, String>) -> Result<(), Error> {
    let short = values.iter().find(|(_, value)| {
        let length = value.chars().count();
        length > 0 && length < MIN_SECRET_LENGTH
    });
    match short {
        Some((name, _)) => Err(Error::TooShort { name: name.clone() }),
        None => Ok(()),
    }
}

/// Picks `ENRICHFLOW_SECRET_<NAME>` out of environment-style pairs.
pub fn from_vars(vars: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    prefixed(PREFIX, vars)
}

/// Picks `<prefix><NAME>` out of environment-style pairs; also used for `ENRICHFLOW_VAR_`.
pub(crate) fn prefixed(
    prefix: &str,
    vars: impl Iterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    vars.filter_map(|(key, value)| {
        let name = key.strip_prefix(prefix)?;
        (!name.is_empty()).then(|| (name.to_owned(), value))
    })
    .collect()
}

fn from_file(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: display.clone(),
        source,
    })?;
    parse(&text, &display)
}

fn parse(text: &str, path: &str) -> Result<BTreeMap<String, String>, Error> {
    parse_lines(text).map_err(|line| Error::Malformed {
        path: path.to_owned(),
        line,
    })
}

/// `NAME=value` per line; blank lines and `#` comments are ignored; quotes around a value are
/// removed. The error is the 1-based number of the first malformed line. The variables file
/// has the same format, so [`crate::vars`] uses this too.
pub(crate) fn parse_lines(text: &str) -> Result<BTreeMap<String, String>, usize> {
    let mut values = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').ok_or(index + 1)?;
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        values.insert(name.trim().to_owned(), unquoted.to_owned());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prefixed_variables_only() {
        let vars = [
            ("ENRICHFLOW_SECRET_TOKEN".to_owned(), "abc".to_owned()),
            ("ENRICHFLOW_SECRET_".to_owned(), "ignored".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let values = from_vars(vars.into_iter());
        assert_eq!(values.len(), 1);
        assert_eq!(values["TOKEN"], "abc");
    }

    #[test]
    fn short_values_are_refused_by_name_and_empty_ones_allowed() {
        let values = parse("LONG=long-enough\nEMPTY=\nPIN=1234567\n", "s").expect("valid");
        let error = check_lengths(&values).unwrap_err().to_string();
        assert!(
            error.starts_with("secret PIN is shorter than 8 characters"),
            "{error}"
        );
        assert!(!error.contains("1234567"), "{error}");
        let values = parse("LONG=12345678\nEMPTY=\n", "s").expect("valid");
        assert!(check_lengths(&values).is_ok());
    }

    #[test]
    fn parses_files_and_reports_bad_lines() {
        let values = parse("# c\n\nA=1\nB = \"two words\"\n", "s").expect("valid");
        assert_eq!(values["A"], "1");
        assert_eq!(values["B"], "two words");
        let error = parse("A=1\nnot a pair\n", "s").unwrap_err();
        assert_eq!(error.to_string(), "s:2: expected NAME=value");
    }
}
