//! Static checks of a template's syntax tree, run before minijinja compiles it: constant
//! expressions that compilation would fold into huge values, and the scope paths read through
//! slices (which minijinja's own analysis does not see).
//!
//! minijinja folds every constant sub-expression while compiling (`('a' * 100000000) ~ …`),
//! with no fuel and no limit but its own 100 MB per repetition, so a few hundred bytes of
//! workflow could allocate gigabytes in `enrichflow validate`. This module works out the size
//! of each folded value from the tree alone, without building it, and refuses the template
//! first.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt, UnaryOpKind};
use minijinja::value::ValueKind;

/// What the analysis found in a template that compiles.
#[derive(Debug, Default)]
pub struct Findings {
    /// Dotted scope paths (`trigger.body.name`) read by the sliced part of `x[a:b]`.
    pub slice_paths: Vec<String>,
    /// Every `*` and `~`, children before parents.
    pub operators: Vec<Operation>,
}

/// A byte range of the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extent {
    pub start: u32,
    pub end: u32,
}

/// An operator whose result can be far larger than its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `*`: repeats a string or list.
    Repeat,
    /// `~`: joins two values as text.
    Concat,
}

/// One use of an [`Operator`]: the whole expression and its two operands.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub operator: Operator,
    pub extent: Extent,
    pub left: Extent,
    pub right: Extent,
}

/// A visited expression: what it folds into when constant, and the source it covers.
struct Visited {
    folded: Option<Folded>,
    extent: Extent,
}

/// A constant expression that would fold into more than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub bytes: u64,
    pub limit: u64,
}

/// Analyses a template source. A source that does not parse yields no findings: compiling it
/// reports the syntax error with minijinja's own message.
pub fn template(source: &str, max_constant_bytes: u64) -> Result<Findings, TooLarge> {
    let Ok(tree) = minijinja::machinery::parse(source, "<template>", Default::default()) else {
        return Ok(Findings::default());
    };
    let mut walker = Walker::new(max_constant_bytes);
    walker.statement(&tree)?;
    Ok(walker.findings)
}

/// Analyses a bare expression (`if:`).
pub fn expression(source: &str, max_constant_bytes: u64) -> Result<Findings, TooLarge> {
    let Ok(tree) = minijinja::machinery::parse_expr(source) else {
        return Ok(Findings::default());
    };
    let mut walker = Walker::new(max_constant_bytes);
    walker.expression(&tree)?;
    Ok(walker.findings)
}

/// The bytes an unknown scalar costs: what a `Value` takes in memory.
const SCALAR: u64 = 24;
/// The longest text of a number (`-170141183460469231731687303715884105728`).
const NUMBER_TEXT: u64 = 40;

/// What a constant expression folds into, as far as its size goes.
#[derive(Debug, Clone, Copy)]
struct Folded {
    /// Bytes it takes in memory or as text, whichever is larger.
    bytes: u64,
    /// Its value when it is an integer (the factor of a repetition).
    integer: Option<i128>,
    /// Whether `*` repeats it (a string or a list).
    repeatable: bool,
}

impl Folded {
    fn scalar(bytes: u64) -> Self {
        Self {
            bytes,
            integer: None,
            repeatable: false,
        }
    }

    fn integer(value: i128) -> Self {
        Self {
            bytes: NUMBER_TEXT,
            integer: Some(value),
            repeatable: false,
        }
    }

    fn repeatable(bytes: u64) -> Self {
        Self {
            bytes,
            integer: None,
            repeatable: true,
        }
    }
}

struct Walker {
    limit: u64,
    findings: Findings,
}

impl Walker {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            findings: Findings::default(),
        }
    }

    fn statements(&mut self, statements: &[Stmt<'_>]) -> Result<(), TooLarge> {
        statements.iter().try_for_each(|stmt| self.statement(stmt))
    }

    // Statements minijinja only has with features this crate leaves off (`macros`,
    // `multi_template`, `loop_controls`) fall under the last arm when another crate turns
    // them on.
    #[allow(unreachable_patterns)]
    fn statement(&mut self, stmt: &Stmt<'_>) -> Result<(), TooLarge> {
        match stmt {
            Stmt::Template(template) => self.statements(&template.children),
            Stmt::EmitExpr(emit) => self.expression(&emit.expr).map(drop),
            Stmt::EmitRaw(_) => Ok(()),
            Stmt::ForLoop(for_loop) => {
                self.expression(&for_loop.target)?;
                self.expression(&for_loop.iter)?;
                if let Some(filter) = &for_loop.filter_expr {
                    self.expression(filter)?;
                }
                self.statements(&for_loop.body)?;
                self.statements(&for_loop.else_body)
            }
            Stmt::IfCond(cond) => {
                self.expression(&cond.expr)?;
                self.statements(&cond.true_body)?;
                self.statements(&cond.false_body)
            }
            Stmt::WithBlock(with) => {
                for (target, value) in &with.assignments {
                    self.expression(target)?;
                    self.expression(value)?;
                }
                self.statements(&with.body)
            }
            Stmt::Set(set) => {
                self.expression(&set.target)?;
                self.expression(&set.expr).map(drop)
            }
            Stmt::SetBlock(set) => {
                self.expression(&set.target)?;
                if let Some(filter) = &set.filter {
                    self.expression(filter)?;
                }
                self.statements(&set.body)
            }
            Stmt::AutoEscape(block) => {
                self.expression(&block.enabled)?;
                self.statements(&block.body)
            }
            Stmt::FilterBlock(block) => {
                self.expression(&block.filter)?;
                self.statements(&block.body)
            }
            Stmt::Do(call) => {
                let mut extent = Extent::default();
                self.child(&call.call.expr, &mut extent)?;
                self.child_arguments(&call.call.args, &mut extent)
            }
            _ => Ok(()),
        }
    }

    /// Visits every node of `expr` once, bottom-up: what it folds into when it is constant
    /// (failing as soon as a folded value would be larger than the limit), and its extent.
    fn expression(&mut self, expr: &Expr<'_>) -> Result<Visited, TooLarge> {
        let span = expr.span();
        let mut extent = Extent {
            start: span.start_offset,
            end: span.end_offset,
        };
        let folded = match expr {
            Expr::Var(_) => None,
            Expr::Const(constant) => Some(constant_value(&constant.value)),
            Expr::Slice(slice) => {
                attribute_paths(&slice.expr, &mut self.findings.slice_paths);
                self.child(&slice.expr, &mut extent)?;
                for part in [&slice.start, &slice.stop, &slice.step]
                    .into_iter()
                    .flatten()
                {
                    self.child(part, &mut extent)?;
                }
                None
            }
            Expr::UnaryOp(unary) => {
                let operand = self.child(&unary.expr, &mut extent)?.folded;
                match unary.op {
                    UnaryOpKind::Not => operand.map(|_| Folded::scalar(SCALAR)),
                    UnaryOpKind::Neg => operand.map(|folded| match folded.integer {
                        Some(value) => value.checked_neg().map_or(folded, Folded::integer),
                        None => folded,
                    }),
                }
            }
            Expr::BinOp(binop) => {
                let left = self.child(&binop.left, &mut extent)?;
                let right = self.child(&binop.right, &mut extent)?;
                let operator = match binop.op {
                    BinOpKind::Mul => Some(Operator::Repeat),
                    BinOpKind::Concat => Some(Operator::Concat),
                    _ => None,
                };
                if let Some(operator) = operator {
                    self.findings.operators.push(Operation {
                        operator,
                        extent,
                        left: left.extent,
                        right: right.extent,
                    });
                }
                match (left.folded, right.folded) {
                    (Some(left), Some(right)) => binary(binop.op, left, right),
                    _ => None,
                }
            }
            Expr::Compare(compare) => {
                let mut constant = self.child(&compare.expr, &mut extent)?.folded.is_some();
                for op in &compare.ops {
                    constant &= self.child(&op.expr, &mut extent)?.folded.is_some();
                }
                constant.then(|| Folded::scalar(SCALAR))
            }
            Expr::IfExpr(if_expr) => {
                self.child(&if_expr.test_expr, &mut extent)?;
                self.child(&if_expr.true_expr, &mut extent)?;
                if let Some(false_expr) = &if_expr.false_expr {
                    self.child(false_expr, &mut extent)?;
                }
                None
            }
            Expr::Filter(filter) => {
                if let Some(operand) = &filter.expr {
                    self.child(operand, &mut extent)?;
                }
                self.child_arguments(&filter.args, &mut extent)?;
                None
            }
            Expr::Test(test) => {
                self.child(&test.expr, &mut extent)?;
                self.child_arguments(&test.args, &mut extent)?;
                None
            }
            Expr::GetAttr(get) => {
                self.child(&get.expr, &mut extent)?;
                None
            }
            Expr::GetItem(get) => {
                self.child(&get.expr, &mut extent)?;
                self.child(&get.subscript_expr, &mut extent)?;
                None
            }
            Expr::Call(call) => {
                self.child(&call.expr, &mut extent)?;
                self.child_arguments(&call.args, &mut extent)?;
                None
            }
            Expr::List(list) => self.sequence(&list.items, &mut extent)?,
            Expr::Tuple(tuple) => self.sequence(&tuple.items, &mut extent)?,
            Expr::Map(map) => {
                let keys = self.sequence(&map.keys, &mut extent)?;
                let values = self.sequence(&map.values, &mut extent)?;
                keys.zip(values)
                    .map(|(keys, values)| Folded::scalar(keys.bytes.saturating_add(values.bytes)))
            }
        };
        match folded {
            Some(folded) if folded.bytes > self.limit => Err(TooLarge {
                bytes: folded.bytes,
                limit: self.limit,
            }),
            _ => Ok(Visited { folded, extent }),
        }
    }

    /// Visits a sub-expression and widens its parent's extent to cover it: minijinja's spans
    /// leave out parts of some expressions (the operand of a filter, the base of `a.b`).
    fn child(&mut self, expr: &Expr<'_>, extent: &mut Extent) -> Result<Visited, TooLarge> {
        let visited = self.expression(expr)?;
        extent.start = extent.start.min(visited.extent.start);
        extent.end = extent.end.max(visited.extent.end);
        Ok(visited)
    }

    fn child_arguments(
        &mut self,
        args: &[CallArg<'_>],
        extent: &mut Extent,
    ) -> Result<(), TooLarge> {
        args.iter().try_for_each(|arg| match arg {
            CallArg::Pos(expr)
            | CallArg::Kwarg(_, expr)
            | CallArg::PosSplat(expr)
            | CallArg::KwargSplat(expr) => self.child(expr, extent).map(drop),
        })
    }

    /// A list literal: constant when every item is.
    fn sequence(
        &mut self,
        items: &[Expr<'_>],
        extent: &mut Extent,
    ) -> Result<Option<Folded>, TooLarge> {
        let mut bytes: Option<u64> = Some(0);
        for item in items {
            let folded = self.child(item, extent)?.folded;
            bytes = bytes
                .zip(folded)
                .map(|(sum, item)| sum.saturating_add(item.bytes).saturating_add(SCALAR));
        }
        Ok(bytes.map(Folded::repeatable))
    }
}

fn constant_value(value: &minijinja::Value) -> Folded {
    if let Some(text) = value.as_str() {
        return Folded::repeatable(text.len() as u64);
    }
    if value.kind() == ValueKind::Number
        && let Ok(integer) = i128::try_from(value.clone())
    {
        return Folded::integer(integer);
    }
    Folded::scalar(SCALAR)
}

/// The size of `left op right` when both are constant; `None` where minijinja's folding fails
/// (an overflow), since it then keeps the expression for run time.
fn binary(op: BinOpKind, left: Folded, right: Folded) -> Option<Folded> {
    let integers = left.integer.zip(right.integer);
    match op {
        BinOpKind::Mul => match (left.repeatable, right.repeatable, integers) {
            (true, false, _) => Some(repeat(left, right)),
            (false, true, _) => Some(repeat(right, left)),
            (_, _, Some((a, b))) => a.checked_mul(b).map(Folded::integer),
            _ => Some(Folded::scalar(SCALAR)),
        },
        // `~` writes both sides as text; a number's text is counted at its longest.
        BinOpKind::Concat => Some(Folded::repeatable(left.bytes.saturating_add(right.bytes))),
        BinOpKind::Add => match integers {
            Some((a, b)) => a.checked_add(b).map(Folded::integer),
            None => Some(Folded::repeatable(left.bytes.saturating_add(right.bytes))),
        },
        BinOpKind::Sub => match integers {
            Some((a, b)) => a.checked_sub(b).map(Folded::integer),
            None => Some(Folded::scalar(SCALAR)),
        },
        BinOpKind::Pow => match integers {
            Some((a, b)) => u32::try_from(b)
                .ok()
                .and_then(|b| a.checked_pow(b))
                .map(Folded::integer),
            None => Some(Folded::scalar(SCALAR)),
        },
        BinOpKind::FloorDiv => match integers {
            Some((a, b)) => a.checked_div_euclid(b).map(Folded::integer),
            None => Some(Folded::scalar(SCALAR)),
        },
        BinOpKind::Rem => match integers {
            Some((a, b)) => a.checked_rem_euclid(b).map(Folded::integer),
            None => Some(Folded::scalar(SCALAR)),
        },
        // `and`/`or` fold into one of their operands.
        BinOpKind::ScAnd | BinOpKind::ScOr => Some(if left.bytes >= right.bytes {
            left
        } else {
            right
        }),
        _ => Some(Folded::scalar(SCALAR)),
    }
}

/// `value * times` for a string or list `value`.
fn repeat(value: Folded, times: Folded) -> Folded {
    let times = times
        .integer
        .map_or(0, |n| u64::try_from(n.max(0)).unwrap_or(u64::MAX));
    Folded::repeatable(value.bytes.saturating_mul(times))
}

/// Every `name.attr.attr` chain inside `expr`, as dotted paths.
fn attribute_paths(expr: &Expr<'_>, paths: &mut Vec<String>) {
    let mut names = Vec::new();
    let mut cursor = expr;
    loop {
        match cursor {
            Expr::GetAttr(get) => {
                names.push(get.name);
                cursor = &get.expr;
            }
            Expr::Var(var) => {
                names.push(var.id);
                names.reverse();
                paths.push(names.join("."));
                return;
            }
            _ => break,
        }
    }
    for child in children(cursor) {
        attribute_paths(child, paths);
    }
}

/// The direct sub-expressions of `expr`.
fn children<'e, 'a>(expr: &'e Expr<'a>) -> Vec<&'e Expr<'a>> {
    fn args<'e, 'a>(args: &'e [CallArg<'a>]) -> impl Iterator<Item = &'e Expr<'a>> {
        args.iter().map(|arg| match arg {
            CallArg::Pos(expr)
            | CallArg::Kwarg(_, expr)
            | CallArg::PosSplat(expr)
            | CallArg::KwargSplat(expr) => expr,
        })
    }
    match expr {
        Expr::Var(_) | Expr::Const(_) => Vec::new(),
        Expr::Slice(slice) => std::iter::once(&slice.expr)
            .chain(
                [&slice.start, &slice.stop, &slice.step]
                    .into_iter()
                    .flatten(),
            )
            .collect(),
        Expr::UnaryOp(unary) => vec![&unary.expr],
        Expr::BinOp(binop) => vec![&binop.left, &binop.right],
        Expr::Compare(compare) => std::iter::once(&compare.expr)
            .chain(compare.ops.iter().map(|op| &op.expr))
            .collect(),
        Expr::IfExpr(if_expr) => [&if_expr.test_expr, &if_expr.true_expr]
            .into_iter()
            .chain(if_expr.false_expr.as_ref())
            .collect(),
        Expr::Filter(filter) => filter.expr.iter().chain(args(&filter.args)).collect(),
        Expr::Test(test) => std::iter::once(&test.expr)
            .chain(args(&test.args))
            .collect(),
        Expr::GetAttr(get) => vec![&get.expr],
        Expr::GetItem(get) => vec![&get.expr, &get.subscript_expr],
        Expr::Call(call) => std::iter::once(&call.expr)
            .chain(args(&call.args))
            .collect(),
        Expr::List(list) => list.items.iter().collect(),
        Expr::Tuple(tuple) => tuple.items.iter().collect(),
        Expr::Map(map) => map.keys.iter().chain(map.values.iter()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 1 << 20;

    #[test]
    fn huge_constant_repetition_is_refused_before_compiling() {
        let refused = [
            "{{ ('a' * 100000000) ~ ('b' * 100000000) }}",
            "{{ 'a' * 2000000 }}",
            "{{ 'abcd' * (1000 * 1000) }}",
            "{{ ('ab' * 1000) * 1000 }}",
            "{{ [1, 2] * 100000 }}",
            "{% set x = 'a' * 1048577 %}",
            "{% if ('a' * 99999999) %}x{% endif %}",
            "{{ x | default('a' * 5000000) }}",
            "{{ y[('a' * 5000000):] }}",
        ];
        for source in refused {
            let error = template(source, LIMIT).expect_err(source);
            assert!(error.bytes > LIMIT, "{source}: {error:?}");
        }
        let error = expression("'a' * 10000000 == x", LIMIT).unwrap_err();
        assert_eq!(
            error,
            TooLarge {
                bytes: 10_000_000,
                limit: LIMIT
            }
        );
    }

    #[test]
    fn ordinary_constants_and_run_time_values_pass() {
        let accepted = [
            "{{ '-' * 80 }}",
            "{{ 'a' * 1048576 }}",
            "{{ workflow.id ~ '/' ~ run.id }}",
            "{{ trigger.body.name * 100000000 }}",
            "{{ 2 ** 64 }} {{ 10 * 1000 * 1000 * 1000 }}",
            "{{ [1, 2, 3] + [4] }} {{ {'a': 1} }}",
            "{{ broken",
        ];
        for source in accepted {
            assert!(template(source, LIMIT).is_ok(), "{source}");
        }
    }

    #[test]
    fn slices_report_the_paths_they_read() {
        let findings = template(
            "{{ trigger.body.name[1:] }} {{ (nodes.a.output | list)[:2] }}",
            LIMIT,
        )
        .unwrap();
        assert_eq!(
            findings.slice_paths,
            ["trigger.body.name", "nodes.a.output"]
        );
        let findings = expression("nodes.b.output.items[-1:] == []", LIMIT).unwrap();
        assert_eq!(findings.slice_paths, ["nodes.b.output.items"]);
    }
}
