//! Templating (minijinja): syntax checks at load time, rendering of `with`, `foreach`, `output`
//! and webhook secrets, and `if:` conditions at run time.
//!
//! A string that is exactly one `{{ expr }}` keeps the JSON type of what `expr` evaluates to;
//! any other string with `{{`/`{%` renders to a string; a string without either is returned as
//! it is without touching minijinja. Undefined names and attributes are errors (strict mode).
//!
//! Every render runs under [`Limits`]: a fuel budget, a cap on its output, safe versions of
//! the builtins an argument can make expensive, and a check at load of the constants minijinja
//! folds while compiling (see `analysis`).

mod analysis;
mod limits;
mod operators;

pub use limits::Limits;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, Template, UndefinedBehavior};
use serde_json::Value;

use self::limits::CappedWriter;

/// A template or expression that does not parse or does not evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("in `{expression}`: {message}")]
pub struct TemplateError {
    /// The template text as written (the whole string, or the `if:` expression).
    pub expression: String,
    pub message: String,
}

/// The template engine shared by the loader and every node attempt; cheap to clone.
///
/// Compiled templates are cached by their source text in the environment itself: its loader
/// treats a template's name as its source, so each distinct text is compiled once and reused
/// from every thread. Expressions go through the same cache as `{% set %}` templates, because a
/// compiled `minijinja::Expression` borrows its environment and so cannot be stored beside it.
///
/// The scope holds every finished node's output, so converting all of it for each template
/// would cost more than the rendering. Each template is given only the parts it reads (see
/// [`Reads`]), which is exact and much cheaper.
#[derive(Clone)]
pub struct Templates {
    shared: Arc<Shared>,
}

struct Shared {
    environment: Environment<'static>,
    limits: Limits,
    /// What each template source reads from the scope, worked out once per source.
    reads: RwLock<HashMap<String, Arc<Reads>>>,
}

/// The variable a wrapped expression assigns; the leading underscores keep it out of the way
/// of scope names.
const RESULT: &str = "__enrichflow_result";

/// Booleans and null inside text print as JSON spells them (`true`, `null`), not as Python
/// does (`True`, `None`): users of this engine read and write JSON.
fn json_spelling(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    let spelled = match value.kind() {
        minijinja::value::ValueKind::Bool => Some(if value.is_true() { "true" } else { "false" }),
        minijinja::value::ValueKind::None => Some("null"),
        _ => None,
    };
    match spelled {
        Some(text) => out
            .write_str(text)
            .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "cannot write")),
        None => minijinja::escape_formatter(out, state, value),
    }
}

impl Templates {
    /// Templates under the default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        // Names are source texts, so a text ending in `.html` must not switch on HTML escaping.
        environment.set_auto_escape_callback(|_| AutoEscape::None);
        environment.set_formatter(json_spelling);
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.keep_trailing_newline(true);
        if let Ok(syntax) = syntax.build() {
            environment.set_syntax(syntax);
        }
        // `include`/`import` are compiled out (no `multi_template` feature), so the loader is
        // only ever asked for texts this module passes to `get_template`.
        // Checked here rather than in `check_template` alone, because a run also compiles
        // texts its revision was loaded with long ago, and the `if:` wrappers.
        let max_constant_bytes = limits.max_constant_bytes;
        environment.set_loader(move |name| compilable(name, max_constant_bytes).map(Some));
        limits::install(&mut environment, limits);
        operators::install(&mut environment, limits.max_output_bytes);
        Self {
            shared: Arc::new(Shared {
                environment,
                limits,
                reads: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The limits every render runs under.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Checks the syntax of a string that may contain template syntax.
    pub fn check_template(&self, text: &str) -> Result<(), TemplateError> {
        if !has_template_syntax(text) {
            return Ok(());
        }
        match single_expression(text) {
            Some(expression) => self.compile_expression(text, expression),
            None => self.template(text, text).map(drop),
        }
    }

    /// Checks the syntax of a bare expression (`if:`).
    pub fn check_expression(&self, expr: &str) -> Result<(), TemplateError> {
        self.compile_expression(expr, expr)
    }

    /// The node ids a text reads as `nodes.<id>`, found by static analysis, for load-time checks.
    /// A text that does not compile reads none here; its syntax error is reported by
    /// [`Templates::check_template`].
    pub fn node_references(&self, text: &str) -> Vec<String> {
        if !has_template_syntax(text) {
            return Vec::new();
        }
        match single_expression(text) {
            Some(expression) => self.expression_node_references(expression),
            None => self.references_in(text),
        }
    }

    /// The node ids a bare expression (`if:`) reads as `nodes.<id>`.
    pub fn expression_node_references(&self, expression: &str) -> Vec<String> {
        // The same wrapper `evaluate` compiles, so the compiled template is reused at run time.
        self.references_in(&format!("{{% set {RESULT} = ({expression}) %}}"))
    }

    fn references_in(&self, source: &str) -> Vec<String> {
        let Ok(template) = self.shared.environment.get_template(source) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = read_paths(&template, self.shared.limits)
            .into_iter()
            .filter_map(|path| {
                let mut names = path.split('.');
                match (names.next(), names.next()) {
                    (Some("nodes"), Some(id)) => Some(id.to_owned()),
                    _ => None,
                }
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Renders every string inside `value` (map keys are left alone) with `scope` in view.
    pub fn render_value(&self, value: &Value, scope: &Value) -> Result<Value, TemplateError> {
        match value {
            Value::String(text) if has_template_syntax(text) => self.render_string(text, scope),
            Value::Array(items) => items
                .iter()
                .map(|item| self.render_value(item, scope))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(key, item)| Ok((key.clone(), self.render_value(item, scope)?)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    /// Evaluates a bare expression and applies minijinja's truthiness.
    pub fn eval_condition(&self, expr: &str, scope: &Value) -> Result<bool, TemplateError> {
        Ok(self.evaluate(expr, expr, scope)?.is_true())
    }

    fn render_string(&self, text: &str, scope: &Value) -> Result<Value, TemplateError> {
        if let Some(expression) = single_expression(text) {
            let value = self.evaluate(text, expression, scope)?;
            return serde_json::to_value(&value).map_err(|error| TemplateError {
                expression: text.to_owned(),
                message: format!("the result is not JSON: {error}"),
            });
        }
        let template = self.template(text, text)?;
        let mut output = CappedWriter::new(self.shared.limits.max_output_bytes);
        let rendered =
            template.render_captured_to(self.context(text, &template, scope), &mut output);
        if output.exceeded {
            return Err(self.output_too_large(text));
        }
        rendered.map_err(|error| self.error(text, &error))?;
        String::from_utf8(output.bytes)
            .map(Value::String)
            .map_err(|_| TemplateError {
                expression: text.to_owned(),
                message: "the output is not UTF-8".to_owned(),
            })
    }

    fn output_too_large(&self, text: &str) -> TemplateError {
        TemplateError {
            expression: text.to_owned(),
            message: format!(
                "the output is larger than the template output limit of {} bytes",
                self.shared.limits.max_output_bytes
            ),
        }
    }

    /// The error without minijinja's `(in <name>:<line>)` suffix (the name is the source text,
    /// which [`TemplateError::expression`] already carries), and running out of fuel said in
    /// the engine's words.
    fn error(&self, text: &str, error: &minijinja::Error) -> TemplateError {
        if error.kind() == minijinja::ErrorKind::OutOfFuel {
            return TemplateError {
                expression: text.to_owned(),
                message: format!(
                    "the template exhausted its budget of {} instructions (template fuel)",
                    self.shared.limits.fuel
                ),
            };
        }
        template_error(text, error)
    }

    /// Evaluates `expression`; errors name `text` (what the user wrote).
    fn evaluate(
        &self,
        text: &str,
        expression: &str,
        scope: &Value,
    ) -> Result<minijinja::Value, TemplateError> {
        let source = format!("{{% set {RESULT} = ({expression}) %}}");
        let template = match self.shared.environment.get_template(&source) {
            Ok(template) => template,
            // The wrapper's own syntax error would be confusing; report the expression's.
            Err(error) => {
                self.compile_expression(text, expression)?;
                return Err(template_error(text, &error));
            }
        };
        let captured = template
            .render_captured(self.context(&source, &template, scope))
            .map_err(|error| self.error(text, &error))?;
        let max = self.shared.limits.max_output_bytes;
        match captured.state().lookup(RESULT) {
            Some(value) if limits::approximate_size(&value, max) > max => {
                Err(self.output_too_large(text))
            }
            Some(value) if !value.is_undefined() => Ok(value),
            // Strict mode lets a bare undefined through an assignment; it is still an error.
            _ => Err(TemplateError {
                expression: text.to_owned(),
                message: format!("undefined value: `{expression}` is undefined"),
            }),
        }
    }

    fn template(&self, source: &str, text: &str) -> Result<Template<'_, '_>, TemplateError> {
        self.shared
            .environment
            .get_template(source)
            .map_err(|error| template_error(text, &error))
    }

    /// The parts of `scope` that the template compiled from `source` reads.
    fn context(
        &self,
        source: &str,
        template: &Template<'_, '_>,
        scope: &Value,
    ) -> minijinja::Value {
        let cached = self
            .shared
            .reads
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
            .cloned();
        let reads = cached.unwrap_or_else(|| {
            let reads = Arc::new(Reads::of(template, self.shared.limits));
            let mut all = self.shared.reads.write().unwrap_or_else(|e| e.into_inner());
            all.entry(source.to_owned()).or_insert(reads).clone()
        });
        reads.context(scope)
    }

    fn compile_expression(&self, text: &str, expression: &str) -> Result<(), TemplateError> {
        // `compile_expression` folds constants without going through the loader's check.
        analysis::expression(expression, self.shared.limits.max_constant_bytes)
            .map_err(|too_large| template_error(text, &constant_too_large(&too_large)))?;
        self.shared
            .environment
            .compile_expression(expression)
            .map(drop)
            .map_err(|error| template_error(text, &error))
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

/// The scope paths a template reads, from minijinja's static analysis: `nodes.a.output.tier`
/// is recorded as such, a dynamic access (`nodes[name]`, `nodes | items`) as `nodes`. Each path
/// is kept without its last name, so `nodes.a.output` is handed over whole: a method called on
/// it (`.items()`) or a test (`is defined`) then sees exactly what the full scope would show.
/// Intermediate maps (`nodes`) hold only the keys read through them, which only static
/// attribute access can reach, since anything else would have recorded the shorter path.
struct Reads {
    paths: Vec<Vec<String>>,
}

impl Reads {
    fn of(template: &Template<'_, '_>, limits: Limits) -> Self {
        let paths = read_paths(template, limits)
            .into_iter()
            .map(|path| {
                let mut names: Vec<String> = path.split('.').map(str::to_owned).collect();
                if names.len() > 1 {
                    names.pop();
                }
                names
            })
            .collect();
        Self { paths }
    }

    fn context(&self, scope: &Value) -> minijinja::Value {
        let paths: Vec<&[String]> = self.paths.iter().map(Vec::as_slice).collect();
        part(scope, &paths)
    }
}

/// The dotted scope paths a template reads: minijinja's analysis, plus what it misses, the
/// values that are sliced (`trigger.body.name[1:]`).
fn read_paths(template: &Template<'_, '_>, limits: Limits) -> Vec<String> {
    let mut paths: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    if let Ok(findings) = analysis::template(template.source(), limits.max_constant_bytes) {
        paths.extend(findings.slice_paths);
    }
    paths
}

/// What minijinja compiles for the text `source`: refused when a constant would fold into
/// too much, with `*` and `~` turned into their checked calls.
fn compilable(source: &str, max_constant_bytes: u64) -> Result<String, minijinja::Error> {
    let findings = analysis::template(source, max_constant_bytes)
        .map_err(|too_large| constant_too_large(&too_large))?;
    if findings.operators.len() > operators::MAX_OPERATORS {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!(
                "the template uses `*` and `~` {} times, more than the limit of {}",
                findings.operators.len(),
                operators::MAX_OPERATORS
            ),
        ));
    }
    Ok(operators::rewrite(source, &findings.operators))
}

/// The load error of a constant expression too large to fold.
fn constant_too_large(too_large: &analysis::TooLarge) -> minijinja::Error {
    minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!(
            "a constant expression would build {} bytes when compiled, more than the limit of {} bytes",
            too_large.bytes, too_large.limit
        ),
    )
}

/// `value` narrowed to `paths` (relative to it); whole when a path ends here.
fn part(value: &Value, paths: &[&[String]]) -> minijinja::Value {
    let Value::Object(map) = value else {
        return minijinja::Value::from(Serde(value));
    };
    if paths.iter().any(|path| path.is_empty()) {
        return minijinja::Value::from(Serde(value));
    }
    let mut children: HashMap<&str, Vec<&[String]>> = HashMap::new();
    for path in paths {
        children
            .entry(path[0].as_str())
            .or_default()
            .push(&path[1..]);
    }
    minijinja::Value::from_pairs(children.into_iter().filter_map(|(key, rest)| {
        // A name the scope lacks stays undefined (or resolves to a global such as `range`).
        map.get(key)
            .map(|child| (key.to_owned(), part(child, &rest)))
    }))
}

fn has_template_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// The expression inside a string that is exactly one `{{ expr }}` (surrounding whitespace and
/// whitespace-control dashes allowed).
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    let nested = ["{{", "}}", "{%", "%}", "{#"]
        .iter()
        .any(|marker| inner.contains(marker));
    (!nested).then(|| inner.trim())
}

/// The error without minijinja's `(in <name>:<line>)` suffix: the name is the source text,
/// which [`TemplateError::expression`] already carries.
fn template_error(text: &str, error: &minijinja::Error) -> TemplateError {
    let message = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    TemplateError {
        expression: text.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope() -> Value {
        json!({
            "trigger": {"body": {"email": "ada@example.com", "n": 3, "contacts": [{"email": "a@b.c"}]}},
            "nodes": {
                "score": {"status": "succeeded", "output": {"tier": "hot", "total": 87.5}, "error": null},
                "skipped": {"status": "skipped", "output": null, "error": null}
            },
            "secrets": {"TOKEN": "s3cret"},
            "run": {"id": "r1"},
            "workflow": {"id": "wf"},
        })
    }

    fn render(value: Value) -> Result<Value, TemplateError> {
        Templates::new().render_value(&value, &scope())
    }

    #[test]
    fn node_references_are_found_statically() {
        let templates = Templates::new();
        let text = "{{ nodes.a.output.x }} and {% if nodes.b.status == 'ok' %}{{ nodes.a.error }}{% endif %}";
        assert_eq!(templates.node_references(text), ["a", "b"]);
        assert_eq!(templates.node_references("{{ nodes.c.output }}"), ["c"]);
        assert_eq!(
            templates.expression_node_references("nodes.d.output.tier == 'hot'"),
            ["d"]
        );
        assert!(
            templates
                .node_references("{{ trigger.body }} plain")
                .is_empty()
        );
        assert!(templates.node_references("no templates").is_empty());
        assert!(templates.node_references("{{ broken").is_empty());
    }

    #[test]
    fn booleans_and_null_in_text_are_spelled_as_json() {
        let rendered = render(json!(
            "vip={{ trigger.body.n > 2 }} none={{ nodes.skipped.output }}"
        ));
        assert_eq!(rendered.expect("renders"), json!("vip=true none=null"));
        let rendered = render(json!(
            "n={{ trigger.body.n }} tier={{ nodes.score.output.tier }}"
        ));
        assert_eq!(rendered.expect("renders"), json!("n=3 tier=hot"));
    }

    #[test]
    fn a_single_expression_keeps_its_json_type() {
        let templates = Templates::new();
        let cases = [
            (
                "{{ nodes.score.output }}",
                json!({"tier": "hot", "total": 87.5}),
            ),
            ("{{ trigger.body.contacts }}", json!([{"email": "a@b.c"}])),
            ("{{ trigger.body.n }}", json!(3)),
            ("{{ nodes.score.output.total }}", json!(87.5)),
            ("{{ trigger.body.n > 2 }}", json!(true)),
            ("{{ nodes.skipped.output }}", Value::Null),
            ("  {{ trigger.body.n + 1 }}\n", json!(4)),
            ("{{- trigger.body.n -}}", json!(3)),
        ];
        for (text, expected) in cases {
            let rendered = templates.render_value(&json!(text), &scope()).unwrap();
            assert_eq!(rendered, expected, "{text}");
        }
    }

    #[test]
    fn any_other_template_renders_to_a_string() {
        let cases = [
            (
                "Hot lead {{ trigger.body.email }}",
                "Hot lead ada@example.com",
            ),
            ("{{ trigger.body.n }}{{ trigger.body.n }}", "33"),
            (
                "{% if trigger.body.n > 2 %}big{% else %}small{% endif %}",
                "big",
            ),
            ("{{ run.id }}.html <b>", "r1.html <b>"),
            ("line {{ workflow.id }}\n", "line wf\n"),
        ];
        for (text, expected) in cases {
            assert_eq!(render(json!(text)).unwrap(), json!(expected), "{text}");
        }
    }

    #[test]
    fn walks_lists_and_maps_but_not_keys() {
        let value = json!({
            "{{ run.id }}": ["{{ trigger.body.n }}", "x", 1, null, true],
            "nested": {"email": "{{ trigger.body.email }}"},
        });
        let expected = json!({
            "{{ run.id }}": [3, "x", 1, null, true],
            "nested": {"email": "ada@example.com"},
        });
        assert_eq!(render(value).unwrap(), expected);
    }

    #[test]
    fn plain_strings_are_returned_unchanged() {
        let value = json!({"a": "no templates here", "b": "a } and { and #}", "c": 1.5});
        assert_eq!(render(value.clone()).unwrap(), value);
        // The fast path does not even look at the scope.
        let templates = Templates::new();
        assert_eq!(templates.render_value(&value, &Value::Null).unwrap(), value);
    }

    #[test]
    fn undefined_names_and_attributes_are_errors_naming_the_template() {
        let cases = [
            ("{{ nope }}", "undefined value: `nope` is undefined"),
            ("{{ nope ~ 'x' }}", "undefined value: `nope` is undefined"),
            (
                "{{ 'x' ~ trigger.body.missing }}",
                "undefined value: `trigger.body.missing` is undefined",
            ),
            (
                "{{ trigger.body.missing * 2 }}",
                "undefined value: `trigger.body.missing` is undefined",
            ),
            (
                "{{ trigger.body.missing }}",
                "undefined value: `trigger.body.missing` is undefined",
            ),
            (
                "Hi {{ trigger.body.missing }}",
                "undefined value: `trigger.body.missing` is undefined",
            ),
            (
                "{{ nodes.skipped.output.tier }}",
                "undefined value: `nodes.skipped.output.tier` is undefined",
            ),
        ];
        for (text, message) in cases {
            let error = render(json!({"deep": [text]})).unwrap_err();
            assert_eq!(error.expression, text);
            assert_eq!(error.message, message, "{text}");
        }
    }

    #[test]
    fn conditions_use_truthiness() {
        let templates = Templates::new();
        let cases = [
            ("nodes.score.output.tier == \"hot\"", true),
            ("nodes.score.output.tier == 'cold'", false),
            ("trigger.body.contacts", true),
            ("nodes.skipped.output", false),
            ("nodes.skipped.status == 'skipped' and trigger.body.n", true),
            ("trigger.body.missing is defined", false),
            ("0", false),
            ("''", false),
        ];
        for (expr, expected) in cases {
            assert_eq!(
                templates.eval_condition(expr, &scope()).unwrap(),
                expected,
                "{expr}"
            );
        }
        let error = templates.eval_condition("nodes.skipped.output.tier == 'hot'", &scope());
        assert_eq!(
            error.unwrap_err().to_string(),
            "in `nodes.skipped.output.tier == 'hot'`: undefined value: `nodes.skipped.output.tier` is undefined"
        );
        let error = templates.eval_condition("missing", &scope()).unwrap_err();
        assert_eq!(error.message, "undefined value: `missing` is undefined");
    }

    #[test]
    fn syntax_is_checked_without_a_scope() {
        let templates = Templates::new();
        assert!(templates.check_template("plain {text}").is_ok());
        assert!(templates.check_template("{{ nodes.a.output }}").is_ok());
        assert!(
            templates
                .check_template("Hi {{ x }} {% if y %}!{% endif %}")
                .is_ok()
        );
        let error = templates.check_template("Hi {{ x").unwrap_err();
        assert_eq!(error.expression, "Hi {{ x");
        assert_eq!(
            error.message,
            "syntax error: unexpected end of input, expected end of variable block"
        );
        let error = templates.check_template("{{ 1 + }}").unwrap_err();
        assert_eq!(
            error.message,
            "syntax error: unexpected end of input, expected expression"
        );
        assert!(templates.check_template("{% include 'other' %}").is_err());
        assert!(templates.check_expression("a.b == 'x' and c").is_ok());
        let error = templates.check_expression("a ==").unwrap_err();
        assert_eq!(
            error.to_string(),
            "in `a ==`: syntax error: unexpected end of input, expected expression"
        );
        assert!(templates.check_expression("a }} {{ b").is_err());
    }

    #[test]
    fn block_delimiters_inside_expression_strings_are_fine() {
        let templates = Templates::new();
        assert!(
            templates
                .eval_condition("x == '%}'", &json!({"x": "%}"}))
                .unwrap()
        );
        // Load-time checks reject what is not a single expression, so the wrapper that
        // evaluation uses never sees it.
        assert!(templates.check_expression("1) %}{% set x = (1").is_err());
    }

    /// The narrowed scope must render exactly like the whole one.
    #[test]
    fn templates_see_the_same_values_as_with_the_whole_scope() {
        let templates = Templates::new();
        let whole = minijinja::Value::from(Serde(scope()));
        let cases = [
            "{% for k, v in nodes | items %}{{ k }}={{ v.status }};{% endfor %}",
            "{{ nodes['score'].output.tier }} {{ nodes | length }} {{ nodes.score | length }}",
            "{% set n = nodes.score %}{{ n.output.total }}",
            "{% with x = trigger.body %}{{ x.email }}{% endwith %}",
            "{{ nodes.missing is defined }} {{ nodes.score.output.missing is defined }}",
            "{{ nodes.missing.output is defined }}",
            "{{ trigger.body.contacts[0].email }} {{ trigger.body.contacts | map(attribute='email') | join(',') }}",
            "{% for c in trigger.body.contacts %}{{ c.email }}{{ loop.index }}{% endfor %}",
            "{{ range(3) | list }} {{ workflow.id ~ '/' ~ run.id }}",
            "{{ nodes.score.output.items() | list }} {{ nodes.score.output.get('tier') }}",
            "{{ nodes.score.output.keys() | list }}",
            "{% if nodes.score.output.tier == 'hot' %}{{ secrets.TOKEN }}{% endif %}",
            "{{ nodes.skipped.output.tier }}",
            "{{ trigger.body.n is even }} {{ nodes.score.output.total | round }}",
            "{{ trigger }}",
            "{{ nodes.score.output.tier.upper() }}",
        ];
        let text = "{{ nodes.score.output.tier }}";
        let template = templates.template(text, text).unwrap();
        let context = templates.context(text, &template, &scope());
        let nodes = context.get_attr("nodes").unwrap();
        assert!(context.get_attr("trigger").unwrap().is_undefined());
        assert!(nodes.get_attr("skipped").unwrap().is_undefined());
        assert_eq!(
            nodes
                .get_attr("score")
                .unwrap()
                .get_attr("output")
                .unwrap()
                .len(),
            Some(2)
        );
        for text in cases {
            let template = templates.template(text, text).unwrap();
            let narrowed = template.render(templates.context(text, &template, &scope()));
            let expected = template.render(whole.clone());
            match (narrowed, expected) {
                (Ok(narrowed), Ok(expected)) => assert_eq!(narrowed, expected, "{text}"),
                (Err(narrowed), Err(expected)) => {
                    assert_eq!(narrowed.to_string(), expected.to_string(), "{text}")
                }
                (narrowed, expected) => panic!("{text}: {narrowed:?} but {expected:?}"),
            }
        }
    }

    #[test]
    fn compiled_templates_are_reused_across_clones() {
        let templates = Templates::new();
        let clone = templates.clone();
        let value = json!("{{ trigger.body.n * 2 }} and {{ run.id }}");
        assert_eq!(
            templates.render_value(&value, &scope()).unwrap(),
            json!("6 and r1")
        );
        assert_eq!(
            clone.render_value(&value, &scope()).unwrap(),
            json!("6 and r1")
        );
        assert!(Arc::ptr_eq(&templates.shared, &clone.shared));
    }
    fn small_limits() -> Limits {
        Limits {
            fuel: 10_000,
            max_output_bytes: 1_000,
            ..Limits::default()
        }
    }

    fn render_with(limits: Limits, text: &str) -> Result<Value, TemplateError> {
        Templates::with_limits(limits).render_value(&json!(text), &scope())
    }

    #[test]
    fn slices_of_scope_values_work_like_slices_of_literals() {
        let scope = json!({"trigger": {"body": {"name": "abcdef", "list": [1, 2, 3]}},
            "nodes": {"a": {"output": {"items": [4, 5, 6]}}}});
        let templates = Templates::new();
        let cases = [
            ("{{ 'abc'[1:] }}", json!("bc")),
            ("{{ trigger.body.name[1:] }}", json!("bcdef")),
            ("{{ trigger.body.name[:-2] }}", json!("abcd")),
            ("name={{ trigger.body.name[::2] }}", json!("name=ace")),
            ("{{ trigger.body.list[1:] }}", json!([2, 3])),
            ("{{ nodes.a.output.items[-1:] }}", json!([6])),
        ];
        for (text, expected) in cases {
            let rendered = templates.render_value(&json!(text), &scope);
            assert_eq!(rendered.unwrap(), expected, "{text}");
        }
        assert!(
            templates
                .eval_condition("trigger.body.name[:1] == 'a'", &scope)
                .unwrap()
        );
        assert_eq!(
            templates.node_references("{{ nodes.a.output.items[1:] }}"),
            ["a"]
        );
    }

    #[test]
    fn running_out_of_fuel_is_an_error_that_names_the_budget() {
        let text = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}";
        let error = render_with(small_limits(), text).unwrap_err();
        assert_eq!(
            error.message,
            "the template exhausted its budget of 10000 instructions (template fuel)"
        );
        let tight = Limits {
            fuel: 10,
            ..Limits::default()
        };
        let sum = vec!["trigger.body.n"; 20].join(" + ");
        let error = Templates::with_limits(tight)
            .eval_condition(&sum, &scope())
            .unwrap_err();
        assert!(
            error.message.contains("budget of 10 instructions"),
            "{error}"
        );
        // The default budget leaves room for ordinary loops.
        let text = "{% for c in range(1000) %}{{ c }}{% endfor %}";
        assert!(render_with(Limits::default(), text).is_ok());
    }

    #[test]
    fn output_over_the_limit_is_an_error_for_text_and_values() {
        let too_large = "the output is larger than the template output limit of 1000 bytes";
        for text in [
            "{% for c in range(100) %}0123456789-{% endfor %}",
            "{% for c in range(100) %}{{ trigger.body.email }}{% endfor %}",
            "{{ range(1000) | list }}",
            "x{{ range(1000) | list }}",
        ] {
            let error = render_with(small_limits(), text).unwrap_err();
            assert_eq!(error.message, too_large, "{text}");
        }
        assert!(render_with(small_limits(), "{{ '-' * 1000 }}").is_ok());
    }

    /// `*` and `~` are checked before they build anything: one instruction could otherwise
    /// allocate 100 MB (minijinja's own cap on `*`) or double a string.
    #[test]
    fn repetition_and_concatenation_over_the_limit_are_refused() {
        let cases = [
            ("{{ '-' * 5000 }}", "`*`"),
            ("{{ trigger.body.email * 100 }}", "`*`"),
            ("x{{ 100 * trigger.body.email }}", "`*`"),
            ("{{ [trigger.body.email] * 100 }}", "`*`"),
            ("{{ trigger.body.n * 100000000 }}", ""),
            ("{% set x = '-' * 600 %}{{ x ~ x }}", "`~`"),
            (
                "{% set x = '-' * 300 %}{% set x = x ~ x %}{{ (x ~ x) | length }}",
                "`~`",
            ),
            ("{% if ('-' * 600) ~ ('-' * 600) %}{% endif %}", "`~`"),
        ];
        for (text, operator) in cases {
            match render_with(small_limits(), text) {
                Err(error) if !operator.is_empty() => assert_eq!(
                    error.message,
                    format!(
                        "invalid operation: {operator} would produce more than the template output limit of 1000 bytes"
                    ),
                    "{text}"
                ),
                Ok(number) if operator.is_empty() => assert_eq!(number, json!(300000000)),
                other => panic!("{text}: {other:?}"),
            }
        }
        let error = Templates::with_limits(small_limits())
            .eval_condition("trigger.body.email * 1000 == ''", &scope())
            .unwrap_err();
        assert!(error.message.contains("`*` would produce more"), "{error}");
    }

    #[test]
    fn builtins_that_an_argument_makes_huge_are_refused() {
        let cases = [
            (
                "{{ 'a' | indent(18446744073709551615) }}",
                "`indent` would produce more",
            ),
            (
                "{{ 'a\nb' | indent(width=18446744073709551615) }}",
                "`indent` would produce more",
            ),
            ("{{ 'a\nb' | indent(2000) }}", "`indent` would produce more"),
            (
                "{{ '%99999999999s' | format('a') }}",
                "`format` width 99999999999",
            ),
            ("{{ '%.5000f' | format(1.5) }}", "`format` width 5000"),
            (
                "{{ '%*s' | format(5, 'a') }}",
                "`format` does not accept `*`",
            ),
            ("{{ range(400) | join(',') }}", "`join` would produce more"),
            (
                "{{ ('a' * 500) | replace('', 'bcd') }}",
                "`replace` would produce more",
            ),
            (
                "{{ ('ab' * 400) | replace('a', 'xyz') }}",
                "`replace` would produce more",
            ),
            (
                "{{ range(400) | list | string }}",
                "`string` would produce more",
            ),
            (
                "{{ range(400) | list | pprint }}",
                "`pprint` would produce more",
            ),
            (
                "{{ [1] | batch(18446744073709551615, 0) }}",
                "`batch` count 18446744073709551615",
            ),
            (
                "{{ [1] | slice(1000000000000) }}",
                "`slice` count 1000000000000",
            ),
            (
                "{% set ns = namespace(x='a') %}{{ ns.x }}",
                "namespace is unknown",
            ),
        ];
        for (text, message) in cases {
            let error = render_with(small_limits(), text).unwrap_err();
            assert!(error.message.contains(message), "{text}: {}", error.message);
        }
        // Ordinary uses still work.
        let cases = [
            ("{{ 'a\nb' | indent(2) }}", "a\n  b"),
            (
                "{{ '%5s|%-3d|%.2f' | format('x', 7, 1.234) }}",
                "    x|7  |1.23",
            ),
            ("{{ ['a', 'b'] | join(', ') }}", "a, b"),
            ("{{ 'a-b' | replace('-', '+') }}", "a+b"),
            ("{{ [1, 2, 3] | batch(2, 0) | list }}", "[[1, 2], [3, 0]]"),
            ("{{ [1, 2, 3] | slice(2) | list }}", "[[1, 2], [3]]"),
            ("{{ 12 | string }}", "12"),
        ];
        for (text, expected) in cases {
            let rendered = render_with(small_limits(), &format!("={text}")).unwrap();
            assert_eq!(rendered, json!(format!("={expected}")), "{text}");
        }
    }

    #[test]
    fn constants_folded_at_load_are_bounded() {
        let templates = Templates::new();
        let text = "{{ ('a' * 100000000) ~ ('a' * 100000000) ~ ('a' * 100000000) }}";
        let error = templates.check_template(text).unwrap_err();
        assert_eq!(
            error.message,
            "invalid operation: a constant expression would build 100000000 bytes when compiled, \
             more than the limit of 65536 bytes"
        );
        let error = templates.check_template(&format!("x {text}")).unwrap_err();
        assert!(error.message.contains("constant expression"), "{error}");
        let error = templates
            .check_expression("('a' * 100000000) == x")
            .unwrap_err();
        assert!(error.message.contains("constant expression"), "{error}");
        // Rendering goes through the same check (a revision re-read from the store).
        let error = render(json!(format!("y {text}"))).unwrap_err();
        assert!(error.message.contains("constant expression"), "{error}");
        let error = templates
            .eval_condition("'a' * 100000000", &scope())
            .unwrap_err();
        assert!(error.message.contains("constant expression"), "{error}");
    }
    /// The rewritten `*` and `~` give what minijinja's own operators give, errors included.
    #[test]
    fn checked_operators_render_like_minijinja() {
        let mut plain = Environment::new();
        plain.set_undefined_behavior(UndefinedBehavior::Strict);
        plain.set_formatter(json_spelling);
        let templates = Templates::new();
        let whole = minijinja::Value::from(Serde(scope()));
        let cases = [
            "{{ 'a' ~ 1 ~ none ~ true ~ 1.5 }}",
            "{{ 2 * 3 }} {{ 2.5 * 2 }} {{ 'ab' * 2 }} {{ 2 * 'ab' }} {{ [1] * 3 }} {{ (1, 2) * 2 }}",
            "{{ (trigger.body.n * 2) ~ '/' ~ nodes.score.output.tier }}",
            "{% for c in trigger.body.contacts %}{{ loop.index ~ ':' ~ c.email }}{% endfor %}",
            "{{ trigger.body.email | upper ~ '!' }} {{ 'x' ~ trigger.body.n is even }}",
            "{% set s = 'ab' ~ 'cd' %}{{ s * 2 }} {{ -trigger.body.n * 2 }} {{ trigger.body.n * -1 }}",
            "{{ 10 // 3 * 2 }} {{ 2 ** 3 * 2 }} {{ 'a' if trigger.body.n > 2 else 'b' ~ 'c' }}",
            "{{ [1, 2] ~ {'a': 1} }} {{ range(3) | list * 2 }} {{ nodes.score.output.total * 2 }}",
            "{{ 9223372036854775807 * 9223372036854775807 * 100000 }}",
            "{{ 'a' * 'b' }}",
            "{{ 'a' * 1.5 }}",
            "{{ {'a': 1} * 2 }}",
            "{{ none * 2 }}",
        ];
        for text in cases {
            let ours = templates.template(text, text).and_then(|template| {
                template
                    .render(whole.clone())
                    .map_err(|error| template_error(text, &error))
            });
            let theirs = plain.render_str(text, whole.clone());
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{text}"),
                (Err(_), Err(_)) => {}
                (ours, theirs) => panic!("{text}: {ours:?} but minijinja gives {theirs:?}"),
            }
        }
    }
    /// Arguments at the edges of their types give errors or values, never a panic.
    #[test]
    fn extreme_arguments_do_not_panic() {
        let cases = [
            "{{ 'a' | indent(18446744073709551615, true, true) }}",
            "{{ 1.5 | round(2147483647) }} {{ 1.5 | round(-2147483648) }}",
            "{{ 'abc'[9223372036854775807:] }} {{ 'abc'[::-9223372036854775807] }}",
            "{{ [1][-9223372036854775807] }} {{ 'abc'[-9223372036854775807:9223372036854775807] }}",
            "{{ range(-9223372036854775807, 9223372036854775807, 9223372036854775807) | list }}",
            "{{ -9223372036854775807 // -1 }} {{ 1 / 0 }} {{ 5 % 0 }} {{ 5 // 0 }}",
            "{{ '%c' | format(1114112) }}",
            "{{ '%c' | format(-1) }}",
            "{{ '%.2147483647f' | format(1.5) }}",
            "{{ (2 ** 62) * (2 ** 62) * (2 ** 62) }} {{ 10 ** 1000 }} {{ 0 ** -1 }}",
            "{{ 1e308 * 10 }} {{ (1e308 * 10) | int }}",
            "{{ ('1e400' | float) | int }}",
            "{{ [1, 2] | slice(3, 0) }} {{ [] | max }} {{ [1, 2, 3] | batch(0) }}",
            "{{ 'x' | replace('', '') }} {{ 'a' * 18446744073709551615 }}",
            "{{ [1] * 18446744073709551615 }} {{ range(18446744073709551615) }}",
            "{{ 'abc' | truncate(18446744073709551615) }}",
            "{{ [3, 1] | sort(attribute='x') }} {{ {'a': 1} | dictsort(by='x') }}",
        ];
        let templates = Templates::new();
        // One expression per render, so an early error does not hide a later panic.
        for text in cases.iter().flat_map(|case| case.split(" {{")) {
            let text = if text.starts_with("{{") {
                text.to_owned()
            } else {
                format!("{{{{{text}")
            };
            // An error is fine; a panic fails the test.
            let _ = templates.render_value(&json!(text), &scope());
        }
    }
}
