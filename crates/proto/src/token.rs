//! The text form of a causal token, for places that carry tokens as strings (the command line, a lock's
//! release note, a file between two programs). The grammar, also stated in `proto/geostore/v1/kv.proto`:
//!
//! ```text
//! token     = site ":" partition ":" sequence
//! site      = 1*64( ALPHA / DIGIT / "-" / "_" )
//! partition = 1*5DIGIT     ; decimal, at most 65535
//! sequence  = 1*20DIGIT    ; decimal, 1 to 2^64-1
//! ```
//!
//! For example `eu-west:12:345`: the write at position 345 of partition 12's change log in site `eu-west`.

use std::fmt;

use crate::v1::CausalToken;

/// The longest site name, in bytes (sites are named with ASCII letters, digits, `-` and `_`).
pub const SITE_BYTES_MAX: usize = 64;

/// Whether `site` is a valid site name: 1 to [`SITE_BYTES_MAX`] ASCII letters, digits, `-` or `_`.
pub fn is_site_name(site: &str) -> bool {
    (1..=SITE_BYTES_MAX).contains(&site.len())
        && site.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Why a token is not valid, said so that a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// The token as given (its text form, or the message's fields written out).
    pub token: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "causal token {:?}: {} (a token is SITE:PARTITION:SEQUENCE, e.g. eu-west:12:345)",
            self.token, self.problem
        )
    }
}

impl std::error::Error for TokenError {}

/// The text form of `token`.
pub fn format(token: &CausalToken) -> String {
    format!("{}:{}:{}", token.site, token.partition, token.sequence)
}

/// The token written as `text`, checked against the grammar.
pub fn parse(text: &str) -> Result<CausalToken, TokenError> {
    let error = |problem: String| TokenError { token: text.to_string(), problem };
    let mut parts = text.split(':');
    let (Some(site), Some(partition), Some(sequence), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(error("expected three parts separated by ':'".into()));
    };
    let decimal = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    let partition = Some(partition)
        .filter(|part| decimal(part))
        .and_then(|part| part.parse::<u16>().ok())
        .ok_or_else(|| error(format!("the partition {partition:?} is not a number from 0 to 65535")))?;
    let sequence = Some(sequence)
        .filter(|part| decimal(part))
        .and_then(|part| part.parse::<u64>().ok())
        .ok_or_else(|| error(format!("the sequence {sequence:?} is not a number from 1 to 2^64-1")))?;
    let token = CausalToken { site: site.to_string(), partition: u32::from(partition), sequence };
    validate(&token).map_err(|invalid| error(invalid.problem))?;
    Ok(token)
}

/// Checks a token received as a message: a valid site name, a partition that fits 16 bits and a
/// sequence of at least 1 (no write has sequence 0).
pub fn validate(token: &CausalToken) -> Result<(), TokenError> {
    let error = |problem: String| TokenError { token: format(token), problem };
    if !is_site_name(&token.site) {
        return Err(error(format!(
            "the site {:?} is not 1 to {SITE_BYTES_MAX} ASCII letters, digits, '-' or '_'",
            token.site
        )));
    }
    if token.partition > u32::from(u16::MAX) {
        return Err(error(format!("the partition {} is over 65535", token.partition)));
    }
    if token.sequence == 0 {
        return Err(error("the sequence is 0; writes are numbered from 1".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_text() {
        let token = CausalToken { site: "eu-west".into(), partition: 12, sequence: 345 };
        assert_eq!(format(&token), "eu-west:12:345");
        assert_eq!(parse(&format(&token)), Ok(token));
        let max = CausalToken { site: "a".repeat(SITE_BYTES_MAX), partition: 65535, sequence: u64::MAX };
        assert_eq!(parse(&format(&max)), Ok(max));
    }

    #[test]
    fn malformed_tokens_are_refused_saying_why() {
        for (text, problem) in [
            ("eu:12", "three parts"),
            ("eu:1:2:3", "three parts"),
            (":1:2", "site"),
            ("e u:1:2", "site"),
            ("eu:x:1", "partition"),
            ("eu:65536:1", "partition"),
            ("eu:+1:1", "partition"),
            ("eu:1:", "sequence"),
            ("eu:1:-5", "sequence"),
            ("eu:1:0", "sequence is 0"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.problem.contains(problem), "{text}: {error}");
            assert!(error.to_string().contains("SITE:PARTITION:SEQUENCE"), "{error}");
        }
        let long = CausalToken { site: "a".repeat(SITE_BYTES_MAX + 1), partition: 0, sequence: 1 };
        assert!(validate(&long).is_err());
    }
}
