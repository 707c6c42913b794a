//! The bounds every render runs under: a fuel budget (instructions), a cap on what one
//! template produces, a cap on constants folded at load, and safe versions of the builtins
//! whose cost is set by an argument rather than by the data (`indent(huge)`, `format` padding,
//! `batch`/`slice` counts, `join`/`replace`/`string` results).

use std::io;
use std::time::Duration;

use minijinja::value::{Kwargs, Rest, StringInput, ValueKind, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, State, Value};

/// The limits of template evaluation; [`Limits::default`] is what the binary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Instructions one render may execute (minijinja fuel). The shipped workflows use at most
    /// a few hundred per render; a loop over a 10,000-item list with a few statements in its
    /// body uses ~100,000.
    pub fuel: u64,
    /// Bytes one template may produce: the text of a string template, or the size of what a
    /// single `{{ expr }}` evaluates to, and of any value a capped builtin builds.
    pub max_output_bytes: usize,
    /// Bytes a constant expression may fold into when a template is compiled at load.
    pub max_constant_bytes: u64,
    /// How long rendering the inputs of a node without its own `timeout` may take.
    pub render_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 1_000_000,
            max_output_bytes: 4 * 1024 * 1024,
            max_constant_bytes: 64 * 1024,
            render_timeout: Duration::from_secs(30),
        }
    }
}

/// The largest `count` of `batch` (with a filler) and `slice`: both build that many lists
/// whatever the data, so the count alone decides the cost. The same bound as `range`.
const MAX_COUNT: usize = 100_000;

/// Replaces the builtins whose cost an argument can make unbounded, and sets the fuel.
pub fn install(environment: &mut Environment<'static>, limits: Limits) {
    environment.set_fuel(Some(limits.fuel));
    let max = limits.max_output_bytes;
    environment.add_filter(
        "indent",
        move |value: StringInput<'_>,
              width: Option<usize>,
              first: Option<bool>,
              blank: Option<bool>,
              kwargs: Kwargs| {
            let chosen = match width {
                Some(width) => width,
                None => kwargs.peek::<Option<usize>>("width")?.unwrap_or(4),
            };
            let lines = value.as_str().split('\n').count();
            let grown = lines
                .checked_mul(chosen)
                .and_then(|padding| padding.checked_add(value.as_str().len()));
            within(grown, max, "indent")?;
            minijinja::filters::indent(value, width, first, blank, kwargs)
        },
    );
    environment.add_filter(
        "format",
        move |state: &mut State, format: &Value, args: Rest<ValueOrKwargs>| {
            check_format_widths(format.as_str().unwrap_or_default(), max)?;
            let formatted = minijinja::filters::format(state, format, args)?;
            within(formatted.as_str().map(str::len), max, "format")?;
            Ok(formatted)
        },
    );
    environment.add_filter(
        "join",
        move |state: &mut State,
              value: &Value,
              joiner: Option<StringInput<'_>>,
              attribute: Option<&str>,
              kwargs: Kwargs| {
            let joiner_bytes = match &joiner {
                Some(joiner) => joiner.as_str().len(),
                None => kwargs.peek::<Option<&str>>("d")?.map_or(0, str::len),
            };
            let items = value.try_iter().map(|items| items.collect::<Vec<_>>());
            if let Ok(items) = items {
                let mut total = 0usize;
                for item in &items {
                    total = total
                        .saturating_add(approximate_size(item, max))
                        .saturating_add(joiner_bytes);
                    within(Some(total), max, "join")?;
                }
            }
            minijinja::filters::join(state, value, joiner, attribute, kwargs)
        },
    );
    environment.add_filter(
        "replace",
        move |state: &mut State,
              value: StringInput<'_>,
              from: StringInput<'_>,
              to: StringInput<'_>| {
            let text = value.as_str();
            let matches = if from.as_str().is_empty() {
                text.chars().count().saturating_add(1)
            } else {
                text.matches(from.as_str()).count()
            };
            let grown = matches
                .checked_mul(to.as_str().len())
                .and_then(|added| added.checked_add(text.len()));
            within(grown, max, "replace")?;
            minijinja::filters::replace(state, value, from, to)
        },
    );
    environment.add_filter("string", move |state: &State, value: &Value| {
        within(Some(approximate_size(value, max)), max, "string")?;
        minijinja::filters::string(state, value)
    });
    environment.add_filter("pprint", move |value: &Value| {
        let pretty = minijinja::filters::pprint(value);
        within(Some(pretty.len()), max, "pprint")?;
        Ok(pretty)
    });
    environment.add_filter(
        "batch",
        |state: &State, value: Value, count: usize, fill_with: Option<Value>| {
            if fill_with.is_some() {
                counted(count, "batch")?;
            }
            minijinja::filters::batch(state, value, count, fill_with)
        },
    );
    environment.add_filter(
        "slice",
        |state: &State, value: Value, count: usize, fill_with: Option<Value>| {
            counted(count, "slice")?;
            minijinja::filters::slice(state, value, count, fill_with)
        },
    );
    // `namespace()` is the one way to carry a value from a loop iteration to the next; with
    // it a handful of instructions double a string forty times (`ns.x = ns.x ~ ns.x`), which
    // neither fuel nor the output cap sees in time.
    environment.remove_global("namespace");
}

/// The error a capped builtin answers when what it would build is over the limit.
fn within(bytes: Option<usize>, max: usize, what: &str) -> Result<(), Error> {
    match bytes {
        Some(bytes) if bytes <= max => Ok(()),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{what}` would produce more than the template output limit of {max} bytes"),
        )),
    }
}

fn counted(count: usize, what: &str) -> Result<(), Error> {
    if count > MAX_COUNT {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{what}` count {count} is over the limit of {MAX_COUNT}"),
        ));
    }
    Ok(())
}

/// Refuses a printf-style width or precision (`%99999999s`, `%.99999999f`) over `max`: the
/// padding is allocated before anything could check the result.
fn check_format_widths(format: &str, max: usize) -> Result<(), Error> {
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        let spec = &rest[start + 1..];
        // A spec runs to its conversion letter (or the next `%` of `%%`).
        let end = spec
            .find(|c: char| c.is_ascii_alphabetic() || c == '%')
            .unwrap_or(spec.len());
        let (body, after) = spec.split_at(end);
        if body.contains('*') {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "`format` does not accept `*` widths",
            ));
        }
        for digits in body.split(|c: char| !c.is_ascii_digit()) {
            let too_wide = !digits.is_empty() && digits.parse::<usize>().map_or(true, |n| n > max);
            if too_wide {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "`format` width {digits} is over the template output limit of {max} bytes"
                    ),
                ));
            }
        }
        rest = after.get(1..).unwrap_or_default();
    }
    Ok(())
}

/// The bytes `value` takes as text, roughly, counted up to just past `max` and no further, so
/// the walk itself stays cheap on a huge value.
pub fn approximate_size(value: &Value, max: usize) -> usize {
    let mut total = 0usize;
    let mut pending = vec![value.clone()];
    while let Some(value) = pending.pop() {
        total = total.saturating_add(match value.kind() {
            ValueKind::String | ValueKind::Bytes => value.len().unwrap_or(0),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable | ValueKind::Plain => {
                if let Ok(items) = value.try_iter() {
                    for key in items {
                        if value.kind() == ValueKind::Map
                            && let Ok(item) = value.get_item(&key)
                        {
                            pending.push(item);
                        }
                        pending.push(key);
                        total = total.saturating_add(2);
                        if total > max || pending.len() > max {
                            return total;
                        }
                    }
                }
                2
            }
            _ => 8,
        });
        if total > max {
            return total;
        }
    }
    total
}

/// An output that refuses the write that would take it past its limit.
pub struct CappedWriter {
    pub bytes: Vec<u8>,
    max: usize,
    pub exceeded: bool,
}

impl CappedWriter {
    pub fn new(max: usize) -> Self {
        Self {
            bytes: Vec::new(),
            max,
            exceeded: false,
        }
    }
}

impl io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.max {
            self.exceeded = true;
            return Err(io::Error::other("template output limit reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_widths_over_the_limit_are_refused() {
        assert!(check_format_widths("%5s and %-10.3f and %%", 100).is_ok());
        assert!(check_format_widths("%(name)08d", 100).is_ok());
        assert!(check_format_widths("%101s", 100).is_err());
        assert!(check_format_widths("%.99999999999999999999999f", 100).is_err());
        assert!(check_format_widths("%*s", 100).is_err());
    }

    #[test]
    fn sizes_are_counted_up_to_the_limit_only() {
        let text = Value::from("a".repeat(1000));
        assert_eq!(approximate_size(&text, 10_000), 1000);
        let list = Value::from(vec![text.clone(); 1_000_000]);
        let counted = approximate_size(&list, 10_000);
        assert!((10_000..20_000).contains(&counted), "{counted}");
        let map = Value::from_iter([("key", text)]);
        assert!(approximate_size(&map, 10_000) >= 1003);
    }
}
