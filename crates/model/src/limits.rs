//! Validation of requests against the configured limits. A request that fails here is refused before it
//! reaches the write path, so it changes nothing.

use crate::entry::Op;

/// Keys longer than this are refused.
pub const KEY_BYTES_MAX: usize = 1024;
/// The default limit on a value (a register's bytes, or one set member).
pub const DEFAULT_VALUE_BYTES_MAX: usize = 1024 * 1024;
/// TTLs longer than ten years are certainly a unit mistake.
pub const KEY_TTL_MS_MAX: u64 = 10 * 366 * 24 * 3600 * 1000;
/// Members in one SetAdd or SetRemove.
pub const SET_MEMBERS_PER_OP_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { value_bytes_max: DEFAULT_VALUE_BYTES_MAX }
    }
}

/// A request that is wrong everywhere and always: the client must change it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("the key is empty")]
    EmptyKey,
    #[error("the key is {len} bytes; the limit is {KEY_BYTES_MAX}")]
    KeyTooLong { len: usize },
    #[error("the value is {len} bytes; the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("a TTL must be positive; got {ttl_ms} ms")]
    TtlNotPositive { ttl_ms: i64 },
    #[error("a TTL of {ttl_ms} ms is over the limit of {KEY_TTL_MS_MAX} ms (10 years)")]
    TtlTooLong { ttl_ms: i64 },
    #[error("{op} needs at least one member")]
    NoMembers { op: &'static str },
    #[error("{op} has {count} members; the limit is {SET_MEMBERS_PER_OP_MAX}")]
    TooManyMembers { op: &'static str, count: usize },
    #[error("a set member is {len} bytes; the limit is {max}")]
    MemberTooLarge { len: usize, max: usize },
    #[error("keys starting with bytes ff 00 are reserved for geostore")]
    ReservedKey,
    #[error("bad fence: {0}")]
    BadFence(String),
}

pub fn validate_key(key: &[u8]) -> Result<(), InvalidRequest> {
    if key.is_empty() {
        return Err(InvalidRequest::EmptyKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(InvalidRequest::KeyTooLong { len: key.len() });
    }
    Ok(())
}

/// Converts a TTL as sent by a client (signed, so that a negative one can be reported) into one the model
/// accepts.
pub fn validate_ttl_ms(ttl_ms: i64) -> Result<u64, InvalidRequest> {
    if ttl_ms <= 0 {
        return Err(InvalidRequest::TtlNotPositive { ttl_ms });
    }
    if ttl_ms as u64 > KEY_TTL_MS_MAX {
        return Err(InvalidRequest::TtlTooLong { ttl_ms });
    }
    Ok(ttl_ms as u64)
}

impl Limits {
    /// Checks a write completely: key, value sizes, TTLs and member lists.
    pub fn validate(&self, key: &[u8], op: &Op) -> Result<(), InvalidRequest> {
        validate_key(key)?;
        if key.starts_with(crate::fence::RESERVED_KEY_PREFIX) {
            return Err(InvalidRequest::ReservedKey);
        }
        let max = self.value_bytes_max;
        match op {
            Op::Put { value, ttl_ms } => {
                if value.len() > max {
                    return Err(InvalidRequest::ValueTooLarge { len: value.len(), max });
                }
                if let Some(ttl_ms) = ttl_ms {
                    validate_ttl_ms(*ttl_ms as i64)?;
                }
            }
            Op::Expire { ttl_ms } => {
                validate_ttl_ms(*ttl_ms as i64)?;
            }
            Op::SetAdd { members } | Op::SetRemove { members } => {
                if members.is_empty() {
                    return Err(InvalidRequest::NoMembers { op: op.name() });
                }
                if members.len() > SET_MEMBERS_PER_OP_MAX {
                    return Err(InvalidRequest::TooManyMembers { op: op.name(), count: members.len() });
                }
                if let Some(member) = members.iter().find(|member| member.len() > max) {
                    return Err(InvalidRequest::MemberTooLarge { len: member.len(), max });
                }
            }
            Op::Delete | Op::Increment { .. } => {}
        }
        Ok(())
    }
}
