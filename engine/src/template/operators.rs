//! Bounded `*` and `~`. minijinja's operators cannot be hooked, and one of them builds up to
//! 100 MB (`'-' * trigger.body.n`) or doubles a string (`x ~ x`) in a single instruction,
//! which neither fuel nor the output cap sees until it is allocated. So the loader rewrites
//! each use into a call of a function that checks the size first:
//! `a * b` → `__enrichflow_repeat(a, b)`, `a ~ b` → `__enrichflow_concat(a, b)`.
//!
//! The rewrite works on the source text with the extents that `analysis` computes from the
//! syntax tree, so everything but the operators stays byte for byte as written.

use std::sync::OnceLock;

use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Expression, UndefinedBehavior, Value};

use super::analysis::{Extent, Operation, Operator};
use super::limits::approximate_size;

const REPEAT: &str = "__enrichflow_repeat";
const CONCAT: &str = "__enrichflow_concat";

/// More operators than this in one template is refused at load: the rewrite is quadratic in
/// their nesting, and no real template comes near.
pub const MAX_OPERATORS: usize = 1_000;

/// Registers the two checked operators.
pub fn install(environment: &mut Environment<'static>, max_bytes: usize) {
    environment.add_function(REPEAT, move |left: Value, right: Value| {
        repeat(&left, &right, max_bytes)
    });
    environment.add_function(CONCAT, move |left: Value, right: Value| {
        concat(&left, &right, max_bytes)
    });
}

/// `source` with every operation replaced by its checked call.
pub fn rewrite(source: &str, operations: &[Operation]) -> String {
    if operations.is_empty() {
        return source.to_owned();
    }
    let mut sorted: Vec<(usize, &Operation)> = operations.iter().enumerate().collect();
    // Outer before inner: by start, then the longer first, then the later found (a parent is
    // found after its children).
    sorted.sort_by_key(|(index, op)| {
        (
            op.extent.start,
            std::cmp::Reverse(op.extent.end),
            std::cmp::Reverse(*index),
        )
    });
    let sorted: Vec<&Operation> = sorted.into_iter().map(|(_, op)| op).collect();
    let whole = Extent {
        start: 0,
        end: u32::try_from(source.len()).unwrap_or(u32::MAX),
    };
    Rewriter { source, sorted }.region(whole)
}

struct Rewriter<'a> {
    source: &'a str,
    sorted: Vec<&'a Operation>,
}

impl Rewriter<'_> {
    /// The text of `region` with the outermost operations inside it rewritten.
    fn region(&self, region: Extent) -> String {
        let mut out = String::new();
        let mut cursor = region.start;
        let first = self
            .sorted
            .partition_point(|op| op.extent.start < region.start);
        for op in &self.sorted[first..] {
            if op.extent.start >= region.end {
                break;
            }
            // Inside an operation already rewritten, or not wholly inside the region.
            if op.extent.start < cursor || op.extent.end > region.end {
                continue;
            }
            out.push_str(self.slice(cursor, op.extent.start));
            let function = match op.operator {
                Operator::Repeat => REPEAT,
                Operator::Concat => CONCAT,
            };
            out.push_str(&format!(
                "{function}({}, {})",
                self.region(op.left),
                self.region(op.right)
            ));
            cursor = op.extent.end;
        }
        out.push_str(self.slice(cursor, region.end));
        out
    }

    fn slice(&self, start: u32, end: u32) -> &str {
        self.source
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }
}

/// `left * right`, refused when it would repeat a string or list past `max_bytes`.
fn repeat(left: &Value, right: &Value, max_bytes: usize) -> Result<Value, Error> {
    defined(left)?;
    defined(right)?;
    let repeated = [(left, right), (right, left)]
        .into_iter()
        .find(|(value, times)| is_repeatable(value) && times.kind() == ValueKind::Number);
    if let Some((value, times)) = repeated {
        // A count that is not a size is minijinja's error to report.
        if let (Some(times), Some(len)) = (times.as_usize(), value.len()) {
            let unit = if value.kind() == ValueKind::String {
                1
            } else {
                SCALAR_BYTES
            };
            let bytes = len.saturating_mul(unit).saturating_mul(times);
            if bytes > max_bytes {
                return Err(too_large("*", max_bytes));
            }
        }
    }
    product(left, right)
}

/// What a value takes in memory as a list item.
const SCALAR_BYTES: usize = 24;

fn is_repeatable(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String | ValueKind::Seq | ValueKind::Iterable
    )
}

/// minijinja's own `*`, evaluated in an environment of its own, so numbers keep exactly the
/// semantics (and the errors) they have everywhere else.
fn product(left: &Value, right: &Value) -> Result<Value, Error> {
    static PRODUCT: OnceLock<Option<Expression<'static, 'static>>> = OnceLock::new();
    evaluate(&PRODUCT, "left * right", left, right)
}

/// `left ~ right`, refused when the text would be longer than `max_bytes`.
fn concat(left: &Value, right: &Value, max_bytes: usize) -> Result<Value, Error> {
    defined(left)?;
    defined(right)?;
    let bytes =
        approximate_size(left, max_bytes).saturating_add(approximate_size(right, max_bytes));
    if bytes > max_bytes {
        return Err(too_large("~", max_bytes));
    }
    static CONCAT: OnceLock<Option<Expression<'static, 'static>>> = OnceLock::new();
    evaluate(&CONCAT, "left ~ right", left, right)
}

/// Evaluates `source`, compiled once, with `left` and `right` in a strict environment like the
/// engine's.
fn evaluate(
    compiled: &'static OnceLock<Option<Expression<'static, 'static>>>,
    source: &'static str,
    left: &Value,
    right: &Value,
) -> Result<Value, Error> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    let expression = compiled.get_or_init(|| {
        let environment = ENVIRONMENT.get_or_init(|| {
            let mut environment = Environment::empty();
            environment.set_undefined_behavior(UndefinedBehavior::Strict);
            environment
        });
        environment.compile_expression(source).ok()
    });
    let Some(expression) = expression else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{source}` could not be prepared"),
        ));
    };
    expression.eval(minijinja::context! { left => left, right => right })
}

/// Strict mode's error for an undefined operand, naming where it came from as the operator
/// itself would (`` `trigger.body.missing` is undefined ``). `get_attr` on an undefined value
/// is the public way to build an error that remembers its origin.
fn defined(value: &Value) -> Result<(), Error> {
    if !value.is_undefined() {
        return Ok(());
    }
    Err(value
        .get_attr("")
        .err()
        .unwrap_or_else(|| Error::from(ErrorKind::UndefinedError)))
}

fn too_large(operator: &str, max_bytes: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "`{operator}` would produce more than the template output limit of {max_bytes} bytes"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::analysis;

    fn rewritten(source: &str) -> String {
        let findings = analysis::template(source, u64::MAX).expect("no limit");
        rewrite(source, &findings.operators)
    }

    #[test]
    fn operators_become_checked_calls_and_nothing_else_changes() {
        let cases = [
            ("plain {{ x }} text", "plain {{ x }} text"),
            (
                "{{ a ~ b ~ c }}",
                "{{ __enrichflow_concat(__enrichflow_concat(a, b), c) }}",
            ),
            (
                "{{ ('a' * 3) ~ x }}",
                "{{ __enrichflow_concat(__enrichflow_repeat('a', 3), x) }}",
            ),
            (
                "{{ '-' * trigger.body.n | int }}!",
                "{{ __enrichflow_repeat('-', trigger.body.n | int) }}!",
            ),
            (
                "{% set r = (x.y * (2 + 3)) %}{{ r }}",
                "{% set r = (__enrichflow_repeat(x.y, 2 + 3)) %}{{ r }}",
            ),
            (
                "{{ (a|f(1, 2 * 3)) * 2 }}",
                "{{ __enrichflow_repeat(a|f(1, __enrichflow_repeat(2, 3)), 2) }}",
            ),
            (
                "{{ a.b[1:2] ~ c() }}",
                "{{ __enrichflow_concat(a.b[1:2], c()) }}",
            ),
            (
                "{{ x if y else z ~ w }}",
                "{{ x if y else __enrichflow_concat(z, w) }}",
            ),
            (
                "{% for i in l %}{{ i ~ '-' }}{% endfor %}",
                "{% for i in l %}{{ __enrichflow_concat(i, '-') }}{% endfor %}",
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(rewritten(source), expected, "{source}");
        }
    }

    #[test]
    fn checked_operators_keep_minijinja_semantics_within_the_limit() {
        let cases = [
            (Value::from(6), Value::from(7), "42"),
            (Value::from(1.5), Value::from(2), "3.0"),
            (Value::from("ab"), Value::from(3), "ababab"),
            (Value::from(2), Value::from("ab"), "abab"),
            (Value::from(vec![1]), Value::from(2), "[1, 1]"),
        ];
        for (left, right, expected) in cases {
            let product = repeat(&left, &right, 1000).expect("within the limit");
            assert_eq!(product.to_string(), expected, "{left} * {right}");
        }
        assert!(repeat(&Value::from("ab"), &Value::from(501), 1000).is_err());
        assert!(repeat(&Value::from(vec![1]), &Value::from(1000), 1000).is_err());
        assert!(repeat(&Value::from(i64::MAX), &Value::from(i64::MAX), 1000).is_ok());
        assert!(repeat(&Value::from("a"), &Value::from(-1), 1000).is_err());
        assert_eq!(
            concat(&Value::from("a"), &Value::from(1), 1000)
                .unwrap()
                .to_string(),
            "a1"
        );
        assert!(
            concat(
                &Value::from("a".repeat(600)),
                &Value::from("b".repeat(600)),
                1000
            )
            .is_err()
        );
        assert!(concat(&Value::UNDEFINED, &Value::from(1), 1000).is_err());
    }
}
