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
mod json_list;
mod limits;
mod operators;
mod scope_reads;

pub use limits::Limits;
pub use scope_reads::ScopeReads;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, RwLock};

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, Template, UndefinedBehavior};
use serde_json::Value;

use self::json_list::JsonList;
use self::limits::CappedWriter;
use crate::store::{Json, json};

/// A run as its templates see it: `value`, whose `nodes.<id>` views leave out the outputs
/// kept as text in `outputs`, by node id. An output is built only as far as a template reads
/// it, and a list read whole is handed out item by item (see `json_list`), so a node that
/// reads the length of an upstream list of a million leads never builds it.
#[derive(Debug, Clone, Default)]
pub struct RunScope {
    pub value: Value,
    pub outputs: BTreeMap<String, Json>,
}

impl RunScope {
    /// A scope with no output kept as text.
    pub fn plain(value: Value) -> RunScope {
        RunScope {
            value,
            outputs: BTreeMap::new(),
        }
    }

    /// What `template` names when it is a single plain path (`{{ trigger.body.leads }}`):
    /// the value rendering it would give, read in place without converting and copying it
    /// twice, or built from the stored text when the path goes into an output kept as text.
    /// `None` for any other template, or when the path is not in the scope (rendering then
    /// says why).
    pub fn named_value(&self, template: &Value) -> Option<Cow<'_, Value>> {
        let path = Templates::named_path(template)?;
        if let ["nodes", id, "output", rest @ ..] = path.as_slice()
            && let Some(output) = self.outputs.get(*id)
        {
            let output = json::parse("node output", output.text()).ok()?;
            // Taken out of the output it is in, not copied from it.
            let named = rest.iter().try_fold(output, |value, name| match value {
                Value::Object(mut names) => names.remove(*name),
                _ => None,
            })?;
            return Some(Cow::Owned(named));
        }
        path.into_iter()
            .try_fold(&self.value, |value, name| value.as_object()?.get(name))
            .map(Cow::Borrowed)
    }

    /// How many bytes of text the outputs kept as text hold.
    pub fn outputs_bytes(&self) -> usize {
        self.outputs
            .values()
            .fold(0, |bytes, output| bytes.saturating_add(output.text().len()))
    }
}

/// Outputs for a scope that keeps none as text.
static NO_OUTPUTS: BTreeMap<String, Json> = BTreeMap::new();

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
        self.render_in(value, Scope::Whole(scope, &NO_OUTPUTS))
    }

    /// [`Templates::render_value`] over a run's scope.
    pub fn render_run(&self, value: &Value, scope: &RunScope) -> Result<Value, TemplateError> {
        self.render_in(value, Scope::Whole(&scope.value, &scope.outputs))
    }

    /// The names of the path `template` is, when it is a single plain path (`{{
    /// trigger.body.leads }}`: `trigger`, `body`, `leads`).
    pub fn named_path(template: &Value) -> Option<Vec<&str>> {
        let expression = single_expression(template.as_str()?)?;
        expression
            .split('.')
            .map(|name| {
                let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                plain.then_some(name)
            })
            .collect()
    }

    /// The scope of the items of a `foreach` over `scope`: see [`ItemScope`].
    pub fn item_scope<'a>(&'a self, scope: &'a RunScope) -> ItemScope<'a> {
        ItemScope {
            templates: self,
            scope,
            shared: RefCell::new(HashMap::new()),
        }
    }

    fn render_in(&self, value: &Value, scope: Scope<'_>) -> Result<Value, TemplateError> {
        match value {
            Value::String(text) if has_template_syntax(text) => self.render_string(text, scope),
            Value::Array(items) => items
                .iter()
                .map(|item| self.render_in(item, scope))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(key, item)| Ok((key.clone(), self.render_in(item, scope)?)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    /// Evaluates a bare expression and applies minijinja's truthiness.
    pub fn eval_condition(&self, expr: &str, scope: &RunScope) -> Result<bool, TemplateError> {
        let scope = Scope::Whole(&scope.value, &scope.outputs);
        Ok(self.evaluate(expr, expr, scope)?.is_true())
    }

    fn render_string(&self, text: &str, scope: Scope<'_>) -> Result<Value, TemplateError> {
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
            template.render_captured_to(self.context_in(text, &template, scope), &mut output);
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
        scope: Scope<'_>,
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
            .render_captured(self.context_in(&source, &template, scope))
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
    #[cfg(test)]
    fn context(
        &self,
        source: &str,
        template: &Template<'_, '_>,
        scope: &Value,
    ) -> minijinja::Value {
        self.context_in(source, template, Scope::Whole(scope, &NO_OUTPUTS))
    }

    /// The parts of `scope` that the template compiled from `source` reads.
    fn context_in(
        &self,
        source: &str,
        template: &Template<'_, '_>,
        scope: Scope<'_>,
    ) -> minijinja::Value {
        let reads = self.reads(source, template);
        match scope {
            Scope::Whole(scope, outputs) => reads.context(scope, outputs),
            Scope::Item(items, item, index) => items.context(source, &reads, item, index),
        }
    }

    /// What the template compiled from `source` reads, worked out once per source.
    fn reads(&self, source: &str, template: &Template<'_, '_>) -> Arc<Reads> {
        let cached = self
            .shared
            .reads
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
            .cloned();
        cached.unwrap_or_else(|| {
            let reads = Arc::new(Reads::of(template, self.shared.limits));
            let mut all = self.shared.reads.write().unwrap_or_else(|e| e.into_inner());
            all.entry(source.to_owned()).or_insert(reads).clone()
        })
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

/// What a render reads names from: a whole scope, or one `foreach` item laid over one.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Whole(&'a Value, &'a BTreeMap<String, Json>),
    Item(&'a ItemScope<'a>, &'a Value, usize),
}

/// A top-level name of a context and its value.
type Entry = (String, minijinja::Value);

/// The names a `foreach` item lays over its node's scope.
const ITEM_NAMES: [&str; 2] = ["item", "index"];

/// The scope of a `foreach` node's items: the node's scope with `item` and `index` laid over
/// it, without copying it. What each template reads of the node's scope is converted once and
/// shared by every item, so an item costs what it reads of itself, whatever the size of the
/// scope (which holds the list being iterated, and often the body around it). Used by one
/// thread: the cache is not shared.
pub struct ItemScope<'a> {
    templates: &'a Templates,
    scope: &'a RunScope,
    /// Per template source, the top-level names it reads from `scope`, converted.
    shared: RefCell<HashMap<String, Rc<[Entry]>>>,
}

impl ItemScope<'_> {
    /// Renders `value` like [`Templates::render_value`], with `item` and `index` in view.
    pub fn render_value(
        &self,
        value: &Value,
        item: &Value,
        index: usize,
    ) -> Result<Value, TemplateError> {
        self.templates
            .render_in(value, Scope::Item(self, item, index))
    }

    fn context(&self, source: &str, reads: &Reads, item: &Value, index: usize) -> minijinja::Value {
        let cached = self.shared.borrow().get(source).cloned();
        let shared = cached.unwrap_or_else(|| {
            let paths = reads.top_level(|name| !ITEM_NAMES.contains(&name));
            let pairs: Rc<[_]> = scope_pairs(self.scope, &paths).into();
            self.shared
                .borrow_mut()
                .insert(source.to_owned(), pairs.clone());
            pairs
        });
        let of_item = reads.top_level(|name| name == "item");
        let item = (!of_item.is_empty()).then(|| ("item".to_owned(), part(item, &rest(&of_item))));
        let reads_index = reads
            .paths
            .iter()
            .any(|path| path.first().is_none_or(|n| n == "index"));
        let index = reads_index.then(|| ("index".to_owned(), minijinja::Value::from(index)));
        minijinja::Value::from_pairs(shared.iter().cloned().chain(item).chain(index))
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

    fn context(&self, scope: &Value, outputs: &BTreeMap<String, Json>) -> minijinja::Value {
        let paths: Vec<&[String]> = self.paths.iter().map(Vec::as_slice).collect();
        if outputs.is_empty() || !scope.is_object() {
            return part(scope, &paths);
        }
        minijinja::Value::from_pairs(RunView { scope, outputs }.pairs(&paths))
    }

    /// The paths whose first name `keep` accepts, and the empty path (the whole scope).
    fn top_level(&self, keep: impl Fn(&str) -> bool) -> Vec<&[String]> {
        self.paths
            .iter()
            .filter(|path| path.first().is_none_or(|name| keep(name)))
            .map(Vec::as_slice)
            .collect()
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

/// The top-level entries of a run's scope that `paths` go through (see [`part_pairs`]), with
/// the outputs kept as text laid in.
fn scope_pairs(scope: &RunScope, paths: &[&[String]]) -> Vec<Entry> {
    RunView {
        scope: &scope.value,
        outputs: &scope.outputs,
    }
    .pairs(paths)
}

/// A run's scope with its outputs kept as text, being narrowed for one template.
struct RunView<'a> {
    scope: &'a Value,
    outputs: &'a BTreeMap<String, Json>,
}

impl RunView<'_> {
    /// [`part_pairs`] of the scope, `nodes` with the outputs laid in.
    fn pairs(&self, paths: &[&[String]]) -> Vec<Entry> {
        if self.outputs.is_empty() {
            return part_pairs(self.scope, paths);
        }
        let whole = paths.iter().any(|path| path.is_empty());
        let Value::Object(names) = self.scope else {
            return Vec::new();
        };
        let mut pairs = if whole {
            let others = names
                .iter()
                .filter(|(name, _)| *name != "nodes" && !ITEM_NAMES.contains(&name.as_str()));
            others
                .map(|(name, value)| (name.clone(), minijinja::Value::from(Serde(value))))
                .collect()
        } else {
            let others: Vec<&[String]> = paths
                .iter()
                .copied()
                .filter(|path| path[0] != "nodes")
                .collect();
            part_pairs(self.scope, &others)
        };
        let nodes = rest_of("nodes", paths);
        if !nodes.is_empty() && names.contains_key("nodes") {
            pairs.push(("nodes".to_owned(), self.nodes(&nodes)));
        }
        pairs
    }

    /// `nodes`, each node's view narrowed to its paths, its output from its text.
    fn nodes(&self, paths: &[&[String]]) -> minijinja::Value {
        let Some(Value::Object(nodes)) = self.scope.get("nodes") else {
            return minijinja::Value::UNDEFINED;
        };
        let pairs = nodes.iter().filter_map(|(id, view)| {
            let rest = rest_of(id, paths);
            if rest.is_empty() {
                return None;
            }
            let view = match self.outputs.get(id) {
                Some(output) => view_with_output(view, output, &rest),
                None => part(view, &rest),
            };
            Some((id.clone(), view))
        });
        minijinja::Value::from_pairs(pairs.collect::<Vec<_>>())
    }
}

/// The paths under `name` of those that go through it; every path (whole) when one ends
/// before it.
fn rest_of<'p>(name: &str, paths: &[&'p [String]]) -> Vec<&'p [String]> {
    if paths.iter().any(|path| path.is_empty()) {
        return vec![&[]];
    }
    paths
        .iter()
        .filter(|path| path[0] == name)
        .map(|path| &path[1..])
        .collect()
}

/// A node's view narrowed to `paths`, its `output` read from `output`'s text: handed out item
/// by item when read whole and a list, built as far as the paths go otherwise.
fn view_with_output(view: &Value, output: &Json, paths: &[&[String]]) -> minijinja::Value {
    let mut pairs = part_pairs(view, paths);
    let rest = rest_of("output", paths);
    if !rest.is_empty() {
        let whole = rest.iter().any(|path| path.is_empty());
        let lazy = if whole { JsonList::of(output) } else { None };
        let output = match lazy {
            Some(list) => minijinja::Value::from_object(list),
            None => match json::parse("node output", output.text()) {
                Ok(built) => part(&built, &rest),
                // Checked readable when stored or read back: not expected.
                Err(_) => minijinja::Value::UNDEFINED,
            },
        };
        pairs.push(("output".to_owned(), output));
    }
    minijinja::Value::from_pairs(pairs)
}

/// `value` narrowed to `paths` (relative to it); whole when a path ends here.
fn part(value: &Value, paths: &[&[String]]) -> minijinja::Value {
    match value {
        Value::Object(_) if !paths.iter().any(|path| path.is_empty()) => {
            minijinja::Value::from_pairs(part_pairs(value, paths))
        }
        _ => minijinja::Value::from(Serde(value)),
    }
}

/// The entries of the map `value` that `paths` go through, each narrowed to the rest of its
/// paths; every entry, whole, when a path ends here.
fn part_pairs(value: &Value, paths: &[&[String]]) -> Vec<(String, minijinja::Value)> {
    let Value::Object(map) = value else {
        return Vec::new();
    };
    if paths.iter().any(|path| path.is_empty()) {
        return map
            .iter()
            .filter(|(key, _)| !ITEM_NAMES.contains(&key.as_str()))
            .map(|(key, child)| (key.clone(), minijinja::Value::from(Serde(child))))
            .collect();
    }
    let mut children: HashMap<&str, Vec<&[String]>> = HashMap::new();
    for path in paths {
        children
            .entry(path[0].as_str())
            .or_default()
            .push(&path[1..]);
    }
    children
        .into_iter()
        .filter_map(|(key, rest)| {
            // A name the scope lacks stays undefined (or resolves to a global such as `range`).
            map.get(key)
                .map(|child| (key.to_owned(), part(child, &rest)))
        })
        .collect()
}

/// `paths` without their first name (an empty path stays empty: the whole value).
fn rest<'p>(paths: &[&'p [String]]) -> Vec<&'p [String]> {
    paths
        .iter()
        .map(|path| path.get(1..).unwrap_or(&[]))
        .collect()
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
mod tests;
