//! The lock group's log and state machine against openraft's own storage test suite, on real RocksDB.

use std::sync::Arc;

use geostore_lockgroup::store::{LogStore, StateMachine};
use geostore_lockgroup::types::{StorageError, TypeConfig};
use geostore_storage::{MemoryStorage, RocksStorage, Storage};
use openraft::testing::{StoreBuilder, Suite};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(dir.path()).expect("RocksDB opens"));
        Ok((dir, LogStore::open(storage.clone())?, StateMachine::open(storage, 0)?))
    }
}

/// In memory; `inline` as the simulation runs it (no flusher thread).
struct MemoryBuilder {
    inline: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for MemoryBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError> {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        Ok(((), LogStore::open_with(storage.clone(), self.inline)?, StateMachine::open(storage, 0)?))
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
