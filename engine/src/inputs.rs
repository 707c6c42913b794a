//! Checks trigger payloads against a workflow's `inputs` JSON Schema (422 when they fail).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::workflow::Workflow;

/// Why a trigger's payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every violation as `path: message`, or why the schema itself is invalid.
    #[error("the input does not match the workflow's schema: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Compiled schemas by workflow revision hash; compiling is far slower than validating.
#[derive(Default)]
pub struct Schemas {
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Schemas {
    /// Ok when the workflow has no schema or the payload satisfies it; otherwise every violation
    /// as `path: message`.
    pub fn check(&self, workflow: &Workflow, payload: &Value) -> Result<(), Error> {
        let Some(schema) = &workflow.inputs else {
            return Ok(());
        };
        let validator = self.validator(&workflow.source.hash, schema)?;
        let violations: Vec<String> = validator
            .iter_errors(payload)
            .map(|error| {
                let path = error.instance_path().to_string();
                let path = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                };
                format!("{path}: {error}")
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(violations))
        }
    }

    fn validator(&self, hash: &str, schema: &Value) -> Result<Arc<jsonschema::Validator>, Error> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(validator) = compiled.get(hash) {
            return Ok(validator.clone());
        }
        let validator = jsonschema::validator_for(schema).map_err(|error| {
            Error::Invalid(vec![format!("the inputs schema is invalid: {error}")])
        })?;
        let validator = Arc::new(validator);
        compiled.insert(hash.to_owned(), validator.clone());
        Ok(validator)
    }
}
