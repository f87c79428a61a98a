//! Storage for geostore: a small ordered key-value trait with atomic batches, implemented on RocksDB for
//! production and in memory for tests and the simulation.
//!
//! The trait stores bytes: it knows nothing of CRDTs, partitions, replication or what its keys mean (the
//! node's store keeps its key schema in `geostore_node::store::keys`). Group commit lives above this trait
//! (in the node's write path), so both implementations get it.

#![warn(missing_docs)]

mod lossy;
mod memory;
mod rocks;

pub use lossy::LossyMemoryStorage;
pub use memory::MemoryStorage;
pub use rocks::RocksStorage;

/// Separate key spaces. RocksDB keeps each in its own column family, so that the change log (written once,
/// read in order, trimmed from the front) and the data (updated in place) compact independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// The current state of every key.
    Data,
    /// Each partition's change log.
    Log,
    /// Node identity, sequence numbers and other bookkeeping.
    Meta,
    /// The lock group's Raft log, vote and snapshot.
    Raft,
}

impl Space {
    /// Every space, in declaration order (RocksDB opens one column family for each).
    pub const ALL: [Space; 4] = [Space::Data, Space::Log, Space::Meta, Space::Raft];

    /// The space's name, which is also its RocksDB column family's name: renaming one loses its data.
    pub fn name(self) -> &'static str {
        match self {
            Space::Data => "data",
            Space::Log => "log",
            Space::Meta => "meta",
            Space::Raft => "raft",
        }
    }
}

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Durability {
    /// On stable storage (the write-ahead log is fsynced) before `write` returns. The default.
    #[default]
    Sync,
    /// In the operating system's buffers: survives the process being killed, not the machine losing power.
    Buffered,
}

/// A set of changes applied all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    changes: Vec<Change>,
}

/// One change in a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set `key` in `space` to `value`, replacing any value it had.
    Put {
        /// The key space.
        space: Space,
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` from `space`; removing an absent key is no error.
    Delete {
        /// The key space.
        space: Space,
        /// The key.
        key: Vec<u8>,
    },
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds setting `key` in `space` to `value`. Within a batch, a later change to the same key wins.
    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.changes.push(Change::Put { space, key, value });
    }

    /// Adds removing `key` from `space`. Within a batch, a later change to the same key wins.
    pub fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.changes.push(Change::Delete { space, key });
    }

    /// Whether the batch has no changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The number of changes in the batch.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Moves every change of `other` to the end of this batch.
    pub fn extend(&mut self, other: Batch) {
        self.changes.extend(other.changes);
    }

    /// The changes, in the order they were added (and are applied).
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }
}

/// A failed storage call. The node treats any failed write as the disk failing: it takes no more writes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// RocksDB refused or failed the call (an I/O error, corruption, a locked directory).
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A failure of an implementation other than RocksDB, described in words.
    #[error("{0}")]
    Other(String),
}

/// The result of a storage call.
pub type Result<T> = std::result::Result<T, StorageError>;

/// An ordered key-value store with atomic batches. Implementations are safe to call from many threads.
pub trait Storage: Send + Sync + 'static {
    /// The value of `key` in `space`, or `None` if it has none. Sees every write that has returned.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Applies every change in `batch` atomically. With [`Durability::Sync`] the batch is on stable
    /// storage when this returns.
    fn write(&self, batch: Batch, durability: Durability) -> Result<()>;

    /// Up to `limit` entries with `start <= key < end`, in key order.
    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

#[cfg(test)]
mod contract {
    //! The behaviour both implementations must share, run against each.

    use super::*;

    pub fn check_all(storage: &dyn Storage) {
        batches_are_applied_whole(storage);
        scans_are_ordered_bounded_and_limited(storage);
        spaces_are_separate(storage);
    }

    fn batches_are_applied_whole(storage: &dyn Storage) {
        let mut batch = Batch::new();
        batch.put(Space::Data, b"a".to_vec(), b"1".to_vec());
        batch.put(Space::Log, b"a".to_vec(), b"log".to_vec());
        batch.put(Space::Data, b"b".to_vec(), b"2".to_vec());
        batch.delete(Space::Data, b"b".to_vec());
        storage.write(batch, Durability::Sync).unwrap();
        assert_eq!(storage.get(Space::Data, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(storage.get(Space::Data, b"b").unwrap(), None, "a later delete in a batch wins");
        assert_eq!(storage.get(Space::Log, b"a").unwrap(), Some(b"log".to_vec()));
    }

    fn scans_are_ordered_bounded_and_limited(storage: &dyn Storage) {
        let mut batch = Batch::new();
        for key in [b"k3", b"k1", b"k2", b"k4"] {
            batch.put(Space::Meta, key.to_vec(), key.to_vec());
        }
        storage.write(batch, Durability::Buffered).unwrap();
        let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| entries.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(storage.scan(Space::Meta, b"k1", b"k4", 10).unwrap()), [b"k1", b"k2", b"k3"]);
        assert_eq!(keys(storage.scan(Space::Meta, b"k2", b"k9", 2).unwrap()), [b"k2", b"k3"]);
    }

    fn spaces_are_separate(storage: &dyn Storage) {
        assert_eq!(storage.get(Space::Meta, b"a").unwrap(), None);
    }

    #[test]
    fn memory_storage_keeps_the_contract() {
        check_all(&MemoryStorage::new());
    }

    #[test]
    fn rocks_storage_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        check_all(&RocksStorage::open(dir.path()).unwrap());
    }
}
