//! Cron triggers: fires runs of every workflow with a `cron:` trigger at its ticks, in its
//! timezone. Ticks missed while the process was down are not fired afterwards.

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::engine::{Engine, TriggerRequest};
use crate::workflow::{CronTrigger, Trigger, Workflow};

/// Fires due ticks until shutdown. Re-reads the catalog every pass, so reloaded workflows
/// take effect without a restart.
pub async fn run(engine: Engine, shutdown: CancellationToken) {
    const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(1);
    let mut checked_until = Utc::now();
    loop {
        let now = Utc::now();
        let catalog = engine.catalog();
        for (workflow, trigger, tick) in due_ticks(&catalog, checked_until, now) {
            fire(&engine, workflow, trigger, tick).await;
        }
        checked_until = now;
        let next = next_tick(&catalog, now)
            .and_then(|tick| (tick - Utc::now()).to_std().ok())
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}

fn cron_triggers(
    catalog: &Catalog,
) -> impl Iterator<Item = (&std::sync::Arc<Workflow>, &CronTrigger)> {
    catalog.list().iter().flat_map(|workflow| {
        workflow
            .triggers
            .iter()
            .filter_map(move |trigger| match trigger {
                Trigger::Cron(cron) => Some((workflow, cron)),
                Trigger::Webhook(_) => None,
            })
    })
}

/// Every tick in `(after, until]` of every cron trigger.
fn due_ticks(
    catalog: &Catalog,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(std::sync::Arc<Workflow>, CronTrigger, DateTime<Utc>)> {
    let mut due = Vec::new();
    for (workflow, cron) in cron_triggers(catalog) {
        let ticks = cron
            .schedule
            .after(&after.with_timezone(&cron.timezone))
            .map(|tick| tick.with_timezone(&Utc))
            .take_while(|tick| *tick <= until);
        for tick in ticks {
            due.push((workflow.clone(), cron.clone(), tick));
        }
    }
    due
}

fn next_tick(catalog: &Catalog, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron_triggers(catalog)
        .filter_map(|(_, cron)| {
            cron.schedule
                .after(&after.with_timezone(&cron.timezone))
                .next()
                .map(|tick| tick.with_timezone(&Utc))
        })
        .min()
}

async fn fire(
    engine: &Engine,
    workflow: std::sync::Arc<Workflow>,
    cron: CronTrigger,
    tick: DateTime<Utc>,
) {
    let workflow_id = workflow.id.clone();
    let request = TriggerRequest {
        workflow,
        trigger: json!({
            "type": "cron",
            "scheduled_at": tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "input": cron.input,
        }),
        payload: cron.input.clone(),
    };
    match engine.trigger(request).await {
        Ok(run) => tracing::info!(workflow = %workflow_id, run = %run.id, %tick, "cron fired"),
        Err(error) => tracing::error!(workflow = %workflow_id, %error, "cron trigger failed"),
    }
}
