//! `score.rules`: points per matching rule, clamped to 0–100.
//!
//! ```yaml
//! with:
//!   lead: "{{ nodes.enrich.output }}"
//!   rules:
//!     - { field: company.size, op: gte, value: 200, points: 40 }
//!     - { field: country, op: in, value: [de, at, ch], points: 20 }
//! ```
//!
//! Output: `{score, points, matched}`; `points` is the sum before clamping and `matched` lists
//! `{index, name, points}` of each rule that matched.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::config::{Fields, Phase, Read, rendered};
use super::rules::{self, Rule};
use crate::{ConfigError, Node, NodeContext, NodeError};

/// Scores a lead by a list of rules; its `with` block is `{lead, rules}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreRules;

/// The keys of the `with` block.
const KEYS: [&str; 2] = ["lead", "rules"];

/// The `with` block, read.
#[derive(Debug)]
struct Config {
    lead: Value,
    rules: Vec<Rule>,
}

#[async_trait]
impl Node for ScoreRules {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, _ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let config = rendered(read(Phase::Run, &with))?;
        let tally = rules::tally(&config.rules, &config.lead);
        Ok(json!({
            "score": tally.score,
            "points": tally.points,
            "matched": tally.matched,
        }))
    }
}

fn read(phase: Phase, with: &Value) -> Read<Config> {
    if phase.is_pending(with) {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with the keys `lead` and `rules`")?;
    fields.only(&KEYS)?;
    let lead = rules::read_lead(phase, fields.required("lead")?, "lead")?;
    let rules = rules::read_rules(phase, fields.required("rules")?, "rules")?;
    Ok(lead.zip(rules).map(|(lead, rules)| Config { lead, rules }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::builtin::testing::context;

    async fn run(with: Value) -> Result<Value, NodeError> {
        ScoreRules.execute(&context(), with).await
    }

    fn rules() -> Value {
        json!([
            {"name": "big company", "field": "company.size", "op": "gte", "value": 200, "points": 40},
            {"field": "country", "op": "in", "value": ["de", "at", "ch"], "points": 20},
            {"field": "email.free_mail", "op": "eq", "value": true, "points": -25},
            {"field": "tags", "op": "contains", "value": "demo", "points": 50},
        ])
    }

    #[tokio::test]
    async fn scores_a_lead() {
        let lead =
            json!({"company": {"size": 500}, "country": "DE", "email": {"free_mail": false}});
        let output = run(json!({"lead": lead, "rules": rules()}))
            .await
            .expect("a score");
        assert_eq!(
            output,
            json!({
                "score": 60.0,
                "points": 60.0,
                "matched": [
                    {"index": 0, "name": "big company", "points": 40.0},
                    {"index": 1, "name": "country in [\"de\",\"at\",\"ch\"]", "points": 20.0},
                ],
            })
        );
    }

    #[tokio::test]
    async fn clamps_to_0_and_100() {
        let all = json!({"company": {"size": 900}, "country": "at", "tags": ["demo"]});
        let output = run(json!({"lead": all, "rules": rules()}))
            .await
            .expect("a score");
        assert_eq!(
            (output["score"].clone(), output["points"].clone()),
            (json!(100.0), json!(110.0))
        );
        let free = json!({"email": {"free_mail": true}});
        let output = run(json!({"lead": free, "rules": rules()}))
            .await
            .expect("a score");
        assert_eq!(
            (output["score"].clone(), output["points"].clone()),
            (json!(0.0), json!(-25.0))
        );
    }

    #[tokio::test]
    async fn a_null_lead_scores_zero_and_an_empty_rule_list_too() {
        let output = run(json!({"lead": null, "rules": rules()}))
            .await
            .expect("a score");
        assert_eq!(output, json!({"score": 0.0, "points": 0.0, "matched": []}));
        let output = run(json!({"lead": {"a": 1}, "rules": []}))
            .await
            .expect("a score");
        assert_eq!(output["score"], json!(0.0));
    }

    #[tokio::test]
    async fn a_bad_rendered_block_is_a_permanent_config_error() {
        let error = run(json!({"lead": "text", "rules": []}))
            .await
            .expect_err("a bad lead");
        assert_eq!(error.kind, ErrorKind::Config);
        assert!(!error.is_retryable());
        assert!(
            error
                .message
                .starts_with("`with.lead`: expected a map of lead fields"),
            "{}",
            error.message
        );
        let rules = json!([{"field": "a", "op": "gte", "value": "{{ x }}", "points": 1}]);
        let error = run(json!({"lead": {}, "rules": rules}))
            .await
            .expect_err("a rendered template");
        assert!(
            error
                .message
                .starts_with("`with.rules[0].value`: expected a number"),
            "{}",
            error.message
        );
    }

    #[test]
    fn check_config_names_the_bad_path() {
        let cases = [
            (json!("lead"), ""),
            (json!({"rules": []}), "lead"),
            (json!({"lead": {}}), "rules"),
            (json!({"lead": {}, "rules": [], "weights": {}}), "weights"),
            (json!({"lead": 7, "rules": []}), "lead"),
            (
                json!({"lead": {}, "rules": [{"field": "a", "op": "eq", "value": 1, "points": 1}, {}]}),
                "rules[1].field",
            ),
        ];
        for (with, path) in cases {
            let error = ScoreRules
                .check_config(&with)
                .expect_err("an invalid block");
            assert_eq!(error.path, path, "for {with}");
        }
        let templated =
            json!({"lead": "{{ nodes.enrich.output }}", "rules": "{{ trigger.body.rules }}"});
        assert_eq!(ScoreRules.check_config(&templated), Ok(()));
        let literal = json!({"lead": {"email": "{{ trigger.body.email }}"}, "rules": rules()});
        assert_eq!(ScoreRules.check_config(&literal), Ok(()));
    }
}
