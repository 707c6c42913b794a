//! The enrichflow engine: workflows, templates, scheduling, execution, storage, queueing, the
//! HTTP API and the command line. The `enrichflow` binary is a thin shell over this library.

pub mod catalog;
pub mod store;
pub mod template;
pub mod workflow;
