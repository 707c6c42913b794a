//! Durations as written in workflows: `250ms`, `10s`, `5m`, `1h30m` (humantime's syntax), each
//! bounded by a maximum so that no duration from a file can overflow time arithmetic later.

use std::time::Duration;

const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest workflow `timeout`: a run is not meant to live longer than a month.
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The longest node `timeout`: one attempt of one node.
pub const MAX_ATTEMPT_TIMEOUT: Duration = DAY;
/// The longest `retry.backoff` and `retry.max_backoff`.
pub const MAX_BACKOFF: Duration = DAY;

/// Parses a duration of at most `max`; the error is a complete message for a
/// [`super::LoadError`].
pub fn parse(text: &str, max: Duration) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|error| {
        format!("invalid duration `{text}`: {error} (write e.g. `250ms`, `10s`, `5m`)")
    })?;
    if duration > max {
        return Err(format!(
            "duration `{text}` is too long: the most allowed here is {}",
            describe(max)
        ));
    }
    Ok(duration)
}

/// Like [`parse`], for limits such as timeouts where zero would make no sense.
pub fn parse_positive(text: &str, max: Duration) -> Result<Duration, String> {
    match parse(text, max)? {
        Duration::ZERO => Err(format!(
            "invalid duration `{text}`: must be greater than zero"
        )),
        duration => Ok(duration),
    }
}

/// `30 days`, `24h`: maxima read better in whole days or hours than humantime's `1month 6days`.
fn describe(max: Duration) -> String {
    let seconds = max.as_secs();
    if max > DAY && seconds.is_multiple_of(DAY.as_secs()) {
        format!("{} days", seconds / DAY.as_secs())
    } else if max >= HOUR && seconds.is_multiple_of(HOUR.as_secs()) {
        format!("{}h", seconds / HOUR.as_secs())
    } else {
        humantime::format_duration(max).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = MAX_RUN_TIMEOUT;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse("5m", LONG), Ok(Duration::from_secs(300)));
        assert_eq!(parse("10s", LONG), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1s", LONG), Ok(Duration::from_secs(1)));
        assert_eq!(parse("250ms", LONG), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1h 30m", LONG), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0s", LONG), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert_eq!(
            parse("5", LONG).unwrap_err(),
            "invalid duration `5`: time unit needed, for example 5sec or 5ms (write e.g. `250ms`, `10s`, `5m`)"
        );
        assert!(parse("soon", LONG).is_err());
        assert!(parse("", LONG).is_err());
        assert_eq!(
            parse_positive("0s", LONG).unwrap_err(),
            "invalid duration `0s`: must be greater than zero"
        );
    }

    #[test]
    fn the_maximum_is_allowed_and_anything_longer_is_not() {
        let cases = [
            ("30days", MAX_RUN_TIMEOUT, Ok(MAX_RUN_TIMEOUT)),
            (
                "30days 1s",
                MAX_RUN_TIMEOUT,
                Err("duration `30days 1s` is too long: the most allowed here is 30 days"),
            ),
            ("24h", MAX_BACKOFF, Ok(DAY)),
            (
                "10000000years",
                MAX_BACKOFF,
                Err("duration `10000000years` is too long: the most allowed here is 24h"),
            ),
            (
                "2h",
                Duration::from_secs(5400),
                Err("duration `2h` is too long: the most allowed here is 1h 30m"),
            ),
        ];
        for (text, max, expected) in cases {
            assert_eq!(
                parse_positive(text, max),
                expected.map_err(str::to_owned),
                "{text}"
            );
        }
    }

    #[test]
    fn every_maximum_fits_chrono() {
        for max in [MAX_RUN_TIMEOUT, MAX_ATTEMPT_TIMEOUT, MAX_BACKOFF] {
            assert!(chrono::TimeDelta::from_std(max).is_ok());
        }
    }
}
