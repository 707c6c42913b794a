//! The contract between the enrichflow engine and the things it runs: the [`Node`] trait, the
//! [`NodeContext`] an attempt runs in, [`NodeError`], the [`Registry`] of node types, and the
//! built-in nodes. This crate knows nothing of SQL, queues, HTTP servers or WebAssembly.

// STYLE.md: every public item of `nodes` is documented; this is the crate plugins build on.
#![warn(missing_docs)]

mod builtin;
mod context;
pub mod egress;
mod error;
pub mod leads;
mod node;
mod registry;
mod services;

pub use context::{NodeContext, Secrets};
pub use error::{ConfigError, ErrorKind, NodeError};
pub use node::Node;
pub use registry::Registry;
pub use services::{Cache, MemoryCache, NoLeadStore, ServiceError, Services};
