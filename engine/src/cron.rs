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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use chrono::TimeZone;
    use enrichflow_nodes::Registry;

    use super::*;
    use crate::template::Templates;

    fn catalog() -> Catalog {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cron/berlin.yaml");
        let text = std::fs::read_to_string(&path).expect("fixture exists");
        let workflow =
            crate::workflow::load_str(&path, &text, &Registry::with_builtins(), &Templates::new())
                .expect("fixture is valid");
        Catalog::from_workflows(vec![Arc::new(workflow)])
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, s)
            .single()
            .expect("valid time")
    }

    fn morning_ticks(after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        due_ticks(&catalog(), after, until)
            .into_iter()
            .filter(|(_, cron, _)| cron.input["source"] == "morning")
            .map(|(_, _, tick)| tick)
            .collect()
    }

    #[test]
    fn ticks_follow_the_trigger_timezone_across_daylight_saving() {
        // 06:00 in Berlin is 05:00 UTC in winter and 04:00 UTC in summer.
        let winter = morning_ticks(utc(2026, 1, 10, 0, 0, 0), utc(2026, 1, 11, 0, 0, 0));
        assert_eq!(winter, vec![utc(2026, 1, 10, 5, 0, 0)]);
        let summer = morning_ticks(utc(2026, 7, 10, 0, 0, 0), utc(2026, 7, 11, 0, 0, 0));
        assert_eq!(summer, vec![utc(2026, 7, 10, 4, 0, 0)]);
    }

    #[test]
    fn the_window_is_open_at_the_start_and_closed_at_the_end() {
        let ticks = due_ticks(
            &catalog(),
            utc(2026, 1, 10, 0, 0, 0),
            utc(2026, 1, 10, 0, 1, 0),
        );
        let seconds: Vec<u32> = ticks
            .iter()
            .map(|(_, _, tick)| {
                chrono::Timelike::second(tick) + 60 * chrono::Timelike::minute(tick)
            })
            .collect();
        // 6-field schedule: every 20 s; 00:00:00 is excluded, 00:01:00 included.
        assert_eq!(seconds, vec![20, 40, 60]);
    }

    #[test]
    fn the_next_tick_is_the_earliest_of_all_triggers() {
        let next = next_tick(&catalog(), utc(2026, 1, 10, 4, 59, 50));
        assert_eq!(next, Some(utc(2026, 1, 10, 5, 0, 0)));
    }
}
