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

/// The limits that a deployment configures (the others are the constants above, the same everywhere).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest register value, and the largest single set member, in bytes.
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
    /// The key has no bytes.
    #[error("the key is empty")]
    EmptyKey,
    /// The key is longer than [`KEY_BYTES_MAX`].
    #[error("the key is {len} bytes; the limit is {KEY_BYTES_MAX}")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// A register value is longer than [`Limits::value_bytes_max`].
    #[error("the value is {len} bytes; the limit is {max}")]
    ValueTooLarge {
        /// The value's length in bytes.
        len: usize,
        /// The configured limit in bytes.
        max: usize,
    },
    /// A TTL of zero or less.
    #[error("a TTL must be positive; got {ttl_ms} ms")]
    TtlNotPositive {
        /// The TTL as sent, in milliseconds.
        ttl_ms: i64,
    },
    /// A TTL longer than [`KEY_TTL_MS_MAX`].
    #[error("a TTL of {ttl_ms} ms is over the limit of {KEY_TTL_MS_MAX} ms (10 years)")]
    TtlTooLong {
        /// The TTL as sent, in milliseconds.
        ttl_ms: i64,
    },
    /// A SetAdd or SetRemove with an empty member list.
    #[error("{op} needs at least one member")]
    NoMembers {
        /// The operation's name (see [`Op::name`]).
        op: &'static str,
    },
    /// A SetAdd or SetRemove with more than [`SET_MEMBERS_PER_OP_MAX`] members.
    #[error("{op} has {count} members; the limit is {SET_MEMBERS_PER_OP_MAX}")]
    TooManyMembers {
        /// The operation's name (see [`Op::name`]).
        op: &'static str,
        /// How many members it had.
        count: usize,
    },
    /// A set member longer than [`Limits::value_bytes_max`].
    #[error("a set member is {len} bytes; the limit is {max}")]
    MemberTooLarge {
        /// The member's length in bytes.
        len: usize,
        /// The configured limit in bytes.
        max: usize,
    },
    /// The key starts with [`crate::fence::RESERVED_KEY_PREFIX`], which only geostore itself writes.
    #[error("keys starting with bytes ff 00 are reserved for geostore")]
    ReservedKey,
    /// A malformed fence (see [`crate::Fence::validate`]); the text says what is wrong.
    #[error("bad fence: {0}")]
    BadFence(String),
}

impl InvalidRequest {
    /// The request field at fault, as the API names it: `key`, `value`, `ttl_ms`, `members` or `fence`.
    pub fn field(&self) -> &'static str {
        match self {
            InvalidRequest::EmptyKey | InvalidRequest::KeyTooLong { .. } | InvalidRequest::ReservedKey => "key",
            InvalidRequest::ValueTooLarge { .. } => "value",
            InvalidRequest::TtlNotPositive { .. } | InvalidRequest::TtlTooLong { .. } => "ttl_ms",
            InvalidRequest::NoMembers { .. }
            | InvalidRequest::TooManyMembers { .. }
            | InvalidRequest::MemberTooLarge { .. } => "members",
            InvalidRequest::BadFence(_) => "fence",
        }
    }
}

/// Checks a key on its own: 1 to [`KEY_BYTES_MAX`] bytes. Reads use this; writes use [`Limits::validate`],
/// which also refuses reserved keys.
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
