//! The enrichflow engine: workflows, templates, scheduling, execution, storage, queueing, the
//! HTTP API and the command line. The `enrichflow` binary is a thin shell over this library.

pub mod api;
mod attempt;
pub mod catalog;
pub mod cli;
mod cron;
mod dispatch;
mod driver;
pub mod engine;
mod foreach;
mod inputs;
pub mod oneshot;
pub mod queue;
mod recovery;
pub mod redaction;
mod reopen;
mod revisions;
mod runtime;
pub mod scheduler;
pub mod scope;
pub mod secrets;
pub mod serve;
mod stalls;
pub mod store;
pub mod telemetry;
pub mod template;
mod unreadable;
pub mod vars;
pub mod view;
mod worker;
pub mod worker_process;
pub mod workflow;
mod written;

pub use engine::{
    Cancellation, Engine, EngineOptions, Error, Retrial, RunShown, TriggerRequest, Triggered,
};
