//! The engine's integration tests: one binary, one module per area.

mod api;
mod broker;
mod cli;
mod cron;
mod distributed;
mod examples;
mod faults;
mod idempotency;
mod lead_nodes;
mod lead_pipeline;
mod leads;
mod poisoned;
mod postgres;
mod private_postgres;
mod process;
mod recovery;
mod restart;
mod retry;
mod rules;
mod stats;
mod support;
mod validate;
