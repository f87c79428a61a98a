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

/// Reserved keys that belong to one partition start with these bytes, then the partition (u16 BE): every
/// record a write keeps beside its key (the lock's fence register, the token's lock, the writer's site) is
/// stored in the partition of that key, so that a write changes one partition only (the replicas and the
/// primary of a partition are a subset of a site's nodes, and only they hold it).
pub const PLACED_KEY_PREFIX: &[u8] = &[0xff, 0x00, b'@'];

/// `PLACED_KEY_PREFIX ++ partition ++ kind ++ name`.
fn placed_key(partition: u16, kind: &[u8], name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(PLACED_KEY_PREFIX.len() + 2 + kind.len() + name.len());
    key.extend_from_slice(PLACED_KEY_PREFIX);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(kind);
    key.extend_from_slice(name);
    key
}

/// The partition a placed reserved key belongs to (see [`PLACED_KEY_PREFIX`]); `None` for every other key.
pub fn placed_partition(key: &[u8]) -> Option<u16> {
    let rest = key.strip_prefix(PLACED_KEY_PREFIX)?;
    let partition = rest.first_chunk::<2>()?;
    Some(u16::from_be_bytes(*partition))
}

/// The reserved key of `lock`'s fence register in `partition`: the highest token that fenced writes to
/// that partition's keys made or merged here have raised it to.
pub fn fence_key(lock: &str, partition: u16) -> Vec<u8> {
    placed_key(partition, b"fence/", lock.as_bytes())
}

/// The reserved key that names the lock a fencing token was granted for: a register holding the lock's
/// name, written (and replicated) in `partition` when a fenced write to that partition first raises the
/// lock's fence register to `token`. Tokens are unique across locks, so a read can say which lock the
/// winning write was made under.
pub fn token_lock_key(token: u64, partition: u16) -> Vec<u8> {
    placed_key(partition, b"token/", &token.to_be_bytes())
}

/// The reserved key that names the site of a replica: a register holding the site's name, written in
/// `partition` by the replica before its first write to that partition in each run and replicated like any
/// key, so every replica of the partition learns which site each write's replica belongs to.
pub fn replica_site_key(replica: crate::ReplicaId, partition: u16) -> Vec<u8> {
    placed_key(partition, b"replica/", &replica.0.to_be_bytes())
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
