//! Fences: a write made under a global lock carries the lock's name and fencing token.
//!
//! Each replica keeps the highest token it knows per lock in a *fence register*: an ordinary register
//! under a reserved key, whose writes carry the token as their marker's fence. Registers order by fence
//! first, so merging two replicas' fence registers keeps the higher token: a max-register, replicated
//! with the data by the same change logs.

use serde::{Deserialize, Serialize};

use crate::limits::InvalidRequest;

/// Keys that start with these bytes are geostore's own; clients cannot write them.
pub const RESERVED_KEY_PREFIX: &[u8] = &[0xff, 0x00];
/// Lock names longer than this are refused (the lock service's limit).
pub const LOCK_NAME_BYTES_MAX: usize = 256;

/// The lock and token a write was made under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The lock's name: 1 to [`LOCK_NAME_BYTES_MAX`] bytes.
    pub lock: String,
    /// The fencing token of the grant the writer held: at least 1, and higher for every later grant of
    /// the same lock.
    pub token: u64,
}

impl Fence {
    /// Checks the fence's form (not whether the token is current): a lock name of 1 to
    /// [`LOCK_NAME_BYTES_MAX`] bytes and a token of at least 1. Errors are [`InvalidRequest::BadFence`].
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if self.lock.is_empty() || self.lock.len() > LOCK_NAME_BYTES_MAX {
            return Err(InvalidRequest::BadFence(format!("the lock name must be 1 to {LOCK_NAME_BYTES_MAX} bytes")));
        }
        if self.token == 0 {
            return Err(InvalidRequest::BadFence("a fencing token is at least 1".into()));
        }
        Ok(())
    }
}

/// The reserved key of `lock`'s fence register.
pub fn fence_key(lock: &str) -> Vec<u8> {
    let mut key = RESERVED_KEY_PREFIX.to_vec();
    key.extend_from_slice(b"fence/");
    key.extend_from_slice(lock.as_bytes());
    key
}

/// The reserved key that names the lock a fencing token was granted for: a register holding the lock's
/// name, written (and replicated) when a fenced write first raises the lock's fence register to `token`.
/// Tokens are unique across locks, so a read can say which lock the winning write was made under.
pub fn token_lock_key(token: u64) -> Vec<u8> {
    let mut key = RESERVED_KEY_PREFIX.to_vec();
    key.extend_from_slice(b"token/");
    key.extend_from_slice(&token.to_be_bytes());
    key
}

/// The reserved key that names the site of a replica: a register holding the site's name, written by the
/// replica before its first write of each run and replicated like any key, so every replica learns which
/// site each write's replica belongs to.
pub fn replica_site_key(replica: crate::ReplicaId) -> Vec<u8> {
    let mut key = RESERVED_KEY_PREFIX.to_vec();
    key.extend_from_slice(b"replica/");
    key.extend_from_slice(&replica.0.to_be_bytes());
    key
}

/// A fence register's value: the token, 8 bytes big-endian.
pub fn encode_fence_token(token: u64) -> Vec<u8> {
    token.to_be_bytes().to_vec()
}

/// The token in a fence register's value, or `None` if `bytes` is not exactly 8 bytes (not a fence
/// register's value).
pub fn decode_fence_token(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}
