//! Executes one node attempt: evaluate `if`, render `with` (once per item for `foreach`), run the
//! node under its timeout and the run's cancellation, and commit the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use enrichflow_nodes::{ErrorKind, Node, NodeContext, NodeError};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::engine::{Error, Shared};
use crate::store::{AttemptKey, AttemptOutcome, AttemptStatus, ErrorInfo, json};
use crate::template::TemplateError;
use crate::workflow::{NodeDef, Workflow};
use crate::{scope, telemetry};

/// What rendering produced: one input, or one per `foreach` item.
enum Prepared {
    Skip,
    Single(Value),
    Each(Vec<Value>),
}

/// Executes the attempt unless it already finished (a duplicate delivery) or its run did. A
/// run whose rows cannot be read fails rather than being retried forever.
pub async fn execute(shared: &Arc<Shared>, key: &AttemptKey) -> Result<(), Error> {
    let executed = execute_readable(shared, key).await;
    crate::unreadable::fail_if_unreadable(shared, &key.run_id, executed).await
}

async fn execute_readable(shared: &Arc<Shared>, key: &AttemptKey) -> Result<(), Error> {
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
        return finish(shared, &workflow, key, "unknown", failed(error, shared)).await;
    };
    let scope = scope::for_run(
        &run.trigger.value()?,
        &attempts,
        &shared.secrets,
        &run.id,
        workflow.id.as_str(),
    );
    let started = Instant::now();
    let outcome = match prepare(shared, node, &scope).and_then(storable_input) {
        Err(error) => {
            // The attempt did start: it failed while rendering, which the run JSON must show.
            if !store
                .start_attempt(key, None, &shared.worker_id, Utc::now())
                .await?
            {
                return Ok(());
            }
            failed(error, shared)
        }
        Ok(Prepared::Skip) => outcome(AttemptStatus::Skipped, None, None, false),
        Ok(prepared) => {
            let input = match &prepared {
                Prepared::Each(inputs) => Value::Array(inputs.clone()),
                Prepared::Single(input) => input.clone(),
                Prepared::Skip => Value::Null,
            };
            let input = scope::redact(input, &shared.secrets);
            if !store
                .start_attempt(key, Some(&input), &shared.worker_id, Utc::now())
                .await?
            {
                return Ok(());
            }
            let ctx = context(shared, &workflow, key, &run.id);
            match run_prepared(shared, node, &ctx, prepared)
                .await
                .and_then(storable_output)
            {
                Ok(output) => {
                    let output = scope::redact(output, &shared.secrets);
                    outcome(AttemptStatus::Succeeded, Some(output), None, false)
                }
                Err(error) => failed(error, shared),
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

/// The rendered inputs, unless they nest deeper than the store keeps (see
/// [`json::MAX_DEPTH`]): a permanent template error, before the node runs.
fn storable_input(prepared: Prepared) -> Result<Prepared, NodeError> {
    let depth = match &prepared {
        Prepared::Skip => 0,
        Prepared::Single(input) => json::depth(input),
        // Stored as one list, one level deeper than its items.
        Prepared::Each(inputs) => inputs
            .iter()
            .map(json::depth)
            .max()
            .unwrap_or(0)
            .saturating_add(1),
    };
    if depth > json::MAX_DEPTH {
        return Err(NodeError::permanent(
            ErrorKind::Template,
            format!(
                "the rendered input nests {depth} levels deep; the store keeps at most {}",
                json::MAX_DEPTH
            ),
        ));
    }
    Ok(prepared)
}

/// The node's output, unless it nests deeper than the store keeps: a permanent node error
/// (outputs that wrap their input grow one level per node along a chain).
fn storable_output(output: Value) -> Result<Value, NodeError> {
    json::check_depth("the node's output", &output)
        .map_err(|error| NodeError::permanent(ErrorKind::Node, error.to_string()))?;
    Ok(output)
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
        secrets: shared.secrets.clone(),
        services: shared.services.clone(),
    }
}

fn template_error(error: TemplateError) -> NodeError {
    NodeError::permanent(ErrorKind::Template, error.to_string())
}

fn failed(error: NodeError, shared: &Shared) -> AttemptOutcome {
    let message = scope::redact_text(&error.message, &shared.secrets);
    let mut outcome = outcome(
        AttemptStatus::Failed,
        None,
        Some(ErrorInfo::new(error.kind.as_str(), message)),
        error.is_retryable(),
    );
    outcome.not_before = error
        .retry_after
        .and_then(|delay| chrono::Duration::from_std(delay).ok())
        .map(|delay| outcome.finished_at + delay);
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
