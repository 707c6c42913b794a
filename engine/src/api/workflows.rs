//! `GET /api/v1/workflows`, `GET /api/v1/workflows/{id}` (with its DAG) and
//! `POST /api/v1/workflows/{id}/runs` (a manual run).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{Error, Result};
use super::{ApiState, body, idempotency, run_location};
use crate::engine::TriggerRequest;
use crate::store;
use crate::view;
use crate::workflow::{Respond, Trigger, Workflow};

/// `{"workflows": [summary…]}`, sorted by id.
pub async fn list(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let catalog = state.engine.catalog();
    let mut workflows: Vec<Arc<Workflow>> = catalog.list().to_vec();
    workflows.sort_by(|a, b| a.id.cmp(&b.id));
    let workflows: Vec<Value> = workflows.iter().map(|w| summary_json(w)).collect();
    Json(json!({ "workflows": workflows }))
}

/// One workflow with its DAG.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    Path(workflow_id): Path<String>,
) -> Result<Json<Value>> {
    let workflow = find(&state, &workflow_id)?;
    Ok(Json(detail_json(&workflow)))
}

/// Starts a run with the JSON body as `trigger.body`; 201 with the run summary. With an
/// `Idempotency-Key` the workflow already has a run for, that run is answered the same way,
/// with `Idempotent-Replayed: true`.
pub async fn start_run(
    State(state): State<Arc<ApiState>>,
    Path(workflow_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let workflow = find(&state, &workflow_id)?;
    let raw = body::read(body, state.options.reading()).await?;
    let idempotency_key = idempotency::key(&headers)?;
    let body = body::json_text(&raw, state.options.json)?;
    let idempotency_body_hash = idempotency::body_hash(idempotency_key.as_ref(), body);
    let triggered = state
        .engine
        .trigger(TriggerRequest {
            workflow,
            trigger: store::Trigger::from_parts("manual", &[("body", body)]),
            idempotency_key,
            idempotency_body_hash,
        })
        .await?;
    let run = &triggered.run;
    let location = run_location(&run.id).map_err(|e| Error::internal("bad run id", &e))?;
    let headers = [(header::LOCATION, location)];
    let mut response =
        (StatusCode::CREATED, headers, Json(view::summary_json(run))).into_response();
    idempotency::mark(&mut response, triggered.replayed);
    Ok(response)
}

fn find(state: &ApiState, workflow_id: &str) -> Result<Arc<Workflow>> {
    state
        .engine
        .catalog()
        .get(workflow_id)
        .ok_or_else(|| Error::NotFound(format!("no workflow `{workflow_id}`")))
}

fn summary_json(workflow: &Workflow) -> Value {
    let triggers: Vec<Value> = workflow.triggers.iter().map(trigger_json).collect();
    json!({
        "id": workflow.id.as_str(),
        "name": workflow.name,
        "description": workflow.description,
        "triggers": triggers,
        "node_count": workflow.nodes.len(),
    })
}

/// The summary plus the inputs schema, limits, revision and the DAG: `dag.nodes` in file order,
/// `dag.edges` where `{from: a, to: b}` means `b` needs `a`, and `dag.order`, every node after
/// all of its needs.
fn detail_json(workflow: &Workflow) -> Value {
    let nodes: Vec<Value> = workflow
        .nodes
        .values()
        .map(|node| {
            json!({
                "id": node.id.as_str(),
                "type": node.kind,
                "needs": node.needs.iter().map(|need| need.as_str()).collect::<Vec<_>>(),
                "if": node.condition,
                "foreach": node.foreach.is_some(),
            })
        })
        .collect();
    let edges: Vec<Value> = workflow
        .dag
        .edges()
        .into_iter()
        .map(|(need, dependent)| json!({ "from": need.as_str(), "to": dependent.as_str() }))
        .collect();
    let order: Vec<&str> = workflow
        .dag
        .topological_order()
        .iter()
        .map(|id| id.as_str())
        .collect();
    let mut value = summary_json(workflow);
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "inputs".into(),
            workflow.inputs.clone().unwrap_or(Value::Null),
        );
        map.insert("timeout".into(), json!(workflow.timeout.map(duration_text)));
        map.insert("concurrency".into(), json!(workflow.concurrency));
        map.insert("revision".into(), json!(workflow.source.hash));
        map.insert(
            "dag".into(),
            json!({ "nodes": nodes, "edges": edges, "order": order }),
        );
    }
    value
}

/// A trigger as the API shows it: never the secret template, only whether there is one.
fn trigger_json(trigger: &Trigger) -> Value {
    match trigger {
        Trigger::Webhook(webhook) => json!({
            "type": "webhook",
            "path": webhook.path,
            "url": format!("/hooks/{}", webhook.path),
            "respond": match webhook.respond {
                Respond::Accepted => "accepted",
                Respond::OnComplete => "on_complete",
            },
            "signed": webhook.secret.is_some(),
        }),
        Trigger::Cron(cron) => json!({
            "type": "cron",
            "schedule": cron.expression,
            "timezone": cron.timezone.name(),
            "input": cron.input,
        }),
    }
}

fn duration_text(duration: std::time::Duration) -> String {
    humantime::format_duration(duration).to_string()
}
