//! The store engine: one node's replica of every partition, its write path, its reads, and the
//! primitives replication builds on (reading the change log, merging a peer's records, digests).
//!
//! Every change goes through a single writer thread that owns every read-modify-write. It takes all the
//! requests that are waiting (local writes, merges of a peer's records, anti-entropy repairs, log trims; up
//! to `group_ops_max` operations), applies them, puts the new states, their change-log records and the
//! bookkeeping (sequences, replication cursors) into one storage batch, writes it with one fsync, and only
//! then answers every request in the group. Concurrent writers so share one fsync (group commit), and a
//! write is acknowledged only once durable.
//!
//! The module's files, one concern each: `config.rs` (settings and errors), `keys.rs` (the key schema),
//! `recovery.rs` (opening a data directory, incarnations), `progress.rs` (cursors, `seen`, causal waits),
//! `writer.rs` (the writer thread and group commit), `apply.rs` (applying operations and merges to the
//! group being committed), `digest.rs` (anti-entropy digests), `maintenance.rs` (tombstone collection,
//! log trimming); this file holds the handle and its API.
//!
//! Invariants:
//! - A partition's change-log sequence numbers increase by one per logged change; the data, the log
//!   records, the partition's last sequence and any replication cursor they advance are written in the
//!   same atomic batch, so a restart resumes replication exactly where it stopped.
//! - A change is logged here only if it changed this replica's state: a merge that brings nothing new is
//!   not logged again, which is what ends relaying (A -> B -> C -> A stops at A).
//! - Every local write's HLC timestamp is higher than every timestamp this replica issued before, restarts
//!   included (the highest one is persisted with every batch and observed at open).
//! - After a storage write fails, the store accepts no more changes: RocksDB's state after a failed fsync
//!   is not trustworthy, so the node must be restarted (and recover from its write-ahead log).

mod apply;
mod config;
mod digest;
pub mod keys;
mod maintenance;
mod progress;
mod recovery;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use geostore_model::{
    Absence, Applied, Entry, Fence, Hlc, HybridClock, Limits, Op, Read, ReplicaId, Value, WallClock, decode_entry,
    partition_of,
};
use geostore_storage::{Space, Storage};
use tokio::sync::{mpsc, oneshot};

use crate::log::LogRecord;
use crate::metrics::Metrics;
use apply::Applier;
pub use config::{ChangeError, OpenError, ReadError, StoreConfig, StoreError, WriteError};
pub use digest::{DIGEST_BUCKETS, digest_bucket};
use progress::Progress;
pub use progress::{CausalToken, ProgressState};
use recovery::Recovered;
use writer::{Request, Writer};

/// A successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The HLC timestamp the write was stamped with.
    pub hlc: Hlc,
    /// Names the write for causal reads in any site.
    pub token: CausalToken,
    /// What the operation did (whether the key existed, a counter's new value).
    pub applied: Applied,
}

/// A key as a reader sees it, with what the API says about its last write or its absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The key is live.
    Found {
        /// The value and the marker of the write that decided it.
        read: Read,
        /// The site of that write's replica; `None` while this replica has not learnt it.
        site: Option<String>,
        /// The lock that write was fenced under (`read.last_write.fence` is its token); `None` if it was
        /// not fenced or this replica has not learnt the lock's name yet.
        lock: Option<String>,
    },
    /// The key reads as absent, and why.
    Absent(Absence),
}

/// Who this replica is. Fixed when its data directory is created.
#[derive(Debug, Clone)]
pub struct Identity {
    /// This replica's id, random per data directory (and per incarnation after an unclean stop).
    pub replica: ReplicaId,
    /// The site the data directory belongs to.
    pub site: String,
    /// How many partitions the keys are split into.
    pub partitions: u16,
}

/// A peer's change-log records for one partition, to merge here.
pub struct PeerRecords {
    /// The peer's site.
    pub peer: String,
    /// The partition the records belong to.
    pub partition: u16,
    /// `(sequence in the peer's log, record)`, in the peer's log order.
    pub records: Vec<(u64, LogRecord)>,
    /// The records continue the peer's log right after this sequence; the batch is refused unless the
    /// cursor stands exactly there, so a batch that failed can never be skipped by a later one.
    pub after: u64,
    /// The peer's log has been read up to here (records from this site itself are skipped by the sender).
    pub through: u64,
}

/// Records of the site's primary of a partition, to copy here verbatim (this node is another replica of
/// the partition in the same site).
pub struct PrimaryRecords {
    /// The primary's member id (for errors).
    pub primary: u64,
    /// The partition the records belong to.
    pub partition: u16,
    /// `(sequence, encoded record)`: the primary's log right after `after`, dense.
    pub records: Vec<(u64, Vec<u8>)>,
    /// The records continue the primary's log right after this sequence, which must be this replica's
    /// head: a replica's log is always a prefix of its primary's.
    pub after: u64,
}

/// What this node is for a partition of its site, by its placement map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionRole {
    /// The partition's primary in the site: it orders local writes and merges other sites' changes.
    Primary,
    /// Another replica: it copies the primary's log.
    Follower,
    /// This node holds no replica of the partition.
    Absent,
}

/// Where the store learns its role for each partition (the placement map); without one, this node is the
/// primary of every partition (the only node of its site).
pub type RoleSource = Arc<dyn Fn(u16) -> PartitionRole + Send + Sync>;

/// The role `source` gives `partition`; without a source, this node leads every partition.
fn role_of(source: &OnceLock<RoleSource>, partition: u16) -> PartitionRole {
    source.get().map_or(PartitionRole::Primary, |source| source(partition))
}

/// A write: key, operation, and the lock and token it is made under, if any.
pub type FencedOp = (Vec<u8>, Op, Option<Fence>);

/// Where the store learns of lock grants: the token holding `lock` now, by this node's view of the lock
/// group (set once the lock group has started).
pub type FenceSource = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// One node's store. Cheap to share behind an `Arc`; reads run on the caller's thread, changes on the
/// writer thread.
pub struct Store {
    storage: Arc<dyn Storage>,
    clock: Arc<HybridClock>,
    identity: Identity,
    config: StoreConfig,
    metrics: Metrics,
    progress: Arc<Progress>,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// With `inline_writer`: the writer, run by whichever task submits (`None` once shut down).
    inline: Mutex<Option<Writer>>,
    fence_source: Arc<OnceLock<FenceSource>>,
    role_source: Arc<OnceLock<RoleSource>>,
}

impl Store {
    /// Opens the store on `storage`, creating its identity on first use, and starts the writer thread.
    pub fn open(
        storage: Arc<dyn Storage>,
        wall: Arc<dyn WallClock>,
        config: StoreConfig,
        metrics: Metrics,
        new_replica_id: impl FnOnce() -> u64,
    ) -> Result<Arc<Store>, OpenError> {
        if config.partitions == 0 {
            return Err(OpenError::Config("partitions must be at least 1"));
        }
        if config.write_queue_max == 0 || config.group_ops_max == 0 {
            return Err(OpenError::Config("write_queue_max and group_ops_max must be at least 1"));
        }
        let clock = Arc::new(HybridClock::new(wall, config.max_drift_ms));
        let Recovered { identity, state } = recovery::recover(storage.as_ref(), &config, &clock, new_replica_id)?;
        let progress = Arc::new(Progress::new(state.clone()));
        let (sender, receiver) = mpsc::channel(config.write_queue_max);
        let fence_source = Arc::new(OnceLock::new());
        let role_source = Arc::new(OnceLock::new());
        let writer = Writer {
            applier: Applier {
                storage: storage.clone(),
                clock: clock.clone(),
                identity: identity.clone(),
                metrics: metrics.clone(),
                fence_source: fence_source.clone(),
                role_source: role_source.clone(),
                site_recorded: (0..identity.partitions).map(|_| std::sync::atomic::AtomicBool::new(false)).collect(),
            },
            durability: config.durability,
            group_ops_max: config.group_ops_max,
            state,
            failed: None,
            progress: progress.clone(),
        };
        let (handle, inline, sender) = if config.inline_writer {
            (None, Some(writer), None)
        } else {
            let handle = std::thread::Builder::new()
                .name("geostore-writer".into())
                .spawn(move || writer.run(receiver))
                .map_err(|e| OpenError::WriterThread(e.to_string()))?;
            (Some(handle), None, Some(sender))
        };
        tracing::info!(replica = identity.replica.0, site = %identity.site, partitions = identity.partitions, "store open");
        Ok(Arc::new(Store {
            storage,
            clock,
            identity,
            config,
            metrics,
            progress,
            requests: Mutex::new(sender),
            writer: Mutex::new(handle),
            inline: Mutex::new(inline),
            fence_source,
            role_source,
        }))
    }

    /// Who this replica is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The hybrid logical clock that stamps this replica's writes.
    pub fn clock(&self) -> &Arc<HybridClock> {
        &self.clock
    }

    /// The limits writes are checked against.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The node's metrics, which the store updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Applies one write; see [`Store::write_many`].
    pub async fn write(&self, key: Vec<u8>, op: Op) -> Result<WriteOutcome, WriteError> {
        self.write_many(vec![(key, op)]).await.pop().expect("one result per operation")
    }

    /// A write made under `fence` (if any).
    pub async fn write_fenced(&self, key: Vec<u8>, op: Op, fence: Option<Fence>) -> Result<WriteOutcome, WriteError> {
        self.write_fenced_many(vec![(key, op, fence)]).await.pop().expect("one result per operation")
    }

    /// Tells the store where to learn which token holds a lock now (the lock group). Set once.
    pub fn set_fence_source(&self, source: FenceSource) {
        let _ = self.fence_source.set(source);
    }

    /// Tells the store where to learn its role for each partition (the placement map). Set once, before
    /// the first write; until then (and without a placement map) this node leads every partition.
    pub fn set_role_source(&self, source: RoleSource) {
        let _ = self.role_source.set(source);
    }

    /// This node's role for `partition`.
    pub fn role(&self, partition: u16) -> PartitionRole {
        role_of(&self.role_source, partition)
    }

    /// Applies unfenced writes in order, each succeeding or failing on its own (see
    /// [`Store::write_fenced_many`]).
    pub async fn write_many(&self, ops: Vec<(Vec<u8>, Op)>) -> Vec<Result<WriteOutcome, WriteError>> {
        self.write_fenced_many(ops.into_iter().map(|(key, op)| (key, op, None)).collect()).await
    }

    /// Applies writes in order, each on its own: one result per operation, in the same order. Invalid
    /// operations are refused here, before they reach the writer.
    pub async fn write_fenced_many(&self, ops: Vec<FencedOp>) -> Vec<Result<WriteOutcome, WriteError>> {
        let mut results: Vec<Option<Result<WriteOutcome, WriteError>>> = Vec::with_capacity(ops.len());
        let mut valid = Vec::with_capacity(ops.len());
        for (key, op, fence) in ops {
            let checked = self.config.limits.validate(&key, &op).and_then(|()| match &fence {
                Some(fence) => fence.validate(),
                None => Ok(()),
            });
            match checked {
                Ok(()) => {
                    results.push(None);
                    valid.push((key, op, fence));
                }
                Err(invalid) => {
                    self.metrics.writes_invalid.inc();
                    results.push(Some(Err(WriteError::Invalid(invalid))));
                }
            }
        }
        if !valid.is_empty() {
            let count = valid.len();
            let (reply, answer) = oneshot::channel();
            let applied = match self.submit(Request::Write { ops: valid, reply }).await {
                Err(why) => (0..count).map(|_| Err(WriteError::Unavailable(why.clone()))).collect(),
                // Once queued, the writer always answers unless the process is going down; a dropped
                // reply after that point may follow a durable write, so it is reported as unknown.
                Ok(()) => answer.await.unwrap_or_else(|_| {
                    (0..count).map(|_| Err(WriteError::Unknown(StoreError::WriterStopped))).collect()
                }),
            };
            let mut applied = applied.into_iter();
            for slot in results.iter_mut().filter(|slot| slot.is_none()) {
                *slot = applied.next();
            }
        }
        results.into_iter().map(|result| result.expect("every operation has a result")).collect()
    }

    /// Runs `work` (a long scan of the store) on a blocking thread, or in the calling task when the store
    /// runs inline (the simulation, where each step must happen in the order the seed decides).
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.config.inline_writer {
            return Ok(work(self));
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store)).await.map_err(|e| StoreError::Scan(e.to_string()))
    }

    /// Hands `request` to the writer (or, inline, applies it now).
    async fn submit(&self, request: Request) -> Result<(), StoreError> {
        if self.config.inline_writer {
            let mut inline = self.inline.lock().expect("inline writer lock poisoned");
            let writer = inline.as_mut().ok_or(StoreError::ShutDown)?;
            writer.commit_group(vec![request]);
            return Ok(());
        }
        let Some(sender) = self.requests.lock().expect("requests lock poisoned").clone() else {
            return Err(StoreError::ShutDown);
        };
        sender.send(request).await.map_err(|_| StoreError::ShutDown)
    }

    /// Merges a peer's records and advances its cursor, durably. Returns how many records changed state.
    pub async fn merge(&self, records: PeerRecords) -> Result<usize, ChangeError> {
        self.begin_merge(records).await?.await
    }

    /// Queues a merge and returns a future of its outcome, so that a caller can queue the next batch
    /// while this one is being made durable. Queued merges are applied in the order they were queued.
    pub async fn begin_merge(
        &self,
        records: PeerRecords,
    ) -> Result<impl std::future::Future<Output = Result<usize, ChangeError>> + Send + 'static, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Merge { records, reply }).await?;
        Ok(async move { answer.await.map_err(|_| StoreError::WriterStopped)? })
    }

    /// Queues a copy of the primary's records (see [`PrimaryRecords`]) and returns a future of the
    /// partition's head here once they are durable, so that the next batch can be queued meanwhile.
    pub async fn begin_replicate(
        &self,
        records: PrimaryRecords,
    ) -> Result<impl std::future::Future<Output = Result<u64, ChangeError>> + Send + 'static, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Replicate { records, reply }).await?;
        Ok(async move { answer.await.map_err(|_| StoreError::WriterStopped)? })
    }

    /// Merges whole entries fetched by anti-entropy, then optionally sets the peer's cursor. Returns how
    /// many keys changed.
    pub async fn repair(
        &self,
        peer: &str,
        partition: u16,
        entries: Vec<(Vec<u8>, Entry)>,
        cursor: Option<u64>,
    ) -> Result<usize, ChangeError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Repair { peer: peer.to_string(), partition, entries, cursor, reply }).await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Reads a key as it is now on this replica (local, possibly behind other sites).
    pub fn get(&self, key: &[u8]) -> Result<Option<Read>, ReadError> {
        geostore_model::limits::validate_key(key)?;
        let Some(entry) = self.entry(key)? else { return Ok(None) };
        Ok(entry.read(self.clock.wall().now_unix_ms()))
    }

    /// Reads a key as [`Store::get`] does, and says which write decided it (its site and lock), or why
    /// the key is absent.
    pub fn lookup(&self, key: &[u8]) -> Result<Lookup, ReadError> {
        geostore_model::limits::validate_key(key)?;
        let now_unix_ms = self.clock.wall().now_unix_ms();
        let Some(entry) = self.entry(key)? else { return Ok(Lookup::Absent(Absence::NoRecord)) };
        let Some(read) = entry.read(now_unix_ms) else {
            return Ok(Lookup::Absent(entry.absence(now_unix_ms).unwrap_or(Absence::NoRecord)));
        };
        // The records naming the write's site and lock are in the key's own partition.
        let partition = partition_of(key, self.identity.partitions).0;
        let marker = read.last_write;
        let site = if marker.replica == self.identity.replica {
            Some(self.identity.site.clone())
        } else {
            self.reserved_text(&geostore_model::fence::replica_site_key(marker.replica, partition), now_unix_ms)?
        };
        let lock = match marker.fence {
            0 => None,
            token => self.reserved_text(&geostore_model::fence::token_lock_key(token, partition), now_unix_ms)?,
        };
        Ok(Lookup::Found { read, site, lock })
    }

    /// The text a reserved register holds, if it is set.
    fn reserved_text(&self, key: &[u8], now_unix_ms: i64) -> Result<Option<String>, StoreError> {
        Ok(match self.entry(key)?.and_then(|entry| entry.read(now_unix_ms)) {
            Some(Read { value: Value::Register(bytes), .. }) => String::from_utf8(bytes).ok(),
            _ => None,
        })
    }

    /// The stored state of a key.
    pub fn entry(&self, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        let partition = partition_of(key, self.identity.partitions);
        stored_entry(self.storage.as_ref(), &keys::data_key(partition.0, key))
    }

    /// Up to `records_max` records (and about `bytes_max` bytes) of `partition`'s log after `after`.
    pub fn read_log(
        &self,
        partition: u16,
        after: u64,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        let start = keys::log_key(partition, after.saturating_add(1));
        let end = keys::log_key(partition, u64::MAX);
        let mut records = Vec::new();
        let mut bytes = 0;
        for (key, value) in self.storage.scan(Space::Log, &start, &end, records_max)? {
            let (_, sequence) =
                keys::split_log_key(&key).ok_or_else(|| StoreError::corrupt("log key", &key, "not 10 bytes"))?;
            let record = LogRecord::decode(&value)
                .ok_or_else(|| StoreError::corrupt("log record", &key, format!("record {sequence} is unreadable")))?;
            bytes += value.len();
            records.push((sequence, record));
            if bytes >= bytes_max {
                break;
            }
        }
        Ok(records)
    }

    /// Stops taking changes, lets the writer finish what is queued, and waits for it.
    pub fn shutdown(&self) {
        self.requests.lock().expect("requests lock poisoned").take();
        self.inline.lock().expect("inline writer lock poisoned").take();
        if let Some(handle) = self.writer.lock().expect("writer lock poisoned").take() {
            let _ = handle.join();
        }
    }

    /// Stops the writer and records (with fsync) that nothing unsynced was lost: the next open continues
    /// as the same replica. Only a graceful shutdown calls this; a store that is merely dropped (or a
    /// process that dies) opens next time as if the machine had lost power.
    pub fn close(&self) -> Result<(), StoreError> {
        self.shutdown();
        recovery::mark_clean_shutdown(self.storage.as_ref()).map_err(StoreError::WriteFailed)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The state stored under `data_key` (see [`keys::data_key`]), if any; a value that does not decode is
/// reported as corrupt, never read as empty.
fn stored_entry(storage: &dyn Storage, data_key: &[u8]) -> Result<Option<Entry>, StoreError> {
    let Some(bytes) = storage.get(Space::Data, data_key)? else { return Ok(None) };
    decode_entry(&bytes).map(Some).map_err(|e| StoreError::corrupt("stored value of key", data_key, e))
}

/// The replica id a new production data directory gets: random, so that no two replicas share one.
pub fn random_replica_id() -> u64 {
    rand::random::<u64>()
}
