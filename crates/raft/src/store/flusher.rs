//! The log flusher: the thread that writes the log's appends in groups, one fsync for all the appends
//! that queued up while the previous group was written, and its truncations and purges in order with them.
//!
//! Its loop is [`geostore_runtime::group_commit`] (the node's store writer has the same shape), with a
//! group bound of [`FLUSH_BATCH_ENTRIES_MAX`] entries, so a burst of appends becomes several bounded
//! RocksDB batches rather than one of any size.
//!
//! Ordering rule: a removal (truncation or purge) is written after every append queued before it and
//! before every append queued after it. Within a group the appends before a removal are written (and
//! answered) first, then the removal, then the group goes on; the groups themselves are written in queue
//! order.

use std::sync::{Arc, Mutex, mpsc};

use geostore_runtime::group_commit;
use geostore_storage::{Batch, Durability, Storage};
use openraft::ErrorSubject;

use super::log::LogMemory;
use super::write_error;
use crate::{LogId, Machine, StorageError};

/// Log entries the flusher takes into one group, and so at most into one fsync, before it writes what it
/// has. A removal counts as one entry. The append that reaches the bound stays in its group, so one
/// write holds fewer than this many entries plus those of its last append (openraft's appends are
/// themselves bounded: followers get at most `max_payload_entries` per message).
pub(super) const FLUSH_BATCH_ENTRIES_MAX: usize = 1024;

/// Told whether an append reached the disk: openraft's `LogFlushed` callback in production.
pub(super) type Flushed = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Entries to write, already readable from the log's memory.
pub(super) struct Append {
    /// Puts the entries.
    pub(super) batch: Batch,
    /// Their ids, to release them from memory once written.
    pub(super) entries: Vec<LogId>,
    /// Called once the batch is fsynced, or its write failed.
    pub(super) flushed: Flushed,
}

enum FlushJob {
    Append(Append),
    /// A truncation or purge: written in order after every earlier append; `done` gets the result.
    Remove {
        batch: Batch,
        done: mpsc::Sender<Result<(), String>>,
    },
}

impl FlushJob {
    /// What the job counts against [`FLUSH_BATCH_ENTRIES_MAX`].
    fn entries(&self) -> usize {
        match self {
            FlushJob::Append(append) => append.entries.len(),
            FlushJob::Remove { .. } => 1,
        }
    }
}

/// The flusher thread and its queue. When the last handle on the log goes, the queue closes and the
/// thread is joined: it finishes its writes and lets go of the storage before anything else can close
/// it (a thread still holding RocksDB while the process exits crashes it).
pub(super) struct Flusher {
    jobs: Option<mpsc::Sender<FlushJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flusher thread for the log in `storage` whose memory is `state`.
    pub(super) fn start<M: Machine>(
        storage: Arc<dyn Storage>,
        state: Arc<Mutex<LogMemory<M>>>,
    ) -> Result<Self, StorageError> {
        let (sender, jobs) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("geostore-raft-log".into())
            .spawn(move || flush_loop(storage, state, jobs))
            .map_err(|e| write_error(ErrorSubject::Logs, e))?;
        Ok(Flusher { jobs: Some(sender), thread: Some(thread) })
    }

    /// Queues `append`; its `flushed` callback is called once it is on disk.
    pub(super) fn append(&self, append: Append) -> Result<(), StorageError> {
        self.send(FlushJob::Append(append))
    }

    /// Writes `batch` after every queued append, and waits for it.
    pub(super) fn remove(&self, batch: Batch) -> Result<(), StorageError> {
        let (done, result) = mpsc::channel();
        self.send(FlushJob::Remove { batch, done })?;
        result
            .recv()
            .map_err(|_| stopped())?
            .map_err(|message| write_error(ErrorSubject::Logs, std::io::Error::other(message)))
    }

    fn send(&self, job: FlushJob) -> Result<(), StorageError> {
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> StorageError {
    write_error(ErrorSubject::Logs, std::io::Error::other("the log flusher stopped"))
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flusher thread: takes the queued jobs in groups of up to [`FLUSH_BATCH_ENTRIES_MAX`] entries and
/// writes each group in order, until the queue closes.
fn flush_loop<M: Machine>(storage: Arc<dyn Storage>, state: Arc<Mutex<LogMemory<M>>>, jobs: mpsc::Receiver<FlushJob>) {
    group_commit::run(jobs, FLUSH_BATCH_ENTRIES_MAX, FlushJob::entries, |group| {
        write_group(storage.as_ref(), &state, group);
    });
}

/// Writes one group: each run of appends together (one fsync), and each removal on its own, in order.
fn write_group<M: Machine>(storage: &dyn Storage, state: &Mutex<LogMemory<M>>, group: Vec<FlushJob>) {
    let mut run = Vec::new();
    for job in group {
        match job {
            FlushJob::Append(append) => run.push(append),
            FlushJob::Remove { batch, done } => {
                write_appends(storage, state, std::mem::take(&mut run));
                let result = storage.write(batch, Durability::Sync).map_err(|e| e.to_string());
                let _ = done.send(result);
            }
        }
    }
    write_appends(storage, state, run);
}

/// Writes `run` with one fsync, then releases its entries from memory (if the write succeeded) and calls
/// every append's callback with the result. Also the inline log's write path.
pub(super) fn write_appends<M: Machine>(storage: &dyn Storage, state: &Mutex<LogMemory<M>>, mut run: Vec<Append>) {
    if run.is_empty() {
        return;
    }
    let mut combined = Batch::new();
    for append in &mut run {
        combined.extend(std::mem::take(&mut append.batch));
    }
    let result = storage.write(combined, Durability::Sync);
    if result.is_ok() {
        let mut memory = state.lock().expect("log memory lock poisoned");
        memory.release_flushed(run.iter().flat_map(|append| &append.entries));
    }
    for append in run {
        let outcome = match &result {
            Ok(()) => Ok(()),
            Err(error) => Err(std::io::Error::other(error.to_string())),
        };
        (append.flushed)(outcome);
    }
}

#[cfg(test)]
mod tests {
    use geostore_storage::{MemoryStorage, Space};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::codec::decode;
    use crate::store::entry_key;
    use crate::testing::Counter;

    type Entry = crate::Entry<Counter>;
    type LogMemory = super::LogMemory<Counter>;

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    /// An append of `entries` staged in `state` (readable from memory, as `LogStore::append` leaves it),
    /// whose callback reports its result, tagged with `tag`, on `results`.
    fn staged(
        state: &Mutex<LogMemory>,
        entries: Vec<Entry>,
        tag: u64,
        results: &mpsc::Sender<(u64, Result<(), String>)>,
    ) -> Append {
        let (batch, ids) = state.lock().unwrap().stage(entries);
        let results = results.clone();
        let flushed: Flushed = Box::new(move |result| {
            results.send((tag, result.map_err(|e| e.to_string()))).unwrap();
        });
        Append { batch, entries: ids, flushed }
    }

    fn stored_terms(storage: &dyn Storage, indexes: std::ops::RangeInclusive<u64>) -> Vec<Option<u64>> {
        indexes
            .map(|index| {
                let bytes = storage.get(Space::Raft, &entry_key::<Counter>(index)).unwrap()?;
                Some(decode::<Entry>(&bytes).unwrap().log_id.leader_id.term)
            })
            .collect()
    }

    /// Queues `filler` single-entry appends (indexes `1..=filler`, term 1), then entries `filler + 1 ..=
    /// filler + 3` of term 1, a truncation from `filler + 2` and a new leader's entry `filler + 2` of
    /// term 2, runs the flusher loop over them, and checks the result is what that order leaves.
    fn truncation_between_appends(filler: u64) {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let state = Arc::new(Mutex::new(LogMemory::default()));
        let (results, answers) = mpsc::channel();
        let (sender, jobs) = mpsc::channel();
        for index in 1..=filler {
            sender.send(FlushJob::Append(staged(&state, vec![entry(1, index)], index, &results))).unwrap();
        }
        let old = (filler + 1..=filler + 3).map(|index| entry(1, index)).collect();
        sender.send(FlushJob::Append(staged(&state, old, filler + 1, &results))).unwrap();
        let mut truncation = Batch::new();
        for index in filler + 2..=filler + 3 {
            truncation.delete(Space::Raft, entry_key::<Counter>(index));
        }
        let (done, removed) = mpsc::channel();
        sender.send(FlushJob::Remove { batch: truncation, done }).unwrap();
        sender.send(FlushJob::Append(staged(&state, vec![entry(2, filler + 2)], filler + 2, &results))).unwrap();
        drop(sender);
        flush_loop(storage.clone(), state.clone(), jobs);

        assert_eq!(removed.recv().unwrap(), Ok(()));
        let answered: Vec<(u64, Result<(), String>)> = answers.try_iter().collect();
        let expected: Vec<(u64, Result<(), String>)> = (1..=filler + 2).map(|tag| (tag, Ok(()))).collect();
        assert_eq!(answered, expected, "every append answered, in order");
        // Written in another order, the truncation would have removed the new entry, or the old entries
        // would have come back over it.
        let tail = stored_terms(storage.as_ref(), filler + 1..=filler + 3);
        assert_eq!(tail, vec![Some(1), Some(2), None]);
        assert_eq!(state.lock().unwrap().pending_entries(), 0, "every written entry is released from memory");
    }

    #[test]
    fn a_removal_is_written_after_earlier_appends_and_before_later_ones_in_one_group() {
        truncation_between_appends(0);
    }

    #[test]
    fn a_removal_is_written_after_earlier_appends_and_before_later_ones_across_groups() {
        // The filler and the three old entries reach the bound: the truncation starts the next group.
        truncation_between_appends(FLUSH_BATCH_ENTRIES_MAX as u64 - 1);
    }

    #[test]
    fn a_group_holds_at_most_the_bound_and_a_large_append_ends_it() {
        let state = Mutex::new(LogMemory::default());
        let (results, _answers) = mpsc::channel();
        let (sender, mut jobs) = mpsc::channel();
        let singles = 2 * FLUSH_BATCH_ENTRIES_MAX as u64 + 10;
        for index in 1..=singles {
            sender.send(FlushJob::Append(staged(&state, vec![entry(1, index)], index, &results))).unwrap();
        }
        let large = (1..=FLUSH_BATCH_ENTRIES_MAX as u64 + 5).map(|i| entry(1, singles + i)).collect();
        sender.send(FlushJob::Append(staged(&state, large, 0, &results))).unwrap();
        drop(sender);
        let mut groups = Vec::new();
        while let Some(group) = group_commit::next_group(&mut jobs, FLUSH_BATCH_ENTRIES_MAX, FlushJob::entries) {
            groups.push(group.iter().map(FlushJob::entries).collect::<Vec<_>>());
        }
        let full = vec![1; FLUSH_BATCH_ENTRIES_MAX];
        // The last ten singles do not reach the bound, so the large append joins (and ends) their group.
        let mut last = vec![1; 10];
        last.push(FLUSH_BATCH_ENTRIES_MAX + 5);
        assert_eq!(groups, vec![full.clone(), full, last]);
    }

    #[test]
    fn every_append_of_a_long_burst_is_written_and_answered_in_order() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let state = Arc::new(Mutex::new(LogMemory::default()));
        let (results, answers) = mpsc::channel();
        let flusher = Flusher::start(storage.clone(), state.clone()).unwrap();
        let appends = 3 * FLUSH_BATCH_ENTRIES_MAX as u64;
        for index in 1..=appends {
            flusher.append(staged(&state, vec![entry(1, index)], index, &results)).unwrap();
        }
        // Closes the queue and joins the thread once it has written everything queued.
        drop(flusher);
        let tags: Vec<u64> = answers.try_iter().map(|(tag, result)| result.map(|()| tag).unwrap()).collect();
        assert_eq!(tags, (1..=appends).collect::<Vec<_>>());
        assert!(stored_terms(storage.as_ref(), 1..=appends).iter().all(|term| *term == Some(1)));
        assert_eq!(state.lock().unwrap().pending_entries(), 0);
    }
}
