//! The lock group's Raft log and state machine, on geostore's [`Storage`] (RocksDB in production, memory in
//! tests and the simulation), in the `raft` key space.
//!
//! One concern a file:
//! - `log.rs`: [`LogStore`], the Raft log (openraft's `RaftLogReader` and `RaftLogStorage`), with the
//!   appended entries not yet on disk kept readable in memory;
//! - `flusher.rs`: the thread that makes appends durable in groups (one fsync each) and writes truncations
//!   and purges in order with them;
//! - `machine.rs`: [`StateMachine`] (openraft's `RaftStateMachine` and `RaftSnapshotBuilder`) and its
//!   snapshots;
//! - `shared.rs`: [`Shared`] and [`MachineState`], what the rest of the node reads from the state machine
//!   and waits on (request outcomes, lock changes, the applied index);
//! - here: the key layout and the helpers every file reads and writes records with.
//!
//! Layout (keys in [`Space::Raft`]):
//! - `e` + index (8 bytes, big-endian): one log entry;
//! - `vote`, `committed`, `purged`: the last vote, the last known committed log id and the last purged
//!   log id;
//! - `snapshot`: the latest snapshot (its metadata and the serialized state machine).
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
pub use shared::{MachineState, Shared};

use geostore_storage::{Space, Storage};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use serde::Deserialize;

use crate::codec::decode;
use crate::types::{NodeId, StorageError};

const ENTRY_PREFIX: u8 = b'e';
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";
const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// The key of the log entry at `index`: its big-endian bytes keep the entries in index order.
fn entry_key(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(ENTRY_PREFIX);
    key.extend_from_slice(&index.to_be_bytes());
    key
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
