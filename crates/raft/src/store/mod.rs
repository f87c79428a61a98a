//! A group's Raft log and state machine, on geostore's [`Storage`] (RocksDB in production, memory in
//! tests and the simulation), in the `raft` key space under the group's [`Machine::KEY_PREFIX`].
//!
//! One concern a file:
//! - `log.rs`: [`LogStore`], the Raft log (openraft's `RaftLogReader` and `RaftLogStorage`), with the
//!   appended entries not yet on disk kept readable in memory;
//! - `flusher.rs`: the thread that makes appends durable in groups (one fsync each) and writes truncations
//!   and purges in order with them;
//! - `machine.rs`: [`StateMachine`] (openraft's `RaftStateMachine` and `RaftSnapshotBuilder`) and its
//!   snapshots;
//! - `shared.rs`: [`Shared`] and [`Applied`], what the rest of the node reads from the state machine
//!   and waits on (the machine's state, its observer, the applied index);
//! - here: the key layout and the helpers every file reads and writes records with.
//!
//! Layout (keys in [`Space::Raft`], each after the group's prefix):
//! - `e` + index (8 bytes, big-endian): one log entry;
//! - `vote`, `committed`, `purged`: the last vote, the last known committed log id and the last purged
//!   log id;
//! - `snapshot`: the latest snapshot (its metadata and the serialized state machine).
//!
//! The lock group's prefix is empty (its keys are where version 0.1 wrote them, so its data directories
//! open unchanged); every other group's prefix is a name without `/`, then `/`, and does not start with
//! `e` ([`check_prefix`]): so the lock group's entry keys (`e` + 8 bytes) and its four named keys never
//! meet another group's keys, and two named groups' keys never meet.
//!
//! Every value is encoded by [`crate::codec`] (a format byte, then postcard).
//!
//! The state machine lives in memory and is made durable by snapshots plus the log: on restart it loads
//! the latest snapshot and openraft re-applies the committed entries after it. Appends are fsynced before
//! openraft is told they are flushed, so a vote or an acknowledged entry survives a crash of the machine.

// openraft's trait methods return its `StorageError` (large, but not ours to shrink); the helpers here
// return the same type so that `?` works throughout.
#![allow(clippy::result_large_err)]

mod flusher;
mod log;
mod machine;
mod shared;

pub use log::LogStore;
pub use machine::StateMachine;
pub use shared::{Applied, Shared};

use geostore_storage::{Space, Storage};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use serde::Deserialize;

use crate::codec::decode;
use crate::{Machine, NodeId, StorageError};

const ENTRY_PREFIX: u8 = b'e';
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";
const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// `name` after the prefix of `M`'s group.
fn key<M: Machine>(name: &[u8]) -> Vec<u8> {
    [M::KEY_PREFIX, name].concat()
}

/// The key of the log entry at `index` in `M`'s group: its big-endian bytes keep the entries in index
/// order.
fn entry_key<M: Machine>(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(M::KEY_PREFIX.len() + 9);
    key.extend_from_slice(M::KEY_PREFIX);
    key.push(ENTRY_PREFIX);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Whether `M`'s key prefix keeps its keys apart from every other group's (see the layout above).
pub fn check_prefix<M: Machine>() -> Result<(), String> {
    let prefix = M::KEY_PREFIX;
    let Some((&last, name)) = prefix.split_last() else { return Ok(()) };
    if last != b'/' || name.is_empty() || name.contains(&b'/') || name[0] == ENTRY_PREFIX {
        return Err(format!(
            "group {}: key prefix {:?} is not a name (not starting with `e`) and a `/`",
            M::GROUP,
            String::from_utf8_lossy(prefix)
        ));
    }
    Ok(())
}

fn read_error(subject: ErrorSubject<NodeId>, error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(subject, ErrorVerb::Read, openraft::AnyError::new(&error)).into()
}

fn write_error(subject: ErrorSubject<NodeId>, error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(subject, ErrorVerb::Write, openraft::AnyError::new(&error)).into()
}

/// Reads and decodes the record at `key` in the `raft` space, if there is one.
fn get_record<T: for<'de> Deserialize<'de>>(storage: &dyn Storage, key: &[u8]) -> Result<Option<T>, StorageError> {
    let Some(bytes) = storage.get(Space::Raft, key).map_err(|e| read_error(ErrorSubject::Store, e))? else {
        return Ok(None);
    };
    decode(&bytes).map(Some).map_err(|e| read_error(ErrorSubject::Store, e))
}
