//! Storage in memory that can lose power: what the simulation harness and crash tests use as a disk.
//! A process crash loses nothing the storage accepted (buffered writes are in the operating system's
//! cache); a power loss ([`LossyMemoryStorage::lose_unsynced`]) also loses every write made with
//! `Durability::Buffered` since the last `Durability::Sync` one, as RocksDB does (a synced write persists
//! the whole write-ahead log before it).

use std::sync::Mutex;

use crate::{Batch, Durability, MemoryStorage, Result, Space, Storage};

/// A [`MemoryStorage`] that remembers which writes were synced, so that a test can simulate a power loss
/// with [`LossyMemoryStorage::lose_unsynced`].
#[derive(Default)]
pub struct LossyMemoryStorage {
    inner: Mutex<Disk>,
}

#[derive(Default)]
struct Disk {
    /// What reads see.
    visible: MemoryStorage,
    /// What survives a power loss.
    durable: MemoryStorage,
    /// Written to `visible`, not yet to `durable`.
    unsynced: Vec<Batch>,
}

impl LossyMemoryStorage {
    /// An empty storage with nothing unsynced.
    pub fn new() -> Self {
        Self::default()
    }

    /// Power loss: drops every write since the last synced one. Returns how many batches were lost.
    pub fn lose_unsynced(&self) -> usize {
        let mut disk = self.inner.lock().expect("disk lock poisoned");
        let lost = disk.unsynced.len();
        if lost > 0 {
            let copy = MemoryStorage::new();
            // Past every key: geostore's keys are far shorter than 64 KiB.
            let end = vec![0xff_u8; 1 << 16];
            for space in Space::ALL {
                let entries = disk.durable.scan(space, &[], &end, usize::MAX).expect("memory scan");
                let mut batch = Batch::new();
                for (key, value) in entries {
                    batch.put(space, key, value);
                }
                copy.write(batch, Durability::Sync).expect("memory write");
            }
            disk.visible = copy;
            disk.unsynced.clear();
        }
        lost
    }
}

impl Storage for LossyMemoryStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.lock().expect("disk lock poisoned").visible.get(space, key)
    }

    fn write(&self, batch: Batch, durability: Durability) -> Result<()> {
        let mut disk = self.inner.lock().expect("disk lock poisoned");
        disk.visible.write(batch.clone(), durability)?;
        match durability {
            Durability::Buffered => disk.unsynced.push(batch),
            Durability::Sync => {
                for earlier in std::mem::take(&mut disk.unsynced) {
                    disk.durable.write(earlier, Durability::Sync)?;
                }
                disk.durable.write(batch, Durability::Sync)?;
            }
        }
        Ok(())
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.lock().expect("disk lock poisoned").visible.scan(space, start, end, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(disk: &LossyMemoryStorage, key: &[u8], durability: Durability) {
        let mut batch = Batch::new();
        batch.put(Space::Data, key.to_vec(), b"v".to_vec());
        disk.write(batch, durability).unwrap();
    }

    #[test]
    fn power_loss_drops_only_what_no_sync_covered() {
        let disk = LossyMemoryStorage::new();
        put(&disk, b"a", Durability::Buffered);
        put(&disk, b"b", Durability::Sync);
        put(&disk, b"c", Durability::Buffered);
        assert!(disk.get(Space::Data, b"c").unwrap().is_some());
        assert_eq!(disk.lose_unsynced(), 1);
        assert!(disk.get(Space::Data, b"a").unwrap().is_some(), "a sync persists the writes before it");
        assert!(disk.get(Space::Data, b"b").unwrap().is_some());
        assert!(disk.get(Space::Data, b"c").unwrap().is_none());
        assert_eq!(disk.lose_unsynced(), 0);
    }
}
