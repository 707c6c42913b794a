//! Limits on the shape of a JSON body (nesting depth, number of values), checked by one pass over
//! the raw bytes before the body is parsed.
//!
//! Why before parsing: serde_json reads nothing nested 128 levels or deeper, and the engine stores
//! a body inside wrappers of its own (`trigger.body`, node inputs). A body that parses here but
//! nests close to that limit would be stored and could never be read back. Checking the bytes
//! first also means a hostile body costs one linear scan and no allocation before it is refused.

use crate::store::json::{self, Shape};

/// How deep and how large a JSON body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects; the outermost one is level 1.
    pub max_depth: usize,
    /// Most values in one body, counted as containers plus their items (an object member counts
    /// once): a conservative estimate of what parsing would allocate.
    pub max_values: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            // Half of serde_json's read limit: room for every wrapper the engine adds.
            max_depth: 64,
            max_values: 200_000,
        }
    }
}

/// Which limit a body broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Depth(usize),
    Values(usize),
}

/// Scans `bytes` for brackets and commas outside strings. Malformed JSON passes when it is within
/// the limits; the parser refuses it afterwards.
pub fn check(bytes: &[u8], limits: JsonLimits) -> Result<(), Exceeded> {
    let over = |shape: &Shape| shape.depth > limits.max_depth || shape.values > limits.max_values;
    let shape = json::shape(bytes, over);
    if shape.depth > limits.max_depth {
        Err(Exceeded::Depth(limits.max_depth))
    } else if shape.values > limits.max_values {
        Err(Exceeded::Values(limits.max_values))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: JsonLimits = JsonLimits {
        max_depth: 3,
        max_values: 6,
    };

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_one_more_level_fails() {
        assert_eq!(check(nested(3).as_bytes(), SMALL), Ok(()));
        assert_eq!(check(nested(4).as_bytes(), SMALL), Err(Exceeded::Depth(3)));
        assert_eq!(
            check(br#"{"a":{"b":{"c":{}}}}"#, SMALL),
            Err(Exceeded::Depth(3))
        );
    }

    #[test]
    fn brackets_inside_strings_and_escaped_quotes_do_not_count() {
        assert_eq!(check(br#"["[[[[{{{{", "\"[[[[", "\\"]"#, SMALL), Ok(()));
        assert_eq!(check(br#"["a,b,c,d,e,f,g,h"]"#, SMALL), Ok(()));
        // The escaped backslash ends before the quote, so the string closes and `[[[` counts.
        assert_eq!(check(br#"["\\", [[[]]]]"#, SMALL), Err(Exceeded::Depth(3)));
    }

    #[test]
    fn values_are_counted_across_containers_and_items() {
        assert_eq!(check(b"[1,2,3,4]", SMALL), Ok(()));
        assert_eq!(check(b"[1,2,3,4,5,6]", SMALL), Err(Exceeded::Values(6)));
        assert_eq!(check(b"[[1],[2],[3]]", SMALL), Err(Exceeded::Values(6)));
    }

    #[test]
    fn scalars_and_malformed_input_within_limits_pass() {
        assert_eq!(check(b"42", SMALL), Ok(()));
        assert_eq!(check(b"]]]]", SMALL), Ok(()));
        assert_eq!(check(b"\"unterminated [[[[", SMALL), Ok(()));
    }
}
