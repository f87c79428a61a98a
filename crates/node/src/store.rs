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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use geostore_model::fence::{decode_fence_token, encode_fence_token};
use geostore_model::planted;
use geostore_model::{
    Applied, Entry, Fence, Hlc, HybridClock, InvalidRequest, Limits, Marker, Op, OpError, Read, ReplicaId, Value,
    WallClock, decode_entry, encode_entry, fence_key, partition_of,
};
use geostore_storage::{Batch, Durability, Space, Storage, layout};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::log::LogRecord;
use crate::metrics::Metrics;

/// Settings of the store engine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub site: String,
    pub partitions: u16,
    pub durability: Durability,
    pub limits: Limits,
    /// How far ahead of our wall clock a received timestamp may be before it is refused.
    pub max_drift_ms: u64,
    /// Requests that may wait for the writer thread; callers wait for room beyond this.
    pub write_queue_max: usize,
    /// Operations the writer applies in one group (one storage batch, one fsync).
    pub group_ops_max: usize,
    /// Change-log records kept per partition; older ones are trimmed (a peer further behind catches up
    /// by anti-entropy instead).
    pub log_retention_ops: u64,
    /// Change-log bytes kept per node (spread evenly over the partitions).
    pub log_retention_bytes: u64,
    /// Change-log records older than this are trimmed.
    pub log_retention_ms: u64,
    /// Apply each request in the caller's task instead of on the writer thread (no group commit across
    /// callers). For the deterministic simulation, where an OS thread would escape the seed.
    pub inline_writer: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            site: "local".to_string(),
            partitions: geostore_model::DEFAULT_PARTITIONS,
            durability: Durability::Sync,
            limits: Limits::default(),
            max_drift_ms: 500,
            write_queue_max: 4096,
            group_ops_max: 2048,
            log_retention_ops: 1_000_000,
            log_retention_bytes: 4 * 1024 * 1024 * 1024,
            log_retention_ms: 24 * 3600 * 1000,
            inline_writer: false,
        }
    }
}

/// Names one write in one site's change log: a read elsewhere can wait until it has seen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CausalToken {
    pub site: String,
    pub partition: u16,
    pub sequence: u64,
}

/// A successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub hlc: Hlc,
    pub token: CausalToken,
    pub applied: Applied,
}

/// Why a write failed, and so whether it may have been applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The request is malformed: not applied.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The request conflicts with the key's state: not applied.
    #[error(transparent)]
    Rejected(#[from] OpError),
    /// The store cannot take writes (storage failed earlier, or it is shutting down): not applied.
    #[error("not applied: {0}")]
    Unavailable(String),
    /// Storage failed while this write was being made durable: it may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Made under a lock token older than one this replica knows: not applied.
    #[error("stale fence: lock {lock:?} token {token} is below the highest token this replica knows, {known}")]
    Fenced { lock: String, token: u64, known: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("storage: {0}")]
    Storage(String),
    #[error(
        "not yet replicated: this replica has seen {site}'s partition {partition} up to sequence {seen}, the token needs {needed}; waited {waited_ms} ms"
    )]
    NotYetReplicated { site: String, partition: u16, seen: u64, needed: u64, waited_ms: u64 },
    #[error("bad causal token: {0}")]
    BadToken(String),
}

/// Who this replica is. Fixed when its data directory is created.
#[derive(Debug, Clone)]
pub struct Identity {
    pub replica: ReplicaId,
    pub site: String,
    pub partitions: u16,
}

/// A peer's change-log records for one partition, to merge here.
pub struct PeerRecords {
    pub peer: String,
    pub partition: u16,
    /// `(sequence in the peer's log, record)`, in the peer's log order.
    pub records: Vec<(u64, LogRecord)>,
    /// The records continue the peer's log right after this sequence; the batch is refused unless the
    /// cursor stands exactly there, so a batch that failed can never be skipped by a later one.
    pub after: u64,
    /// The peer's log has been read up to here (records from this site itself are skipped by the sender).
    pub through: u64,
}

/// A write: key, operation, and the lock and token it is made under, if any.
pub type FencedOp = (Vec<u8>, Op, Option<Fence>);

/// Where the store learns of lock grants: the token holding `lock` now, by this node's view of the lock
/// group (set once the lock group has started).
pub type FenceSource = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// Work for the writer thread.
enum Request {
    Write {
        ops: Vec<FencedOp>,
        reply: oneshot::Sender<Vec<Result<WriteOutcome, WriteError>>>,
    },
    Merge {
        records: PeerRecords,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Whole entries fetched by anti-entropy; `cursor` optionally moves a peer's cursor afterwards.
    Repair {
        peer: String,
        partition: u16,
        entries: Vec<(Vec<u8>, Entry)>,
        cursor: Option<u64>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Remove dead keys (deleted or expired) whose state is still exactly `expected`: garbage collection
    /// of tombstones every site has acknowledged.
    Collect {
        partition: u16,
        candidates: Vec<(Vec<u8>, Entry)>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Drop a partition's log records below `start`.
    Trim {
        partition: u16,
        start: u64,
        bytes_removed: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

impl Request {
    fn op_count(&self) -> usize {
        match self {
            Request::Write { ops, .. } => ops.len(),
            Request::Merge { records, .. } => records.records.len().max(1),
            Request::Repair { entries, .. } => entries.len().max(1),
            Request::Collect { candidates, .. } => candidates.len().max(1),
            Request::Trim { .. } => 1,
        }
    }
}

/// Replication progress, shared between the writer (which changes it after each commit) and readers.
#[derive(Debug, Default, Clone)]
pub struct ProgressState {
    /// The last sequence in each partition's log.
    pub heads: Vec<u64>,
    /// The first sequence still in each partition's log.
    pub log_starts: Vec<u64>,
    /// The encoded bytes of the records in each partition's log.
    pub log_bytes: Vec<u64>,
    /// `(peer, partition)` -> the last sequence of the peer's log merged here.
    pub cursors: BTreeMap<(String, u16), u64>,
    /// `(origin, partition)` -> the highest origin sequence reflected here.
    pub seen: BTreeMap<(String, u16), u64>,
    /// Without fsync: per partition, a sequence no record has reached, written with fsync before one does.
    pub sequence_limits: Vec<u64>,
    /// Per partition, the next record's sequence is above this (the limit found after a possible loss).
    pub sequence_floors: Vec<u64>,
    /// Without fsync: an HLC timestamp no write has reached, written with fsync before one does.
    pub hlc_limit: u64,
}

/// How far ahead of use the limits above are moved: a restart after a loss skips at most this many
/// sequences per partition, and starts its clock at most this far ahead (well inside the allowed drift).
const SEQUENCE_LIMIT_AHEAD: u64 = 4096;
const HLC_LIMIT_AHEAD_MS: i64 = 200;

impl ProgressState {
    /// This node's cursor on `peer`'s log of `partition` (0: nothing merged yet).
    pub fn cursor(&self, peer: &str, partition: u16) -> u64 {
        self.cursors.get(&(peer.to_string(), partition)).copied().unwrap_or(0)
    }

    /// This node's cursors on `peer`'s log, one per partition.
    pub fn cursors_of(&self, peer: &str) -> Vec<u64> {
        (0..self.heads.len() as u16).map(|partition| self.cursor(peer, partition)).collect()
    }
}

struct Progress {
    state: Mutex<ProgressState>,
    /// Bumped after every commit that appended to the log; log readers (pull streams) wait on it.
    log_version: watch::Sender<u64>,
    /// Woken after every commit that advanced `seen`; causal reads wait on it.
    seen_changed: Notify,
}

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
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("storage: {0}")]
    Storage(#[from] geostore_storage::StorageError),
    #[error(
        "this data directory belongs to site {stored:?}, not {configured:?}; a node cannot change site (use a new data directory)"
    )]
    SiteMismatch { stored: String, configured: String },
    #[error(
        "this data directory was created with {stored} partitions, not {configured}; the partition count is fixed when a cluster is created"
    )]
    PartitionsMismatch { stored: u16, configured: u16 },
    #[error("corrupt metadata {key}: {detail}")]
    CorruptMeta { key: String, detail: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Entries in one anti-entropy bucket. A partition's keys fall into this many buckets by key hash.
pub const DIGEST_BUCKETS: usize = 256;
/// Keys read per storage scan while digesting a partition.
const DIGEST_SCAN_KEYS_MAX: usize = 4096;

/// The bucket of a key in a partition digest.
pub fn digest_bucket(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64_with_seed(key, 1) >> 56) as usize
}

/// One key's contribution to a digest: its name and its state, hashed.
fn key_digest(key: &[u8], entry: &Entry) -> u64 {
    let mut bytes = key.to_vec();
    bytes.extend_from_slice(&entry.digest().to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
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
            return Err(OpenError::Config("partitions must be at least 1".into()));
        }
        if config.write_queue_max == 0 || config.group_ops_max == 0 {
            return Err(OpenError::Config("write_queue_max and group_ops_max must be at least 1".into()));
        }
        let (mut identity, created) = load_or_create_identity(storage.as_ref(), &config, new_replica_id)?;
        let clock = Arc::new(HybridClock::new(wall, config.max_drift_ms));
        if let Some(high) = read_u64_meta(storage.as_ref(), layout::META_HLC_HIGH)? {
            clock.observe_own(Hlc(high));
        }
        let buffered = config.durability == Durability::Buffered;
        let lossy_restart = buffered && !created && storage.get(Space::Meta, layout::META_CLEAN_SHUTDOWN)?.is_none();
        let mut state = ProgressState::default();
        for partition in 0..identity.partitions {
            let head = read_u64_meta(storage.as_ref(), &layout::meta_sequence_key(partition))?.unwrap_or(0);
            let limit = read_u64_meta(storage.as_ref(), &layout::meta_sequence_limit_key(partition))?.unwrap_or(0);
            // After a possible loss the next record goes past every sequence the lost tail may have held:
            // peers that merged those records must not take new ones for them. The head itself stays the
            // last record written (the log is read up to it).
            state.sequence_floors.push(if lossy_restart { limit } else { 0 });
            state.sequence_limits.push(limit);
            state.heads.push(head);
            state
                .log_starts
                .push(read_u64_meta(storage.as_ref(), &layout::meta_log_start_key(partition))?.unwrap_or(1));
            state.log_bytes.push(read_u64_meta(storage.as_ref(), &layout::meta_log_bytes_key(partition))?.unwrap_or(0));
        }
        state.cursors = read_site_partition_meta(storage.as_ref(), layout::META_CURSOR_PREFIX)?;
        state.seen = read_site_partition_meta(storage.as_ref(), layout::META_SEEN_PREFIX)?;
        state.hlc_limit = read_u64_meta(storage.as_ref(), layout::META_HLC_LIMIT)?.unwrap_or(0);
        if lossy_restart {
            identity = begin_incarnation(storage.as_ref(), identity)?;
            clock.observe_own(Hlc(state.hlc_limit));
        }
        if buffered {
            // Until the next clean shutdown, an open counts as possibly lossy.
            let mut batch = Batch::new();
            batch.delete(Space::Meta, layout::META_CLEAN_SHUTDOWN.to_vec());
            storage.write(batch, Durability::Sync)?;
        }
        let progress = Arc::new(Progress {
            state: Mutex::new(state.clone()),
            log_version: watch::channel(0).0,
            seen_changed: Notify::new(),
        });

        let (sender, receiver) = mpsc::channel(config.write_queue_max);
        let fence_source = Arc::new(OnceLock::new());
        let writer = Writer {
            fence_source: fence_source.clone(),
            storage: storage.clone(),
            clock: clock.clone(),
            identity: identity.clone(),
            durability: config.durability,
            group_ops_max: config.group_ops_max,
            state,
            failed: None,
            metrics: metrics.clone(),
            progress: progress.clone(),
        };
        let (handle, inline, sender) = if config.inline_writer {
            (None, Some(writer), None)
        } else {
            let handle = std::thread::Builder::new()
                .name("geostore-writer".into())
                .spawn(move || writer.run(receiver))
                .map_err(|e| OpenError::Config(format!("cannot start the writer thread: {e}")))?;
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
        }))
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn clock(&self) -> &Arc<HybridClock> {
        &self.clock
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A copy of the replication progress.
    pub fn progress(&self) -> ProgressState {
        self.progress.state.lock().expect("progress lock poisoned").clone()
    }

    /// Each partition's log bounds `(first retained sequence, last sequence)`, without copying the
    /// replication maps that [`Store::progress`] also returns: for the pull streams, which read them after
    /// every commit.
    pub fn log_bounds(&self) -> Vec<(u64, u64)> {
        let state = self.progress.state.lock().expect("progress lock poisoned");
        state.log_starts.iter().copied().zip(state.heads.iter().copied()).collect()
    }

    /// Changes whenever the log grows: wait on it for new records.
    pub fn subscribe_log(&self) -> watch::Receiver<u64> {
        self.progress.log_version.subscribe()
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
                    (0..count)
                        .map(|_| Err(WriteError::Unknown("the writer stopped while the write was queued".into())))
                        .collect()
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
    ) -> Result<T, String> {
        if self.config.inline_writer {
            return Ok(work(self));
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store)).await.map_err(|e| e.to_string())
    }

    async fn submit(&self, request: Request) -> Result<(), String> {
        if self.config.inline_writer {
            let mut inline = self.inline.lock().expect("inline writer lock poisoned");
            let writer = inline.as_mut().ok_or("the store is shut down")?;
            writer.commit_group(vec![request]);
            return Ok(());
        }
        let Some(sender) = self.requests.lock().expect("requests lock poisoned").clone() else {
            return Err("the store is shut down".into());
        };
        sender.send(request).await.map_err(|_| "the store is shut down".to_string())
    }

    /// Merges a peer's records and advances its cursor, durably. Returns how many records changed state.
    pub async fn merge(&self, records: PeerRecords) -> Result<usize, String> {
        self.begin_merge(records).await?.await
    }

    /// Queues a merge and returns a future of its outcome, so that a caller can queue the next batch
    /// while this one is being made durable. Queued merges are applied in the order they were queued.
    pub async fn begin_merge(
        &self,
        records: PeerRecords,
    ) -> Result<impl std::future::Future<Output = Result<usize, String>> + Send + 'static, String> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Merge { records, reply }).await?;
        Ok(async move { answer.await.map_err(|_| "the writer stopped".to_string())? })
    }

    /// Merges whole entries fetched by anti-entropy, then optionally sets the peer's cursor. Returns how
    /// many keys changed.
    pub async fn repair(
        &self,
        peer: &str,
        partition: u16,
        entries: Vec<(Vec<u8>, Entry)>,
        cursor: Option<u64>,
    ) -> Result<usize, String> {
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Repair { peer: peer.to_string(), partition, entries, cursor, reply }).await?;
        answer.await.map_err(|_| "the writer stopped".to_string())?
    }

    /// Reads a key as it is now on this replica (local, possibly behind other sites).
    pub fn get(&self, key: &[u8]) -> Result<Option<Read>, ReadError> {
        geostore_model::limits::validate_key(key)?;
        let Some(entry) = self.entry(key)? else { return Ok(None) };
        Ok(entry.read(self.clock.wall().now_unix_ms()))
    }

    /// The stored state of a key.
    pub fn entry(&self, key: &[u8]) -> Result<Option<Entry>, ReadError> {
        let partition = partition_of(key, self.identity.partitions);
        let bytes = self
            .storage
            .get(Space::Data, &layout::data_key(partition.0, key))
            .map_err(|e| ReadError::Storage(e.to_string()))?;
        bytes.map(|bytes| decode_entry(&bytes).map_err(|e| ReadError::Storage(e.to_string()))).transpose()
    }

    /// Waits until this replica reflects the write named by `token`, for at most `wait`.
    pub async fn wait_for(&self, token: &CausalToken, wait: Duration) -> Result<(), ReadError> {
        if token.partition >= self.identity.partitions {
            return Err(ReadError::BadToken(format!(
                "partition {} does not exist (there are {})",
                token.partition, self.identity.partitions
            )));
        }
        let started = tokio::time::Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for the wake-up before checking, so a commit in between is not missed.
            let changed = self.progress.seen_changed.notified();
            let seen = self.seen(&token.site, token.partition);
            if seen >= token.sequence {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(ReadError::NotYetReplicated {
                    site: token.site.clone(),
                    partition: token.partition,
                    seen,
                    needed: token.sequence,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
        }
    }

    /// The highest sequence of `site`'s log of `partition` reflected here (this site's own: its head).
    pub fn seen(&self, site: &str, partition: u16) -> u64 {
        let state = self.progress.state.lock().expect("progress lock poisoned");
        if site == self.identity.site {
            return state.heads.get(usize::from(partition)).copied().unwrap_or(0);
        }
        state.seen.get(&(site.to_string(), partition)).copied().unwrap_or(0)
    }

    /// Up to `records_max` records (and about `bytes_max` bytes) of `partition`'s log after `after`.
    pub fn read_log(
        &self,
        partition: u16,
        after: u64,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<(u64, LogRecord)>, String> {
        let start = layout::log_key(partition, after.saturating_add(1));
        let end = layout::log_key(partition, u64::MAX);
        let mut records = Vec::new();
        let mut bytes = 0;
        for (key, value) in self.storage.scan(Space::Log, &start, &end, records_max).map_err(|e| e.to_string())? {
            let sequence = u64::from_be_bytes(key[2..10].try_into().map_err(|_| "corrupt log key".to_string())?);
            let record = LogRecord::decode(&value).ok_or_else(|| format!("unreadable log record {sequence}"))?;
            bytes += value.len();
            records.push((sequence, record));
            if bytes >= bytes_max {
                break;
            }
        }
        Ok(records)
    }

    /// The digest of each of a partition's [`DIGEST_BUCKETS`] buckets: XOR of its keys' digests.
    pub fn partition_digest(&self, partition: u16) -> Result<Vec<u64>, String> {
        let mut buckets = vec![0_u64; DIGEST_BUCKETS];
        self.for_each_entry(partition, |key, entry| buckets[digest_bucket(key)] ^= key_digest(key, entry))?;
        Ok(buckets)
    }

    /// `(key, digest)` of every key of a partition in the given buckets.
    pub fn bucket_digests(&self, partition: u16, buckets: &[usize]) -> Result<Vec<(Vec<u8>, u64)>, String> {
        let mut wanted = [false; DIGEST_BUCKETS];
        for &bucket in buckets {
            if bucket < DIGEST_BUCKETS {
                wanted[bucket] = true;
            }
        }
        let mut keys = Vec::new();
        self.for_each_entry(partition, |key, entry| {
            if wanted[digest_bucket(key)] {
                keys.push((key.to_vec(), key_digest(key, entry)));
            }
        })?;
        Ok(keys)
    }

    fn for_each_entry(&self, partition: u16, mut visit: impl FnMut(&[u8], &Entry)) -> Result<(), String> {
        let mut start = layout::data_key(partition, b"");
        let end = match partition.checked_add(1) {
            Some(next) => layout::data_key(next, b""),
            None => vec![0xff; 3],
        };
        loop {
            let page = self.storage.scan(Space::Data, &start, &end, DIGEST_SCAN_KEYS_MAX).map_err(|e| e.to_string())?;
            let full = page.len() == DIGEST_SCAN_KEYS_MAX;
            for (data_key, value) in &page {
                let (_, key) = layout::split_data_key(data_key).ok_or("corrupt data key")?;
                let entry = decode_entry(value).map_err(|e| e.to_string())?;
                visit(key, &entry);
            }
            match page.last() {
                Some((last, _)) if full => {
                    start = last.clone();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Collects the dead keys (deleted, or expired at `now`) whose last change is logged in `partition`'s
    /// log after `after` and up to `through`, which every site has acknowledged. A key is removed only if
    /// its stored state is still exactly the one logged (so the record is its last change) and reads as
    /// absent. Returns the keys removed and the sequence scanned up to.
    pub async fn collect_garbage(&self, partition: u16, after: u64, through: u64) -> Result<(usize, u64), String> {
        const SCAN_RECORDS_MAX: usize = 4096;
        let now_ms = self.clock.wall().now_unix_ms();
        let mut candidates = Vec::new();
        let mut scanned = after;
        while scanned < through {
            let records = self.read_log(partition, scanned, SCAN_RECORDS_MAX, usize::MAX)?;
            let Some(&(last, _)) = records.last() else { break };
            for (sequence, record) in records {
                if sequence > through {
                    break;
                }
                scanned = sequence;
                let logged = decode_entry(&record.entry).map_err(|e| e.to_string())?;
                if logged.read(now_ms).is_none()
                    && self.entry(&record.key).map_err(|e| e.to_string())?.as_ref() == Some(&logged)
                {
                    candidates.push((record.key, logged));
                }
            }
            if last >= through {
                break;
            }
        }
        if candidates.is_empty() {
            return Ok((0, scanned));
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Collect { partition, candidates, reply }).await?;
        let collected = answer.await.map_err(|_| "the writer stopped".to_string())??;
        Ok((collected, scanned))
    }

    /// Trims `partition`'s log to the retention limits (records, bytes, age). Returns the records removed.
    /// Reads only the records it removes (and one page more).
    pub async fn trim_log(&self, partition: u16) -> Result<u64, String> {
        let index = usize::from(partition);
        let (head, log_start, log_bytes) = {
            let state = self.progress.state.lock().expect("progress lock poisoned");
            (state.heads[index], state.log_starts[index], state.log_bytes[index])
        };
        let bytes_max = self.config.log_retention_bytes / u64::from(self.identity.partitions);
        let now_ms = self.clock.wall().now_unix_ms();
        let mut start = log_start;
        let mut bytes = log_bytes;
        'pages: loop {
            let page = self.read_log(partition, start - 1, 256, usize::MAX)?;
            if page.is_empty() {
                break;
            }
            for (sequence, record) in page {
                let records_kept = head - sequence + 1;
                let too_many = records_kept > self.config.log_retention_ops;
                let too_big = bytes > bytes_max;
                let too_old = now_ms.saturating_sub(record.hlc.unix_ms()) as u64 > self.config.log_retention_ms;
                if !(too_many || too_big || too_old) {
                    break 'pages;
                }
                bytes = bytes.saturating_sub(record.encoded_len() as u64);
                start = sequence + 1;
            }
        }
        if start <= log_start {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Request::Trim { partition, start, bytes_removed: log_bytes - bytes, reply }).await?;
        answer.await.map_err(|_| "the writer stopped".to_string())??;
        Ok(start - log_start)
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
    pub fn close(&self) -> Result<(), String> {
        self.shutdown();
        let mut batch = Batch::new();
        batch.put(Space::Meta, layout::META_CLEAN_SHUTDOWN.to_vec(), vec![1]);
        self.storage.write(batch, Durability::Sync).map_err(|e| e.to_string())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_u64_meta(storage: &dyn Storage, key: &[u8]) -> Result<Option<u64>, OpenError> {
    match storage.get(Space::Meta, key)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(decode_u64_meta(key, &bytes)?)),
    }
}

fn decode_u64_meta(key: &[u8], bytes: &[u8]) -> Result<u64, OpenError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| OpenError::CorruptMeta {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

fn read_site_partition_meta(storage: &dyn Storage, prefix: &[u8]) -> Result<BTreeMap<(String, u16), u64>, OpenError> {
    let mut values = BTreeMap::new();
    for (key, value) in storage.scan(Space::Meta, prefix, &layout::prefix_end(prefix), usize::MAX)? {
        let (site, partition) = layout::split_meta_site_partition_key(prefix, &key).ok_or_else(|| {
            OpenError::CorruptMeta { key: String::from_utf8_lossy(&key).into_owned(), detail: "bad key".into() }
        })?;
        values.insert((site.to_string(), partition), decode_u64_meta(&key, &value)?);
    }
    Ok(values)
}
/// After a restart that may have lost the unsynced tail (no fsync, no clean shutdown): continue as a new
/// replica, whose CRDT markers and dots cannot collide with those the lost tail held (the log sequences
/// continue past their limits, `ProgressState::sequence_floors`), and write that down with fsync.
fn begin_incarnation(storage: &dyn Storage, identity: Identity) -> Result<Identity, OpenError> {
    let incarnation = read_u64_meta(storage, layout::META_INCARNATION)?.unwrap_or(0) + 1;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&identity.replica.0.to_be_bytes());
    hasher.update(&incarnation.to_be_bytes());
    let replica = ReplicaId(hasher.digest().max(1));
    let mut batch = Batch::new();
    batch.put(Space::Meta, layout::META_REPLICA_ID.to_vec(), replica.0.to_be_bytes().to_vec());
    batch.put(Space::Meta, layout::META_INCARNATION.to_vec(), incarnation.to_be_bytes().to_vec());
    storage.write(batch, Durability::Sync)?;
    tracing::warn!(
        previous = identity.replica.0,
        replica = replica.0,
        incarnation,
        "this store runs without fsync and was not shut down cleanly: writes in its unsynced tail may be lost; \
         it continues as a new replica, past every timestamp and sequence it may have issued"
    );
    Ok(Identity { replica, ..identity })
}

/// The identity stored, or a new one written; and whether it was new.
fn load_or_create_identity(
    storage: &dyn Storage,
    config: &StoreConfig,
    new_replica_id: impl FnOnce() -> u64,
) -> Result<(Identity, bool), OpenError> {
    let stored_replica = read_u64_meta(storage, layout::META_REPLICA_ID)?;
    let stored_site = storage.get(Space::Meta, layout::META_SITE)?;
    let stored_partitions = storage.get(Space::Meta, layout::META_PARTITIONS)?;
    match (stored_replica, stored_site, stored_partitions) {
        (Some(replica), Some(site), Some(partitions)) => {
            let site = String::from_utf8(site)
                .map_err(|e| OpenError::CorruptMeta { key: "site".into(), detail: e.to_string() })?;
            let partitions = <[u8; 2]>::try_from(partitions.as_slice())
                .map(u16::from_be_bytes)
                .map_err(|_| OpenError::CorruptMeta { key: "partitions".into(), detail: "expected 2 bytes".into() })?;
            if site != config.site {
                return Err(OpenError::SiteMismatch { stored: site, configured: config.site.clone() });
            }
            if partitions != config.partitions {
                return Err(OpenError::PartitionsMismatch { stored: partitions, configured: config.partitions });
            }
            Ok((Identity { replica: ReplicaId(replica), site, partitions }, false))
        }
        (None, None, None) => {
            let identity = Identity {
                replica: ReplicaId(new_replica_id()),
                site: config.site.clone(),
                partitions: config.partitions,
            };
            let mut batch = Batch::new();
            batch.put(Space::Meta, layout::META_REPLICA_ID.to_vec(), identity.replica.0.to_be_bytes().to_vec());
            batch.put(Space::Meta, layout::META_SITE.to_vec(), identity.site.as_bytes().to_vec());
            batch.put(Space::Meta, layout::META_PARTITIONS.to_vec(), identity.partitions.to_be_bytes().to_vec());
            storage.write(batch, Durability::Sync)?;
            Ok((identity, true))
        }
        _ => Err(OpenError::CorruptMeta {
            key: "identity".into(),
            detail: "only part of the replica identity is stored".into(),
        }),
    }
}

/// The writer thread's state. Only this thread changes data, log, sequences and cursors.
struct Writer {
    fence_source: Arc<OnceLock<FenceSource>>,
    storage: Arc<dyn Storage>,
    clock: Arc<HybridClock>,
    identity: Identity,
    durability: Durability,
    group_ops_max: usize,
    /// The committed progress; a group works on a copy and installs it only once its batch is durable.
    state: ProgressState,
    /// Set when a storage write fails; every later change is refused with this reason.
    failed: Option<String>,
    metrics: Metrics,
    progress: Arc<Progress>,
}

/// A lock's fence register, loaded for a fenced write: where it lives, its state and the token it holds.
struct FenceRegister {
    key: Vec<u8>,
    partition: u16,
    data_key: Vec<u8>,
    entry: Entry,
    token: u64,
}

/// What one group is building: the batch, the states it changed, and the progress it will install.
struct Group {
    batch: Batch,
    entries: HashMap<Vec<u8>, Entry>,
    state: ProgressState,
    touched_heads: Vec<bool>,
    touched_cursors: Vec<(String, u16)>,
    touched_seen: Vec<(String, u16)>,
    hlc_high: Option<Hlc>,
    changes: u64,
}

enum Reply {
    Write(oneshot::Sender<Vec<Result<WriteOutcome, WriteError>>>, Vec<Result<WriteOutcome, WriteError>>),
    Count(oneshot::Sender<Result<usize, String>>, Result<usize, String>),
    Done(oneshot::Sender<Result<(), String>>, Result<(), String>),
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut ops = first.op_count();
            let mut group = vec![first];
            while ops < self.group_ops_max {
                match receiver.try_recv() {
                    Ok(request) => {
                        ops += request.op_count();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        tracing::info!("writer stopped");
    }

    fn commit_group(&mut self, requests: Vec<Request>) {
        let started = std::time::Instant::now();
        if let Some(reason) = &self.failed {
            for request in requests {
                refuse(request, reason);
            }
            return;
        }
        let mut group = Group {
            batch: Batch::new(),
            entries: HashMap::new(),
            touched_heads: vec![false; self.state.heads.len()],
            state: self.state.clone(),
            touched_cursors: Vec::new(),
            touched_seen: Vec::new(),
            hlc_high: None,
            changes: 0,
        };
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            replies.push(match request {
                Request::Write { ops, reply } => {
                    let results = ops
                        .iter()
                        .map(|(key, op, fence)| {
                            let result = self.apply_local(key, op, fence.as_ref(), &mut group);
                            self.metrics.observe_write(op, &result);
                            result
                        })
                        .collect();
                    Reply::Write(reply, results)
                }
                Request::Merge { records, reply } => Reply::Count(reply, self.apply_merge(records, &mut group)),
                Request::Repair { peer, partition, entries, cursor, reply } => {
                    Reply::Count(reply, self.apply_repair(&peer, partition, entries, cursor, &mut group))
                }
                Request::Collect { partition, candidates, reply } => {
                    Reply::Count(reply, self.apply_collect(partition, candidates, &mut group))
                }
                Request::Trim { partition, start, bytes_removed, reply } => {
                    Reply::Done(reply, self.apply_trim(partition, start, bytes_removed, &mut group))
                }
            });
        }

        let mut committed = true;
        // A merge that changed nothing still moved a cursor: that must be written too. A cursor that
        // falls back at a restart makes the node merge old records again, and an old record merged after
        // its key's tombstone was collected brings a deleted value back (found by the simulation).
        if !group.batch.is_empty() || !group.touched_cursors.is_empty() {
            self.add_bookkeeping(&mut group);
            let durability = self.raise_limits(&mut group);
            let write_started = std::time::Instant::now();
            match self.storage.write(std::mem::take(&mut group.batch), durability) {
                Ok(()) => {
                    self.metrics.storage_write_seconds.observe(write_started.elapsed().as_secs_f64());
                    self.metrics.group_ops.observe(group.changes as f64);
                }
                Err(error) => {
                    let reason = format!("storage write failed: {error}; restart the node");
                    tracing::error!(%reason, "the store stops taking changes");
                    self.metrics.storage_failures.inc();
                    for reply in replies.iter_mut() {
                        match reply {
                            Reply::Write(_, results) => {
                                for result in results.iter_mut().filter(|result| result.is_ok()) {
                                    *result = Err(WriteError::Unknown(reason.clone()));
                                }
                            }
                            Reply::Count(_, result) => *result = Err(reason.clone()),
                            Reply::Done(_, result) => *result = Err(reason.clone()),
                        }
                    }
                    self.failed = Some(reason);
                    committed = false;
                }
            }
        }
        if committed {
            let log_grew = group.touched_heads.iter().any(|touched| *touched);
            let seen_moved = !group.touched_seen.is_empty() || log_grew;
            self.state = group.state;
            *self.progress.state.lock().expect("progress lock poisoned") = self.state.clone();
            if log_grew {
                self.progress.log_version.send_modify(|version| *version += 1);
            }
            if seen_moved {
                self.progress.seen_changed.notify_waiters();
            }
        }
        for reply in replies {
            // A caller that stopped waiting no longer needs its answer.
            match reply {
                Reply::Write(sender, results) => drop(sender.send(results)),
                Reply::Count(sender, result) => drop(sender.send(result)),
                Reply::Done(sender, result) => drop(sender.send(result)),
            }
        }
        self.metrics.group_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// Without fsync: when this group's writes reach the HLC or sequence limits, moves them ahead in the
    /// batch and writes it with fsync (about once per `SEQUENCE_LIMIT_AHEAD` records per partition and
    /// once per `HLC_LIMIT_AHEAD_MS` of writing). Returns the durability to write the batch with.
    fn raise_limits(&self, group: &mut Group) -> Durability {
        if self.durability != Durability::Buffered {
            return self.durability;
        }
        let mut raised = false;
        for partition in 0..group.state.heads.len() {
            if group.touched_heads[partition] && group.state.heads[partition] > group.state.sequence_limits[partition] {
                let limit = group.state.heads[partition] + SEQUENCE_LIMIT_AHEAD;
                group.state.sequence_limits[partition] = limit;
                let key = layout::meta_sequence_limit_key(partition as u16);
                group.batch.put(Space::Meta, key, limit.to_be_bytes().to_vec());
                raised = true;
            }
        }
        if let Some(hlc) = group.hlc_high
            && hlc.0 > group.state.hlc_limit
        {
            let limit = Hlc::from_parts(hlc.unix_ms() + HLC_LIMIT_AHEAD_MS, 0).map_or(u64::MAX, |limit| limit.0);
            group.state.hlc_limit = limit;
            group.batch.put(Space::Meta, layout::META_HLC_LIMIT.to_vec(), limit.to_be_bytes().to_vec());
            raised = true;
        }
        if raised { Durability::Sync } else { self.durability }
    }

    /// Puts the sequences, cursors, origin progress and HLC high-water mark the group changed into its batch.
    fn add_bookkeeping(&self, group: &mut Group) {
        for (partition, _) in group.touched_heads.iter().enumerate().filter(|(_, touched)| **touched) {
            let head = group.state.heads[partition];
            let bytes = group.state.log_bytes[partition];
            group.batch.put(Space::Meta, layout::meta_sequence_key(partition as u16), head.to_be_bytes().to_vec());
            group.batch.put(Space::Meta, layout::meta_log_bytes_key(partition as u16), bytes.to_be_bytes().to_vec());
        }
        for (peer, partition) in &group.touched_cursors {
            let cursor = group.state.cursors[&(peer.clone(), *partition)];
            let key = layout::meta_site_partition_key(layout::META_CURSOR_PREFIX, peer, *partition);
            group.batch.put(Space::Meta, key, cursor.to_be_bytes().to_vec());
        }
        for (origin, partition) in &group.touched_seen {
            let seen = group.state.seen[&(origin.clone(), *partition)];
            let key = layout::meta_site_partition_key(layout::META_SEEN_PREFIX, origin, *partition);
            group.batch.put(Space::Meta, key, seen.to_be_bytes().to_vec());
        }
        if let Some(hlc) = group.hlc_high {
            group.batch.put(Space::Meta, layout::META_HLC_HIGH.to_vec(), hlc.0.to_be_bytes().to_vec());
        }
    }

    fn load(&self, data_key: &[u8], group: &Group) -> Result<Entry, String> {
        if let Some(entry) = group.entries.get(data_key) {
            return Ok(entry.clone());
        }
        match self.storage.get(Space::Data, data_key) {
            Ok(None) => Ok(Entry::default()),
            Ok(Some(bytes)) => {
                decode_entry(&bytes).map_err(|e| format!("the stored value of this key is unreadable: {e}"))
            }
            Err(e) => Err(format!("storage read failed: {e}")),
        }
    }

    /// Stores a key's new state and appends its change-log record; returns the record's sequence.
    fn log_change(
        &self,
        partition: u16,
        data_key: Vec<u8>,
        entry: Entry,
        mut record: LogRecord,
        group: &mut Group,
    ) -> u64 {
        let index = usize::from(partition);
        let sequence = group.state.heads[index].max(group.state.sequence_floors[index]) + 1;
        group.state.heads[index] = sequence;
        group.touched_heads[index] = true;
        let encoded = encode_entry(&entry);
        record.entry = encoded.clone();
        if record.origin == self.identity.site {
            record.origin_sequence = sequence;
        }
        let encoded_record = record.encode();
        group.state.log_bytes[index] += encoded_record.len() as u64;
        group.batch.put(Space::Log, layout::log_key(partition, sequence), encoded_record);
        group.batch.put(Space::Data, data_key.clone(), encoded);
        group.entries.insert(data_key, entry);
        group.changes += 1;
        sequence
    }

    /// `lock`'s fence register as this group sees it: the highest token fenced writes made or merged here
    /// have raised it to.
    fn load_fence(&self, lock: &str, group: &Group) -> Result<FenceRegister, WriteError> {
        let key = fence_key(lock);
        let partition = partition_of(&key, self.identity.partitions).0;
        let data_key = layout::data_key(partition, &key);
        let entry = self.load(&data_key, group).map_err(WriteError::Unavailable)?;
        let token = match entry.read(self.clock.wall().now_unix_ms()) {
            Some(Read { value: Value::Register(bytes), .. }) => decode_fence_token(&bytes).unwrap_or(0),
            _ => 0,
        };
        Ok(FenceRegister { key, partition, data_key, entry, token })
    }

    fn apply_local(
        &self,
        key: &[u8],
        op: &Op,
        fence: Option<&Fence>,
        group: &mut Group,
    ) -> Result<WriteOutcome, WriteError> {
        // The highest token known is the fence register's or the lock group's current grant's; the
        // register is loaded once, and raised below if this write's token is above it.
        let mut raise = None;
        if let Some(fence) = fence {
            let register = self.load_fence(&fence.lock, group)?;
            let granted = self.fence_source.get().and_then(|source| source(&fence.lock)).unwrap_or(0);
            let known = register.token.max(granted);
            if fence.token < known && !planted::active(planted::Bug::FenceCheckOff) {
                self.metrics.fenced_rejections.inc();
                return Err(WriteError::Fenced { lock: fence.lock.clone(), token: fence.token, known });
            }
            raise = (fence.token > register.token).then_some((fence.token, register));
        }
        let partition = partition_of(key, self.identity.partitions).0;
        let data_key = layout::data_key(partition, key);
        let mut entry = self.load(&data_key, group).map_err(WriteError::Unavailable)?;
        let hlc = self.clock.next();
        // Registers, deletes and expiries order by the fence token first: a write under a newer grant
        // wins in every replica whatever the clocks say.
        let marker = Marker::new(fence.map_or(0, |fence| fence.token), hlc, self.identity.replica);
        let applied = entry.apply(op, marker)?;
        if let Some((token, register)) = raise {
            // A register whose marker fence is the token, so replicas merging it keep the highest; logged
            // like any change, so it replicates with the data.
            let FenceRegister { key, partition, data_key, mut entry, .. } = register;
            let op = Op::Put { value: encode_fence_token(token), ttl_ms: None };
            entry.apply(&op, Marker::new(token, hlc, self.identity.replica))?;
            self.log_local(key, partition, data_key, entry, hlc, group);
        }
        let sequence = self.log_local(key.to_vec(), partition, data_key, entry, hlc, group);
        group.hlc_high = Some(hlc);
        Ok(WriteOutcome { hlc, token: CausalToken { site: self.identity.site.clone(), partition, sequence }, applied })
    }

    /// Logs a change made here (this site is its origin); returns its sequence.
    fn log_local(
        &self,
        key: Vec<u8>,
        partition: u16,
        data_key: Vec<u8>,
        entry: Entry,
        hlc: Hlc,
        group: &mut Group,
    ) -> u64 {
        let record = LogRecord { key, hlc, origin: self.identity.site.clone(), origin_sequence: 0, entry: Vec::new() };
        self.log_change(partition, data_key, entry, record, group)
    }

    fn set_cursor(&self, peer: &str, partition: u16, cursor: u64, group: &mut Group) {
        let slot = group.state.cursors.entry((peer.to_string(), partition)).or_insert(0);
        if cursor > *slot {
            *slot = cursor;
            group.touched_cursors.push((peer.to_string(), partition));
        }
    }

    fn apply_merge(&self, peer_records: PeerRecords, group: &mut Group) -> Result<usize, String> {
        let PeerRecords { peer, partition, records, after, through } = peer_records;
        if partition >= self.identity.partitions {
            return Err(format!("partition {partition} does not exist"));
        }
        let cursor = group.state.cursor(&peer, partition);
        if cursor != after {
            return Err(format!(
                "out of order: the cursor on {peer}'s partition {partition} is at {cursor}, the batch continues from {after}"
            ));
        }
        // Check and decode everything first: a batch is merged whole or not at all.
        let mut decoded = Vec::with_capacity(records.len());
        for (sequence, record) in records {
            if partition_of(&record.key, self.identity.partitions).0 != partition {
                return Err(format!("record {sequence} from {peer} holds a key of another partition than {partition}"));
            }
            let remote = decode_entry(&record.entry)
                .map_err(|e| format!("unreadable entry in record {sequence} from {peer}: {e}"))?;
            decoded.push((record, remote));
        }
        let mut changed = 0;
        let now_ms = self.clock.wall().now_unix_ms();
        for (record, remote) in decoded {
            let origin = (record.origin.clone(), partition);
            // Changes from one origin reach this replica in the origin's order along every path, so one
            // at or below what this replica has seen from that origin is already reflected here (it is a
            // copy relayed through another site): skip the read and merge.
            let seen = group.state.seen.get(&origin).copied().unwrap_or(0);
            if record.origin_sequence > 0 && record.origin_sequence <= seen {
                continue;
            }
            let data_key = layout::data_key(partition, &record.key);
            let local = self.load(&data_key, group)?;
            let mut merged = local.clone();
            merged.merge(remote);
            let origin_sequence = record.origin_sequence;
            if merged != local {
                // Lag is measured where a change first becomes visible here; later copies (relayed through
                // another site) change nothing and are not counted.
                let lag_ms = (now_ms - record.hlc.unix_ms()).max(0);
                self.metrics.replication_lag_seconds.observe(lag_ms as f64 / 1000.0);
                self.log_change(partition, data_key, merged, record, group);
                changed += 1;
            }
            if origin.0 != self.identity.site && origin_sequence > 0 {
                let seen = group.state.seen.entry(origin.clone()).or_insert(0);
                if origin_sequence > *seen {
                    *seen = origin_sequence;
                    group.touched_seen.push(origin);
                }
            }
        }
        self.set_cursor(&peer, partition, through, group);
        self.metrics.replicated_records.with_label_values(&[peer.as_str()]).inc_by(changed as u64);
        Ok(changed)
    }

    fn apply_repair(
        &self,
        peer: &str,
        partition: u16,
        entries: Vec<(Vec<u8>, Entry)>,
        cursor: Option<u64>,
        group: &mut Group,
    ) -> Result<usize, String> {
        if partition >= self.identity.partitions {
            return Err(format!("partition {partition} does not exist"));
        }
        let mut changed = 0;
        for (key, remote) in entries {
            if partition_of(&key, self.identity.partitions).0 != partition {
                return Err(format!("a repair for partition {partition} holds a key of another partition"));
            }
            let data_key = layout::data_key(partition, &key);
            let local = self.load(&data_key, group)?;
            let mut merged = local.clone();
            merged.merge(remote);
            if merged != local {
                // A repair has no single origin; it is logged under the peer it came from, without a
                // sequence, so it is relayed onwards but satisfies no causal token.
                let record = LogRecord {
                    key,
                    hlc: self.clock.next(),
                    origin: peer.to_string(),
                    origin_sequence: 0,
                    entry: Vec::new(),
                };
                self.log_change(partition, data_key, merged, record, group);
                changed += 1;
            }
        }
        if let Some(cursor) = cursor {
            self.set_cursor(peer, partition, cursor, group);
        }
        self.metrics.anti_entropy_repairs.inc_by(changed as u64);
        Ok(changed)
    }

    fn apply_collect(
        &self,
        partition: u16,
        candidates: Vec<(Vec<u8>, Entry)>,
        group: &mut Group,
    ) -> Result<usize, String> {
        let mut collected = 0;
        for (key, expected) in candidates {
            let data_key = layout::data_key(partition, &key);
            // Only if nothing has changed the key since it was found dead: a write in between revives it.
            if self.load(&data_key, group)? == expected {
                group.batch.delete(Space::Data, data_key.clone());
                group.entries.insert(data_key, Entry::default());
                collected += 1;
            }
        }
        self.metrics.tombstones_collected.inc_by(collected as u64);
        Ok(collected)
    }

    fn apply_trim(&self, partition: u16, start: u64, bytes_removed: u64, group: &mut Group) -> Result<(), String> {
        let index = usize::from(partition);
        let Some(&old_start) = group.state.log_starts.get(index) else {
            return Err(format!("partition {partition} does not exist"));
        };
        // Never trim past the head: the next record must still be readable as "after the start".
        let start = start.min(group.state.heads[index] + 1);
        if start <= old_start {
            return Ok(());
        }
        for sequence in old_start..start {
            group.batch.delete(Space::Log, layout::log_key(partition, sequence));
        }
        group.batch.put(Space::Meta, layout::meta_log_start_key(partition), start.to_be_bytes().to_vec());
        group.state.log_starts[index] = start;
        group.state.log_bytes[index] = group.state.log_bytes[index].saturating_sub(bytes_removed);
        group.touched_heads[index] = true;
        Ok(())
    }
}

fn refuse(request: Request, reason: &str) {
    match request {
        Request::Write { ops, reply } => {
            let _ = reply.send(ops.iter().map(|_| Err(WriteError::Unavailable(reason.to_string()))).collect());
        }
        Request::Merge { reply, .. } | Request::Repair { reply, .. } | Request::Collect { reply, .. } => {
            let _ = reply.send(Err(reason.to_string()));
        }
        Request::Trim { reply, .. } => {
            let _ = reply.send(Err(reason.to_string()));
        }
    }
}

/// The replica id a new production data directory gets: random, so that no two replicas share one.
pub fn random_replica_id() -> u64 {
    rand::random::<u64>()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use geostore_model::{ManualWallClock, Value};
    use geostore_storage::{MemoryStorage, RocksStorage};

    use super::*;

    const JAN_2026_MS: i64 = 1_767_225_600_000;

    fn open(storage: Arc<dyn Storage>, wall: &ManualWallClock) -> Arc<Store> {
        Store::open(storage, Arc::new(wall.clone()), StoreConfig::default(), Metrics::new(), || 7).unwrap()
    }

    #[tokio::test]
    async fn writes_of_every_type_read_back() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let store = open(Arc::new(MemoryStorage::new()), &wall);
        store.write(b"r".to_vec(), Op::Put { value: b"v".to_vec(), ttl_ms: None }).await.unwrap();
        let incr = store.write(b"c".to_vec(), Op::Increment { delta: 5 }).await.unwrap();
        assert_eq!(incr.applied.counter, Some(5));
        store.write(b"s".to_vec(), Op::SetAdd { members: vec![b"x".to_vec(), b"y".to_vec()] }).await.unwrap();
        assert_eq!(store.get(b"r").unwrap().unwrap().value, Value::Register(b"v".to_vec()));
        assert_eq!(store.get(b"c").unwrap().unwrap().value, Value::Counter(5));
        let members: BTreeSet<Vec<u8>> = [b"x".to_vec(), b"y".to_vec()].into();
        assert_eq!(store.get(b"s").unwrap().unwrap().value, Value::Set(members));
    }

    fn fence(token: u64) -> Option<Fence> {
        Some(Fence { lock: "job".into(), token })
    }

    fn put(value: &[u8]) -> Op {
        Op::Put { value: value.to_vec(), ttl_ms: None }
    }

    #[tokio::test]
    async fn a_stale_fenced_write_is_refused_and_changes_nothing() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let store = open(Arc::new(MemoryStorage::new()), &wall);
        store.write_fenced(b"k".to_vec(), put(b"v5"), fence(5)).await.unwrap();
        let stale = store.write_fenced(b"k".to_vec(), put(b"v4"), fence(4)).await.unwrap_err();
        assert_eq!(stale, WriteError::Fenced { lock: "job".into(), token: 4, known: 5 });
        assert!(stale.to_string().contains("lock \"job\" token 4") && stale.to_string().contains("5"), "{stale}");
        assert_eq!(store.get(b"k").unwrap().unwrap().value, Value::Register(b"v5".to_vec()));
        // The same token may write again; counters and sets are fenced the same way.
        store.write_fenced(b"k".to_vec(), put(b"v5b"), fence(5)).await.unwrap();
        let incr = store.write_fenced(b"n".to_vec(), Op::Increment { delta: 1 }, fence(2)).await.unwrap_err();
        assert!(matches!(incr, WriteError::Fenced { known: 5, .. }));
        assert!(store.get(b"n").unwrap().is_none());
        // A grant the lock group applied raises the bar before any write is made under it.
        store.set_fence_source(Arc::new(|lock: &str| (lock == "job").then_some(9)));
        let stale = store.write_fenced(b"k".to_vec(), put(b"v6"), fence(6)).await.unwrap_err();
        assert_eq!(stale, WriteError::Fenced { lock: "job".into(), token: 6, known: 9 });
        store.write_fenced(b"k".to_vec(), put(b"v9"), fence(9)).await.unwrap();
        assert_eq!(store.metrics().fenced_rejections.get(), 3);
        // Other locks are independent, and nobody writes the fence registers directly.
        store.write_fenced(b"k2".to_vec(), put(b"x"), Some(Fence { lock: "other".into(), token: 1 })).await.unwrap();
        let reserved = store.write(fence_key("job"), put(b"\0\0\0\0\0\0\0\x01")).await.unwrap_err();
        assert!(matches!(reserved, WriteError::Invalid(InvalidRequest::ReservedKey)), "{reserved}");
        let bad = store.write_fenced(b"k".to_vec(), put(b"x"), Some(Fence { lock: String::new(), token: 3 })).await;
        assert!(matches!(bad, Err(WriteError::Invalid(InvalidRequest::BadFence(_)))), "{bad:?}");
    }

    /// Copies `key`'s state from one store into another, as anti-entropy would.
    async fn copy_key(from: &Store, to: &Store, key: &[u8]) {
        let partition = partition_of(key, from.identity().partitions).0;
        let entry = from.entry(key).unwrap().unwrap();
        to.repair("peer", partition, vec![(key.to_vec(), entry)], None).await.unwrap();
    }

    #[tokio::test]
    async fn after_merge_the_write_under_the_higher_token_wins_whatever_the_clocks_say() {
        // Site a's clock is a minute ahead: by timestamps its stale write would win.
        let wall_a = ManualWallClock::new(JAN_2026_MS + 60_000);
        let wall_b = ManualWallClock::new(JAN_2026_MS);
        let a =
            Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall_a), StoreConfig::default(), Metrics::new(), || 1)
                .unwrap();
        let b =
            Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall_b), StoreConfig::default(), Metrics::new(), || 2)
                .unwrap();
        b.write_fenced(b"k".to_vec(), put(b"new"), fence(7)).await.unwrap();
        // a has not heard of token 7 yet: its stale holder's write is accepted there...
        a.write_fenced(b"k".to_vec(), put(b"stale"), fence(3)).await.unwrap();
        a.write(b"k".to_vec(), put(b"unfenced")).await.unwrap();
        for key in [b"k".to_vec(), fence_key("job")] {
            copy_key(&a, &b, &key).await;
            copy_key(&b, &a, &key).await;
        }
        // ...but after merging, the write under the higher token wins in both, and a now refuses token 3.
        for store in [&a, &b] {
            assert_eq!(store.get(b"k").unwrap().unwrap().value, Value::Register(b"new".to_vec()));
        }
        let refused = a.write_fenced(b"k".to_vec(), put(b"late"), fence(3)).await.unwrap_err();
        assert_eq!(refused, WriteError::Fenced { lock: "job".into(), token: 3, known: 7 });
    }

    #[tokio::test]
    async fn an_inline_writer_gives_the_same_results_as_the_writer_thread() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let mut results = Vec::new();
        for inline_writer in [false, true] {
            let config = StoreConfig { inline_writer, ..StoreConfig::default() };
            let store =
                Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall.clone()), config, Metrics::new(), || 7)
                    .unwrap();
            let mut seen = Vec::new();
            let ops = vec![
                (b"r".to_vec(), put(b"v"), None),
                (b"c".to_vec(), Op::Increment { delta: 3 }, None),
                (b"c".to_vec(), Op::SetAdd { members: vec![b"x".to_vec()] }, None),
                (b"f".to_vec(), put(b"f9"), fence(9)),
                (b"f".to_vec(), put(b"f8"), fence(8)),
            ];
            for result in store.write_fenced_many(ops).await {
                seen.push(format!("{:?}", result.map(|outcome| (outcome.token, outcome.applied))));
            }
            for key in [&b"r"[..], b"c", b"f"] {
                seen.push(format!("{:?}", store.get(key).unwrap().map(|read| read.value)));
            }
            store.shutdown();
            let after = store.write(b"r".to_vec(), put(b"late")).await.unwrap_err();
            seen.push(after.to_string());
            results.push(seen);
        }
        assert_eq!(results[0], results[1]);
    }

    #[tokio::test]
    async fn sequences_are_dense_per_partition_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let wall = ManualWallClock::new(JAN_2026_MS);
        let key = b"k".to_vec();
        let partition = partition_of(&key, 64).0;
        let last_hlc = {
            let store = open(Arc::new(RocksStorage::open(dir.path()).unwrap()), &wall);
            let first = store.write(key.clone(), Op::Increment { delta: 1 }).await.unwrap();
            let second = store.write(key.clone(), Op::Increment { delta: 1 }).await.unwrap();
            assert_eq!((first.token.partition, first.token.sequence), (partition, 1));
            assert_eq!(second.token.sequence, 2);
            second.hlc
        };
        // The wall clock went back an hour while the node was down: timestamps must still increase.
        wall.advance_ms(-3_600_000);
        let store = open(Arc::new(RocksStorage::open(dir.path()).unwrap()), &wall);
        let third = store.write(key.clone(), Op::Increment { delta: 1 }).await.unwrap();
        assert_eq!(third.token.sequence, 3);
        assert!(third.hlc > last_hlc);
        assert_eq!(store.identity().replica, ReplicaId(7));
        let log = store.read_log(partition, 0, 10, usize::MAX).unwrap();
        assert_eq!(log.len(), 3);
        let (sequence, record) = &log[2];
        assert_eq!((*sequence, &record.key, record.hlc, record.origin.as_str()), (3, &key, third.hlc, "local"));
        assert_eq!(record.origin_sequence, 3);
        let logged = decode_entry(&record.entry).unwrap();
        assert_eq!(logged.read(JAN_2026_MS).unwrap().value, Value::Counter(3));
    }

    #[tokio::test]
    async fn a_refused_write_changes_nothing_and_takes_no_sequence() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let store = open(Arc::new(MemoryStorage::new()), &wall);
        let first = store.write(b"s".to_vec(), Op::SetAdd { members: vec![b"x".to_vec()] }).await.unwrap();
        let refused = store.write(b"s".to_vec(), Op::Increment { delta: 1 }).await.unwrap_err();
        assert!(matches!(refused, WriteError::Rejected(OpError::TypeMismatch { .. })), "{refused}");
        let invalid = store.write(Vec::new(), Op::Increment { delta: 1 }).await.unwrap_err();
        assert!(matches!(invalid, WriteError::Invalid(InvalidRequest::EmptyKey)), "{invalid}");
        let next = store.write(b"s".to_vec(), Op::SetAdd { members: vec![b"y".to_vec()] }).await.unwrap();
        assert_eq!(next.token.sequence, first.token.sequence + 1);
    }

    #[tokio::test]
    async fn a_batch_applies_in_order_with_one_result_per_operation() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let store = open(Arc::new(MemoryStorage::new()), &wall);
        let results = store
            .write_many(vec![
                (b"c".to_vec(), Op::Increment { delta: 2 }),
                (b"c".to_vec(), Op::SetAdd { members: vec![b"x".to_vec()] }),
                (Vec::new(), Op::Delete),
                (b"c".to_vec(), Op::Increment { delta: 3 }),
            ])
            .await;
        assert_eq!(results[0].as_ref().unwrap().applied.counter, Some(2));
        assert!(matches!(results[1], Err(WriteError::Rejected(_))));
        assert!(matches!(results[2], Err(WriteError::Invalid(_))));
        assert_eq!(results[3].as_ref().unwrap().applied.counter, Some(5));
    }

    #[tokio::test]
    async fn reopening_with_another_site_or_partition_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wall = ManualWallClock::new(JAN_2026_MS);
        drop(open(Arc::new(RocksStorage::open(dir.path()).unwrap()), &wall));
        let storage: Arc<dyn Storage> = Arc::new(RocksStorage::open(dir.path()).unwrap());
        let other_site = StoreConfig { site: "elsewhere".into(), ..StoreConfig::default() };
        let error =
            Store::open(storage.clone(), Arc::new(wall.clone()), other_site, Metrics::new(), || 8).err().unwrap();
        assert!(matches!(error, OpenError::SiteMismatch { .. }), "{error}");
        let other_partitions = StoreConfig { partitions: 32, ..StoreConfig::default() };
        let error = Store::open(storage, Arc::new(wall), other_partitions, Metrics::new(), || 8).err().unwrap();
        assert!(matches!(error, OpenError::PartitionsMismatch { stored: 64, configured: 32 }), "{error}");
    }

    fn record(key: &[u8], origin: &str, origin_sequence: u64, entry: &Entry) -> LogRecord {
        LogRecord {
            key: key.to_vec(),
            hlc: Hlc::from_parts(JAN_2026_MS, origin_sequence).unwrap(),
            origin: origin.into(),
            origin_sequence,
            entry: encode_entry(entry),
        }
    }

    #[tokio::test]
    async fn merging_is_idempotent_logs_only_changes_and_tracks_cursor_and_origin() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let store = open(Arc::new(MemoryStorage::new()), &wall);
        let mut remote = Entry::default();
        let marker = Marker::new(0, Hlc::from_parts(JAN_2026_MS, 1).unwrap(), ReplicaId(99));
        remote.apply(&Op::Increment { delta: 4 }, marker).unwrap();
        let key = b"k".to_vec();
        let partition = partition_of(&key, 64).0;
        let batch = |after, through| PeerRecords {
            peer: "b".into(),
            partition,
            records: vec![(through, record(&key, "c", 17, &remote))],
            after,
            through,
        };
        assert_eq!(store.merge(batch(0, 5)).await.unwrap(), 1);
        // A batch that does not continue from the cursor is refused: nothing is ever skipped.
        let error = store.merge(batch(6, 9)).await.unwrap_err();
        assert!(error.contains("out of order"), "{error}");
        // The same record again (a duplicate, or the same change relayed by another site): no change, not
        // logged again, but the cursor still moves.
        assert_eq!(store.merge(batch(5, 9)).await.unwrap(), 0);
        let progress = store.progress();
        assert_eq!(progress.heads[usize::from(partition)], 1);
        assert_eq!(progress.cursors[&("b".to_string(), partition)], 9);
        assert_eq!(progress.seen[&("c".to_string(), partition)], 17);
        assert_eq!(store.get(&key).unwrap().unwrap().value, Value::Counter(4));
        // The relayed record keeps its origin.
        let (_, logged) = &store.read_log(partition, 0, 10, usize::MAX).unwrap()[0];
        assert_eq!((logged.origin.as_str(), logged.origin_sequence), ("c", 17));
        // A causal token for c's write is satisfied; one beyond it waits and fails.
        store.wait_for(&CausalToken { site: "c".into(), partition, sequence: 17 }, Duration::ZERO).await.unwrap();
        let error = store
            .wait_for(&CausalToken { site: "c".into(), partition, sequence: 18 }, Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(matches!(error, ReadError::NotYetReplicated { seen: 17, needed: 18, .. }), "{error}");
    }

    /// Scenario found by the simulation harness (seed 204 at commit 6e14ad5): a key is deleted, its
    /// tombstone collected everywhere, then a node restarts with its cursor on a peer's log fallen back
    /// (a merge that changed nothing had moved it only in memory) and merges an old copy of the key again:
    /// the deleted value came back. Now the cursor of a no-op merge is written.
    #[tokio::test]
    async fn a_merge_that_changes_nothing_still_persists_its_cursor() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let store = open(storage.clone(), &wall);
        let key = b"k".to_vec();
        let partition = partition_of(&key, 64).0;
        store.write(key.clone(), put(b"old")).await.unwrap();
        let entry = store.entry(&key).unwrap().unwrap();
        // A peer relays a repair of the same state: nothing changes here, the cursor moves to 5.
        let batch = PeerRecords {
            peer: "b".into(),
            partition,
            records: vec![(5, record(&key, "b", 0, &entry))],
            after: 0,
            through: 5,
        };
        assert_eq!(store.merge(batch).await.unwrap(), 0);
        store.shutdown();
        drop(store);
        let reopened = open(storage, &wall);
        assert_eq!(reopened.progress().cursors[&("b".to_string(), partition)], 5, "the cursor survives a restart");
    }

    /// Scenario found by the simulation harness (seeds 47, 2103 and 2120 at 8284fad): a node without fsync
    /// lost power, came back with the log sequences, HLC and replica id its lost tail had used, and peers
    /// discarded or out-ordered the writes it acknowledged after restarting. Now a restart without a clean
    /// shutdown continues as a new replica, past every sequence and timestamp the tail may have held.
    #[tokio::test]
    async fn after_a_power_loss_without_fsync_nothing_handed_out_is_handed_out_again() {
        use geostore_storage::LossyMemoryStorage;
        let wall = ManualWallClock::new(JAN_2026_MS);
        let disk = Arc::new(LossyMemoryStorage::new());
        let config = StoreConfig { durability: Durability::Buffered, partitions: 1, ..StoreConfig::default() };
        let open = |disk: &Arc<LossyMemoryStorage>| {
            let storage: Arc<dyn Storage> = disk.clone();
            Store::open(storage, Arc::new(wall.clone()), config.clone(), Metrics::new(), || 7).unwrap()
        };
        let store = open(&disk);
        store.write(b"a".to_vec(), put(b"1")).await.unwrap();
        let lost = store.write(b"b".to_vec(), put(b"2")).await.unwrap();
        let replica_before = store.identity().replica;
        drop(store);
        assert!(disk.lose_unsynced() > 0, "the second write was not synced");
        wall.advance_ms(-5_000); // the clock is behind after the restart, too

        let store = open(&disk);
        assert!(store.get(b"b").unwrap().is_none(), "the unsynced write is gone");
        assert_ne!(store.identity().replica, replica_before, "a new replica: its dots cannot collide");
        let again = store.write(b"b".to_vec(), put(b"3")).await.unwrap();
        assert!(again.token.sequence > lost.token.sequence, "{} reuses a sequence", again.token.sequence);
        assert!(again.hlc > lost.hlc, "the new write's timestamp is above the lost one's");

        // A clean shutdown keeps the replica.
        let replica = store.identity().replica;
        store.close().unwrap();
        drop(store);
        assert_eq!(open(&disk).identity().replica, replica);
    }

    #[tokio::test]
    async fn the_log_is_trimmed_to_its_retention_and_digests_match_equal_states() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let config = StoreConfig { partitions: 1, log_retention_ops: 3, ..StoreConfig::default() };
        let a =
            Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall.clone()), config.clone(), Metrics::new(), || 1)
                .unwrap();
        for i in 0..10 {
            a.write(format!("k{i}").into_bytes(), Op::Put { value: b"v".to_vec(), ttl_ms: None }).await.unwrap();
        }
        assert_eq!(a.trim_log(0).await.unwrap(), 7);
        assert_eq!(a.progress().log_starts[0], 8);
        assert_eq!(a.read_log(0, 0, 100, usize::MAX).unwrap().len(), 3);
        // A second replica given the same states has the same digest, whatever its log holds.
        let b = Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall), config, Metrics::new(), || 2).unwrap();
        assert_ne!(a.partition_digest(0).unwrap(), b.partition_digest(0).unwrap());
        let entries =
            (0..10).map(|i| format!("k{i}").into_bytes()).map(|k| (k.clone(), a.entry(&k).unwrap().unwrap())).collect();
        assert_eq!(b.repair("a", 0, entries, Some(10)).await.unwrap(), 10);
        assert_eq!(a.partition_digest(0).unwrap(), b.partition_digest(0).unwrap());
        assert_eq!(b.progress().cursors[&("a".to_string(), 0)], 10);
    }

    #[tokio::test]
    async fn expired_keys_read_as_absent() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let store = open(Arc::new(MemoryStorage::new()), &wall);
        store.write(b"k".to_vec(), Op::Put { value: b"v".to_vec(), ttl_ms: Some(1000) }).await.unwrap();
        assert!(store.get(b"k").unwrap().is_some());
        wall.advance_ms(1000);
        assert_eq!(store.get(b"k").unwrap(), None);
    }
}
