//! The store engine: one node's replica of every partition, its write path and its reads.
//!
//! Writes go through a single writer thread that owns every read-modify-write. It takes all the write
//! requests that are waiting (up to `group_ops_max` operations), applies each to its key's [`Entry`],
//! puts the new state and a change-log record per write into one storage batch, writes that batch with one
//! fsync, and only then answers every request in the group. Concurrent writers so share one fsync (group
//! commit), and a write is acknowledged only once durable.
//!
//! Invariants:
//! - A partition's change-log sequence numbers are dense and increase by one per applied write; the data,
//!   the log records and the partition's last sequence are written in the same atomic batch.
//! - Every write's HLC timestamp is higher than every timestamp this replica issued before, restarts
//!   included (the highest one is persisted with every batch and observed at open).
//! - After a storage write fails, the store accepts no more writes: RocksDB's state after a failed fsync
//!   is not trustworthy, so the node must be restarted (and recover from its write-ahead log).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use geostore_model::{
    Applied, Entry, Hlc, HybridClock, InvalidRequest, Limits, Marker, Op, OpError, Read, ReplicaId, WallClock,
    decode_entry, encode_entry, partition_of,
};
use geostore_storage::{Batch, Durability, Space, Storage, layout};
use tokio::sync::{mpsc, oneshot};

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
    /// Write requests that may wait for the writer thread; callers wait for room beyond this.
    pub write_queue_max: usize,
    /// Operations the writer applies in one group (one storage batch, one fsync).
    pub group_ops_max: usize,
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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("storage: {0}")]
    Storage(String),
}

/// Who this replica is. Fixed when its data directory is created.
#[derive(Debug, Clone)]
pub struct Identity {
    pub replica: ReplicaId,
    pub site: String,
    pub partitions: u16,
}

struct WriteRequest {
    ops: Vec<(Vec<u8>, Op)>,
    reply: oneshot::Sender<Vec<Result<WriteOutcome, WriteError>>>,
}

/// One node's store. Cheap to share behind an `Arc`; reads run on the caller's thread, writes on the
/// writer thread.
pub struct Store {
    storage: Arc<dyn Storage>,
    clock: Arc<HybridClock>,
    identity: Identity,
    limits: Limits,
    metrics: Metrics,
    writes: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
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
        let identity = load_or_create_identity(storage.as_ref(), &config, new_replica_id)?;
        let clock = Arc::new(HybridClock::new(wall, config.max_drift_ms));
        if let Some(high) = read_u64_meta(storage.as_ref(), layout::META_HLC_HIGH)? {
            clock.observe_own(Hlc(high));
        }
        let mut sequences = Vec::with_capacity(usize::from(identity.partitions));
        for partition in 0..identity.partitions {
            sequences.push(read_u64_meta(storage.as_ref(), &layout::meta_sequence_key(partition))?.unwrap_or(0));
        }

        let (sender, receiver) = mpsc::channel(config.write_queue_max);
        let writer = Writer {
            storage: storage.clone(),
            clock: clock.clone(),
            identity: identity.clone(),
            durability: config.durability,
            group_ops_max: config.group_ops_max,
            sequences,
            failed: None,
            metrics: metrics.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("geostore-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| OpenError::Config(format!("cannot start the writer thread: {e}")))?;
        tracing::info!(replica = identity.replica.0, site = %identity.site, partitions = identity.partitions, "store open");
        Ok(Arc::new(Store {
            storage,
            clock,
            identity,
            limits: config.limits,
            metrics,
            writes: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
        }))
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn clock(&self) -> &Arc<HybridClock> {
        &self.clock
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Applies one write; see [`Store::write_many`].
    pub async fn write(&self, key: Vec<u8>, op: Op) -> Result<WriteOutcome, WriteError> {
        self.write_many(vec![(key, op)]).await.pop().expect("one result per operation")
    }

    /// Applies writes in order, each on its own: one result per operation, in the same order. Invalid
    /// operations are refused here, before they reach the writer.
    pub async fn write_many(&self, ops: Vec<(Vec<u8>, Op)>) -> Vec<Result<WriteOutcome, WriteError>> {
        let mut results: Vec<Option<Result<WriteOutcome, WriteError>>> = Vec::with_capacity(ops.len());
        let mut valid = Vec::with_capacity(ops.len());
        for (key, op) in ops {
            match self.limits.validate(&key, &op) {
                Ok(()) => {
                    results.push(None);
                    valid.push((key, op));
                }
                Err(invalid) => {
                    self.metrics.writes_invalid.inc();
                    results.push(Some(Err(WriteError::Invalid(invalid))));
                }
            }
        }
        if !valid.is_empty() {
            let mut applied = self.submit(valid).await.into_iter();
            for slot in results.iter_mut().filter(|slot| slot.is_none()) {
                *slot = applied.next();
            }
        }
        results.into_iter().map(|result| result.expect("every operation has a result")).collect()
    }

    async fn submit(&self, ops: Vec<(Vec<u8>, Op)>) -> Vec<Result<WriteOutcome, WriteError>> {
        let count = ops.len();
        let not_applied = |why: &str| (0..count).map(|_| Err(WriteError::Unavailable(why.to_string()))).collect();
        let Some(sender) = self.writes.lock().expect("writes lock poisoned").clone() else {
            return not_applied("the store is shut down");
        };
        let (reply, answer) = oneshot::channel();
        if sender.send(WriteRequest { ops, reply }).await.is_err() {
            return not_applied("the store is shut down");
        }
        // Once queued, the writer always answers unless the process is going down; a dropped reply after
        // that point may follow a durable write, so it is reported as unknown.
        answer.await.unwrap_or_else(|_| {
            (0..count)
                .map(|_| Err(WriteError::Unknown("the writer stopped while the write was queued".into())))
                .collect()
        })
    }

    /// Reads a key as it is now on this replica (local, possibly behind other sites).
    pub fn get(&self, key: &[u8]) -> Result<Option<Read>, ReadError> {
        geostore_model::limits::validate_key(key)?;
        let partition = partition_of(key, self.identity.partitions);
        let bytes = self
            .storage
            .get(Space::Data, &layout::data_key(partition.0, key))
            .map_err(|e| ReadError::Storage(e.to_string()))?;
        let Some(bytes) = bytes else { return Ok(None) };
        let entry = decode_entry(&bytes).map_err(|e| ReadError::Storage(e.to_string()))?;
        Ok(entry.read(self.clock.wall().now_unix_ms()))
    }

    /// Stops taking writes, lets the writer finish what is queued, and waits for it.
    pub fn shutdown(&self) {
        self.writes.lock().expect("writes lock poisoned").take();
        if let Some(handle) = self.writer.lock().expect("writer lock poisoned").take() {
            let _ = handle.join();
        }
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
        Some(bytes) => {
            let array: [u8; 8] = bytes.as_slice().try_into().map_err(|_| OpenError::CorruptMeta {
                key: String::from_utf8_lossy(key).into_owned(),
                detail: format!("{} bytes, expected 8", bytes.len()),
            })?;
            Ok(Some(u64::from_be_bytes(array)))
        }
    }
}

fn load_or_create_identity(
    storage: &dyn Storage,
    config: &StoreConfig,
    new_replica_id: impl FnOnce() -> u64,
) -> Result<Identity, OpenError> {
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
            Ok(Identity { replica: ReplicaId(replica), site, partitions })
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
            Ok(identity)
        }
        _ => Err(OpenError::CorruptMeta {
            key: "identity".into(),
            detail: "only part of the replica identity is stored".into(),
        }),
    }
}

/// A change-log record: `[1] ++ hlc (u64 BE) ++ key length (u32 BE) ++ key ++ encoded entry`. The record
/// carries the key's whole state after the write, so applying it anywhere is a merge: idempotent and
/// order-insensitive.
pub fn encode_log_record(key: &[u8], hlc: Hlc, encoded_entry: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + 8 + 4 + key.len() + encoded_entry.len());
    bytes.push(1);
    bytes.extend_from_slice(&hlc.0.to_be_bytes());
    bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(encoded_entry);
    bytes
}

/// The parts of a change-log record, or `None` if it is not one this build can read.
pub fn decode_log_record(bytes: &[u8]) -> Option<(Vec<u8>, Hlc, Entry)> {
    let (&1, rest) = bytes.split_first()? else { return None };
    let (hlc, rest) = rest.split_first_chunk::<8>()?;
    let (key_len, rest) = rest.split_first_chunk::<4>()?;
    let key_len = u32::from_be_bytes(*key_len) as usize;
    if rest.len() < key_len {
        return None;
    }
    let (key, entry) = rest.split_at(key_len);
    Some((key.to_vec(), Hlc(u64::from_be_bytes(*hlc)), decode_entry(entry).ok()?))
}

/// The writer thread's state. Only this thread changes data, log and sequence numbers.
struct Writer {
    storage: Arc<dyn Storage>,
    clock: Arc<HybridClock>,
    identity: Identity,
    durability: Durability,
    group_ops_max: usize,
    /// The last sequence number written per partition.
    sequences: Vec<u64>,
    /// Set when a storage write fails; every later write is refused with this reason.
    failed: Option<String>,
    metrics: Metrics,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<WriteRequest>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut ops = first.ops.len();
            let mut group = vec![first];
            while ops < self.group_ops_max {
                match receiver.try_recv() {
                    Ok(request) => {
                        ops += request.ops.len();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        tracing::info!("writer stopped");
    }

    fn commit_group(&mut self, group: Vec<WriteRequest>) {
        let started = std::time::Instant::now();
        let mut replies = Vec::with_capacity(group.len());
        if let Some(reason) = &self.failed {
            for request in group {
                let results = request.ops.iter().map(|_| Err(WriteError::Unavailable(reason.clone()))).collect();
                let _ = request.reply.send(results);
            }
            return;
        }

        let mut sequences = self.sequences.clone();
        let mut touched = vec![false; sequences.len()];
        let mut entries: HashMap<Vec<u8>, Entry> = HashMap::new();
        let mut batch = Batch::new();
        let mut hlc_high = None;
        let mut applied_ops = 0_u64;
        for request in group {
            let mut results = Vec::with_capacity(request.ops.len());
            for (key, op) in &request.ops {
                let result = self.apply_one(key, op, &mut entries, &mut batch, &mut sequences, &mut touched);
                if let Ok(outcome) = &result {
                    hlc_high = Some(outcome.hlc);
                    applied_ops += 1;
                }
                self.metrics.observe_write(op, &result);
                results.push(result);
            }
            replies.push((request.reply, results));
        }

        if !batch.is_empty() {
            for (partition, _) in touched.iter().enumerate().filter(|(_, touched)| **touched) {
                batch.put(
                    Space::Meta,
                    layout::meta_sequence_key(partition as u16),
                    sequences[partition].to_be_bytes().to_vec(),
                );
            }
            if let Some(hlc) = hlc_high {
                batch.put(Space::Meta, layout::META_HLC_HIGH.to_vec(), hlc.0.to_be_bytes().to_vec());
            }
            let write_started = std::time::Instant::now();
            match self.storage.write(batch, self.durability) {
                Ok(()) => {
                    self.sequences = sequences;
                    self.metrics.storage_write_seconds.observe(write_started.elapsed().as_secs_f64());
                    self.metrics.group_ops.observe(applied_ops as f64);
                }
                Err(error) => {
                    let reason = format!("storage write failed: {error}; restart the node");
                    tracing::error!(%reason, "the store stops taking writes");
                    self.metrics.storage_failures.inc();
                    for (_, results) in replies.iter_mut() {
                        for result in results.iter_mut().filter(|result| result.is_ok()) {
                            *result = Err(WriteError::Unknown(reason.clone()));
                        }
                    }
                    self.failed = Some(reason);
                }
            }
        }
        for (reply, results) in replies {
            // A caller that stopped waiting no longer needs its answer.
            let _ = reply.send(results);
        }
        self.metrics.group_seconds.observe(started.elapsed().as_secs_f64());
    }

    fn apply_one(
        &self,
        key: &[u8],
        op: &Op,
        entries: &mut HashMap<Vec<u8>, Entry>,
        batch: &mut Batch,
        sequences: &mut [u64],
        touched: &mut [bool],
    ) -> Result<WriteOutcome, WriteError> {
        let partition = partition_of(key, self.identity.partitions).0;
        let data_key = layout::data_key(partition, key);
        let mut entry = match entries.get(&data_key) {
            Some(entry) => entry.clone(),
            None => match self.storage.get(Space::Data, &data_key) {
                Ok(None) => Entry::default(),
                Ok(Some(bytes)) => decode_entry(&bytes)
                    .map_err(|e| WriteError::Unavailable(format!("the stored value of this key is unreadable: {e}")))?,
                Err(e) => return Err(WriteError::Unavailable(format!("storage read failed: {e}"))),
            },
        };
        let hlc = self.clock.next();
        let marker = Marker::new(0, hlc, self.identity.replica);
        let applied = entry.apply(op, marker)?;

        let sequence = sequences[usize::from(partition)] + 1;
        sequences[usize::from(partition)] = sequence;
        touched[usize::from(partition)] = true;
        let encoded = encode_entry(&entry);
        batch.put(Space::Log, layout::log_key(partition, sequence), encode_log_record(key, hlc, &encoded));
        batch.put(Space::Data, data_key.clone(), encoded);
        entries.insert(data_key, entry);
        Ok(WriteOutcome { hlc, token: CausalToken { site: self.identity.site.clone(), partition, sequence }, applied })
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
        let log = store
            .storage
            .scan(Space::Log, &layout::log_key(partition, 0), &layout::log_key(partition + 1, 0), 10)
            .unwrap();
        assert_eq!(log.len(), 3);
        let (logged_key, logged_hlc, logged_entry) = decode_log_record(&log[2].1).unwrap();
        assert_eq!((logged_key, logged_hlc), (key, third.hlc));
        assert_eq!(logged_entry.read(JAN_2026_MS).unwrap().value, Value::Counter(3));
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
