//! The engine's integration tests: one binary, one module per area.

mod api;
mod cli;
mod cron;
mod examples;
mod faults;
mod postgres;
mod process;
mod recovery;
mod restart;
mod rules;
mod support;
mod validate;
