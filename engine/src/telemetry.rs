//! Metrics and logging set-up. The only module that names metrics; every series is `enrichflow_*`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Every metric the engine exports, for the check that Grafana panels only query real series.
pub const METRIC_NAMES: &[&str] = &[
    "enrichflow_runs_started_total",
    "enrichflow_runs_finished_total",
    "enrichflow_runs_in_flight",
    "enrichflow_run_duration_seconds",
    "enrichflow_node_attempts_total",
    "enrichflow_node_duration_seconds",
    "enrichflow_queue_depth",
    "enrichflow_webhook_requests_total",
];

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let buckets = [
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run_started(workflow: &str) {
    counter!("enrichflow_runs_started_total", "workflow" => workflow.to_owned()).increment(1);
    gauge!("enrichflow_runs_in_flight", "workflow" => workflow.to_owned()).increment(1.0);
}

pub fn run_finished(workflow: &str, status: &str, duration: Option<Duration>) {
    let labels = [
        ("workflow", workflow.to_owned()),
        ("status", status.to_owned()),
    ];
    counter!("enrichflow_runs_finished_total", &labels).increment(1);
    gauge!("enrichflow_runs_in_flight", "workflow" => workflow.to_owned()).decrement(1.0);
    if let Some(duration) = duration {
        histogram!("enrichflow_run_duration_seconds", &labels).record(duration.as_secs_f64());
    }
}

/// A run that ended before it started (cancelled while queued): it never counted as in flight.
pub fn queued_run_finished(workflow: &str, status: &str) {
    let labels = [
        ("workflow", workflow.to_owned()),
        ("status", status.to_owned()),
    ];
    counter!("enrichflow_runs_finished_total", &labels).increment(1);
}

pub fn node_finished(workflow: &str, node_type: &str, status: &str, duration: Duration) {
    let labels = [
        ("workflow", workflow.to_owned()),
        ("type", node_type.to_owned()),
        ("status", status.to_owned()),
    ];
    counter!("enrichflow_node_attempts_total", &labels).increment(1);
    histogram!("enrichflow_node_duration_seconds", &labels).record(duration.as_secs_f64());
}

pub fn queue_depth(depth: usize) {
    gauge!("enrichflow_queue_depth").set(depth as f64);
}

pub fn webhook_request(path: &str, status: u16) {
    counter!("enrichflow_webhook_requests_total", "path" => path.to_owned(), "status" => status.to_string())
        .increment(1);
}
