//! The command line: flags (each also read from `ENRICHFLOW_<FLAG>`), subcommands, exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::template::Limits;

/// enrichflow: workflows for customer-data pipelines.
#[derive(Debug, Parser)]
#[command(name = "enrichflow", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine: HTTP API, webhooks, cron triggers and local workers.
    Serve(ServeArgs),
    /// Execute node attempts from RabbitMQ (distributed mode).
    Worker(WorkerArgs),
    /// Check workflow files; prints file:line:col: message per error.
    Validate(ValidateArgs),
    /// Execute one workflow in-process, without a server, and print the run as JSON.
    Run(RunArgs),
    /// Create or update the database schema.
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Folder of workflow YAML files.
    #[arg(long, env = "ENRICHFLOW_WORKFLOWS", default_value = "./workflows")]
    pub workflows: PathBuf,
    /// Where runs are stored.
    #[arg(
        long,
        env = "ENRICHFLOW_DATABASE_URL",
        default_value = "sqlite://enrichflow.db"
    )]
    pub database_url: String,
    /// RabbitMQ URL (distributed mode).
    #[arg(long, env = "ENRICHFLOW_AMQP_URL")]
    pub amqp_url: Option<String>,
    /// Address of the HTTP server.
    #[arg(long, env = "ENRICHFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Local workers executing node attempts [default: 8; 0 with --amqp-url, where
    /// `enrichflow worker` processes execute them].
    #[arg(long, env = "ENRICHFLOW_WORKERS")]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub distributed: DistributedArgs,
    /// File of NAME=value secrets, besides ENRICHFLOW_SECRET_<NAME> variables.
    #[arg(long, env = "ENRICHFLOW_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// How long a `respond: on_complete` webhook waits for its run before answering 504.
    #[arg(long, env = "ENRICHFLOW_WEBHOOK_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: std::time::Duration,
    /// Largest accepted webhook or API body, in bytes.
    #[arg(long, env = "ENRICHFLOW_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    #[command(flatten)]
    pub templates: TemplateArgs,
}

/// The limits every template render runs under (docs/behaviour.md, "Limits: templates").
#[derive(Debug, clap::Args)]
pub struct TemplateArgs {
    /// Instructions one template render may execute (minijinja fuel).
    #[arg(long, env = "ENRICHFLOW_TEMPLATE_FUEL", default_value_t = Limits::default().fuel)]
    pub template_fuel: u64,
    /// Bytes one template may produce.
    #[arg(long, env = "ENRICHFLOW_TEMPLATE_MAX_OUTPUT", default_value_t = Limits::default().max_output_bytes)]
    pub template_max_output: usize,
    /// How long rendering the inputs of a node without its own `timeout` may take.
    #[arg(long, env = "ENRICHFLOW_TEMPLATE_RENDER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub template_render_timeout: std::time::Duration,
}

impl TemplateArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            fuel: self.template_fuel,
            max_output_bytes: self.template_max_output,
            render_timeout: self.template_render_timeout,
            ..Limits::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The Postgres database the `serve` replicas use.
    #[arg(long, env = "ENRICHFLOW_DATABASE_URL")]
    pub database_url: String,
    /// The RabbitMQ the `serve` replicas use.
    #[arg(long, env = "ENRICHFLOW_AMQP_URL")]
    pub amqp_url: String,
    /// Attempts executed at once (also RabbitMQ's prefetch).
    #[arg(long, env = "ENRICHFLOW_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// File of NAME=value secrets, besides ENRICHFLOW_SECRET_<NAME> variables.
    #[arg(long, env = "ENRICHFLOW_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// How long SIGTERM waits for in-flight attempts before leaving them to other workers.
    #[arg(long, env = "ENRICHFLOW_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    #[command(flatten)]
    pub distributed: DistributedArgs,
    #[command(flatten)]
    pub templates: TemplateArgs,
}

/// Settings every process of one distributed deployment must share.
#[derive(Debug, clap::Args)]
pub struct DistributedArgs {
    /// First part of the RabbitMQ queue names, to run several deployments on one broker.
    #[arg(long, env = "ENRICHFLOW_QUEUE_PREFIX", default_value = "enrichflow")]
    pub queue_prefix: String,
    /// A running attempt whose worker stopped renewing it for this long goes to another worker.
    #[arg(long, env = "ENRICHFLOW_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,
    /// Postgres connections this process opens for queries (plus 4 for run locks and 1 to
    /// listen). The sum over all processes must stay below the server's `max_connections`.
    #[arg(long, env = "ENRICHFLOW_DATABASE_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Files or folders (default: ./workflows).
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// The trigger body: JSON text, or @path to a JSON file.
    #[arg(long, env = "ENRICHFLOW_INPUT", default_value = "{}")]
    pub input: String,
    /// File of NAME=value secrets, besides ENRICHFLOW_SECRET_<NAME> variables.
    #[arg(long, env = "ENRICHFLOW_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[arg(long, env = "ENRICHFLOW_DATABASE_URL")]
    pub database_url: String,
}
