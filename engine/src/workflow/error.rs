//! `LoadError`: one problem in one workflow file, located by line, column and key path.

use std::fmt;
use std::path::PathBuf;

/// One problem in a workflow file. Loading reports every problem it finds, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole (unreadable, for instance).
    pub line: u64,
    /// 1-based; 0 together with `line`.
    pub column: u64,
    /// Where in the document, as keys and indices: `nodes.company.needs[0]`; empty for the
    /// document itself.
    pub path: String,
    pub message: String,
}

impl LoadError {
    /// A problem with the file as a whole, not with a place in it.
    pub fn whole_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: 0,
            column: 0,
            path: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    /// `file:line:col: path: message`, the form editors and CI annotations understand.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_file_line_column_path_and_message() {
        let mut error = LoadError {
            file: "flows/a.yaml".into(),
            line: 3,
            column: 7,
            path: "nodes.company.needs[0]".into(),
            message: "unknown node `x`".into(),
        };
        assert_eq!(
            error.to_string(),
            "flows/a.yaml:3:7: nodes.company.needs[0]: unknown node `x`"
        );
        error.path.clear();
        assert_eq!(error.to_string(), "flows/a.yaml:3:7: unknown node `x`");
        let whole = LoadError::whole_file("b.yaml", "cannot read: denied");
        assert_eq!(whole.to_string(), "b.yaml: cannot read: denied");
    }
}
