//! The command line: flags (each also read from `ENRICHFLOW_<FLAG>`), subcommands, exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use enrichflow_nodes::egress;

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
    /// What an acknowledged run survives with SQLite: `power` flushes every commit to the disk
    /// (concurrent runs share each flush); `process` survives the process being killed, not the
    /// machine losing power, and answers sooner. Postgres always flushes.
    #[arg(
        long,
        env = "ENRICHFLOW_DURABILITY",
        value_enum,
        default_value = "power"
    )]
    pub durability: crate::store::Durability,
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
    /// File of NAME=value variables (not secret: `vars.<NAME>`), besides ENRICHFLOW_VAR_<NAME>
    /// variables.
    #[arg(long, env = "ENRICHFLOW_VARS_FILE")]
    pub vars_file: Option<PathBuf>,
    /// How long a `respond: on_complete` webhook waits for its run before answering 504.
    #[arg(long, env = "ENRICHFLOW_WEBHOOK_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: std::time::Duration,
    /// Largest accepted webhook or API body, in bytes.
    #[arg(long, env = "ENRICHFLOW_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    #[command(flatten)]
    pub http: HttpLimitArgs,
    #[command(flatten)]
    pub egress: EgressArgs,
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
    /// File of NAME=value variables (not secret: `vars.<NAME>`), besides ENRICHFLOW_VAR_<NAME>
    /// variables.
    #[arg(long, env = "ENRICHFLOW_VARS_FILE")]
    pub vars_file: Option<PathBuf>,
    /// How long SIGTERM waits for in-flight attempts before leaving them to other workers.
    #[arg(long, env = "ENRICHFLOW_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    #[command(flatten)]
    pub distributed: DistributedArgs,
    #[command(flatten)]
    pub egress: EgressArgs,
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
    /// File of NAME=value variables (not secret: `vars.<NAME>`), besides ENRICHFLOW_VAR_<NAME>
    /// variables.
    #[arg(long, env = "ENRICHFLOW_VARS_FILE")]
    pub vars_file: Option<PathBuf>,
    #[command(flatten)]
    pub egress: EgressArgs,
}

/// Where nodes may connect (http.request, enrich providers, notify nodes) and the limits of
/// their HTTP calls.
#[derive(Debug, clap::Args)]
pub struct EgressArgs {
    /// Refuse outbound calls to loopback, private, link-local (cloud metadata), CGNAT,
    /// unspecified, multicast and reserved addresses, checked after DNS resolution
    /// (--deny-private-networks=false to allow them).
    #[arg(long, env = "ENRICHFLOW_DENY_PRIVATE_NETWORKS", default_value = "true",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub deny_private_networks: bool,
    /// Addresses or networks reachable even so, such as an SMTP relay (10.0.0.5, 10.1.0.0/16,
    /// fd00::/8); repeat the flag or separate with commas.
    #[arg(long, env = "ENRICHFLOW_EGRESS_ALLOW", value_delimiter = ',')]
    pub egress_allow: Vec<egress::Network>,
    /// Longest wait for an outbound connection.
    #[arg(long, env = "ENRICHFLOW_HTTP_CONNECT_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub http_connect_timeout: Duration,
    /// Longest outbound HTTP exchange of a node that sets no `timeout` of its own.
    #[arg(long, env = "ENRICHFLOW_HTTP_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub http_timeout: Duration,
    /// Largest response body a node reads, in bytes; a larger one fails the attempt.
    #[arg(long, env = "ENRICHFLOW_HTTP_MAX_RESPONSE_BYTES", default_value_t = egress::DEFAULT_MAX_RESPONSE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub http_max_response_bytes: usize,
}

impl EgressArgs {
    /// The policy the engine hands to every node attempt.
    pub fn policy(&self) -> egress::Policy {
        egress::Policy {
            deny_private_networks: self.deny_private_networks,
            allowed: self.egress_allow.clone().into(),
            connect_timeout: self.http_connect_timeout,
            request_timeout: self.http_timeout,
            max_response_bytes: self.http_max_response_bytes,
        }
    }
}

/// A duration longer than zero: a zero timeout would fail every call, close every connection
/// or refuse every body at once.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[arg(long, env = "ENRICHFLOW_DATABASE_URL")]
    pub database_url: String,
}

/// Limits of the HTTP server and of request bodies (docs/behaviour.md, "Limits: HTTP server and
/// request bodies").
#[derive(Debug, clap::Args)]
pub struct HttpLimitArgs {
    /// Time for a request's headers to arrive; also how long an idle keep-alive connection stays.
    #[arg(long, env = "ENRICHFLOW_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_read_timeout: std::time::Duration,
    /// Time for a whole request body to arrive (408 after it).
    #[arg(long, env = "ENRICHFLOW_BODY_READ_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub body_read_timeout: std::time::Duration,
    /// Open connections at most; more wait to be accepted.
    #[arg(long, env = "ENRICHFLOW_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Requests served at once, health and metrics aside (503 with Retry-After beyond).
    #[arg(long, env = "ENRICHFLOW_MAX_CONCURRENT_REQUESTS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,
    /// Deepest nesting of arrays and objects in a JSON body.
    #[arg(long, env = "ENRICHFLOW_JSON_MAX_DEPTH", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub json_max_depth: u32,
    /// Most JSON values (containers and their items) in one body.
    #[arg(long, env = "ENRICHFLOW_JSON_MAX_VALUES", default_value_t = 200_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub json_max_values: u32,
}
