//! The rule language of `score.rules` and `score.weighted`: a rule tests one field of the lead
//! and, when it matches, adds its points. See `docs/nodes.md` for the user's view.
//!
//! ```yaml
//! - { name: big company, field: company.size, op: gte, value: 200, points: 30 }
//! - { field: email.disposable, op: eq, value: true, points: -50 }
//! ```
//!
//! A missing field (absent or null) matches only `exists: false`, so that no rule gives points
//! for data the lead does not have. Text compares without regard to case, except in `matches`,
//! where the pattern decides (`(?i)` makes it case-insensitive).

use regex::{Regex, RegexBuilder};
use serde_json::{Value, json};

use super::config::{Fields, Phase, Read, at_index, describe, number, round2, text};
use crate::ConfigError;

/// The keys of one rule.
const KEYS: [&str; 5] = ["name", "field", "op", "value", "points"];

/// The operators, as written in `op:`.
const OPS: [&str; 10] = [
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists", "matches",
];

/// A compiled pattern larger than this is refused: patterns come from workflow files, and a
/// runaway one should fail at load time rather than eat a worker's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One rule: when `test` holds for the value at `field`, the lead gets `points`.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// The rule's `name`, or one made from its field, operator and value.
    label: String,
    field: FieldPath,
    test: Test,
    points: f64,
}

/// A dotted path into the lead (`company.size`, `tags.0`); a number indexes a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldPath {
    segments: Vec<String>,
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Value),
    Ne(Value),
    Compare(Ordering, f64),
    In(Vec<Value>),
    Contains(Value),
    Exists(bool),
    Matches(Regex),
}

/// The four numeric comparisons.
#[derive(Debug, Clone, Copy)]
enum Ordering {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// What a list of rules gave one lead.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tally {
    /// The sum of the matching rules' points, before clamping.
    pub(super) points: f64,
    /// `points` clamped to 0–100 and rounded to two decimals.
    pub(super) score: f64,
    /// `{index, name, points}` of each matching rule, in the order written.
    pub(super) matched: Vec<Value>,
}

impl FieldPath {
    /// Parses `company.size`; empty segments (`a..b`, a leading or trailing dot) are refused.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if text.trim().is_empty() || segments.iter().any(|segment| segment.is_empty()) {
            return Err(format!(
                "`{text}` is not a field path such as `company.size`"
            ));
        }
        Ok(Self { segments })
    }

    /// The value at this path in `lead`; `None` when any step is missing.
    pub(super) fn lookup<'a>(&self, lead: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(lead, |current, segment| match current {
                Value::Object(map) => map.get(segment),
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
                _ => None,
            })
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

/// A field path at `path`, or a pending template.
pub(super) fn read_field_path(phase: Phase, value: &Value, path: &str) -> Read<FieldPath> {
    let Some(text) = text(phase, value, path)? else {
        return Ok(None);
    };
    FieldPath::parse(text)
        .map(Some)
        .map_err(|message| ConfigError::new(path, message))
}

/// The lead the rules read: a map, or null (a skipped upstream node), which matches only
/// `exists: false` rules.
pub(super) fn read_lead(phase: Phase, value: &Value, path: &str) -> Read<Value> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    match value {
        Value::Object(_) | Value::Null => Ok(Some(value.clone())),
        other => Err(ConfigError::new(
            path,
            format!(
                "expected a map of lead fields, such as \"{{{{ nodes.enrich.output }}}}\", found {}",
                describe(other)
            ),
        )),
    }
}

/// A list of rules at `path`.
pub(super) fn read_rules(phase: Phase, value: &Value, path: &str) -> Read<Vec<Rule>> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let Value::Array(items) = value else {
        return Err(ConfigError::new(
            path,
            format!("expected a list of rules, found {}", describe(value)),
        ));
    };
    let mut rules = Vec::with_capacity(items.len());
    let mut pending = false;
    for (index, item) in items.iter().enumerate() {
        match read_rule(phase, item, &at_index(path, index))? {
            Some(rule) => rules.push(rule),
            None => pending = true,
        }
    }
    Ok((!pending).then_some(rules))
}

/// One rule at `path`: `{name?, field, op, value, points}`.
fn read_rule(phase: Phase, value: &Value, path: &str) -> Read<Rule> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let fields = Fields::read(
        value,
        path,
        "a rule such as `{field: company.size, op: gte, value: 200, points: 30}`",
    )?;
    fields.only(&KEYS)?;
    let name = match fields.optional("name") {
        Some(name) => text(phase, name, &fields.path("name"))?.map(str::to_owned),
        None => Some(String::new()),
    };
    let field = read_field_path(phase, fields.required("field")?, &fields.path("field"))?;
    let op_path = fields.path("op");
    let op = text(phase, fields.required("op")?, &op_path)?;
    let op = op.map(|op| parse_op(op, &op_path)).transpose()?;
    let points = fields.required("points")?;
    let points = if phase.is_pending(points) {
        None
    } else {
        Some(number(points, &fields.path("points"))?)
    };
    let value_path = fields.path("value");
    let test = match (op, fields.optional("value")) {
        // The value can only be checked against a known operator.
        (None, _) => None,
        (Some("exists"), None) => Some(Test::Exists(true)),
        (Some(_), None) => {
            return Err(ConfigError::new(value_path, "missing required key `value`"));
        }
        (Some(op), Some(value)) => read_test(phase, op, value, &value_path)?,
    };
    let (Some(name), Some(field), Some(test), Some(points)) = (name, field, test, points) else {
        return Ok(None);
    };
    let label = if name.is_empty() {
        format!("{field} {}", test.describe())
    } else {
        name
    };
    Ok(Some(Rule {
        label,
        field,
        test,
        points,
    }))
}

/// The operator as written, if it is one of [`OPS`].
fn parse_op<'a>(op: &'a str, path: &str) -> Result<&'a str, ConfigError> {
    if OPS.contains(&op) {
        Ok(op)
    } else {
        Err(ConfigError::new(
            path,
            format!(
                "unknown operator `{op}`; expected one of {}",
                OPS.join(", ")
            ),
        ))
    }
}

/// The test of operator `op` with its `value`.
fn read_test(phase: Phase, op: &str, value: &Value, path: &str) -> Read<Test> {
    if phase.is_pending(value) {
        return Ok(None);
    }
    let test = match op {
        "eq" => Test::Eq(scalar(value, path)?),
        "ne" => Test::Ne(scalar(value, path)?),
        "contains" => Test::Contains(scalar(value, path)?),
        "gt" => Test::Compare(Ordering::Greater, number(value, path)?),
        "gte" => Test::Compare(Ordering::GreaterOrEqual, number(value, path)?),
        "lt" => Test::Compare(Ordering::Less, number(value, path)?),
        "lte" => Test::Compare(Ordering::LessOrEqual, number(value, path)?),
        "exists" => match value {
            Value::Bool(flag) => Test::Exists(*flag),
            other => {
                return Err(ConfigError::new(
                    path,
                    format!("expected true or false, found {}", describe(other)),
                ));
            }
        },
        "in" => {
            let Value::Array(items) = value else {
                return Err(ConfigError::new(
                    path,
                    format!("expected a list of values, found {}", describe(value)),
                ));
            };
            let mut values = Vec::with_capacity(items.len());
            let mut pending = false;
            for (index, item) in items.iter().enumerate() {
                if phase.is_pending(item) {
                    pending = true;
                } else {
                    values.push(scalar(item, &at_index(path, index))?);
                }
            }
            if pending {
                return Ok(None);
            }
            Test::In(values)
        }
        "matches" => {
            let Value::String(pattern) = value else {
                return Err(ConfigError::new(
                    path,
                    format!("expected a regular expression, found {}", describe(value)),
                ));
            };
            Test::Matches(compile(pattern).map_err(|message| ConfigError::new(path, message))?)
        }
        // `parse_op` lets only the operators above through.
        other => {
            return Err(ConfigError::new(
                path,
                format!("unknown operator `{other}`"),
            ));
        }
    };
    Ok(Some(test))
}

/// A string, number or boolean to compare with.
fn scalar(value: &Value, path: &str) -> Result<Value, ConfigError> {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(value.clone()),
        other => Err(ConfigError::new(
            path,
            format!(
                "expected a string, number or boolean, found {} (use `op: exists` to test for a \
                 missing field)",
                describe(other)
            ),
        )),
    }
}

fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| {
            let detail = error.to_string();
            // regex quotes the pattern over several lines; its last line says what is wrong.
            let last = detail.lines().last().unwrap_or_default().trim();
            let detail = last.strip_prefix("error: ").unwrap_or(last);
            format!("`{pattern}` is not a regular expression: {detail}")
        })
}

impl Test {
    /// `gte 200`, `in ["de","at"]`, `exists`: for labels of unnamed rules.
    fn describe(&self) -> String {
        match self {
            Test::Eq(value) => format!("eq {value}"),
            Test::Ne(value) => format!("ne {value}"),
            Test::Compare(ordering, number) => format!("{} {number}", ordering.as_str()),
            Test::In(values) => format!("in {}", Value::Array(values.clone())),
            Test::Contains(value) => format!("contains {value}"),
            Test::Exists(true) => "exists".to_owned(),
            Test::Exists(false) => "does not exist".to_owned(),
            Test::Matches(regex) => format!("matches {}", Value::from(regex.as_str())),
        }
    }

    /// Whether the test holds for `found`, the field's value (`None` when missing).
    fn holds(&self, found: Option<&Value>) -> bool {
        let found = found.filter(|value| !value.is_null());
        let Some(found) = found else {
            return matches!(self, Test::Exists(false));
        };
        match self {
            Test::Exists(wanted) => *wanted,
            Test::Eq(expected) => same(found, expected),
            Test::Ne(expected) => !same(found, expected),
            Test::Compare(ordering, limit) => {
                as_number(found).is_some_and(|number| ordering.holds(number, *limit))
            }
            Test::In(options) => match found {
                Value::Array(items) => items.iter().any(|item| member(item, options)),
                single => member(single, options),
            },
            Test::Contains(needle) => match found {
                Value::Array(items) => items.iter().any(|item| same(item, needle)),
                Value::String(text) => {
                    let needle = as_text(needle).unwrap_or_default().to_lowercase();
                    text.to_lowercase().contains(&needle)
                }
                _ => false,
            },
            Test::Matches(regex) => as_text(found).is_some_and(|text| regex.is_match(&text)),
        }
    }
}

impl Ordering {
    fn as_str(self) -> &'static str {
        match self {
            Ordering::Greater => "gt",
            Ordering::GreaterOrEqual => "gte",
            Ordering::Less => "lt",
            Ordering::LessOrEqual => "lte",
        }
    }

    fn holds(self, number: f64, limit: f64) -> bool {
        match self {
            Ordering::Greater => number > limit,
            Ordering::GreaterOrEqual => number >= limit,
            Ordering::Less => number < limit,
            Ordering::LessOrEqual => number <= limit,
        }
    }
}

fn member(value: &Value, options: &[Value]) -> bool {
    options.iter().any(|option| same(value, option))
}

/// Equality as a lead's messy data needs it: numbers by value, also when one side is numeric
/// text (`"250"` equals `250`); text without regard to case; booleans as they are.
fn same(found: &Value, expected: &Value) -> bool {
    match (found, expected) {
        (Value::String(left), Value::String(right)) => left.to_lowercase() == right.to_lowercase(),
        (Value::Number(_), _) | (_, Value::Number(_)) => {
            matches!((as_number(found), as_number(expected)), (Some(left), Some(right)) if left == right)
        }
        (Value::Bool(left), Value::Bool(right)) => left == right,
        _ => false,
    }
}

/// A number, or text that reads as one (`" 250 "`).
pub(super) fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|number| number.is_finite())
}

/// Text, or a number written as text.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Applies `rules` to `lead`: the points of every matching rule, summed, then clamped to 0–100.
pub(super) fn tally(rules: &[Rule], lead: &Value) -> Tally {
    let mut points = 0.0;
    let mut matched = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if rule.test.holds(rule.field.lookup(lead)) {
            points += rule.points;
            matched.push(json!({"index": index, "name": rule.label, "points": rule.points}));
        }
    }
    Tally {
        points: round2(points),
        score: round2(points.clamp(0.0, 100.0)),
        matched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(with: Value) -> Rule {
        read_rule(Phase::Run, &with, "rules[0]")
            .expect("a valid rule")
            .expect("a rendered rule")
    }

    /// Whether the rule `with` (given points of 1 when it has none) matches `lead`.
    fn holds(mut with: Value, lead: Value) -> bool {
        if with.get("points").is_none() {
            with["points"] = json!(1);
        }
        let rule = rule(with);
        rule.test.holds(rule.field.lookup(&lead))
    }

    #[test]
    fn operators_match_as_documented() {
        let lead = json!({
            "email": "Ada@Example.com",
            "country": "DE",
            "company": {"size": 250, "revenue": "1000000", "industry": "Software"},
            "tags": ["webinar", "Pricing"],
            "phone": null,
            "ml_score": 0.87,
            "free_mail": false,
        });
        let cases = [
            (json!({"field": "country", "op": "eq", "value": "de"}), true),
            (
                json!({"field": "country", "op": "eq", "value": "AT"}),
                false,
            ),
            (json!({"field": "country", "op": "ne", "value": "AT"}), true),
            (
                json!({"field": "country", "op": "ne", "value": "de"}),
                false,
            ),
            (
                json!({"field": "company.size", "op": "eq", "value": 250}),
                true,
            ),
            (
                json!({"field": "company.size", "op": "eq", "value": "250"}),
                true,
            ),
            (
                json!({"field": "company.size", "op": "gte", "value": 250}),
                true,
            ),
            (
                json!({"field": "company.size", "op": "gt", "value": 250}),
                false,
            ),
            (
                json!({"field": "company.size", "op": "lt", "value": 251}),
                true,
            ),
            (
                json!({"field": "company.size", "op": "lte", "value": 249.5}),
                false,
            ),
            (
                json!({"field": "company.revenue", "op": "gt", "value": 999_999}),
                true,
            ),
            (
                json!({"field": "company.industry", "op": "gt", "value": 1}),
                false,
            ),
            (
                json!({"field": "country", "op": "in", "value": ["at", "de", "ch"]}),
                true,
            ),
            (
                json!({"field": "country", "op": "in", "value": ["fr"]}),
                false,
            ),
            (
                json!({"field": "tags", "op": "in", "value": ["pricing", "demo"]}),
                true,
            ),
            (
                json!({"field": "tags", "op": "contains", "value": "WEBINAR"}),
                true,
            ),
            (
                json!({"field": "tags", "op": "contains", "value": "demo"}),
                false,
            ),
            (
                json!({"field": "company.industry", "op": "contains", "value": "soft"}),
                true,
            ),
            (
                json!({"field": "company.size", "op": "contains", "value": 2}),
                false,
            ),
            (
                json!({"field": "email", "op": "matches", "value": "@example\\.com$"}),
                false,
            ),
            (
                json!({"field": "email", "op": "matches", "value": "(?i)@example\\.com$"}),
                true,
            ),
            (
                json!({"field": "company.size", "op": "matches", "value": "^2\\d\\d$"}),
                true,
            ),
            (
                json!({"field": "tags.1", "op": "eq", "value": "pricing"}),
                true,
            ),
            (
                json!({"field": "free_mail", "op": "eq", "value": false}),
                true,
            ),
            (
                json!({"field": "free_mail", "op": "eq", "value": "false"}),
                false,
            ),
            (
                json!({"field": "ml_score", "op": "gte", "value": 0.5}),
                true,
            ),
            (json!({"field": "company", "op": "exists"}), true),
            (
                json!({"field": "company", "op": "exists", "value": false}),
                false,
            ),
        ];
        for (with, expected) in cases {
            assert_eq!(holds(with.clone(), lead.clone()), expected, "for {with}");
        }
    }

    #[test]
    fn missing_fields_match_only_exists_false() {
        let lead = json!({"phone": null, "company": {"size": 10}});
        for field in [
            "phone",
            "nope",
            "company.nope",
            "company.size.deeper",
            "tags.0",
        ] {
            let cases = [
                (json!({"field": field, "op": "exists"}), false),
                (
                    json!({"field": field, "op": "exists", "value": false}),
                    true,
                ),
                (json!({"field": field, "op": "ne", "value": "x"}), false),
                (json!({"field": field, "op": "eq", "value": "x"}), false),
                (json!({"field": field, "op": "lt", "value": 100}), false),
                (json!({"field": field, "op": "in", "value": ["x"]}), false),
                (
                    json!({"field": field, "op": "contains", "value": "x"}),
                    false,
                ),
                (
                    json!({"field": field, "op": "matches", "value": ".*"}),
                    false,
                ),
            ];
            for (with, expected) in cases {
                assert_eq!(holds(with.clone(), lead.clone()), expected, "for {with}");
            }
        }
    }

    #[test]
    fn tally_sums_clamps_and_lists_what_matched() {
        let rules = read_rules(
            Phase::Run,
            &json!([
                {"name": "big", "field": "size", "op": "gte", "value": 200, "points": 70},
                {"field": "country", "op": "eq", "value": "DE", "points": 45.5},
                {"field": "size", "op": "lt", "value": 10, "points": 10},
                {"field": "disposable", "op": "eq", "value": true, "points": -30},
            ]),
            "rules",
        )
        .expect("valid rules")
        .expect("rendered rules");
        let tally = tally(&rules, &json!({"size": 500, "country": "de"}));
        assert_eq!(tally.points, 115.5);
        assert_eq!(tally.score, 100.0);
        assert_eq!(
            tally.matched,
            [
                json!({"index": 0, "name": "big", "points": 70.0}),
                json!({"index": 1, "name": "country eq \"DE\"", "points": 45.5}),
            ]
        );
        let negative = super::tally(&rules, &json!({"size": 5, "disposable": true}));
        assert_eq!((negative.points, negative.score), (-20.0, 0.0));
        let none = super::tally(&rules, &json!({}));
        assert_eq!((none.points, none.score, none.matched.len()), (0.0, 0.0, 0));
    }

    #[test]
    fn labels_describe_unnamed_rules() {
        let label = |with: Value| rule(with).label;
        let base =
            |op: &str, value: Value| json!({"field": "a.b", "op": op, "value": value, "points": 1});
        assert_eq!(label(base("gte", json!(200))), "a.b gte 200");
        assert_eq!(label(base("in", json!(["x", 1]))), "a.b in [\"x\",1]");
        assert_eq!(label(base("exists", json!(false))), "a.b does not exist");
        assert_eq!(label(base("matches", json!("^a"))), "a.b matches \"^a\"");
        assert_eq!(
            label(json!({"field": "a", "op": "exists", "points": 1})),
            "a exists"
        );
    }

    #[test]
    fn bad_rules_are_refused_at_their_path() {
        let cases = [
            (json!("text"), "rules[0]", "expected a rule such as"),
            (
                json!({"field": "a", "op": "eq", "value": 1}),
                "rules[0].points",
                "missing required key `points`",
            ),
            (
                json!({"op": "eq", "value": 1, "points": 1}),
                "rules[0].field",
                "missing required key `field`",
            ),
            (
                json!({"field": "a", "value": 1, "points": 1}),
                "rules[0].op",
                "missing required key `op`",
            ),
            (
                json!({"field": "a", "op": "eq", "points": 1}),
                "rules[0].value",
                "missing required key `value`",
            ),
            (
                json!({"field": "a", "op": "eq", "value": 1, "points": 1, "weight": 2}),
                "rules[0].weight",
                "unknown key `weight`",
            ),
            (
                json!({"field": "a", "op": "like", "value": 1, "points": 1}),
                "rules[0].op",
                "unknown operator `like`",
            ),
            (
                json!({"field": "a..b", "op": "eq", "value": 1, "points": 1}),
                "rules[0].field",
                "is not a field path",
            ),
            (
                json!({"field": "", "op": "eq", "value": 1, "points": 1}),
                "rules[0].field",
                "is not a field path",
            ),
            (
                json!({"field": 3, "op": "eq", "value": 1, "points": 1}),
                "rules[0].field",
                "expected a string",
            ),
            (
                json!({"field": "a", "op": "gte", "value": "big", "points": 1}),
                "rules[0].value",
                "expected a number",
            ),
            (
                json!({"field": "a", "op": "eq", "value": null, "points": 1}),
                "rules[0].value",
                "use `op: exists`",
            ),
            (
                json!({"field": "a", "op": "eq", "value": [1], "points": 1}),
                "rules[0].value",
                "expected a string, number or boolean",
            ),
            (
                json!({"field": "a", "op": "in", "value": "x", "points": 1}),
                "rules[0].value",
                "expected a list",
            ),
            (
                json!({"field": "a", "op": "in", "value": ["x", {}], "points": 1}),
                "rules[0].value[1]",
                "expected a string",
            ),
            (
                json!({"field": "a", "op": "exists", "value": "yes", "points": 1}),
                "rules[0].value",
                "expected true or false",
            ),
            (
                json!({"field": "a", "op": "matches", "value": "(", "points": 1}),
                "rules[0].value",
                "is not a regular expression",
            ),
            (
                json!({"field": "a", "op": "matches", "value": 1, "points": 1}),
                "rules[0].value",
                "expected a regular expression",
            ),
            (
                json!({"field": "a", "op": "eq", "value": 1, "points": "ten"}),
                "rules[0].points",
                "expected a number",
            ),
            (
                json!({"field": "a", "op": "eq", "value": 1, "points": 1, "name": 2}),
                "rules[0].name",
                "expected a string",
            ),
        ];
        for (with, path, message) in cases {
            let error = read_rule(Phase::Load, &with, "rules[0]").expect_err("an invalid rule");
            assert_eq!(error.path, path, "for {with}");
            assert!(
                error.message.contains(message),
                "for {with}: {}",
                error.message
            );
        }
        let error = read_rules(Phase::Load, &json!({"a": 1}), "rules").expect_err("not a list");
        assert_eq!(error.message, "expected a list of rules, found a map");
    }

    #[test]
    fn templates_are_accepted_where_values_appear_at_load_time() {
        let pending = [
            json!("{{ trigger.body.rules }}"),
            json!(["{{ trigger.body.rule }}"]),
            json!([{"field": "{{ f }}", "op": "eq", "value": 1, "points": 1}]),
            json!([{"field": "a", "op": "{{ op }}", "value": 1, "points": 1}]),
            json!([{"field": "a", "op": "gte", "value": "{{ min }}", "points": 1}]),
            json!([{"field": "a", "op": "in", "value": ["x", "{{ y }}"], "points": 1}]),
            json!([{"field": "a", "op": "eq", "value": 1, "points": "{{ p }}"}]),
            json!([{"field": "a", "op": "eq", "value": 1, "points": 1, "name": "{{ n }}"}]),
        ];
        for rules in pending {
            assert_eq!(
                read_rules(Phase::Load, &rules, "rules").map(|_| ()),
                Ok(()),
                "for {rules}"
            );
        }
        // A pending operator cannot hide a bad rule elsewhere.
        let bad = json!([{"field": "a", "op": "{{ op }}", "value": 1, "points": "x"}]);
        assert!(read_rules(Phase::Load, &bad, "rules").is_err());
        // Once rendered, text that looks like a template is just text.
        let rendered = json!([{"field": "a", "op": "eq", "value": "{{ x }}", "points": 1}]);
        let rules = read_rules(Phase::Run, &rendered, "rules")
            .expect("valid")
            .expect("rendered");
        assert_eq!(tally(&rules, &json!({"a": "{{ X }}"})).score, 1.0);
    }
}
