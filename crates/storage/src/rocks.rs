use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteOptions};

use crate::{Batch, Change, Durability, Result, Space, Storage, StorageError};

/// RocksDB, one column family per [`Space`].
pub struct RocksStorage {
    db: DB,
}

impl RocksStorage {
    /// Opens (or creates) the database in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Two cores is the machine this runs on in tests; more background jobs only contend.
        options.increase_parallelism(2);
        options.set_max_background_jobs(2);
        // Bound the write-ahead log so that a restart replays at most this much.
        options.set_max_total_wal_size(256 * 1024 * 1024);
        let families = Space::ALL.map(|space| {
            let mut family = Options::default();
            family.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(space.name(), family)
        });
        let db = DB::open_cf_descriptors(&options, path, families)?;
        Ok(Self { db })
    }

    fn family(&self, space: Space) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(space.name()).expect("every column family is created at open")
    }
}

impl Storage for RocksStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.family(space), key)?)
    }

    fn write(&self, batch: Batch, durability: Durability) -> Result<()> {
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for change in batch.changes {
            match change {
                Change::Put { space, key, value } => rocks_batch.put_cf(self.family(space), key, value),
                Change::Delete { space, key } => rocks_batch.delete_cf(self.family(space), key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(durability == Durability::Sync);
        self.db.write_opt(rocks_batch, &options).map_err(StorageError::from)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end.to_vec());
        let iterator =
            self.db.iterator_cf_opt(self.family(space), options, IteratorMode::From(start, Direction::Forward));
        let mut entries = Vec::new();
        for item in iterator.take(limit) {
            let (key, value) = item?;
            entries.push((key.into_vec(), value.into_vec()));
        }
        Ok(entries)
    }
}
