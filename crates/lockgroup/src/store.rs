//! The lock group's Raft log and state machine, on geostore's [`Storage`] (RocksDB in production, memory in
//! tests and the simulation), in the `raft` key space.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use geostore_locks::{Event, LockTable, Outcome, RequestId};
use geostore_storage::{Batch, Durability, Space, Storage};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot, watch};

use crate::codec::{decode, encode};
use crate::types::{Entry, LogId, Member, NodeId, Response, StorageError, TypeConfig};

const ENTRY_PREFIX: u8 = b'e';
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
/// Entries read from storage per scan.
const SCAN_PAGE: usize = 1024;

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

fn get_record<T: for<'de> Deserialize<'de>>(storage: &dyn Storage, key: &[u8]) -> Result<Option<T>, StorageError> {
    let Some(bytes) = storage.get(Space::Raft, key).map_err(|e| read_error(ErrorSubject::Store, e))? else {
        return Ok(None);
    };
    decode(&bytes).map(Some).map_err(|e| read_error(ErrorSubject::Store, e))
}

/// The Raft log. Cloning gives another handle on the same log (openraft reads through one while it
/// appends through another).
///
/// Appends are made durable by a flusher thread, so the leader sends entries to its followers while its
/// own fsync runs (openraft's `LogFlushed` callback says when they are on disk). Until then they are
/// readable from memory (`pending`). Truncation and purging go through the same thread, after every
/// earlier append, so a queued append can never bring back entries that were removed.
#[derive(Clone)]
pub struct LogStore {
    storage: Arc<dyn Storage>,
    state: Arc<Mutex<LogMemory>>,
    /// `None`: inline, every write made in the calling task (for the deterministic simulation).
    flusher: Option<Arc<Flusher>>,
}

/// The flusher thread's queue. When the last handle on the log goes, the queue closes and the thread is
/// joined: it finishes its writes and lets go of the storage before anything else can close it (a thread
/// still holding RocksDB while the process exits crashes it).
struct Flusher {
    jobs: Option<std::sync::mpsc::Sender<FlushJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn send(&self, job: FlushJob) -> Result<(), StorageError> {
        let stopped = || write_error(ErrorSubject::Logs, std::io::Error::other("the log flusher stopped"));
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct LogBounds {
    last_purged: Option<LogId>,
    last: Option<LogId>,
}

#[derive(Default)]
struct LogMemory {
    bounds: LogBounds,
    /// Appended entries not yet known to be on disk, by index.
    pending: BTreeMap<u64, Entry>,
}

enum FlushJob {
    /// Write these entries (indexes `first..=last`), then tell openraft.
    Append { batch: Batch, entries: Vec<LogId>, callback: LogFlushed<TypeConfig> },
    /// A truncation or purge: written in order after every earlier append; `done` gets the result.
    Remove { batch: Batch, done: std::sync::mpsc::Sender<Result<(), String>> },
}

/// The flusher thread: writes queued appends together (one fsync for all that queued up), then releases
/// their entries from memory and calls their callbacks.
fn flush_loop(storage: Arc<dyn Storage>, state: Arc<Mutex<LogMemory>>, jobs: std::sync::mpsc::Receiver<FlushJob>) {
    while let Ok(first) = jobs.recv() {
        let mut queued = vec![first];
        while let Ok(next) = jobs.try_recv() {
            queued.push(next);
        }
        let mut run = Vec::new();
        for job in queued {
            match job {
                FlushJob::Append { batch, entries, callback } => run.push((batch, entries, callback)),
                FlushJob::Remove { batch, done } => {
                    flush_appends(storage.as_ref(), &state, std::mem::take(&mut run));
                    let result = storage.write(batch, Durability::Sync).map_err(|e| e.to_string());
                    let _ = done.send(result);
                }
            }
        }
        flush_appends(storage.as_ref(), &state, run);
    }
}

fn flush_appends(
    storage: &dyn Storage,
    state: &Mutex<LogMemory>,
    mut run: Vec<(Batch, Vec<LogId>, LogFlushed<TypeConfig>)>,
) {
    if run.is_empty() {
        return;
    }
    let mut combined = Batch::new();
    for (batch, _, _) in &mut run {
        combined.extend(std::mem::take(batch));
    }
    let result = storage.write(combined, Durability::Sync);
    if result.is_ok() {
        let mut memory = state.lock().expect("log memory lock poisoned");
        for log_id in run.iter().flat_map(|(_, entries, _)| entries) {
            // Only if still the same entry: a truncation may have replaced it meanwhile.
            if memory.pending.get(&log_id.index).is_some_and(|entry| entry.log_id == *log_id) {
                memory.pending.remove(&log_id.index);
            }
        }
    }
    for (_, _, callback) in run {
        let outcome = match &result {
            Ok(()) => Ok(()),
            Err(error) => Err(std::io::Error::other(error.to_string())),
        };
        callback.log_io_completed(outcome);
    }
}

impl LogStore {
    /// Opens the log in `storage`, finding its last entry, and starts its flusher thread (which ends when
    /// the last handle is dropped).
    pub fn open(storage: Arc<dyn Storage>) -> Result<Self, StorageError> {
        Self::open_with(storage, false)
    }

    /// [`LogStore::open`]; with `inline`, no flusher thread: each write is made (and fsynced) in the
    /// calling task before `append` returns. For the deterministic simulation.
    pub fn open_with(storage: Arc<dyn Storage>, inline: bool) -> Result<Self, StorageError> {
        let last_purged: Option<LogId> = get_record(storage.as_ref(), PURGED_KEY)?;
        let mut last = last_purged;
        let mut from = last_purged.map_or(0, |id| id.index + 1);
        loop {
            let page = storage
                .scan(Space::Raft, &entry_key(from), &entry_key(u64::MAX), SCAN_PAGE)
                .map_err(|e| read_error(ErrorSubject::Logs, e))?;
            let Some((_, bytes)) = page.last() else { break };
            let entry: Entry = decode(bytes).map_err(|e| read_error(ErrorSubject::Logs, e))?;
            last = Some(entry.log_id);
            from = entry.log_id.index + 1;
            if page.len() < SCAN_PAGE {
                break;
            }
        }
        let state = Arc::new(Mutex::new(LogMemory { bounds: LogBounds { last_purged, last }, ..LogMemory::default() }));
        if inline {
            return Ok(LogStore { storage, state, flusher: None });
        }
        let (sender, jobs) = std::sync::mpsc::channel();
        let (thread_storage, thread_state) = (storage.clone(), state.clone());
        let thread = std::thread::Builder::new()
            .name("geostore-raft-log".into())
            .spawn(move || flush_loop(thread_storage, thread_state, jobs))
            .map_err(|e| write_error(ErrorSubject::Logs, e))?;
        let flusher = Flusher { jobs: Some(sender), thread: Some(thread) };
        Ok(LogStore { storage, state, flusher: Some(Arc::new(flusher)) })
    }

    fn bounds(&self) -> LogBounds {
        self.state.lock().expect("log memory lock poisoned").bounds
    }

    /// Writes `batch` after every queued append, and waits for it.
    fn remove(&self, batch: Batch) -> Result<(), StorageError> {
        let Some(flusher) = &self.flusher else {
            return self.storage.write(batch, Durability::Sync).map_err(|e| write_error(ErrorSubject::Logs, e));
        };
        let (done, result) = std::sync::mpsc::channel();
        let stopped = || write_error(ErrorSubject::Logs, std::io::Error::other("the log flusher stopped"));
        flusher.send(FlushJob::Remove { batch, done })?;
        result
            .recv()
            .map_err(|_| stopped())?
            .map_err(|message| write_error(ErrorSubject::Logs, std::io::Error::other(message)))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
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
        let mut entries: BTreeMap<u64, Entry> = {
            let memory = self.state.lock().expect("log memory lock poisoned");
            memory.pending.range(start..end).map(|(index, entry)| (*index, entry.clone())).collect()
        };
        let mut from = start;
        while from < end {
            let page = self
                .storage
                .scan(Space::Raft, &entry_key(from), &entry_key(end), SCAN_PAGE)
                .map_err(|e| read_error(ErrorSubject::Logs, e))?;
            for (_, bytes) in &page {
                let entry: Entry = decode(bytes).map_err(|e| read_error(ErrorSubject::Logs, e))?;
                from = entry.log_id.index + 1;
                entries.entry(entry.log_id.index).or_insert(entry);
            }
            if page.len() < SCAN_PAGE {
                break;
            }
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let bounds = self.bounds();
        Ok(LogState { last_purged_log_id: bounds.last_purged, last_log_id: bounds.last.or(bounds.last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut batch = Batch::new();
        batch.put(Space::Raft, VOTE_KEY.to_vec(), encode(vote));
        self.storage.write(batch, Durability::Sync).map_err(|e| write_error(ErrorSubject::Vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        get_record(self.storage.as_ref(), VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Only a hint for a faster restart (entries up to it are re-applied at once): no fsync needed.
        let mut batch = Batch::new();
        batch.put(Space::Raft, COMMITTED_KEY.to_vec(), encode(&committed));
        self.storage.write(batch, Durability::Buffered).map_err(|e| write_error(ErrorSubject::Store, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_record::<Option<LogId>>(self.storage.as_ref(), COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Batch::new();
        let mut ids = Vec::new();
        {
            let mut memory = self.state.lock().expect("log memory lock poisoned");
            for entry in entries {
                batch.put(Space::Raft, entry_key(entry.log_id.index), encode(&entry));
                ids.push(entry.log_id);
                memory.bounds.last = Some(entry.log_id);
                memory.pending.insert(entry.log_id.index, entry);
            }
        }
        if ids.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let Some(flusher) = &self.flusher else {
            flush_appends(self.storage.as_ref(), &self.state, vec![(batch, ids, callback)]);
            return Ok(());
        };
        // Readable now from memory; durable when the flusher calls back.
        flusher.send(FlushJob::Append { batch, entries: ids, callback })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Removes log_id.index and everything after it: entries a new leader did not have.
        let last_index = {
            let mut memory = self.state.lock().expect("log memory lock poisoned");
            memory.pending.retain(|index, _| *index < log_id.index);
            memory.bounds.last.map_or(0, |id| id.index)
        };
        let mut batch = Batch::new();
        for index in log_id.index..=last_index {
            batch.delete(Space::Raft, entry_key(index));
        }
        self.remove(batch)?;
        let previous = if log_id.index == 0 {
            None
        } else {
            self.try_get_log_entries(log_id.index - 1..log_id.index).await?.pop().map(|entry| entry.log_id)
        };
        let mut memory = self.state.lock().expect("log memory lock poisoned");
        memory.bounds.last = previous.or(memory.bounds.last_purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Removes everything up to and including log_id: a snapshot covers it.
        let bounds = self.bounds();
        let first = bounds.last_purged.map_or(0, |id| id.index + 1);
        let mut batch = Batch::new();
        batch.put(Space::Raft, PURGED_KEY.to_vec(), encode(&log_id));
        for index in first..=log_id.index {
            batch.delete(Space::Raft, entry_key(index));
        }
        self.remove(batch)?;
        let mut memory = self.state.lock().expect("log memory lock poisoned");
        memory.pending.retain(|index, _| *index > log_id.index);
        memory.bounds.last_purged = Some(log_id);
        if memory.bounds.last.is_none_or(|last| last.index < log_id.index) {
            memory.bounds.last = Some(log_id);
        }
        Ok(())
    }
}

/// The replicated state: the lock table, the last applied log id and the group's membership (which holds
/// the cluster's sites and nodes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineState {
    pub table: LockTable,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, Member>,
}

/// What the rest of the node reads from the state machine and waits on: shared with the gRPC services.
pub struct Shared {
    state: Mutex<MachineState>,
    /// Final outcomes of acquires and releases, for the callers waiting on them on this node.
    waiters: Mutex<HashMap<RequestId, oneshot::Sender<Outcome>>>,
    /// Names of locks whose state changed, as entries are applied here.
    changes: broadcast::Sender<String>,
    /// The last applied index: the leader's timer loop wakes up on every change.
    applied: watch::Sender<u64>,
}

/// Lock-name changes a slow watcher may fall behind by before it is told to start over.
const CHANGES_BUFFER: usize = 4096;

impl Shared {
    fn new(state: MachineState) -> Arc<Self> {
        let applied = state.last_applied.map_or(0, |id| id.index);
        Arc::new(Shared {
            state: Mutex::new(state),
            waiters: Mutex::new(HashMap::new()),
            changes: broadcast::channel(CHANGES_BUFFER).0,
            applied: watch::channel(applied).0,
        })
    }

    /// Reads the state machine (without holding the lock across an await).
    pub fn read<T>(&self, reader: impl FnOnce(&MachineState) -> T) -> T {
        reader(&self.state.lock().expect("state machine lock poisoned"))
    }

    /// Registers interest in the final outcome of request `id` (granted, released, timed out...), as
    /// decided by an entry applied on this node. Register before proposing, so the decision cannot be
    /// missed.
    pub fn await_outcome(&self, id: RequestId) -> oneshot::Receiver<Outcome> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().expect("waiters lock poisoned").insert(id, sender);
        receiver
    }

    /// Drops interest in request `id`.
    pub fn forget(&self, id: &RequestId) {
        self.waiters.lock().expect("waiters lock poisoned").remove(id);
    }

    pub fn subscribe_changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    pub fn waiting_requests(&self) -> usize {
        self.waiters.lock().expect("waiters lock poisoned").len()
    }

    /// Tells waiters and watchers what an applied entry did.
    fn publish<'a>(&self, events: impl Iterator<Item = &'a Event>) {
        for event in events {
            match event {
                Event::Decided { id, outcome } if !matches!(outcome, Outcome::Queued { .. }) => {
                    let waiter = self.waiters.lock().expect("waiters lock poisoned").remove(id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(outcome.clone());
                    }
                }
                Event::Changed { name } => {
                    let _ = self.changes.send(name.clone());
                }
                _ => {}
            }
        }
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    storage: Arc<dyn Storage>,
    shared: Arc<Shared>,
    lock_delay_ms: u64,
}

/// A snapshot as stored: its metadata and the serialized [`MachineState`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

impl StateMachine {
    /// Opens the state machine from the latest snapshot in `storage`, if any. `lock_delay_ms` is what this
    /// member proposes as lock-delay when it leads.
    pub fn open(storage: Arc<dyn Storage>, lock_delay_ms: u64) -> Result<Self, StorageError> {
        let mut state = match get_record::<StoredSnapshot>(storage.as_ref(), SNAPSHOT_KEY)? {
            Some(snapshot) => decode::<MachineState>(&snapshot.data)
                .map_err(|e| read_error(ErrorSubject::Snapshot(Some(snapshot.meta.signature())), e))?,
            None => MachineState::default(),
        };
        state.table.set_lock_delay_ms(lock_delay_ms);
        Ok(StateMachine { storage, shared: Shared::new(state), lock_delay_ms })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_log_id, last_membership) =
            self.shared.read(|state| (encode(state), state.last_applied, state.membership.clone()));
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        let mut batch = Batch::new();
        batch.put(Space::Raft, SNAPSHOT_KEY.to_vec(), encode(&stored));
        self.storage
            .write(batch, Durability::Sync)
            .map_err(|e| write_error(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, Member>), StorageError> {
        Ok(self.shared.read(|state| (state.last_applied, state.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let last_index = {
            let mut state = self.shared.state.lock().expect("state machine lock poisoned");
            for entry in entries {
                let index = entry.log_id.index;
                state.last_applied = Some(entry.log_id);
                let events = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Vec::new()
                    }
                    EntryPayload::Normal(request) => state.table.apply(index, request.0),
                };
                responses.push(Response { index, events });
            }
            state.last_applied.map_or(0, |id| id.index)
        };
        // Outside the state lock: waking a waiter may run its task at once.
        self.shared.publish(responses.iter().flat_map(|response| &response.events));
        self.shared.applied.send_replace(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine { storage: self.storage.clone(), shared: self.shared.clone(), lock_delay_ms: self.lock_delay_ms }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut state: MachineState =
            decode(&data).map_err(|e| read_error(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        state.table.set_lock_delay_ms(self.lock_delay_ms);
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let mut batch = Batch::new();
        batch.put(Space::Raft, SNAPSHOT_KEY.to_vec(), encode(&stored));
        self.storage
            .write(batch, Durability::Sync)
            .map_err(|e| write_error(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        let (names, last_index) = {
            let mut current = self.shared.state.lock().expect("state machine lock poisoned");
            let names: BTreeSet<String> = current.table.names().chain(state.table.names()).cloned().collect();
            *current = state;
            (names, current.last_applied.map_or(0, |id| id.index))
        };
        // Every lock may have changed, and requests decided inside the snapshot are lost to their waiters
        // here: they time out as unknown, and a retry with the same id gets the remembered outcome.
        for name in names {
            let _ = self.shared.changes.send(name);
        }
        self.shared.applied.send_replace(last_index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(stored) = get_record::<StoredSnapshot>(self.storage.as_ref(), SNAPSHOT_KEY)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
