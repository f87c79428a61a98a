//! How a duration setting is written, on the command line and in the TOML file alike: a bare number of
//! milliseconds (`250`), the only form before durations took units and so still accepted everywhere, or a
//! number with a unit as humantime reads it (`250ms`, `2s`, `1m 30s`, `1day`).
//!
//! Every duration setting is counted in whole milliseconds downstream (the store, the lock group, the
//! change log), so a value with a sub-millisecond part is refused rather than silently rounded.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{Error, Unexpected, Visitor};

/// What a duration setting accepts, for error messages.
const EXPECTED: &str = "a number of milliseconds, or a number with a unit such as 250ms, 2s or 1m";

/// Parses a duration setting (see the module documentation).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        let millis: u64 = text.parse().map_err(|_| format!("{text:?} is too large: at most {} ms", u64::MAX))?;
        Duration::from_millis(millis)
    } else {
        humantime::parse_duration(text).map_err(|error| format!("{text:?} is not {EXPECTED} ({error})"))?
    };
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{text:?} has a part smaller than a millisecond: durations count whole milliseconds"));
    }
    if u64::try_from(duration.as_millis()).is_err() {
        return Err(format!("{text:?} is too large: at most {} ms", u64::MAX));
    }
    Ok(duration)
}

/// Parses a signed duration setting, a duration with an optional leading `-`, into milliseconds.
pub fn parse_signed_millis(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let millis = i64::try_from(whole_millis(parse(magnitude)?))
        .map_err(|_| format!("{text:?} is too large: at most {} ms either way", i64::MAX))?;
    Ok(if negative { -millis } else { millis })
}

/// The milliseconds in `duration`, saturating at `u64::MAX` (parsed settings never reach it).
pub fn whole_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reads an optional duration setting from the TOML file: an integer is milliseconds, a string is
/// [`parse`]d. For `#[serde(deserialize_with)]` on an `Option<Duration>` field of a struct with
/// `#[serde(default)]` (a key that is absent never reaches this).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    deserializer.deserialize_any(DurationVisitor).map(Some)
}

/// Like [`deserialize`], for a signed setting kept in milliseconds (an integer, or a string for
/// [`parse_signed_millis`]).
pub fn deserialize_signed_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    deserializer.deserialize_any(SignedMillisVisitor).map(Some)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(EXPECTED)
    }

    fn visit_u64<E: Error>(self, millis: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(millis))
    }

    fn visit_i64<E: Error>(self, millis: i64) -> Result<Duration, E> {
        u64::try_from(millis)
            .map(Duration::from_millis)
            .map_err(|_| E::invalid_value(Unexpected::Signed(millis), &self))
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

struct SignedMillisVisitor;

impl Visitor<'_> for SignedMillisVisitor {
    type Value = i64;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "{EXPECTED}, with a leading - for a negative one")
    }

    fn visit_i64<E: Error>(self, millis: i64) -> Result<i64, E> {
        Ok(millis)
    }

    fn visit_u64<E: Error>(self, millis: u64) -> Result<i64, E> {
        i64::try_from(millis).map_err(|_| E::invalid_value(Unexpected::Unsigned(millis), &self))
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<i64, E> {
        parse_signed_millis(text).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_is_milliseconds_and_units_are_read_by_humantime() {
        assert_eq!(parse("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1day"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn nonsense_fractions_of_a_millisecond_and_overflow_are_refused() {
        assert!(parse("soon").unwrap_err().contains("number of milliseconds"));
        assert!(parse("").is_err());
        assert!(parse("-5").is_err());
        assert!(parse("1500us").unwrap_err().contains("smaller than a millisecond"));
        assert!(parse("99999999999999999999").unwrap_err().contains("too large"));
    }

    #[test]
    fn a_signed_duration_takes_a_leading_minus() {
        assert_eq!(parse_signed_millis("-400"), Ok(-400));
        assert_eq!(parse_signed_millis("-2s"), Ok(-2_000));
        assert_eq!(parse_signed_millis("1m"), Ok(60_000));
        assert!(parse_signed_millis("--1").is_err());
    }

    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default, deserialize_with = "deserialize")]
        wait: Option<Duration>,
        #[serde(default, deserialize_with = "deserialize_signed_millis")]
        offset: Option<i64>,
    }

    #[test]
    fn the_file_takes_integers_as_milliseconds_or_strings_with_units() {
        let file: File = toml::from_str("wait = 1500\noffset = -400").unwrap();
        assert_eq!((file.wait, file.offset), (Some(Duration::from_millis(1500)), Some(-400)));
        let file: File = toml::from_str("wait = \"2s\"\noffset = \"-1s\"").unwrap();
        assert_eq!((file.wait, file.offset), (Some(Duration::from_secs(2)), Some(-1_000)));
        let file: File = toml::from_str("").unwrap();
        assert_eq!((file.wait, file.offset), (None, None));
        let error = toml::from_str::<File>("wait = -1").err().unwrap().to_string();
        assert!(error.contains("number of milliseconds"), "{error}");
        let error = toml::from_str::<File>("wait = \"soon\"").err().unwrap().to_string();
        assert!(error.contains("wait") && error.contains("\"soon\" is not"), "{error}");
    }
}
