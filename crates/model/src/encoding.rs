//! The stored and replicated form of an [`Entry`]: one format-version byte, then the entry in `postcard`
//! (a compact, varint-based serde format with a stable, documented wire format).
//!
//! The bytes are not canonical (a set's members are kept in a hash map), so two equal entries may encode
//! differently. Anything that compares replicas must decode and compare entries, or hash a canonical
//! form, never the bytes.

use crate::entry::Entry;

/// Version 1: `[1] ++ postcard(Entry)`.
pub const ENTRY_FORMAT_V1: u8 = 1;

/// Why stored or replicated bytes are not an [`Entry`]. Every case means the bytes are damaged or come from
/// a newer build; none is the caller's input error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// There were no bytes at all (not even the version byte).
    #[error("empty entry")]
    Empty,
    /// The version byte names a format this build cannot read (written by a newer build, or corrupt).
    #[error("entry format version {0} is not known to this build (it knows {ENTRY_FORMAT_V1})")]
    UnknownVersion(u8),
    /// The version is known but the body does not decode; the message is postcard's.
    #[error("corrupt entry: {0}")]
    Corrupt(String),
}

/// The bytes of `entry` in the current format ([`ENTRY_FORMAT_V1`]). Never fails.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut bytes = vec![ENTRY_FORMAT_V1];
    postcard::to_io(entry, &mut bytes).expect("encoding into a Vec cannot fail");
    bytes
}

/// The entry that `bytes` (as made by [`encode_entry`], by this or an earlier build) hold.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&ENTRY_FORMAT_V1, body)) => postcard::from_bytes(body).map_err(|e| DecodeError::Corrupt(e.to_string())),
        Some((&version, _)) => Err(DecodeError::UnknownVersion(version)),
    }
}
