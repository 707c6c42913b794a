//! `triggers:`: webhooks and cron schedules.

use std::collections::HashMap;
use std::str::FromStr;

use serde_json::Value;

use crate::template::Templates;

use super::fields::{Fields, Problems, at_index};
use super::located::{Node, Position, Yaml};
use super::model::{CronTrigger, Respond, Trigger, WebhookTrigger};
use super::suggest;

const KINDS: &[&str] = &["webhook", "cron"];
const WEBHOOK_KEYS: &[&str] = &["path", "secret", "respond"];
const CRON_KEYS: &[&str] = &["schedule", "timezone", "input"];

/// Every valid trigger in `node` (a list); the invalid ones are reported.
pub fn parse_all(problems: &mut Problems, templates: &Templates, node: &Node) -> Vec<Trigger> {
    let Yaml::List(items) = &node.value else {
        return problems
            .wrong_type(node, "triggers", "a list")
            .unwrap_or_default();
    };
    let mut triggers = Vec::new();
    let mut webhook_paths: HashMap<String, Position> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let path = at_index("triggers", index);
        let Some(fields) = Fields::read(problems, item, &path, item.at) else {
            continue;
        };
        let [entry] = fields.entries() else {
            let message = format!("a trigger has exactly one of: {}", KINDS.join(", "));
            problems.add(item.at, &path, message);
            continue;
        };
        let path = fields.path(&entry.key);
        let trigger = match entry.key.as_str() {
            "webhook" => webhook(problems, templates, &entry.value, &path, entry.key_at),
            "cron" => cron(problems, &entry.value, &path, entry.key_at),
            other => {
                let message = format!(
                    "unknown trigger `{other}` (expected one of: {})",
                    KINDS.join(", ")
                );
                problems.add(entry.key_at, &path, message);
                None
            }
        };
        // Checked on the path alone, so a clash shows even when the trigger has other errors.
        let hook_path = entry.value.get("path").filter(|_| entry.key == "webhook");
        let written = hook_path
            .and_then(|found| Some((webhook_path(found.value.as_str()?).ok()?, found.value.at)));
        if let Some((hook_path, at)) = written
            && let Some(first) = webhook_paths.insert(hook_path.clone(), at)
        {
            let message = format!(
                "webhook path `{hook_path}` is already used by the trigger at line {}",
                first.line
            );
            problems.add(at, &format!("{path}.path"), message);
        }
        triggers.extend(trigger);
    }
    triggers
}

fn webhook(
    problems: &mut Problems,
    templates: &Templates,
    node: &Node,
    path: &str,
    at: Position,
) -> Option<Trigger> {
    let fields = Fields::read(problems, node, path, at)?;
    fields.only(problems, WEBHOOK_KEYS);
    let hook_path = fields.require(problems, "path").and_then(|entry| {
        let text = problems.string(&entry.value, &fields.path("path"))?;
        webhook_path(text)
            .map_err(|message| problems.add(entry.value.at, &fields.path("path"), message))
            .ok()
    });
    let secret = fields.get("secret").and_then(|entry| {
        problems.templates(templates, &entry.value, &fields.path("secret"));
        problems
            .string(&entry.value, &fields.path("secret"))
            .map(str::to_owned)
    });
    let respond = match fields.get("respond") {
        None => Some(Respond::Accepted),
        Some(entry) => match problems.string(&entry.value, &fields.path("respond"))? {
            "accepted" => Some(Respond::Accepted),
            "on_complete" => Some(Respond::OnComplete),
            other => {
                let message = format!("expected `accepted` or `on_complete`, found `{other}`");
                problems.add(entry.value.at, &fields.path("respond"), message);
                None
            }
        },
    };
    Some(Trigger::Webhook(WebhookTrigger {
        path: hook_path?,
        secret,
        respond: respond?,
    }))
}

/// `leads` or `/crm/leads` (the leading slash is dropped): letters, digits, `-`, `_`, `.`
/// and `/` between non-empty segments.
fn webhook_path(text: &str) -> Result<String, String> {
    let path = text.strip_prefix('/').unwrap_or(text);
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    let valid = !path.is_empty()
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment.chars().all(valid_char));
    if valid {
        Ok(path.to_owned())
    } else {
        Err(format!(
            "invalid webhook path `{text}`: use letters, digits, `-`, `_` and `.`, with `/` between parts"
        ))
    }
}

fn cron(problems: &mut Problems, node: &Node, path: &str, at: Position) -> Option<Trigger> {
    let fields = Fields::read(problems, node, path, at)?;
    fields.only(problems, CRON_KEYS);
    let schedule = fields.require(problems, "schedule").and_then(|entry| {
        let text = problems.string(&entry.value, &fields.path("schedule"))?;
        let schedule = schedule(text)
            .map_err(|message| problems.add(entry.value.at, &fields.path("schedule"), message))
            .ok()?;
        Some((text.to_owned(), schedule))
    });
    let timezone = match fields.get("timezone") {
        None => Some(chrono_tz::UTC),
        Some(entry) => problems
            .string(&entry.value, &fields.path("timezone"))
            .and_then(|name| {
                timezone(name)
                    .map_err(|message| {
                        problems.add(entry.value.at, &fields.path("timezone"), message)
                    })
                    .ok()
            }),
    };
    let input = fields.get("input").map_or_else(
        || Value::Object(Default::default()),
        |entry| entry.value.to_json(),
    );
    let (expression, schedule) = schedule?;
    Some(Trigger::Cron(CronTrigger {
        expression,
        schedule,
        timezone: timezone?,
        input,
    }))
}

/// A 5-field crontab line gets a `0` seconds field; 6 or 7 fields are taken as they are.
pub fn schedule(text: &str) -> Result<cron::Schedule, String> {
    let fields = text.split_whitespace().count();
    let with_seconds = match fields {
        5 => format!("0 {text}"),
        6 | 7 => text.to_owned(),
        _ => {
            return Err(format!(
                "invalid cron schedule `{text}`: expected 5 fields (minute hour day month weekday), \
                 or 6 with seconds first, found {fields}"
            ));
        }
    };
    cron::Schedule::from_str(&with_seconds).map_err(|error| {
        // The crate's message repeats the expression with a caret on lines of its own; the
        // last line is the explanation.
        let error = error.to_string();
        let reason = error
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_default();
        format!("invalid cron schedule `{text}`: {}", reason.trim())
    })
}

fn timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        match suggest::closest(name, names) {
            Some(close) => format!("unknown timezone `{name}` (did you mean `{close}`?)"),
            None => format!("unknown timezone `{name}` (use an IANA name such as `Europe/Berlin`)"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_crontab_lines_and_seconds_first() {
        assert!(schedule("*/15 * * * *").is_ok());
        assert!(schedule("30 0 9 * * Mon-Fri").is_ok());
        assert_eq!(
            schedule("* * *").unwrap_err(),
            "invalid cron schedule `* * *`: expected 5 fields (minute hour day month weekday), or 6 with seconds first, found 3"
        );
        assert_eq!(
            schedule("61 * * * *").unwrap_err(),
            "invalid cron schedule `61 * * * *`: Minutes must be less than 59. ('61' specified.)"
        );
    }

    /// The cron loop asks every schedule for its next tick each second: a schedule that never
    /// fires, or only in the last years the cron crate knows, must answer (and not panic).
    #[test]
    fn schedules_that_never_or_rarely_fire_answer_at_once() {
        let now = chrono::Utc::now().with_timezone(&chrono_tz::Pacific::Kiritimati);
        for text in [
            "0 0 30 2 *",
            "0 0 31 4 *",
            "0 0 0 29 2 * 2100",
            "0 0 0 1 1 * 2099",
        ] {
            let schedule = schedule(text).expect("a valid schedule");
            assert!(schedule.after(&now).take(3).count() <= 3, "{text}");
        }
    }

    #[test]
    fn webhook_paths_are_url_segments() {
        assert_eq!(webhook_path("leads"), Ok("leads".to_owned()));
        assert_eq!(webhook_path("/crm/leads-v2"), Ok("crm/leads-v2".to_owned()));
        assert!(webhook_path("").is_err());
        assert!(webhook_path("a//b").is_err());
        assert!(webhook_path("a b").is_err());
        assert!(webhook_path("leads/").is_err());
    }

    #[test]
    fn timezones_suggest_close_names() {
        assert_eq!(timezone("Europe/Berlin"), Ok(chrono_tz::Europe::Berlin));
        assert_eq!(
            timezone("Europe/Berln").unwrap_err(),
            "unknown timezone `Europe/Berln` (did you mean `Europe/Berlin`?)"
        );
    }
}
