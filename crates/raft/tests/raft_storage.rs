//! The Raft machinery's log and state machine against openraft's own storage test suite, on real RocksDB
//! and in memory, with the test machine [`Counter`] (the suite exercises the log, votes, memberships and
//! snapshots, which do not depend on the machine).

use std::sync::Arc;

use geostore_raft::store::{LogStore, StateMachine};
use geostore_raft::testing::Counter;
use geostore_raft::{StorageError, TypeConfig};
use geostore_storage::{MemoryStorage, RocksStorage, Storage};
use openraft::testing::{StoreBuilder, Suite};

type Log = LogStore<Counter>;
type Machine = StateMachine<Counter>;

struct RocksBuilder;

impl StoreBuilder<TypeConfig<Counter>, Log, Machine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, Log, Machine), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(dir.path()).expect("RocksDB opens"));
        Ok((dir, LogStore::open(storage.clone())?, StateMachine::open(storage, ())?))
    }
}

/// In memory; `inline` as the simulation runs it (no flusher thread).
struct MemoryBuilder {
    inline: bool,
}

impl StoreBuilder<TypeConfig<Counter>, Log, Machine, ()> for MemoryBuilder {
    async fn build(&self) -> Result<((), Log, Machine), StorageError> {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        Ok(((), LogStore::open_with(storage.clone(), self.inline)?, StateMachine::open(storage, ())?))
    }
}

#[test]
fn rocksdb_storage_passes_openraft_suite() {
    Suite::test_all(RocksBuilder).unwrap();
}

#[test]
fn memory_storage_passes_openraft_suite() {
    Suite::test_all(MemoryBuilder { inline: false }).unwrap();
}

#[test]
fn memory_storage_with_inline_writes_passes_openraft_suite() {
    Suite::test_all(MemoryBuilder { inline: true }).unwrap();
}
