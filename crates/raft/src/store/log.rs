//! The Raft log: openraft's `RaftLogReader` and `RaftLogStorage` on the `raft` key space.
//!
//! Invariants:
//! - An entry is readable from the moment `append` returns: from memory (`pending`) until the flusher
//!   has written it, from storage after.
//! - openraft hears that an append is flushed only once its entries are fsynced.
//! - A truncation or purge reaches storage after every earlier append and before every later one (the
//!   flusher's order), so a queued append never brings back entries that were removed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use geostore_storage::{Batch, Durability, Space, Storage};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, RaftLogReader, Vote};

use super::flusher::{self, Append, Flusher};
use super::{COMMITTED_KEY, PURGED_KEY, VOTE_KEY, entry_key, get_record, key, read_error, write_error};
use crate::codec::{decode, encode};
use crate::{Entry, LogId, Machine, NodeId, StorageError, TypeConfig};

/// Entries read from storage per scan.
const SCAN_PAGE_ENTRIES_MAX: usize = 1024;

/// The Raft log. Cloning gives another handle on the same log (openraft reads through one while it
/// appends through another).
///
/// Appends are made durable by a flusher thread (`flusher.rs`), so the leader sends entries to its
/// followers while its own fsync runs (openraft's `LogFlushed` callback says when they are on disk).
/// Until then they are readable from memory (`pending`). Truncation and purging go through the same
/// thread, after every earlier append, so a queued append can never bring back entries that were removed.
pub struct LogStore<M: Machine> {
    storage: Arc<dyn Storage>,
    state: Arc<Mutex<LogMemory<M>>>,
    /// `None`: inline, every write made in the calling task (for the deterministic simulation).
    flusher: Option<Arc<Flusher>>,
}

/// The first and last entries the log holds, as openraft asks for them.
#[derive(Debug, Default, Clone, Copy)]
struct LogBounds {
    last_purged: Option<LogId>,
    last: Option<LogId>,
}

// Derived, it would ask `M: Clone`.
impl<M: Machine> Clone for LogStore<M> {
    fn clone(&self) -> Self {
        LogStore { storage: self.storage.clone(), state: self.state.clone(), flusher: self.flusher.clone() }
    }
}

/// The log's state in memory, shared by its handles and the flusher thread.
pub(super) struct LogMemory<M: Machine> {
    bounds: LogBounds,
    /// Appended entries not yet known to be on disk, by index.
    pending: BTreeMap<u64, Entry<M>>,
}

impl<M: Machine> Default for LogMemory<M> {
    fn default() -> Self {
        LogMemory { bounds: LogBounds::default(), pending: BTreeMap::new() }
    }
}

impl<M: Machine> LogMemory<M> {
    /// Makes `entries` readable (pending) and the last of them the log's last entry; returns the batch
    /// that writes them and their ids.
    pub(super) fn stage(&mut self, entries: impl IntoIterator<Item = Entry<M>>) -> (Batch, Vec<LogId>) {
        let mut batch = Batch::new();
        let mut ids = Vec::new();
        for entry in entries {
            batch.put(Space::Raft, entry_key::<M>(entry.log_id.index), encode(&entry));
            ids.push(entry.log_id);
            self.bounds.last = Some(entry.log_id);
            self.pending.insert(entry.log_id.index, entry);
        }
        (batch, ids)
    }

    /// Lets go of the pending copies of entries that are now on disk. An index whose pending entry is no
    /// longer `log_id` (a truncation replaced it meanwhile) keeps the newer one.
    pub(super) fn release_flushed<'a>(&mut self, flushed: impl IntoIterator<Item = &'a LogId>) {
        for log_id in flushed {
            if self.pending.get(&log_id.index).is_some_and(|entry| entry.log_id == *log_id) {
                self.pending.remove(&log_id.index);
            }
        }
    }

    /// How many appended entries are not yet known to be on disk.
    #[cfg(test)]
    pub(super) fn pending_entries(&self) -> usize {
        self.pending.len()
    }
}

impl<M: Machine> LogStore<M> {
    /// Opens the log in `storage`, finding its last entry, and starts its flusher thread (which ends when
    /// the last handle is dropped).
    pub fn open(storage: Arc<dyn Storage>) -> Result<Self, StorageError> {
        Self::open_with(storage, false)
    }

    /// [`LogStore::open`]; with `inline`, no flusher thread: each write is made (and fsynced) in the
    /// calling task before `append` returns. For the deterministic simulation.
    pub fn open_with(storage: Arc<dyn Storage>, inline: bool) -> Result<Self, StorageError> {
        let last_purged: Option<LogId> = get_record(storage.as_ref(), &key::<M>(PURGED_KEY))?;
        let mut last = last_purged;
        let mut from = last_purged.map_or(0, |id| id.index + 1);
        loop {
            let page = storage
                .scan(Space::Raft, &entry_key::<M>(from), &entry_key::<M>(u64::MAX), SCAN_PAGE_ENTRIES_MAX)
                .map_err(|e| read_error(ErrorSubject::Logs, e))?;
            let Some((_, bytes)) = page.last() else { break };
            let entry: Entry<M> = decode(bytes).map_err(|e| read_error(ErrorSubject::Logs, e))?;
            last = Some(entry.log_id);
            from = entry.log_id.index + 1;
            if page.len() < SCAN_PAGE_ENTRIES_MAX {
                break;
            }
        }
        let state = Arc::new(Mutex::new(LogMemory { bounds: LogBounds { last_purged, last }, ..LogMemory::default() }));
        if inline {
            return Ok(LogStore { storage, state, flusher: None });
        }
        let flusher = Flusher::start(storage.clone(), state.clone())?;
        Ok(LogStore { storage, state, flusher: Some(Arc::new(flusher)) })
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, LogMemory<M>> {
        self.state.lock().expect("log memory lock poisoned")
    }

    fn bounds(&self) -> LogBounds {
        self.memory().bounds
    }

    /// Writes `batch` (a truncation or purge) after every queued append, and waits for it.
    fn remove(&self, batch: Batch) -> Result<(), StorageError> {
        match &self.flusher {
            Some(flusher) => flusher.remove(batch),
            None => self.storage.write(batch, Durability::Sync).map_err(|e| write_error(ErrorSubject::Logs, e)),
        }
    }
}

impl<M: Machine> RaftLogReader<TypeConfig<M>> for LogStore<M> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<M>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&end) => end.saturating_add(1),
            Bound::Excluded(&end) => end,
            Bound::Unbounded => u64::MAX,
        };
        // Entries not yet flushed first (they are the newest); storage for the rest.
        let mut entries: BTreeMap<u64, Entry<M>> =
            self.memory().pending.range(start..end).map(|(index, entry)| (*index, entry.clone())).collect();
        let mut from = start;
        while from < end {
            let page = self
                .storage
                .scan(Space::Raft, &entry_key::<M>(from), &entry_key::<M>(end), SCAN_PAGE_ENTRIES_MAX)
                .map_err(|e| read_error(ErrorSubject::Logs, e))?;
            for (_, bytes) in &page {
                let entry: Entry<M> = decode(bytes).map_err(|e| read_error(ErrorSubject::Logs, e))?;
                from = entry.log_id.index + 1;
                entries.entry(entry.log_id.index).or_insert(entry);
            }
            if page.len() < SCAN_PAGE_ENTRIES_MAX {
                break;
            }
        }
        Ok(entries.into_values().collect())
    }
}

impl<M: Machine> RaftLogStorage<TypeConfig<M>> for LogStore<M> {
    type LogReader = LogStore<M>;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig<M>>, StorageError> {
        let bounds = self.bounds();
        Ok(LogState { last_purged_log_id: bounds.last_purged, last_log_id: bounds.last.or(bounds.last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut batch = Batch::new();
        batch.put(Space::Raft, key::<M>(VOTE_KEY), encode(vote));
        self.storage.write(batch, Durability::Sync).map_err(|e| write_error(ErrorSubject::Vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        get_record(self.storage.as_ref(), &key::<M>(VOTE_KEY))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Only a hint for a faster restart (entries up to it are re-applied at once): no fsync needed.
        let mut batch = Batch::new();
        batch.put(Space::Raft, key::<M>(COMMITTED_KEY), encode(&committed));
        self.storage.write(batch, Durability::Buffered).map_err(|e| write_error(ErrorSubject::Store, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_record::<Option<LogId>>(self.storage.as_ref(), &key::<M>(COMMITTED_KEY))?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig<M>>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<M>> + Send,
        I::IntoIter: Send,
    {
        let (batch, ids) = self.memory().stage(entries);
        if ids.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let append = Append { batch, entries: ids, flushed: Box::new(move |result| callback.log_io_completed(result)) };
        let Some(flusher) = &self.flusher else {
            flusher::write_appends(self.storage.as_ref(), &self.state, vec![append]);
            return Ok(());
        };
        // Readable now from memory; durable when the flusher calls back.
        flusher.append(append)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Removes log_id.index and everything after it: entries a new leader did not have.
        let last_index = {
            let mut memory = self.memory();
            memory.pending.retain(|index, _| *index < log_id.index);
            memory.bounds.last.map_or(0, |id| id.index)
        };
        let mut batch = Batch::new();
        for index in log_id.index..=last_index {
            batch.delete(Space::Raft, entry_key::<M>(index));
        }
        self.remove(batch)?;
        let previous = if log_id.index == 0 {
            None
        } else {
            self.try_get_log_entries(log_id.index - 1..log_id.index).await?.pop().map(|entry| entry.log_id)
        };
        let mut memory = self.memory();
        memory.bounds.last = previous.or(memory.bounds.last_purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Removes everything up to and including log_id: a snapshot covers it.
        let bounds = self.bounds();
        let first = bounds.last_purged.map_or(0, |id| id.index + 1);
        let mut batch = Batch::new();
        batch.put(Space::Raft, key::<M>(PURGED_KEY), encode(&log_id));
        for index in first..=log_id.index {
            batch.delete(Space::Raft, entry_key::<M>(index));
        }
        self.remove(batch)?;
        let mut memory = self.memory();
        memory.pending.retain(|index, _| *index > log_id.index);
        memory.bounds.last_purged = Some(log_id);
        if memory.bounds.last.is_none_or(|last| last.index < log_id.index) {
            memory.bounds.last = Some(log_id);
        }
        Ok(())
    }
}
