use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{Batch, Change, Durability, Result, Space, Storage};

/// One key space's entries, in key order.
type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Everything in memory, behind one mutex: for tests and the simulation. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    spaces: Mutex<BTreeMap<Space, Entries>>,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let spaces = self.spaces.lock().expect("memory storage lock poisoned");
        Ok(spaces.get(&space).and_then(|entries| entries.get(key)).cloned())
    }

    fn write(&self, batch: Batch, _durability: Durability) -> Result<()> {
        let mut spaces = self.spaces.lock().expect("memory storage lock poisoned");
        for change in batch.changes {
            match change {
                Change::Put { space, key, value } => {
                    spaces.entry(space).or_default().insert(key, value);
                }
                Change::Delete { space, key } => {
                    spaces.entry(space).or_default().remove(&key);
                }
            }
        }
        Ok(())
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let spaces = self.spaces.lock().expect("memory storage lock poisoned");
        let Some(entries) = spaces.get(&space) else { return Ok(Vec::new()) };
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(entries
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }
}
