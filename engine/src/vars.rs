//! Variables: configuration that is not secret (a port, a host, a mode), from
//! `ENRICHFLOW_VAR_<NAME>` environment variables and, optionally, a file of `NAME=value` lines in
//! the format of the secrets file. The environment wins over the file. Templates read them as
//! `vars.<NAME>`; unlike secrets they are never redacted, so they have no minimum length.

use std::collections::BTreeMap;
use std::path::Path;

const PREFIX: &str = "ENRICHFLOW_VAR_";

/// A variables file could not be read or has a malformed line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read variables file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected NAME=value")]
    Malformed { path: String, line: usize },
}

/// Variable values by name (`vars.SMTP_PORT` is `Vars::get("SMTP_PORT")`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    values: BTreeMap<String, String>,
}

impl Vars {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// Variables from the process environment and an optional file.
pub fn load(file: Option<&Path>) -> Result<Vars, Error> {
    let mut values = match file {
        Some(path) => from_file(path)?,
        None => BTreeMap::new(),
    };
    values.extend(from_vars(std::env::vars()));
    Ok(Vars::new(values))
}

/// Picks `ENRICHFLOW_VAR_<NAME>` out of environment-style pairs.
pub fn from_vars(vars: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    crate::secrets::prefixed(PREFIX, vars)
}

fn from_file(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: display.clone(),
        source,
    })?;
    crate::secrets::parse_lines(&text).map_err(|line| Error::Malformed {
        path: display,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prefixed_variables_only_and_keeps_short_values() {
        let vars = [
            ("ENRICHFLOW_VAR_SMTP_PORT".to_owned(), "587".to_owned()),
            ("ENRICHFLOW_VAR_".to_owned(), "ignored".to_owned()),
            ("ENRICHFLOW_SECRET_TOKEN".to_owned(), "not a var".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let values = from_vars(vars.into_iter());
        assert_eq!(values, BTreeMap::from([("SMTP_PORT".into(), "587".into())]));
    }

    #[test]
    fn a_file_is_read_and_a_bad_line_named_by_number() {
        let directory =
            std::env::temp_dir().join(format!("enrichflow-vars-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&directory).expect("a temp directory");
        let good = directory.join("good");
        std::fs::write(&good, "# c\nSMTP_TLS=none\nSMTP_HOST = \"mail\"\n").expect("write");
        let values = from_file(&good).expect("valid");
        assert_eq!(values["SMTP_TLS"], "none");
        assert_eq!(values["SMTP_HOST"], "mail");
        let bad = directory.join("bad");
        std::fs::write(&bad, "A=1\nnot a pair\n").expect("write");
        let error = from_file(&bad).unwrap_err().to_string();
        assert!(error.ends_with("bad:2: expected NAME=value"), "{error}");
        let _ = std::fs::remove_dir_all(&directory);
    }
}
