//! Executes one node attempt: evaluate `if`, render `with` (once per item for `foreach`), run the
//! node under its timeout and the run's cancellation, and commit the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use enrichflow_nodes::{ErrorKind, Node, NodeContext, NodeError};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::engine::{Error, Shared};
use crate::redaction::{self, Redactor, SecretUse};
use crate::store::{AttemptKey, AttemptOutcome, AttemptStatus, ErrorInfo};
use crate::template::TemplateError;
use crate::workflow::{NodeDef, Workflow};
use crate::{scope, telemetry};

/// What rendering produced: one input, or one per `foreach` item.
enum Prepared {
    Skip,
    Single(Value),
    Each(Vec<Value>),
}

/// Executes the attempt unless it already finished (a duplicate delivery) or its run did.
pub async fn execute(shared: &Arc<Shared>, key: &AttemptKey) -> Result<(), Error> {
    let store = &shared.store;
    let Some(run) = store.run(&key.run_id).await? else {
        return Ok(());
    };
    if run.status.is_finished() {
        return Ok(());
    }
    let workflow = shared.revisions.for_run(&run, store.as_ref()).await?;
    let attempts = store.attempts(&run.id).await?;
    let open = attempts
        .iter()
        .any(|a| a.key == *key && !a.status.is_finished());
    if !open {
        return Ok(());
    }
    let Some(node) = workflow.node(&key.node_id) else {
        let error = NodeError::permanent(ErrorKind::Node, "the node is not in the workflow");
        let redactor = Redactor::new(&shared.redaction, SecretUse::none());
        return finish(shared, &workflow, key, "unknown", failed(error, &redactor)).await;
    };
    let mut scope = scope::for_run(
        &run.trigger,
        &attempts,
        &shared.secrets,
        &run.id,
        workflow.id.as_str(),
    );
    let started = Instant::now();
    let outcome = match prepare(shared, node, &scope) {
        Err(error) => {
            // The attempt did start: it failed while rendering, which the run JSON must show.
            if !store
                .start_attempt(key, None, &shared.worker_id, Utc::now())
                .await?
            {
                return Ok(());
            }
            failed(error, &template_redactor(shared, node))
        }
        Ok(Prepared::Skip) => outcome(AttemptStatus::Skipped, None, None, false),
        Ok(prepared) => {
            let input = match &prepared {
                Prepared::Each(inputs) => Value::Array(inputs.clone()),
                Prepared::Single(input) => input.clone(),
                Prepared::Skip => Value::Null,
            };
            let (input, redactor) = stored_input(shared, node, &mut scope, input);
            if !store
                .start_attempt(key, Some(&input), &shared.worker_id, Utc::now())
                .await?
            {
                return Ok(());
            }
            let ctx = context(shared, &workflow, key, &run.id);
            match run_prepared(shared, node, &ctx, prepared).await {
                Ok(output) => {
                    let output = redactor.value(output);
                    outcome(AttemptStatus::Succeeded, Some(output), None, false)
                }
                Err(error) => failed(error, &redactor),
            }
        }
    };
    telemetry::node_finished(
        workflow.id.as_str(),
        &node.kind,
        outcome.status.as_str(),
        started.elapsed(),
    );
    finish(shared, &workflow, key, &node.kind, outcome).await
}

async fn finish(
    shared: &Shared,
    workflow: &Workflow,
    key: &AttemptKey,
    kind: &str,
    outcome: AttemptOutcome,
) -> Result<(), Error> {
    if let Some(error) = &outcome.error {
        tracing::info!(workflow = %workflow.id, run = %key.run_id, node = %key.node_id, r#type = kind,
            attempt = key.attempt, kind = %error.kind, message = %error.message, "node attempt failed");
    }
    shared.store.finish_attempt(key, &outcome).await?;
    Ok(())
}

/// Evaluates `if` and renders the inputs. Template failures are permanent node errors.
fn prepare(shared: &Shared, node: &NodeDef, scope: &Value) -> Result<Prepared, NodeError> {
    let templates = &shared.templates;
    if let Some(condition) = &node.condition
        && !templates
            .eval_condition(condition, scope)
            .map_err(template_error)?
    {
        return Ok(Prepared::Skip);
    }
    let Some(foreach) = &node.foreach else {
        let input = templates
            .render_value(&node.with, scope)
            .map_err(template_error)?;
        return Ok(Prepared::Single(input));
    };
    let items = match templates
        .render_value(foreach, scope)
        .map_err(template_error)?
    {
        Value::Array(items) => items,
        other => {
            return Err(NodeError::permanent(
                ErrorKind::Template,
                format!("foreach must render to a list, got {}", json_type(&other)),
            ));
        }
    };
    let inputs = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let scope = scope::with_item(scope, item, index);
            templates
                .render_value(&node.with, &scope)
                .map_err(template_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared::Each(inputs))
}

/// Runs the node once, or once per item with at most `parallelism` in flight; a `foreach`
/// output is the list of item outputs in item order.
async fn run_prepared(
    shared: &Shared,
    node: &NodeDef,
    ctx: &NodeContext,
    prepared: Prepared,
) -> Result<Value, NodeError> {
    let implementation = shared.registry.get(&node.kind).ok_or_else(|| {
        NodeError::permanent(
            ErrorKind::Node,
            format!("unknown node type `{}`", node.kind),
        )
    })?;
    match prepared {
        Prepared::Skip => Ok(Value::Null),
        Prepared::Single(input) => call(implementation.as_ref(), ctx, input, node.timeout).await,
        Prepared::Each(inputs) => {
            let calls = inputs.into_iter().enumerate().map(|(index, input)| {
                let implementation = implementation.clone();
                async move {
                    call(implementation.as_ref(), ctx, input, node.timeout)
                        .await
                        .map_err(|mut error| {
                            error.message = format!("item {index}: {}", error.message);
                            error
                        })
                }
            });
            let outputs: Vec<Value> = futures::stream::iter(calls)
                .buffered(node.parallelism.max(1))
                .try_collect()
                .await?;
            Ok(Value::Array(outputs))
        }
    }
}

/// One call of a node under the attempt timeout and the run's cancellation.
async fn call(
    node: &dyn Node,
    ctx: &NodeContext,
    input: Value,
    timeout: Option<Duration>,
) -> Result<Value, NodeError> {
    let execution = node.execute(ctx, input);
    let limited = async {
        match timeout {
            None => execution.await,
            Some(limit) => tokio::time::timeout(limit, execution)
                .await
                .unwrap_or_else(|_| {
                    Err(NodeError::retryable(
                        ErrorKind::Timeout,
                        format!(
                            "the attempt exceeded its timeout of {}",
                            humantime::format_duration(limit)
                        ),
                    ))
                }),
        }
    };
    tokio::select! {
        result = limited => result,
        _ = ctx.cancellation.cancelled() => Err(NodeError::permanent(ErrorKind::Cancelled, "the run was cancelled")),
    }
}

fn context(shared: &Shared, workflow: &Workflow, key: &AttemptKey, run_id: &str) -> NodeContext {
    NodeContext {
        run_id: run_id.to_owned(),
        workflow_id: workflow.id.to_string(),
        node_id: key.node_id.clone(),
        attempt: key.attempt,
        idempotency_key: NodeContext::idempotency_key_for(run_id, &key.node_id, key.attempt),
        cancellation: shared.run_token(run_id).child_token(),
        http: shared.http.clone(),
        egress: shared.options.egress.clone(),
        secrets: shared.secrets.clone(),
        services: shared.services.clone(),
    }
}

fn template_error(error: TemplateError) -> NodeError {
    NodeError::permanent(ErrorKind::Template, error.to_string())
}

/// What is stored of the attempt's input, and the redactor of its output and errors (see
/// [`crate::redaction`]). Hides the secrets in `scope`, which nothing reads afterwards.
fn stored_input<'s>(
    shared: &'s Shared,
    node: &NodeDef,
    scope: &mut Value,
    input: Value,
) -> (Value, Redactor<'s>) {
    let used = shared.redaction.read_by(&input_templates(node), &[]);
    if used.is_none() {
        return (input, Redactor::new(&shared.redaction, used));
    }
    scope::hide_secrets(scope);
    if node.foreach.is_none() {
        let templates = &shared.templates;
        return redaction::shown(&shared.redaction, used, templates, &node.with, input, scope);
    }
    let shown = match prepare(shared, node, scope) {
        Ok(Prepared::Each(inputs)) => Some(Value::Array(inputs)),
        _ => None,
    };
    redaction::compared(&shared.redaction, used, input, shown)
}

/// Redacts a template error of the node: the secrets any of its templates read.
fn template_redactor<'s>(shared: &'s Shared, node: &NodeDef) -> Redactor<'s> {
    let condition = node.condition.as_deref();
    let used = shared
        .redaction
        .read_by(&input_templates(node), condition.as_slice());
    Redactor::new(&shared.redaction, used)
}

/// The templates whose renderings make the node's input: `with` and `foreach`.
fn input_templates(node: &NodeDef) -> Vec<&Value> {
    [Some(&node.with), node.foreach.as_ref()]
        .into_iter()
        .flatten()
        .collect()
}

fn failed(error: NodeError, redactor: &Redactor) -> AttemptOutcome {
    let message = redactor.text(&error.message);
    let mut outcome = outcome(
        AttemptStatus::Failed,
        None,
        Some(ErrorInfo::new(error.kind.as_str(), message)),
        error.is_retryable(),
    );
    // Checked: a node (or plugin) may ask for any wait; `http.request` clamps Retry-After.
    outcome.not_before = error
        .retry_after
        .map(|delay| crate::scheduler::later_by(outcome.finished_at, delay));
    outcome
}

fn outcome(
    status: AttemptStatus,
    output: Option<Value>,
    error: Option<ErrorInfo>,
    retryable: bool,
) -> AttemptOutcome {
    AttemptOutcome {
        status,
        output,
        error,
        retryable,
        not_before: None,
        finished_at: Utc::now(),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
