//! Durations as written in workflows: `250ms`, `10s`, `5m`, `1h30m` (humantime's syntax).

use std::time::Duration;

/// Parses a duration; the error is a complete message for a [`super::LoadError`].
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!("invalid duration `{text}`: {error} (write e.g. `250ms`, `10s`, `5m`)")
    })
}

/// Like [`parse`], for limits such as timeouts where zero would make no sense.
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        Duration::ZERO => Err(format!(
            "invalid duration `{text}`: must be greater than zero"
        )),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert_eq!(
            parse("5").unwrap_err(),
            "invalid duration `5`: time unit needed, for example 5sec or 5ms (write e.g. `250ms`, `10s`, `5m`)"
        );
        assert!(parse("soon").is_err());
        assert!(parse("").is_err());
        assert_eq!(
            parse_positive("0s").unwrap_err(),
            "invalid duration `0s`: must be greater than zero"
        );
    }
}
