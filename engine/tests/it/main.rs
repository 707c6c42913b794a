//! The engine's integration tests: one binary, one module per area.

mod api;
mod process;
mod restart;
mod support;
mod validate;
