//! Cron triggers: fires runs of every workflow with a `cron:` trigger at its ticks, in its
//! timezone. Ticks missed while the process was down are not fired afterwards.
//!
//! Every replica fires every tick; the tick's idempotency key makes the first one create the
//! run and the others get it back, so a tick runs exactly once however many replicas serve.
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
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
        for due in due_ticks(&catalog, checked_until, now) {
            fire(&engine, due).await;
        }
        checked_until = now;
        let next = next_tick(&catalog, now)
            .and_then(|tick| tick.signed_duration_since(Utc::now()).to_std().ok())
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}

/// One tick of one cron trigger.
#[derive(Debug)]
struct Due {
    workflow: Arc<Workflow>,
    cron: CronTrigger,
    /// Which of the workflow's cron triggers this is (0 for the first).
    ordinal: usize,
    tick: DateTime<Utc>,
}

/// Every cron trigger with its workflow and its ordinal among the workflow's cron triggers.
fn cron_triggers(catalog: &Catalog) -> impl Iterator<Item = (&Arc<Workflow>, usize, &CronTrigger)> {
    catalog.list().iter().flat_map(|workflow| {
        workflow
            .triggers
            .iter()
            .filter_map(|trigger| match trigger {
                Trigger::Cron(cron) => Some(cron),
                Trigger::Webhook(_) => None,
            })
            .enumerate()
            .map(move |(ordinal, cron)| (workflow, ordinal, cron))
    })
}

/// Every tick in `(after, until]` of every cron trigger.
fn due_ticks(catalog: &Catalog, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<Due> {
    let mut due = Vec::new();
    for (workflow, ordinal, cron) in cron_triggers(catalog) {
        let ticks = cron
            .schedule
            .after(&after.with_timezone(&cron.timezone))
            .map(|tick| tick.with_timezone(&Utc))
            .take_while(|tick| *tick <= until);
        for tick in ticks {
            due.push(Due {
                workflow: workflow.clone(),
                cron: cron.clone(),
                ordinal,
                tick,
            });
        }
    }
    due
}

/// The idempotency key of a tick, the same in every replica: `cron@<tick>` (UTC, seconds), with
/// `#<n>` for the workflow's n-th cron trigger from the second on, which may share a tick with
/// the first without being the same run.
fn tick_key(tick: DateTime<Utc>, ordinal: usize) -> String {
    let at = tick.to_rfc3339_opts(SecondsFormat::Secs, true);
    match ordinal {
        0 => format!("cron@{at}"),
        n => format!("cron@{at}#{}", n.saturating_add(1)),
    }
}

fn next_tick(catalog: &Catalog, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron_triggers(catalog)
        .filter_map(|(_, _, cron)| {
            cron.schedule
                .after(&after.with_timezone(&cron.timezone))
                .next()
                .map(|tick| tick.with_timezone(&Utc))
        })
        .min()
}

async fn fire(engine: &Engine, due: Due) {
    let Due {
        workflow,
        cron,
        ordinal,
        tick,
    } = due;
    let workflow_id = workflow.id.clone();
    let request = TriggerRequest {
        workflow,
        trigger: json!({
            "type": "cron",
            "scheduled_at": tick.to_rfc3339_opts(SecondsFormat::Secs, true),
            "input": cron.input,
        })
        .into(),
        idempotency_key: Some(tick_key(tick, ordinal)),
        idempotency_body_hash: None,
    };
    match engine.trigger(request).await {
        // Another replica fired this tick first: expected, and not worth more than debug.
        Ok(triggered) if triggered.replayed => {
            tracing::debug!(workflow = %workflow_id, run = %triggered.run.id, %tick,
                "cron tick already fired by another replica");
        }
        Ok(triggered) => {
            tracing::info!(workflow = %workflow_id, run = %triggered.run.id, %tick, "cron fired");
        }
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
            .filter(|due| due.cron.input["source"] == "morning")
            .map(|due| due.tick)
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
            .map(|due| {
                chrono::Timelike::second(&due.tick) + 60 * chrono::Timelike::minute(&due.tick)
            })
            .collect();
        // 6-field schedule: every 20 s; 00:00:00 is excluded, 00:01:00 included.
        assert_eq!(seconds, vec![20, 40, 60]);
    }

    #[test]
    fn two_triggers_sharing_a_tick_get_different_keys() {
        // 06:00 in Berlin (05:00 UTC in winter) is also a tick of the every-20-seconds trigger.
        let keys: Vec<String> = due_ticks(
            &catalog(),
            utc(2026, 1, 10, 4, 59, 59),
            utc(2026, 1, 10, 5, 0, 0),
        )
        .iter()
        .map(|due| tick_key(due.tick, due.ordinal))
        .collect();
        assert_eq!(
            keys,
            vec!["cron@2026-01-10T05:00:00Z", "cron@2026-01-10T05:00:00Z#2"]
        );
    }

    #[test]
    fn the_next_tick_is_the_earliest_of_all_triggers() {
        let next = next_tick(&catalog(), utc(2026, 1, 10, 4, 59, 50));
        assert_eq!(next, Some(utc(2026, 1, 10, 5, 0, 0)));
    }
}
