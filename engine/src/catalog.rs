//! The set of loaded workflows. Being written by the workflow helper.
