//! `score.weighted`: the lead score. Five components, each 0–100, are weighted and summed:
//! demographic×0.25 + firmographic×0.25 + behavioral×0.15 + engagement×0.35 + ml×0.10 by
//! default; the total decides the tier (hot ≥ 80, warm ≥ 50, else cold, by default).
//!
//! ```yaml
//! with:
//!   lead: "{{ nodes.company.output }}"
//!   weights: { demographic: 0.3, firmographic: 0.3, behavioral: 0.1, engagement: 0.3 }
//!   tiers: { hot: 75, warm: 40 }
//!   components:
//!     demographic: { rules: [{ field: title, op: matches, value: "(?i)head|chief|vp", points: 60 }] }
//!     firmographic: { rules: [{ field: company.size, op: gte, value: 200, points: 80 }] }
//!     behavioral: { field: activity.score }
//!     engagement: "{{ nodes.engagement.output }}"
//! ```
//!
//! A component is scored by rules (`{rules: […]}`, as in `score.rules`), read from a lead field
//! (`{field: ml.probability, scale: 100, default: 0}`), or given as a number (often a template).
//! Weights and tiers are checked when the workflow is loaded; see `docs/nodes.md`.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::config::{Fields, Phase, Read, describe, number, number_between, rendered, round2};
use super::rules::{self, FieldPath, Rule};
use crate::{ConfigError, Node, NodeContext, NodeError};

/// The lead score; its `with` block is `{lead, components, weights?, tiers?}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreWeighted;

/// The components in the order of the formula, with their default weights.
const COMPONENTS: [(&str, f64); 5] = [
    ("demographic", 0.25),
    ("firmographic", 0.25),
    ("behavioral", 0.15),
    ("engagement", 0.35),
    ("ml", 0.10),
];

/// How far the weights may add up from 1, for decimals such as 0.1 that binary floats miss.
const WEIGHT_TOLERANCE: f64 = 1e-6;

const KEYS: [&str; 4] = ["lead", "components", "weights", "tiers"];
const RULES_KEYS: [&str; 1] = ["rules"];
const FIELD_KEYS: [&str; 3] = ["field", "scale", "default"];

/// The default lowest totals of the hot and warm tiers.
const DEFAULT_TIERS: Tiers = Tiers {
    hot: 80.0,
    warm: 50.0,
};

/// The `with` block, read.
#[derive(Debug)]
struct Config {
    lead: Value,
    /// One per entry of [`COMPONENTS`], in its order.
    weights: [f64; 5],
    sources: [Source; 5],
    tiers: Tiers,
}

/// Where a component's 0–100 score comes from.
#[derive(Debug, Default)]
enum Source {
    /// Not configured; allowed only with weight 0, and scores 0.
    #[default]
    Missing,
    /// A number, usually rendered from a template; null scores 0.
    Value(Option<f64>),
    /// A lead field times `scale`, clamped to 0–100; `default` when missing or not a number.
    Field {
        field: FieldPath,
        scale: f64,
        default: f64,
    },
    /// Points of the matching rules, clamped to 0–100.
    Rules(Vec<Rule>),
}

/// The lowest total of each tier; below `warm` is cold.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tiers {
    hot: f64,
    warm: f64,
}

#[async_trait]
impl Node for ScoreWeighted {
    fn check_config(&self, with: &Value) -> Result<(), ConfigError> {
        read(Phase::Load, with).map(drop)
    }

    async fn execute(&self, _ctx: &NodeContext, with: Value) -> Result<Value, NodeError> {
        let config = rendered(read(Phase::Run, &with))?;
        Ok(config.score())
    }
}

impl Config {
    /// `{total, tier, breakdown}` for the lead.
    fn score(&self) -> Value {
        let mut total = 0.0;
        let mut breakdown = Map::new();
        for (index, (name, _)) in COMPONENTS.iter().enumerate() {
            let weight = self.weights[index];
            let (score, source, matched) = self.sources[index].score(&self.lead);
            let contribution = score * weight;
            total += contribution;
            let part = json!({
                "score": round2(score),
                "weight": weight,
                "contribution": round2(contribution),
                "source": source,
                "matched": matched,
            });
            breakdown.insert((*name).to_owned(), part);
        }
        let total = round2(total);
        json!({"total": total, "tier": self.tiers.tier(total), "breakdown": breakdown})
    }
}

impl Source {
    /// The component's score, the name of its source, and the rules that matched.
    fn score(&self, lead: &Value) -> (f64, &'static str, Vec<Value>) {
        match self {
            Source::Missing => (0.0, "none", Vec::new()),
            Source::Value(number) => (number.unwrap_or(0.0), "value", Vec::new()),
            Source::Field {
                field,
                scale,
                default,
            } => {
                let found = field.lookup(lead).and_then(rules::as_number);
                let score = found.map_or(*default, |number| (number * scale).clamp(0.0, 100.0));
                (score, "field", Vec::new())
            }
            Source::Rules(rules) => {
                let tally = rules::tally(rules, lead);
                (tally.score, "rules", tally.matched)
            }
        }
    }
}

impl Tiers {
    fn tier(self, total: f64) -> &'static str {
        if total >= self.hot {
            "hot"
        } else if total >= self.warm {
            "warm"
        } else {
            "cold"
        }
    }
}

fn read(phase: Phase, with: &Value) -> Read<Config> {
    if phase.is_pending(with) {
        return Ok(None);
    }
    let fields = Fields::read(with, "", "a map with the keys `lead` and `components`")?;
    fields.only(&KEYS)?;
    let lead = rules::read_lead(phase, fields.required("lead")?, "lead")?;
    let sources = read_sources(phase, fields.required("components")?)?;
    let weights = match fields.optional("weights") {
        Some(weights) => read_weights(phase, weights)?,
        None => Some(COMPONENTS.map(|(_, weight)| weight)),
    };
    if let (Some(weights), Some(sources)) = (&weights, &sources) {
        check_every_weight_has_a_source(weights, sources)?;
    }
    let tiers = match fields.optional("tiers") {
        Some(tiers) => read_tiers(phase, tiers)?,
        None => Some(DEFAULT_TIERS),
    };
    let (Some(lead), Some(weights), Some(sources), Some(tiers)) = (lead, weights, sources, tiers)
    else {
        return Ok(None);
    };
    Ok(Some(Config {
        lead,
        weights,
        sources,
        tiers,
    }))
}

/// The index of a component in [`COMPONENTS`], or an error naming the known ones.
fn component(name: &str, path: String) -> Result<usize, ConfigError> {
    COMPONENTS
        .iter()
        .position(|(known, _)| *known == name)
        .ok_or_else(|| {
            let known: Vec<&str> = COMPONENTS.iter().map(|(known, _)| *known).collect();
            ConfigError::new(
                path,
                format!(
                    "unknown component `{name}`; expected one of {}",
                    known.join(", ")
                ),
            )
        })
}

/// `weights`: components not named weigh 0; the weights must add up to 1.
fn read_weights(phase: Phase, value: &Value) -> Read<[f64; 5]> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let fields = Fields::read(value, "weights", "a map of component weights")?;
    let mut weights = [0.0; 5];
    let mut pending = false;
    for (name, weight) in fields.iter() {
        let path = fields.path(name);
        let index = component(name, path.clone())?;
        match number_between(phase, weight, &path, 0.0, 1.0)? {
            Some(weight) => weights[index] = weight,
            None => pending = true,
        }
    }
    if pending {
        return Ok(None);
    }
    let sum: f64 = weights.iter().sum();
    if (sum - 1.0).abs() > WEIGHT_TOLERANCE {
        let terms: Vec<String> = fields
            .iter()
            .map(|(name, weight)| format!("{name} {weight}"))
            .collect();
        return Err(ConfigError::new(
            "weights",
            format!(
                "the weights must add up to 1, found {} ({})",
                round_for_message(sum),
                terms.join(" + ")
            ),
        ));
    }
    Ok(Some(weights))
}

/// Enough decimals to show a wrong sum without binary noise (1.1, not 1.1000000000000003).
fn round_for_message(number: f64) -> f64 {
    (number * 1e9).round() / 1e9
}

/// `components`: a source for each component named.
fn read_sources(phase: Phase, value: &Value) -> Read<[Source; 5]> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let fields = Fields::read(value, "components", "a map of component sources")?;
    let mut sources: [Source; 5] = Default::default();
    let mut pending = false;
    for (name, source) in fields.iter() {
        let path = fields.path(name);
        let index = component(name, path.clone())?;
        match read_source(phase, source, &path)? {
            Some(source) => sources[index] = source,
            None => pending = true,
        }
    }
    Ok((!pending).then_some(sources))
}

/// One component's source: a number, `{rules: […]}` or `{field, scale?, default?}`.
fn read_source(phase: Phase, value: &Value, path: &str) -> Read<Source> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    match value {
        Value::Null => Ok(Some(Source::Value(None))),
        Value::Number(_) => {
            Ok(number_between(phase, value, path, 0.0, 100.0)?.map(|n| Source::Value(Some(n))))
        }
        Value::Object(map) if map.contains_key("rules") => {
            let fields = Fields::read(value, path, "a map")?;
            fields.only(&RULES_KEYS)?;
            let rules = rules::read_rules(phase, fields.required("rules")?, &fields.path("rules"))?;
            Ok(rules.map(Source::Rules))
        }
        Value::Object(map) if map.contains_key("field") => {
            let fields = Fields::read(value, path, "a map")?;
            fields.only(&FIELD_KEYS)?;
            let field_path = fields.path("field");
            let field = rules::read_field_path(phase, fields.required("field")?, &field_path)?;
            let scale = match fields.optional("scale") {
                Some(scale) => read_scale(phase, scale, &fields.path("scale"))?,
                None => Some(1.0),
            };
            let default = match fields.optional("default") {
                Some(default) => {
                    number_between(phase, default, &fields.path("default"), 0.0, 100.0)?
                }
                None => Some(0.0),
            };
            let (Some(field), Some(scale), Some(default)) = (field, scale, default) else {
                return Ok(None);
            };
            Ok(Some(Source::Field {
                field,
                scale,
                default,
            }))
        }
        other => Err(ConfigError::new(
            path,
            format!(
                "expected a score from 0 to 100, `{{rules: […]}}` or `{{field: …}}`, found {}",
                describe(other)
            ),
        )),
    }
}

/// A factor above zero, such as 100 for a probability from 0 to 1.
fn read_scale(phase: Phase, value: &Value, path: &str) -> Read<f64> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let scale = number(value, path)?;
    if scale <= 0.0 {
        return Err(ConfigError::new(
            path,
            format!("must be above 0, found {scale}"),
        ));
    }
    Ok(Some(scale))
}

/// A component that weighs something must say where its score comes from; otherwise it would
/// silently score 0 and cap every total.
fn check_every_weight_has_a_source(
    weights: &[f64; 5],
    sources: &[Source; 5],
) -> Result<(), ConfigError> {
    for (index, (name, _)) in COMPONENTS.iter().enumerate() {
        if weights[index] > 0.0 && matches!(sources[index], Source::Missing) {
            return Err(ConfigError::new(
                "components",
                format!(
                    "component `{name}` weighs {} but has no source; add `components.{name}` \
                     or set `weights` without it",
                    weights[index]
                ),
            ));
        }
    }
    Ok(())
}

/// `tiers: {hot, warm}`, each 0–100, hot not below warm.
fn read_tiers(phase: Phase, value: &Value) -> Read<Tiers> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let fields = Fields::read(value, "tiers", "a map with the keys `hot` and `warm`")?;
    fields.only(&["hot", "warm"])?;
    let read = |key: &str, default: f64| match fields.optional(key) {
        Some(value) => number_between(phase, value, &fields.path(key), 0.0, 100.0),
        None => Ok(Some(default)),
    };
    let hot = read("hot", DEFAULT_TIERS.hot)?;
    let warm = read("warm", DEFAULT_TIERS.warm)?;
    let (Some(hot), Some(warm)) = (hot, warm) else {
        return Ok(None);
    };
    if hot < warm {
        let key = if fields.optional("hot").is_some() {
            "hot"
        } else {
            "warm"
        };
        return Err(ConfigError::new(
            fields.path(key),
            format!("`hot` ({hot}) must not be below `warm` ({warm})"),
        ));
    }
    Ok(Some(Tiers { hot, warm }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::context;

    async fn run(with: Value) -> Result<Value, NodeError> {
        ScoreWeighted.execute(&context(), with).await
    }

    fn all_components() -> Value {
        json!({
            "demographic": {"rules": [
                {"name": "senior", "field": "title", "op": "matches", "value": "(?i)head|vp|chief", "points": 60},
                {"field": "country", "op": "in", "value": ["de", "at"], "points": 40},
            ]},
            "firmographic": {"rules": [{"field": "company.size", "op": "gte", "value": 200, "points": 80}]},
            "behavioral": {"field": "activity"},
            "engagement": 50,
            "ml": {"field": "ml.probability", "scale": 100},
        })
    }

    #[tokio::test]
    async fn scores_with_the_default_formula() {
        let lead = json!({
            "title": "Head of Sales", "country": "DE", "company": {"size": 500},
            "activity": "30", "ml": {"probability": 0.9},
        });
        let output = run(json!({"lead": lead, "components": all_components()}))
            .await
            .expect("a score");
        // 100×0.25 + 80×0.25 + 30×0.15 + 50×0.35 + 90×0.10
        assert_eq!(output["total"], json!(76.0));
        assert_eq!(output["tier"], json!("warm"));
        let breakdown = &output["breakdown"];
        assert_eq!(
            breakdown["demographic"],
            json!({
                "score": 100.0, "weight": 0.25, "contribution": 25.0, "source": "rules",
                "matched": [
                    {"index": 0, "name": "senior", "points": 60.0},
                    {"index": 1, "name": "country in [\"de\",\"at\"]", "points": 40.0},
                ],
            })
        );
        assert_eq!(breakdown["behavioral"]["contribution"], json!(4.5));
        assert_eq!(breakdown["behavioral"]["source"], json!("field"));
        assert_eq!(breakdown["engagement"]["contribution"], json!(17.5));
        assert_eq!(breakdown["engagement"]["source"], json!("value"));
        assert_eq!(breakdown["ml"]["score"], json!(90.0));
    }

    #[tokio::test]
    async fn tiers_follow_the_thresholds() {
        let with = |engagement: f64, tiers: Value| {
            let mut with = json!({
                "lead": {},
                "weights": {"engagement": 1},
                "components": {"engagement": engagement},
            });
            if !tiers.is_null() {
                with["tiers"] = tiers;
            }
            with
        };
        let cases = [
            (80.0, Value::Null, "hot"),
            (79.99, Value::Null, "warm"),
            (50.0, Value::Null, "warm"),
            (49.99, Value::Null, "cold"),
            (0.0, Value::Null, "cold"),
            (70.0, json!({"hot": 70}), "hot"),
            (30.0, json!({"warm": 30}), "warm"),
            (60.0, json!({"hot": 60, "warm": 60}), "hot"),
            (0.0, json!({"hot": 0, "warm": 0}), "hot"),
        ];
        for (engagement, tiers, tier) in cases {
            let output = run(with(engagement, tiers.clone())).await.expect("a score");
            assert_eq!(output["tier"], json!(tier), "for {engagement} with {tiers}");
            assert_eq!(output["total"], json!(engagement));
        }
    }

    #[tokio::test]
    async fn field_sources_clamp_scale_and_fall_back_to_their_default() {
        let cases = [
            (json!({"s": 42}), json!({"field": "s"}), 42.0),
            (json!({"s": 420}), json!({"field": "s"}), 100.0),
            (json!({"s": -5}), json!({"field": "s"}), 0.0),
            (
                json!({"s": 0.425}),
                json!({"field": "s", "scale": 100}),
                42.5,
            ),
            (json!({"s": " 12 "}), json!({"field": "s"}), 12.0),
            (json!({}), json!({"field": "s"}), 0.0),
            (json!({}), json!({"field": "s", "default": 35}), 35.0),
            (
                json!({"s": "high"}),
                json!({"field": "s", "default": 35}),
                35.0,
            ),
            (
                json!({"s": null}),
                json!({"field": "s", "default": 35}),
                35.0,
            ),
            (Value::Null, json!({"field": "s", "default": 20}), 20.0),
        ];
        for (lead, source, score) in cases {
            let with = json!({"lead": lead, "weights": {"ml": 1}, "components": {"ml": source}});
            let output = run(with.clone()).await.expect("a score");
            assert_eq!(
                output["breakdown"]["ml"]["score"],
                json!(score),
                "for {with}"
            );
        }
    }

    #[tokio::test]
    async fn rounds_the_total_from_unrounded_contributions() {
        let with = json!({
            "lead": {},
            "weights": {"demographic": 0.333, "firmographic": 0.333, "ml": 0.334},
            "components": {"demographic": 33.33, "firmographic": 33.33, "ml": 33.34},
        });
        let output = run(with).await.expect("a score");
        assert_eq!(output["total"], json!(33.33));
        assert_eq!(output["breakdown"]["ml"]["contribution"], json!(11.14));
        assert_eq!(output["breakdown"]["behavioral"]["source"], json!("none"));
        assert_eq!(output["breakdown"]["behavioral"]["weight"], json!(0.0));
    }

    #[tokio::test]
    async fn a_null_value_source_scores_zero_and_a_bad_one_fails_for_good() {
        let with = json!({"lead": {}, "weights": {"ml": 1}, "components": {"ml": null}});
        assert_eq!(run(with).await.expect("a score")["total"], json!(0.0));
        let with = json!({"lead": {}, "weights": {"ml": 1}, "components": {"ml": 101}});
        let error = run(with).await.expect_err("out of range");
        assert!(!error.is_retryable());
        assert_eq!(
            error.message,
            "`with.components.ml`: must be between 0 and 100, found 101"
        );
    }

    #[test]
    fn weights_are_checked_at_load_time() {
        let with = |weights: Value| json!({"lead": {}, "components": all_components(), "weights": weights});
        let cases = [
            (
                json!({"demographic": 0.5, "ml": 0.4}),
                "weights",
                "the weights must add up to 1, found 0.9 (demographic 0.5 + ml 0.4)",
            ),
            (
                json!({"demographic": 0.6, "firmographic": 0.5}),
                "weights",
                "the weights must add up to 1, found 1.1 (demographic 0.6 + firmographic 0.5)",
            ),
            (
                json!({}),
                "weights",
                "the weights must add up to 1, found 0 ()",
            ),
            (
                json!({"demographic": 1.5, "ml": -0.5}),
                "weights.demographic",
                "must be between 0 and 1, found 1.5",
            ),
            (
                json!({"demographic": 1, "ml": -0.5}),
                "weights.ml",
                "must be between 0 and 1, found -0.5",
            ),
            (
                json!({"demographic": "half"}),
                "weights.demographic",
                "expected a number, found the string `half`",
            ),
            (
                json!({"intent": 1}),
                "weights.intent",
                "unknown component `intent`; expected one of demographic, firmographic, behavioral, engagement, ml",
            ),
            (
                json!([0.25]),
                "weights",
                "expected a map of component weights, found a list",
            ),
        ];
        for (weights, path, message) in cases {
            let error = ScoreWeighted
                .check_config(&with(weights.clone()))
                .expect_err("bad weights");
            assert_eq!(
                (error.path.as_str(), error.message.as_str()),
                (path, message),
                "for {weights}"
            );
        }
        let tenths = json!({"demographic": 0.1, "firmographic": 0.2, "behavioral": 0.3, "engagement": 0.3, "ml": 0.1});
        assert_eq!(ScoreWeighted.check_config(&with(tenths)), Ok(()));
        assert_eq!(
            ScoreWeighted.check_config(&with(json!({"ml": "{{ w }}", "engagement": 0.9}))),
            Ok(())
        );
        assert_eq!(
            ScoreWeighted.check_config(&with(json!("{{ trigger.body.weights }}"))),
            Ok(())
        );
    }

    #[test]
    fn components_and_tiers_are_checked_at_load_time() {
        let base = |key: &str, value: Value| {
            let mut with =
                json!({"lead": "{{ nodes.enrich.output }}", "components": all_components()});
            with[key] = value;
            with
        };
        let mut only_two = all_components();
        only_two
            .as_object_mut()
            .expect("a map")
            .retain(|name, _| name == "demographic" || name == "ml");
        let cases = [
            (
                json!(["lead"]),
                "",
                "expected a map with the keys `lead` and `components`, found a list",
            ),
            (
                json!({"components": {}}),
                "lead",
                "missing required key `lead`",
            ),
            (
                json!({"lead": {}}),
                "components",
                "missing required key `components`",
            ),
            (
                base("threshold", json!(1)),
                "threshold",
                "unknown key `threshold`",
            ),
            (
                base("components", json!({"intent": 5})),
                "components.intent",
                "unknown component `intent`",
            ),
            (
                base("components", json!({"ml": "high"})),
                "components.ml",
                "expected a score from 0 to 100",
            ),
            (
                base("components", json!({"ml": [1]})),
                "components.ml",
                "expected a score from 0 to 100",
            ),
            (
                base("components", json!({"ml": {"score": 1}})),
                "components.ml",
                "expected a score from 0 to 100",
            ),
            (
                base("components", json!({"ml": 120})),
                "components.ml",
                "must be between 0 and 100",
            ),
            (
                base("components", json!({"ml": {"rules": [], "field": "x"}})),
                "components.ml.field",
                "unknown key `field`",
            ),
            (
                base("components", json!({"ml": {"rules": {}}})),
                "components.ml.rules",
                "expected a list of rules",
            ),
            (
                base(
                    "components",
                    json!({"ml": {"rules": [{"field": "a", "op": "gte", "value": "x", "points": 1}]}}),
                ),
                "components.ml.rules[0].value",
                "expected a number",
            ),
            (
                base("components", json!({"ml": {"field": "a", "scale": 0}})),
                "components.ml.scale",
                "must be above 0",
            ),
            (
                base("components", json!({"ml": {"field": "a", "default": 101}})),
                "components.ml.default",
                "must be between 0 and 100",
            ),
            (
                base("components", json!({"ml": {"field": "a.", "default": 1}})),
                "components.ml.field",
                "is not a field path",
            ),
            (
                base("components", only_two),
                "components",
                "component `firmographic` weighs 0.25 but has no source",
            ),
            (
                base("tiers", json!({"hot": 40})),
                "tiers.hot",
                "`hot` (40) must not be below `warm` (50)",
            ),
            (
                base("tiers", json!({"warm": 90})),
                "tiers.warm",
                "`hot` (80) must not be below `warm` (90)",
            ),
            (
                base("tiers", json!({"hot": 101})),
                "tiers.hot",
                "must be between 0 and 100",
            ),
            (
                base("tiers", json!({"cold": 10})),
                "tiers.cold",
                "unknown key `cold`",
            ),
            (
                base("lead", json!([1])),
                "lead",
                "expected a map of lead fields",
            ),
        ];
        for (with, path, message) in cases {
            let error = ScoreWeighted.check_config(&with).expect_err("a bad block");
            assert_eq!(error.path, path, "for {with}");
            assert!(
                error.message.contains(message),
                "for {with}: {}",
                error.message
            );
        }
        let templated = base(
            "components",
            json!({"demographic": "{{ x }}", "firmographic": {"field": "{{ f }}"},
            "behavioral": {"rules": "{{ r }}"}, "engagement": 1, "ml": 2}),
        );
        assert_eq!(ScoreWeighted.check_config(&templated), Ok(()));
        assert_eq!(
            ScoreWeighted.check_config(&base("tiers", json!({"hot": "{{ h }}"}))),
            Ok(())
        );
    }
}
