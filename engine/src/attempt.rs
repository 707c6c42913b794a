//! Executes one node attempt: evaluate `if`, render `with` (once per item for `foreach`), run the
//! node under its timeout and the run's cancellation, and commit the outcome.
//!
//! Rendering runs on a blocking thread, under the node's timeout and the run's cancellation: a
//! template over a large body may take its whole fuel budget, which must not stall the async
//! workers that serve HTTP. Only a render that cannot loop runs in place ([`renders_in_place`]):
//! the hand-off to a blocking thread and back cost more than such a render. A panic while
//! rendering or inside a node is caught and recorded as that attempt's permanent failure, so
//! the run follows its `on_error` and the worker goes on.

use std::any::Any;
use std::borrow::Cow;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use enrichflow_nodes::{ErrorKind, Node, NodeContext, NodeError};
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::driver::{self, Followup, Known};
use crate::engine::Error;
use crate::foreach::{self, PROGRESS_EVERY, Reporter};
use crate::redaction::{self, Redactor, SecretUse};
use crate::runtime::{Executor, Runtime};
use crate::store::{
    AttemptKey, AttemptOutcome, AttemptStatus, ErrorInfo, Json, Started, Store, Trigger, json,
};
use crate::template::{ItemScope, RunScope, TemplateError};
use crate::workflow::{NodeDef, Workflow};
use crate::{scope, telemetry};

/// What rendering produced: one input, or one per `foreach` item.
enum Prepared {
    Skip,
    Single(Value),
    Each(foreach::Inputs),
}

/// What the node runs on: its input, or the stored list of its `foreach` items' inputs and
/// where each item is in it.
enum Ready {
    Skip,
    Single(Value),
    Each(Json, Vec<Range<usize>>),
}

/// Executes the attempt unless it already finished (a duplicate delivery) or its run did. A
/// run whose rows cannot be read fails rather than being retried forever.
///
/// `claimed` is the run as the commit that claimed this attempt for this worker left it
/// ([`driver::Followup::claimed`]); without it, the run is read from the store.
///
/// When it recorded an outcome, the run has been brought forward too ([`driver::complete`]):
/// what that leaves to do comes back. `None` when nothing was recorded.
pub async fn execute(
    runtime: &Arc<Runtime>,
    key: &AttemptKey,
    claimed: Option<Arc<Known>>,
) -> Result<Option<Followup>, Error> {
    let executed = execute_readable(runtime, key, claimed).await;
    crate::unreadable::fail_if_unreadable(runtime, &key.run_id, executed).await
}

/// The run of `key`, unless it finished. The run is read before its attempts, so that its
/// version is no newer than what they show (see [`crate::store::Store::run_versioned`]).
async fn read_run(runtime: &Runtime, key: &AttemptKey) -> Result<Option<Known>, Error> {
    let store = &runtime.store;
    let Some((run, version)) = store.run_versioned(&key.run_id).await? else {
        return Ok(None);
    };
    if run.status.is_finished() {
        return Ok(None);
    }
    let workflow = runtime.revisions.for_run(&run, store.as_ref()).await?;
    let attempts = store.attempts(&run.id).await?;
    Ok(Some(Known {
        run,
        workflow,
        attempts,
        version,
    }))
}

async fn execute_readable(
    runtime: &Arc<Runtime>,
    key: &AttemptKey,
    claimed: Option<Arc<Known>>,
) -> Result<Option<Followup>, Error> {
    // Distributed, a claimed attempt was stored running under this worker's lease.
    let leased = claimed.is_some() && runtime.queue.durable();
    let known = match claimed {
        Some(known) => known,
        None => match read_run(runtime, key).await? {
            Some(known) => Arc::new(known),
            None => return Ok(None),
        },
    };
    let executor = &runtime.executor;
    let workflow = known.workflow.clone();
    let (run, attempts) = (&known.run, &known.attempts);
    let open = attempts
        .iter()
        .any(|a| a.key == *key && !a.status.is_finished());
    if !open {
        return Ok(None);
    }
    let Some(node) = workflow.node(&key.node_id) else {
        let error = NodeError::permanent(ErrorKind::Node, "the node is not in the workflow");
        let redactor = Redactor::new(&executor.redaction, SecretUse::none());
        return finish(runtime, known, key, "unknown", failed(error, &redactor)).await;
    };
    let scope = scope::for_run(
        &run.trigger,
        &node.reads,
        attempts,
        &executor.secrets,
        &executor.vars,
        &run.id,
        workflow.id.as_str(),
    )?;
    let clock = Instant::now();
    // The attempt starts with its rendering, which counts against the node's timeout too.
    let started_at = Utc::now();
    let cancellation = runtime.signals.run_token(&run.id);
    let (rendered, scope) = if renders_in_place(node, &scope) {
        prepare_in_place(executor, node, &run.trigger, scope)
    } else {
        let trigger = run.trigger.clone();
        prepare_off_thread(executor, &workflow, node, trigger, scope, &cancellation).await
    };
    let render_time = clock.elapsed();
    let mut started = Started {
        input: None,
        worker: executor.worker_id.clone(),
        started_at,
    };
    let mut outcome = match rendered.and_then(storable_input) {
        // The attempt did start: it failed while rendering, which the run JSON must show.
        Err(error) => failed(error, &template_redactor(executor, node)),
        Ok(Prepared::Skip) => outcome(AttemptStatus::Skipped, None, None, false),
        Ok(prepared) => {
            // A `foreach` runs its items from the list that is stored, not from a copy.
            let (input, prepared) = match prepared {
                Prepared::Each(inputs) => {
                    let (list, spans) = inputs.finish();
                    (list.clone(), Ready::Each(list, spans))
                }
                Prepared::Single(input) => (Json::from(&input), Ready::Single(input)),
                Prepared::Skip => (Json::from(Value::Null), Ready::Skip),
            };
            // Rendering succeeded, so its thread handed the scope back.
            let mut scope = scope.unwrap_or_default();
            let (input, redactor) = stored_input(executor, node, &run.trigger, &mut scope, input);
            started.input = Some(input);
            // Distributed, the running mark is the lease: it must be written before the node
            // runs, or a worker that stops (without dying, so RabbitMQ keeps its delivery)
            // would hold the attempt for ever.
            if runtime.queue.durable()
                && !leased
                && !start(runtime.store.as_ref(), key, &started).await?
            {
                return Ok(None);
            }
            let node_token = runtime.signals.run_token(&run.id).child_token();
            let ctx = context(executor, &workflow, key, &run.id, node_token);
            let store = &runtime.store;
            let running = run_prepared(
                executor,
                store,
                node,
                &ctx,
                prepared,
                render_time,
                &redactor,
            );
            let caught = async {
                AssertUnwindSafe(running)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(panicked("the node", panic.as_ref())))
            };
            let caught = if runtime.queue.durable() && !leased {
                caught.await
            } else {
                marked_running_when_slow(runtime.store.as_ref(), key, &started, caught).await
            };
            match caught {
                Ok(output) => outcome(AttemptStatus::Succeeded, Some(output), None, false),
                Err(error) => failed(error, &redactor),
            }
        }
    };
    if outcome.status != AttemptStatus::Skipped {
        outcome.started = Some(started);
    }
    telemetry::node_finished(
        workflow.id.as_str(),
        &node.kind,
        outcome.status.as_str(),
        clock.elapsed(),
    );
    finish(runtime, known, key, &node.kind, outcome).await
}

/// Writes the attempt as running; false when it had finished meanwhile.
async fn start(store: &dyn Store, key: &AttemptKey, started: &Started) -> Result<bool, Error> {
    let input = started.input.as_ref();
    Ok(store
        .start_attempt(key, input, &started.worker, started.started_at)
        .await?)
}

/// How long a node runs (embedded) before its attempt is written as `running`. A node that ends
/// sooner is written once, its start folded into its outcome: one commit per node instead of
/// two. A slower one shows as running (with its input) in the run JSON. (Distributed, the mark
/// is the lease and is written before the node runs, unless the attempt was claimed: the
/// commit that claimed it wrote it running under this worker's lease, so only the input
/// waits for this delay.)
const RUNNING_MARK_AFTER: Duration = Duration::from_millis(20);

/// Awaits `node`; if it runs longer than [`RUNNING_MARK_AFTER`], writes the attempt as running
/// meanwhile. The mark is only a view: the outcome is written whether or not it was.
async fn marked_running_when_slow<T>(
    store: &dyn Store,
    key: &AttemptKey,
    started: &Started,
    node: impl std::future::Future<Output = T>,
) -> T {
    let mut node = std::pin::pin!(node);
    tokio::select! {
        biased;
        done = &mut node => return done,
        _ = tokio::time::sleep(RUNNING_MARK_AFTER) => {}
    }
    let mark = async {
        if let Err(error) = start(store, key, started).await {
            tracing::warn!(%error, run = %key.run_id, node = %key.node_id,
                "marking the attempt as running failed; its outcome is written all the same");
        }
    };
    let (done, ()) = tokio::join!(node, mark);
    done
}

/// Records `outcome` from the run as this worker holds it (`known`): see [`driver::complete`].
async fn finish(
    runtime: &Arc<Runtime>,
    known: Arc<Known>,
    key: &AttemptKey,
    kind: &str,
    outcome: AttemptOutcome,
) -> Result<Option<Followup>, Error> {
    if let Some(error) = &outcome.error {
        tracing::info!(workflow = %known.workflow.id, run = %key.run_id, node = %key.node_id, r#type = kind,
            attempt = key.attempt, kind = %error.kind, message = %error.message, "node attempt failed");
    }
    let completed = driver::complete(runtime, key, &outcome, true, Some(known)).await?;
    Ok(Some(completed))
}

/// The most a render in place may read: the scope's texts, keys and scalars, in bytes.
const IN_PLACE_SCOPE_BYTES: usize = 64 * 1024;

/// Whether `node` renders on the async worker: it has no `foreach` and no `{% %}` statement
/// in its `with` or `if` (so no loop and no macro: a render is a few expressions, whose
/// instructions the template's length bounds, each at most one pass over what it reads), and
/// its scope (the trigger, the upstream outputs) is small. Anything else goes to a blocking
/// thread, under the node's timeout.
fn renders_in_place(node: &NodeDef, scope: &RunScope) -> bool {
    node.foreach.is_none()
        && !node.condition.as_deref().is_some_and(has_statement)
        && !has_statement_inside(&node.with)
        && IN_PLACE_SCOPE_BYTES
            .checked_sub(scope.outputs_bytes())
            .is_some_and(|budget| within(&scope.value, budget))
}

/// Whether `value` holds at most about `budget` bytes; stops looking once it is over, so the
/// check costs at most the budget.
fn within(value: &Value, budget: usize) -> bool {
    let mut left = budget;
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        let size = match value {
            Value::String(text) => text.len(),
            // Each value below costs a byte at least: a list longer than the budget is over it.
            Value::Array(items) if items.len() >= left => return false,
            Value::Object(map) if map.len() >= left => return false,
            Value::Array(items) => {
                pending.extend(items);
                1
            }
            Value::Object(map) => {
                pending.extend(map.values());
                map.keys().map(String::len).sum::<usize>().saturating_add(1)
            }
            _ => 8,
        };
        let Some(rest) = left.checked_sub(size) else {
            return false;
        };
        left = rest;
    }
    true
}

/// `{%` opens a statement (`for`, `macro`, `set`, …); `{{ }}` and comments do not loop.
fn has_statement(text: &str) -> bool {
    text.contains("{%")
}

fn has_statement_inside(value: &Value) -> bool {
    match value {
        Value::String(text) => has_statement(text),
        Value::Array(items) => items.iter().any(has_statement_inside),
        Value::Object(map) => map.values().any(has_statement_inside),
        _ => false,
    }
}

/// [`prepare`] on the caller's thread, for a node that [`renders_in_place`].
fn prepare_in_place(
    executor: &Executor,
    node: &NodeDef,
    trigger: &Trigger,
    scope: RunScope,
) -> (Result<Prepared, NodeError>, Option<RunScope>) {
    let abandoned = AtomicBool::new(false);
    let prepared = std::panic::catch_unwind(AssertUnwindSafe(|| {
        prepare(executor, node, trigger, &scope, &abandoned)
    }))
    .unwrap_or_else(|panic| Err(panicked("rendering", panic.as_ref())));
    (prepared, Some(scope))
}

/// [`prepare`] on a blocking thread, under the node's timeout (the render timeout for a node
/// without one) and the run's cancellation. A render that outlives them is abandoned: it stops
/// at the next `foreach` item, and fuel bounds the one in progress. The scope comes back when
/// rendering finished (the stored input is rendered from it again, see [`stored_input`]).
async fn prepare_off_thread(
    executor: &Arc<Executor>,
    workflow: &Arc<Workflow>,
    node: &NodeDef,
    trigger: Trigger,
    scope: RunScope,
    cancellation: &CancellationToken,
) -> (Result<Prepared, NodeError>, Option<RunScope>) {
    let limit = node
        .timeout
        .unwrap_or(executor.templates.limits().render_timeout);
    let abandoned = Arc::new(AtomicBool::new(false));
    let rendering = tokio::task::spawn_blocking({
        let (executor, workflow, abandoned) =
            (executor.clone(), workflow.clone(), abandoned.clone());
        let node_id = node.id.clone();
        move || {
            let prepared = match workflow.node(node_id.as_str()) {
                Some(node) => prepare(&executor, node, &trigger, &scope, &abandoned),
                None => Err(NodeError::permanent(
                    ErrorKind::Node,
                    "the node is not in the workflow",
                )),
            };
            (prepared, scope)
        }
    });
    let mut returned = None;
    let result = tokio::select! {
        joined = tokio::time::timeout(limit, rendering) => match joined {
            Ok(Ok((prepared, scope))) => {
                returned = Some(scope);
                prepared
            }
            Ok(Err(join_error)) => match join_error.try_into_panic() {
                Ok(panic) => Err(panicked("rendering", panic.as_ref())),
                Err(_) => Err(NodeError::permanent(ErrorKind::Internal, "rendering was stopped")),
            },
            // The same data would take as long again: not worth a retry.
            Err(_) => Err(NodeError::permanent(
                ErrorKind::Timeout,
                format!(
                    "rendering the inputs took longer than {}",
                    humantime::format_duration(limit)
                ),
            )),
        },
        _ = cancellation.cancelled() => Err(NodeError::permanent(ErrorKind::Cancelled, "the run was cancelled")),
    };
    abandoned.store(true, Ordering::Relaxed);
    (result, returned)
}

/// The permanent failure recorded for a panic, with its message when it has one.
fn panicked(what: &str, panic: &(dyn Any + Send)) -> NodeError {
    let detail = panic_text(panic);
    tracing::error!(what, detail, "caught a panic in a node attempt");
    NodeError::permanent(ErrorKind::Internal, format!("{what} panicked: {detail}"))
}

/// A panic's message, when it has one.
pub fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// Evaluates `if` and renders the inputs. Template failures are permanent node errors.
/// `trigger` is the run's: a `foreach` over a list named in it reads the list from its text
/// when `scope` does not hold it (see [`NodeDef::foreach_trigger_path`]).
fn prepare(
    executor: &Executor,
    node: &NodeDef,
    trigger: &Trigger,
    scope: &RunScope,
    abandoned: &AtomicBool,
) -> Result<Prepared, NodeError> {
    let templates = &executor.templates;
    if let Some(condition) = &node.condition
        && !templates
            .eval_condition(condition, scope)
            .map_err(template_error)?
    {
        return Ok(Prepared::Skip);
    }
    let Some(foreach) = &node.foreach else {
        let input = templates
            .render_run(&node.with, scope)
            .map_err(template_error)?;
        return Ok(Prepared::Single(input));
    };
    let from_trigger = node
        .foreach_trigger_path
        .as_ref()
        .filter(|_| !node.reads.trigger);
    let with_trigger;
    let scope = match from_trigger {
        None => scope,
        Some(path) => {
            if let Some(listed) = foreach::listed_in(trigger.text(), path) {
                // One item built at a time; the scope holds no trigger.
                let items = listed
                    .into_iter()
                    .map(|item| foreach::listed_item(item).map(Cow::Owned));
                return render_items(templates.item_scope(scope), node, items, abandoned);
            }
            // Not a list: rendering the trigger as a whole says what it is instead.
            with_trigger = scope_with_trigger(scope, trigger)?;
            &with_trigger
        }
    };
    // The list is usually named as it is (`{{ trigger.body.leads }}`): read in place, as
    // rendering would copy a list of a million leads twice.
    let (named, rendered);
    let items = match scope.named_value(foreach) {
        Some(value) if value.is_array() => {
            named = value;
            named.as_array().map_or(&[][..], Vec::as_slice)
        }
        _ => {
            rendered = templates
                .render_run(foreach, scope)
                .map_err(template_error)?;
            match &rendered {
                Value::Array(items) => items,
                other => {
                    return Err(NodeError::permanent(
                        ErrorKind::Template,
                        format!("foreach must render to a list, got {}", json_type(other)),
                    ));
                }
            }
        }
    };
    // The scope is laid under each item, not copied for it: it holds the list itself.
    let items = items.iter().map(|item| Ok(Cow::Borrowed(item)));
    render_items(templates.item_scope(scope), node, items, abandoned)
}

/// Renders `with` once per item, over `each`, into the list of the items' inputs.
fn render_items<'i>(
    each: ItemScope<'_>,
    node: &NodeDef,
    items: impl Iterator<Item = Result<Cow<'i, Value>, NodeError>>,
    abandoned: &AtomicBool,
) -> Result<Prepared, NodeError> {
    let mut inputs = foreach::Inputs::new();
    for (index, item) in items.enumerate() {
        if abandoned.load(Ordering::Relaxed) {
            return Err(NodeError::permanent(
                ErrorKind::Timeout,
                "rendering was abandoned",
            ));
        }
        let input = each
            .render_value(&node.with, item?.as_ref(), index)
            .map_err(template_error)?;
        inputs.push(&input);
    }
    Ok(Prepared::Each(inputs))
}

/// `scope` with the whole trigger in it.
fn scope_with_trigger(scope: &RunScope, trigger: &Trigger) -> Result<RunScope, NodeError> {
    let mut scope = scope.clone();
    let trigger = trigger
        .value()
        .map_err(|error| NodeError::permanent(ErrorKind::Internal, error.to_string()))?;
    if let Value::Object(names) = &mut scope.value {
        names.insert("trigger".to_owned(), trigger);
    }
    Ok(scope)
}

/// The rendered inputs, unless they nest deeper than the store keeps (see
/// [`json::MAX_DEPTH`]): a permanent template error, before the node runs.
fn storable_input(prepared: Prepared) -> Result<Prepared, NodeError> {
    let depth = match &prepared {
        Prepared::Skip => 0,
        Prepared::Single(input) => json::depth(input),
        Prepared::Each(inputs) => inputs.depth(),
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

/// The node's output as stored, secrets redacted, unless it nests deeper than the store
/// keeps: a permanent node error (outputs that wrap their input grow one level per node along
/// a chain).
fn storable_output(output: Value, redactor: &Redactor) -> Result<Json, NodeError> {
    json::check_depth("the node's output", &output).map_err(too_deep)?;
    Ok(Json::from(redactor.value(output)))
}

fn too_deep(error: crate::store::Error) -> NodeError {
    NodeError::permanent(ErrorKind::Node, error.to_string())
}

/// Runs the node once, or once per item with at most `parallelism` in flight; a `foreach`
/// output is the list of item outputs in item order, written as they come. A single call has
/// what rendering left of the node's timeout; each `foreach` item has the whole timeout.
async fn run_prepared(
    executor: &Executor,
    store: &Arc<dyn Store>,
    node: &NodeDef,
    ctx: &NodeContext,
    prepared: Ready,
    render_time: Duration,
    redactor: &Redactor<'_>,
) -> Result<Json, NodeError> {
    let implementation = executor.registry.get(&node.kind).ok_or_else(|| {
        NodeError::permanent(
            ErrorKind::Node,
            format!("unknown node type `{}`", node.kind),
        )
    })?;
    match prepared {
        Ready::Skip => Ok(Json::from(Value::Null)),
        Ready::Single(input) => {
            let limit = node.timeout.map(|timeout| Limit {
                timeout,
                left: timeout.saturating_sub(render_time),
            });
            let output = call(implementation.as_ref(), ctx, input, limit).await?;
            storable_output(output, redactor)
        }
        Ready::Each(list, spans) => {
            let key = AttemptKey {
                run_id: ctx.run_id.clone(),
                node_id: ctx.node_id.clone(),
                attempt: ctx.attempt,
            };
            let total = u64::try_from(spans.len()).unwrap_or(u64::MAX);
            let reporter = &Reporter::start(store.clone(), key, total, PROGRESS_EVERY);
            let calls = (0..spans.len()).map(|index| {
                // Each item's input is read from the stored list when its turn comes.
                let input = foreach::item_input(&list, &spans[index]);
                let implementation = implementation.clone();
                async move {
                    let input = input?;
                    let limit = node.timeout.map(|timeout| Limit {
                        timeout,
                        left: timeout,
                    });
                    let output = call(implementation.as_ref(), ctx, input, limit)
                        .await
                        .map_err(|mut error| {
                            error.message = format!("item {index}: {}", error.message);
                            error
                        })?;
                    reporter.item_done();
                    Ok(output)
                }
            });
            let mut finished = futures::stream::iter(calls).buffered(node.parallelism.max(1));
            let mut outputs = foreach::Outputs::new();
            while let Some(output) = finished.try_next().await? {
                outputs.push(&redactor.value(output)).map_err(too_deep)?;
            }
            Ok(outputs.finish())
        }
    }
}

/// One call of a node under the attempt timeout and the run's cancellation.
/// A node's `timeout` and what is left of it for the call.
#[derive(Debug, Clone, Copy)]
struct Limit {
    timeout: Duration,
    left: Duration,
}

async fn call(
    node: &dyn Node,
    ctx: &NodeContext,
    input: Value,
    limit: Option<Limit>,
) -> Result<Value, NodeError> {
    // Created inside the future, so a node that panics before its first `.await` is caught
    // by the caller's `catch_unwind` too.
    let execution = async move { node.execute(ctx, input).await };
    let limited = async {
        match limit {
            None => execution.await,
            Some(limit) => tokio::time::timeout(limit.left, execution)
                .await
                .unwrap_or_else(|_| {
                    Err(NodeError::retryable(
                        ErrorKind::Timeout,
                        format!(
                            "the attempt exceeded its timeout of {}",
                            humantime::format_duration(limit.timeout)
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

fn context(
    executor: &Executor,
    workflow: &Workflow,
    key: &AttemptKey,
    run_id: &str,
    cancellation: CancellationToken,
) -> NodeContext {
    NodeContext {
        run_id: run_id.to_owned(),
        workflow_id: workflow.id.to_string(),
        node_id: key.node_id.clone(),
        attempt: key.attempt,
        idempotency_key: NodeContext::idempotency_key_for(run_id, &key.node_id, key.attempt),
        cancellation,
        http: executor.http.clone(),
        egress: executor.egress.clone(),
        secrets: executor.secrets.clone(),
        services: executor.services.clone(),
    }
}

fn template_error(error: TemplateError) -> NodeError {
    NodeError::permanent(ErrorKind::Template, error.to_string())
}

/// What is stored of the attempt's input, and the redactor of its output and errors (see
/// [`crate::redaction`]). Hides the secrets in `scope`, which nothing reads afterwards.
fn stored_input<'s>(
    executor: &'s Executor,
    node: &NodeDef,
    trigger: &Trigger,
    scope: &mut RunScope,
    input: Json,
) -> (Json, Redactor<'s>) {
    let used = executor.redaction.read_by(&input_templates(node), &[]);
    if used.is_none() {
        return (input, Redactor::new(&executor.redaction, used));
    }
    // Text this attempt just wrote from a value of a depth the store keeps: it parses. Were
    // it not to, nothing of it is kept rather than a secret.
    let Ok(input) = input.value() else {
        return (
            Json::from(Value::Null),
            Redactor::new(&executor.redaction, used),
        );
    };
    scope::hide_secrets(scope);
    let (shown, redactor) = if node.foreach.is_none() {
        let templates = &executor.templates;
        redaction::shown(
            &executor.redaction,
            used,
            templates,
            &node.with,
            input,
            scope,
        )
    } else {
        let shown = match prepare(executor, node, trigger, scope, &AtomicBool::new(false)) {
            Ok(Prepared::Each(inputs)) => inputs.finish().0.value().ok(),
            _ => None,
        };
        redaction::compared(&executor.redaction, used, input, shown)
    };
    (Json::from(shown), redactor)
}

/// Redacts a template error of the node: the secrets any of its templates read.
fn template_redactor<'s>(executor: &'s Executor, node: &NodeDef) -> Redactor<'s> {
    let condition = node.condition.as_deref();
    let used = executor
        .redaction
        .read_by(&input_templates(node), condition.as_slice());
    Redactor::new(&executor.redaction, used)
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
    // A node (or plugin) may ask for any wait: no longer than the longest backoff a workflow
    // may set, and the sum checked.
    outcome.not_before = error.retry_after.map(|delay| {
        let delay = delay.min(crate::workflow::MAX_BACKOFF);
        crate::scheduler::later_by(outcome.finished_at, delay)
    });
    outcome
}

fn outcome(
    status: AttemptStatus,
    output: Option<Json>,
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
        started: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redaction::Redaction;
    use enrichflow_nodes::Secrets;

    #[test]
    fn a_retry_after_of_years_waits_no_longer_than_the_longest_backoff() {
        let redaction = Redaction::new(&Secrets::default());
        let redactor = Redactor::new(&redaction, SecretUse::none());
        let years = Duration::from_secs(10_000 * 365 * 24 * 60 * 60);
        let error = NodeError::retryable(ErrorKind::Http, "slow down").with_retry_after(years);
        let outcome = failed(error, &redactor);
        let wait = outcome
            .not_before
            .map(|at| at.signed_duration_since(outcome.finished_at));
        assert_eq!(wait, Some(chrono::TimeDelta::days(1)));
    }

    fn node(with: Value, condition: Option<&str>, foreach: Option<Value>) -> NodeDef {
        NodeDef {
            id: crate::workflow::NodeId::parse("n").expect("an id"),
            kind: "transform".into(),
            needs: Vec::new(),
            with,
            condition: condition.map(str::to_owned),
            retry: crate::workflow::RetryPolicy::default(),
            timeout: None,
            on_error: crate::workflow::OnError::default(),
            foreach,
            parallelism: 1,
            reads: crate::template::ScopeReads::everything(),
            foreach_trigger_path: None,
        }
    }

    #[test]
    fn only_renders_that_cannot_loop_run_in_place() {
        let expressions =
            serde_json::json!({ "a": "{{ trigger.body.n + 1 }}", "b": ["x {{ y }}"] });
        let small = RunScope::plain(serde_json::json!({ "trigger": { "body": { "n": 1 } } }));
        assert!(renders_in_place(
            &node(expressions.clone(), Some("x > 1"), None),
            &small
        ));
        // A loop anywhere, a `foreach`, a statement in `if`, or a large scope: off the worker.
        let looping =
            serde_json::json!({ "a": "ok", "b": ["{% for i in x %}{{ i }}{% endfor %}"] });
        assert!(!renders_in_place(&node(looping, None, None), &small));
        let each = Some(serde_json::json!("{{ trigger.body.items }}"));
        assert!(!renders_in_place(
            &node(expressions.clone(), None, each),
            &small
        ));
        let statement = Some("x %}{% for i in range(9) %}{% endfor %}{% if 1");
        assert!(!renders_in_place(
            &node(expressions.clone(), statement, None),
            &small
        ));
        // An upstream's large reply counts as much as a large trigger.
        let mut large = small.clone();
        let reply = serde_json::json!(["x".repeat(40_000), "y".repeat(40_000)]);
        large.outputs.insert("fetch".to_owned(), Json::from(reply));
        assert!(!renders_in_place(&node(expressions, None, None), &large));
        assert!(within(&small.value, 64) && !within(&small.value, 8));
    }
}
