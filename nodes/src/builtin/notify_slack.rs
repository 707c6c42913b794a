//! `notify.slack`: posts a message (text and/or Block Kit blocks) to a Slack incoming webhook.
//!
//! The webhook URL is its own credential, so no message or output ever shows it: errors name
//! "the Slack webhook" and quote Slack's answer (`invalid_payload`, `no_service`, …) instead.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName};
use serde_json::{Map, Value, json};

use super::config::{Fields, Phase, Read, at_index, describe, rendered, text};
use super::notify_http::{Post, idempotency_header, read_secret_url, read_timeout};
use crate::{ConfigError, Node, NodeContext, NodeError};

/// Posts to a Slack incoming webhook; its `with` block is described in `docs/nodes.md`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifySlack;

const KEYS: [&str; 7] = [
    "webhook_url",
    "text",
    "blocks",
    "username",
    "icon_emoji",
    "channel",
    "timeout",
];

/// Keys copied into the payload as they are; Slack ignores the last three for webhooks of
/// newer apps, which post as the app into the channel chosen when the webhook was made.
const TEXT_KEYS: [&str; 4] = ["text", "username", "icon_emoji", "channel"];

/// How the receiver is named in messages, in place of its secret URL.
const TARGET: &str = "the Slack webhook";

/// Slack ignores this header; it is sent so that a proxy or a fake in between can see retries.
const IDEMPOTENCY_HEADER: &str = "x-enrichflow-idempotency-key";

/// A rendered, checked `with` block.
#[derive(Debug)]
struct Config {
    webhook_url: Url,
    payload: Map<String, Value>,
    timeout: Duration,
}

#[async_trait]
impl Node for NotifySlack {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let config = rendered(read(Phase::Run, &with))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(IDEMPOTENCY_HEADER),
            idempotency_header(ctx)?,
        );
        let post = Post {
            target: TARGET.to_owned(),
            url: config.webhook_url,
            headers,
            body: Value::Object(config.payload).to_string().into_bytes(),
            timeout: config.timeout,
            expect_status: None,
        };
        let delivered = post.send(ctx).await?;
        Ok(json!({"status": delivered.status.as_u16(), "ok": true}))
    }
}

fn read(phase: Phase, with: &Value) -> Read<Config> {
    if phase.is_pending(with) {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with the keys `webhook_url` and `text`")?;
    fields.only(&KEYS)?;
    let webhook_url = read_secret_url(phase, fields.required("webhook_url")?, "webhook_url")?;
    if fields.optional("text").is_none() && fields.optional("blocks").is_none() {
        return Err(ConfigError::new(
            "text",
            "missing required key `text` (or `blocks`): a message needs one of them",
        ));
    }
    let mut payload = Map::new();
    let mut pending = false;
    for key in TEXT_KEYS {
        if let Some(value) = fields.optional(key) {
            match text(phase, value, key)? {
                Some(text) => {
                    payload.insert(key.to_owned(), json!(text));
                }
                None => pending = true,
            }
        }
    }
    if let Some(blocks) = fields.optional("blocks") {
        match read_blocks(phase, blocks)? {
            Some(blocks) => {
                payload.insert("blocks".to_owned(), blocks);
            }
            None => pending = true,
        }
    }
    let timeout = read_timeout(phase, fields.optional("timeout"), "timeout")?;
    let (Some(webhook_url), Some(timeout), false) = (webhook_url, timeout, pending) else {
        return Ok(None);
    };
    Ok(Some(Config {
        webhook_url,
        payload,
        timeout,
    }))
}

/// A list of Block Kit blocks: maps with a `type`. Their contents are Slack's to check.
fn read_blocks(phase: Phase, value: &Value) -> Read<Value> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let Value::Array(blocks) = value else {
        return Err(ConfigError::new(
            "blocks",
            format!("expected a list of blocks, found {}", describe(value)),
        ));
    };
    let mut pending = false;
    for (index, block) in blocks.iter().enumerate() {
        let path = at_index("blocks", index);
        if phase.is_pending(block) {
            pending = true;
            continue;
        }
        let fields = Fields::read(block, &path, "a block: a map with a `type`")?;
        let kind = fields.required("type")?;
        pending |= text(phase, kind, &fields.path("type"))?.is_none();
    }
    Ok((!pending).then(|| value.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(with: Value) -> ConfigError {
        NotifySlack
            .check_config(&with)
            .expect_err("the block should be rejected")
    }

    #[test]
    fn accepts_text_blocks_and_templates() {
        let with = json!({
            "webhook_url": "{{ secrets.SLACK_WEBHOOK }}",
            "text": "Hot lead {{ trigger.body.email }}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Hot*"}},
                "{{ nodes.format.output.block }}",
            ],
            "username": "enrichflow",
            "icon_emoji": ":fire:",
            "channel": "#sales",
            "timeout": "5s",
        });
        assert_eq!(NotifySlack.check_config(&with), Ok(()));
        let blocks_only = json!({"webhook_url": "https://hooks.example/x", "blocks": "{{ b }}"});
        assert_eq!(NotifySlack.check_config(&blocks_only), Ok(()));
    }

    #[test]
    fn rejects_bad_keys_at_their_path() {
        let url = "https://hooks.slack.com/services/T0/B0/secret";
        let cases = [
            (json!({"text": "x"}), "webhook_url"),
            (json!({"webhook_url": url}), "text"),
            (
                json!({"webhook_url": url, "text": "x", "colour": "red"}),
                "colour",
            ),
            (json!({"webhook_url": url, "text": 1}), "text"),
            (
                json!({"webhook_url": url, "blocks": {"type": "x"}}),
                "blocks",
            ),
            (
                json!({"webhook_url": url, "blocks": [{"type": "a"}, 1]}),
                "blocks[1]",
            ),
            (
                json!({"webhook_url": url, "blocks": [{"text": "a"}]}),
                "blocks[0].type",
            ),
            (
                json!({"webhook_url": url, "text": "x", "timeout": "soon"}),
                "timeout",
            ),
            (
                json!({"webhook_url": url, "text": "x", "channel": ["#a"]}),
                "channel",
            ),
        ];
        for (with, path) in cases {
            assert_eq!(error(with.clone()).path, path, "for {with}");
        }
    }

    #[test]
    fn a_bad_webhook_url_is_not_quoted() {
        let error =
            error(json!({"webhook_url": "hooks.slack.com/services/T0/B0/XyZ123", "text": "x"}));
        assert_eq!(error.path, "webhook_url");
        assert!(!error.message.contains("XyZ123"), "{}", error.message);
    }

    #[test]
    fn the_payload_holds_only_the_keys_given() {
        let with = json!({"webhook_url": "https://hooks.example/x", "text": "hi", "channel": "#a"});
        let config = read(Phase::Run, &with)
            .expect("the block is valid")
            .expect("nothing is pending");
        assert_eq!(
            Value::Object(config.payload),
            json!({"text": "hi", "channel": "#a"})
        );
        assert_eq!(config.timeout, super::super::notify_http::DEFAULT_TIMEOUT);
    }
}
