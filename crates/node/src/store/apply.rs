//! Applying operations to the group being committed: local writes (with their fence checks), merges of a
//! peer's records, anti-entropy repairs, tombstone collection and log trims.
//!
//! These are functions of the committed state (read from storage), the group built so far and the
//! request: they read storage but never write it, and put every change (new states, log records,
//! progress) into the [`Group`]. The writer commits the group as one batch; tests call them directly,
//! without a thread.
//!
//! Invariants kept here:
//! - A partition's sequences increase by one per logged change (from the floor after a lossy restart).
//! - A change is logged only if it changed this replica's state (ends relaying loops).
//! - A write under a token below the highest known for its lock is refused before anything is applied.
//! - A merge batch is checked whole before any of it is applied, and only where the cursor stands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use geostore_model::fence::{decode_fence_token, encode_fence_token, replica_site_key, token_lock_key};
use geostore_model::planted;
use geostore_model::{
    Entry, Fence, Hlc, HybridClock, Marker, Op, Read, Value, decode_entry, encode_entry, fence_key, partition_of,
};
use geostore_storage::{Batch, Space, Storage};

use super::{
    CausalToken, ChangeError, FenceSource, Identity, PartitionRole, PeerRecords, PrimaryRecords, ProgressState,
    RoleSource, StoreError, WriteError, WriteOutcome, keys,
};
use crate::log::LogRecord;
use crate::metrics::Metrics;

/// What applying reads: committed states, the clock that stamps local writes, who this replica is, and
/// where lock grants are learnt.
pub(super) struct Applier {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) clock: Arc<HybridClock>,
    pub(super) identity: Identity,
    pub(super) metrics: Metrics,
    pub(super) fence_source: Arc<OnceLock<FenceSource>>,
    pub(super) role_source: Arc<OnceLock<RoleSource>>,
    /// Per partition: whether this run has checked that the replica's site is recorded there (see
    /// `replica_site_key`).
    pub(super) site_recorded: Box<[AtomicBool]>,
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
pub(super) struct Group {
    pub(super) batch: Batch,
    pub(super) entries: HashMap<Vec<u8>, Entry>,
    pub(super) state: ProgressState,
    pub(super) touched_heads: Vec<bool>,
    pub(super) touched_cursors: Vec<(String, u16)>,
    pub(super) touched_seen: Vec<(String, u16)>,
    pub(super) hlc_high: Option<Hlc>,
    pub(super) changes: u64,
}

impl Group {
    /// An empty group starting from the committed progress `state`.
    pub(super) fn new(state: &ProgressState) -> Self {
        Group {
            batch: Batch::new(),
            entries: HashMap::new(),
            touched_heads: vec![false; state.heads.len()],
            state: state.clone(),
            touched_cursors: Vec::new(),
            touched_seen: Vec::new(),
            hlc_high: None,
            changes: 0,
        }
    }
}

impl Applier {
    /// A key's state as this group sees it: changed earlier in the group, or as committed.
    pub(super) fn load(&self, data_key: &[u8], group: &Group) -> Result<Entry, StoreError> {
        if let Some(entry) = group.entries.get(data_key) {
            return Ok(entry.clone());
        }
        Ok(super::stored_entry(self.storage.as_ref(), data_key)?.unwrap_or_default())
    }

    fn check_partition(&self, partition: u16) -> Result<(), ChangeError> {
        let partitions = self.identity.partitions;
        if partition >= partitions {
            return Err(ChangeError::NoSuchPartition { partition, partitions });
        }
        Ok(())
    }

    /// This node's role for `partition` (the primary of every one without a placement map).
    fn role(&self, partition: u16) -> PartitionRole {
        super::role_of(&self.role_source, partition)
    }

    /// Raises what this replica has seen of `origin` (another site, and a partition) to `origin_sequence`
    /// (0: a repair, which names no write); this site's own writes are counted by the log's head.
    fn note_seen(&self, origin: (String, u16), origin_sequence: u64, group: &mut Group) {
        if origin.0 == self.identity.site || origin_sequence == 0 {
            return;
        }
        let seen = group.state.seen.entry(origin.clone()).or_insert(0);
        if origin_sequence > *seen {
            *seen = origin_sequence;
            group.touched_seen.push(origin);
        }
    }

    /// Only a partition's primary merges into its log: another replica's log must stay a copy of the
    /// primary's.
    fn check_primary(&self, partition: u16) -> Result<(), ChangeError> {
        self.check_partition(partition)?;
        match self.role(partition) {
            PartitionRole::Primary => Ok(()),
            _ => Err(ChangeError::WrongRole { partition, detail: "this node is not its primary in the site" }),
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
        group.batch.put(Space::Log, keys::log_key(partition, sequence), encoded_record);
        group.batch.put(Space::Data, data_key.clone(), encoded);
        group.entries.insert(data_key, entry);
        group.changes += 1;
        sequence
    }

    /// `lock`'s fence register in `partition` as this group sees it: the highest token fenced writes to
    /// the partition made or merged here have raised it to.
    fn load_fence(&self, lock: &str, partition: u16, group: &Group) -> Result<FenceRegister, WriteError> {
        let key = fence_key(lock, partition);
        let data_key = keys::data_key(partition, &key);
        let entry = self.load(&data_key, group).map_err(WriteError::Unavailable)?;
        let token = match entry.read(self.clock.wall().now_unix_ms()) {
            Some(Read { value: Value::Register(bytes), .. }) => decode_fence_token(&bytes).unwrap_or(0),
            _ => 0,
        };
        Ok(FenceRegister { key, partition, data_key, entry, token })
    }

    /// Applies one local write: checks its fence, applies the operation, raises the lock's fence
    /// register if the write's token is above it, and logs the change.
    pub(super) fn apply_local(
        &self,
        key: &[u8],
        op: &Op,
        fence: Option<&Fence>,
        group: &mut Group,
    ) -> Result<WriteOutcome, WriteError> {
        // The highest token known is the fence register's (in the key's partition) or the lock group's
        // current grant's; the register is loaded once, and raised below if this write's token is above it.
        let partition = partition_of(key, self.identity.partitions).0;
        if self.role(partition) != PartitionRole::Primary {
            return Err(WriteError::NotPrimary { partition });
        }
        let mut raise = None;
        if let Some(fence) = fence {
            let register = self.load_fence(&fence.lock, partition, group)?;
            let granted = self.fence_source.get().and_then(|source| source(&fence.lock)).unwrap_or(0);
            let known = register.token.max(granted);
            if fence.token < known && !planted::active(planted::Bug::FenceCheckOff) {
                self.metrics.fenced_rejections.inc();
                return Err(WriteError::Fenced { lock: fence.lock.clone(), token: fence.token, known });
            }
            raise = (fence.token > register.token).then_some((fence.token, register));
        }
        let recorded = &self.site_recorded[usize::from(partition)];
        if !recorded.load(Ordering::Relaxed) {
            // Before this run's first write to the partition: its readers anywhere learn which site this
            // replica is in.
            let site = self.identity.site.as_bytes().to_vec();
            self.put_reserved(replica_site_key(self.identity.replica, partition), site, group)?;
            recorded.store(true, Ordering::Relaxed);
        }
        let data_key = keys::data_key(partition, key);
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
            let lock = fence.map(|fence| fence.lock.as_bytes().to_vec()).unwrap_or_default();
            self.put_reserved(token_lock_key(token, partition), lock, group)?;
        }
        let sequence = self.log_local(key.to_vec(), partition, data_key, entry, hlc, group);
        group.hlc_high = Some(hlc);
        Ok(WriteOutcome { hlc, token: CausalToken { site: self.identity.site.clone(), partition, sequence }, applied })
    }

    /// Sets the reserved register `key` to `value` (an unfenced put, logged and replicated like any write)
    /// unless it already holds it.
    fn put_reserved(&self, key: Vec<u8>, value: Vec<u8>, group: &mut Group) -> Result<(), WriteError> {
        let partition = partition_of(&key, self.identity.partitions).0;
        let data_key = keys::data_key(partition, &key);
        let mut entry = self.load(&data_key, group).map_err(WriteError::Unavailable)?;
        let now_unix_ms = self.clock.wall().now_unix_ms();
        if matches!(entry.read(now_unix_ms), Some(Read { value: Value::Register(held), .. }) if held == value) {
            return Ok(());
        }
        let hlc = self.clock.next();
        entry.apply(&Op::Put { value, ttl_ms: None }, Marker::new(0, hlc, self.identity.replica))?;
        self.log_local(key, partition, data_key, entry, hlc, group);
        group.hlc_high = Some(hlc);
        Ok(())
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

    /// Merges a batch of a peer's log records (whole or not at all) and moves the peer's cursor.
    pub(super) fn apply_merge(&self, peer_records: PeerRecords, group: &mut Group) -> Result<usize, ChangeError> {
        let PeerRecords { peer, partition, records, after, through } = peer_records;
        self.check_primary(partition)?;
        let cursor = group.state.cursor(&peer, partition);
        if cursor != after {
            return Err(ChangeError::OutOfOrder { peer, partition, cursor, after });
        }
        // Check and decode everything first: a batch is merged whole or not at all.
        let mut decoded = Vec::with_capacity(records.len());
        for (sequence, record) in records {
            if partition_of(&record.key, self.identity.partitions).0 != partition {
                return Err(ChangeError::ForeignKey { what: "log record", peer, partition });
            }
            let remote = decode_entry(&record.entry).map_err(|e| ChangeError::UnreadableRecord {
                peer: peer.clone(),
                sequence,
                detail: e.to_string(),
            })?;
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
            let data_key = keys::data_key(partition, &record.key);
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
            self.note_seen(origin, origin_sequence, group);
        }
        self.set_cursor(&peer, partition, through, group);
        self.metrics.replicated_records.with_label_values(&[peer.as_str()]).inc_by(changed as u64);
        Ok(changed)
    }

    /// Copies a batch of the site's primary's log (whole or not at all): each record at the sequence it
    /// has there, and each key's state merged with the record's (which is the state the primary had after
    /// the change, so the merge gives the primary's state). Returns the partition's new head.
    pub(super) fn apply_replicate(&self, batch: PrimaryRecords, group: &mut Group) -> Result<u64, ChangeError> {
        let PrimaryRecords { primary, partition, records, after } = batch;
        self.check_partition(partition)?;
        if self.role(partition) != PartitionRole::Follower {
            return Err(ChangeError::WrongRole {
                partition,
                detail: "this node is not a replica following its primary",
            });
        }
        let index = usize::from(partition);
        let peer = || format!("primary {primary}");
        let head = group.state.heads[index];
        if head != after {
            return Err(ChangeError::OutOfOrder { peer: peer(), partition, cursor: head, after });
        }
        let mut decoded = Vec::with_capacity(records.len());
        for (offset, (sequence, bytes)) in records.into_iter().enumerate() {
            if sequence != after + 1 + offset as u64 {
                return Err(ChangeError::OutOfOrder {
                    peer: peer(),
                    partition,
                    cursor: after + offset as u64,
                    after: sequence - 1,
                });
            }
            let record = LogRecord::decode(&bytes).ok_or_else(|| ChangeError::UnreadableRecord {
                peer: peer(),
                sequence,
                detail: "the record does not decode".into(),
            })?;
            if partition_of(&record.key, self.identity.partitions).0 != partition {
                return Err(ChangeError::ForeignKey { what: "log record", peer: peer(), partition });
            }
            let remote = decode_entry(&record.entry).map_err(|e| ChangeError::UnreadableRecord {
                peer: peer(),
                sequence,
                detail: e.to_string(),
            })?;
            decoded.push((sequence, bytes, record, remote));
        }
        for (sequence, bytes, record, remote) in decoded {
            let data_key = keys::data_key(partition, &record.key);
            let mut merged = self.load(&data_key, group)?;
            merged.merge(remote);
            group.state.log_bytes[index] += bytes.len() as u64;
            group.batch.put(Space::Log, keys::log_key(partition, sequence), bytes);
            group.batch.put(Space::Data, data_key.clone(), encode_entry(&merged));
            group.entries.insert(data_key, merged);
            group.state.heads[index] = sequence;
            group.touched_heads[index] = true;
            group.changes += 1;
            if group.hlc_high.is_none_or(|high| high < record.hlc) {
                group.hlc_high = Some(record.hlc);
            }
            self.note_seen((record.origin, partition), record.origin_sequence, group);
        }
        Ok(group.state.heads[index])
    }

    /// Merges whole entries fetched by anti-entropy and optionally moves the peer's cursor.
    pub(super) fn apply_repair(
        &self,
        peer: &str,
        partition: u16,
        entries: Vec<(Vec<u8>, Entry)>,
        cursor: Option<u64>,
        group: &mut Group,
    ) -> Result<usize, ChangeError> {
        self.check_primary(partition)?;
        if entries.iter().any(|(key, _)| partition_of(key, self.identity.partitions).0 != partition) {
            return Err(ChangeError::ForeignKey { what: "repair", peer: peer.to_string(), partition });
        }
        let mut changed = 0;
        for (key, remote) in entries {
            let data_key = keys::data_key(partition, &key);
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

    /// Removes the dead keys whose state is still exactly the one found dead.
    pub(super) fn apply_collect(
        &self,
        partition: u16,
        candidates: Vec<(Vec<u8>, Entry)>,
        group: &mut Group,
    ) -> Result<usize, ChangeError> {
        self.check_primary(partition)?;
        let mut collected = 0;
        for (key, expected) in candidates {
            let data_key = keys::data_key(partition, &key);
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

    /// Drops a partition's log records below `start` (never past its head).
    pub(super) fn apply_trim(
        &self,
        partition: u16,
        start: u64,
        bytes_removed: u64,
        group: &mut Group,
    ) -> Result<(), ChangeError> {
        self.check_partition(partition)?;
        let index = usize::from(partition);
        let old_start = group.state.log_starts[index];
        // Never trim past the head: the next record must still be readable as "after the start".
        let start = start.min(group.state.heads[index] + 1);
        if start <= old_start {
            return Ok(());
        }
        for sequence in old_start..start {
            group.batch.delete(Space::Log, keys::log_key(partition, sequence));
        }
        group.batch.put(Space::Meta, keys::meta_log_start_key(partition), start.to_be_bytes().to_vec());
        group.state.log_starts[index] = start;
        group.state.log_bytes[index] = group.state.log_bytes[index].saturating_sub(bytes_removed);
        group.touched_heads[index] = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Applying, without a writer thread: each test builds a group on memory storage and looks at what
    //! the group would commit.

    use geostore_model::{ManualWallClock, ReplicaId};
    use geostore_storage::MemoryStorage;

    use super::*;

    const JAN_2026_MS: i64 = 1_767_225_600_000;

    fn applier(partitions: u16) -> (Applier, ProgressState) {
        let wall = Arc::new(ManualWallClock::new(JAN_2026_MS));
        let applier = Applier {
            storage: Arc::new(MemoryStorage::new()),
            clock: Arc::new(HybridClock::new(wall, 500)),
            identity: Identity { replica: ReplicaId(7), site: "a".into(), partitions },
            metrics: Metrics::new(),
            fence_source: Arc::new(OnceLock::new()),
            role_source: Arc::new(OnceLock::new()),
            // As after this run's first write, so that sequences start at the tests' own writes (the
            // site record has a test of its own).
            site_recorded: (0..partitions).map(|_| AtomicBool::new(true)).collect(),
        };
        let state = ProgressState {
            heads: vec![0; usize::from(partitions)],
            log_starts: vec![1; usize::from(partitions)],
            log_bytes: vec![0; usize::from(partitions)],
            sequence_limits: vec![0; usize::from(partitions)],
            sequence_floors: vec![0; usize::from(partitions)],
            ..ProgressState::default()
        };
        (applier, state)
    }

    fn put(value: &[u8]) -> Op {
        Op::Put { value: value.to_vec(), ttl_ms: None }
    }

    #[test]
    fn the_first_write_of_a_run_records_the_replicas_site_and_a_new_token_its_lock() {
        let (applier, state) = applier(1);
        applier.site_recorded[0].store(false, Ordering::Relaxed);
        let mut group = Group::new(&state);
        let first = applier.apply_local(b"k", &put(b"v"), None, &mut group).unwrap();
        assert_eq!(first.token.sequence, 2, "the site record came first");
        let site_key = keys::data_key(0, &replica_site_key(applier.identity.replica, 0));
        let site = group.entries[&site_key].read(i64::MAX / 2).map(|read| read.value);
        assert_eq!(site, Some(Value::Register(applier.identity.site.as_bytes().to_vec())));
        // Once per run: the next write logs only itself.
        assert_eq!(applier.apply_local(b"k", &put(b"w"), None, &mut group).unwrap().token.sequence, 3);
        // A write that raises a lock's fence also names the lock of its token.
        let fence = Fence { lock: "job".into(), token: 9 };
        applier.apply_local(b"k", &put(b"x"), Some(&fence), &mut group).unwrap();
        let lock = group.entries[&keys::data_key(0, &token_lock_key(9, 0))].read(i64::MAX / 2).map(|read| read.value);
        assert_eq!(lock, Some(Value::Register(b"job".to_vec())));
        assert_eq!(group.state.heads, vec![6], "site record, two writes, fence register, token record, the write");
    }

    #[test]
    fn local_writes_take_dense_sequences_and_see_earlier_writes_of_the_group() {
        let (applier, state) = applier(1);
        let mut group = Group::new(&state);
        let first = applier.apply_local(b"k", &Op::Increment { delta: 2 }, None, &mut group).unwrap();
        let second = applier.apply_local(b"k", &Op::Increment { delta: 3 }, None, &mut group).unwrap();
        assert_eq!((first.token.sequence, second.token.sequence), (1, 2));
        assert_eq!(second.applied.counter, Some(5), "the second write read the first from the group");
        assert_eq!(group.state.heads, vec![2]);
        assert_eq!(group.changes, 2);
        assert!(applier.storage.get(Space::Data, &keys::data_key(0, b"k")).unwrap().is_none(), "nothing written");
    }

    #[test]
    fn a_stale_fence_is_refused_before_anything_is_applied() {
        let (applier, state) = applier(4);
        let mut group = Group::new(&state);
        let fence = |token| Fence { lock: "job".into(), token };
        applier.apply_local(b"k", &put(b"new"), Some(&fence(5)), &mut group).unwrap();
        let changes = group.changes;
        let stale = applier.apply_local(b"k", &put(b"old"), Some(&fence(4)), &mut group);
        assert!(matches!(stale, Err(WriteError::Fenced { token: 4, known: 5, .. })), "{stale:?}");
        assert_eq!(group.changes, changes, "the refused write logged nothing");
    }

    fn record(key: &[u8], origin_sequence: u64, entry: &Entry) -> LogRecord {
        LogRecord {
            key: key.to_vec(),
            hlc: Hlc::from_parts(JAN_2026_MS, 0).unwrap(),
            origin: "b".into(),
            origin_sequence,
            entry: encode_entry(entry),
        }
    }

    #[test]
    fn a_merge_is_refused_whole_out_of_order_or_with_a_foreign_key() {
        let (applier, state) = applier(8);
        let mut entry = Entry::default();
        entry.apply(&put(b"v"), Marker::new(0, Hlc::from_parts(JAN_2026_MS, 0).unwrap(), ReplicaId(9))).unwrap();
        let key = b"k".to_vec();
        let partition = partition_of(&key, 8).0;
        let batch = |after, records| PeerRecords { peer: "b".into(), partition, records, after, through: after + 1 };

        let mut group = Group::new(&state);
        let out_of_order = applier.apply_merge(batch(3, vec![(4, record(&key, 4, &entry))]), &mut group);
        assert!(matches!(out_of_order, Err(ChangeError::OutOfOrder { cursor: 0, after: 3, .. })), "{out_of_order:?}");
        let foreign = (0..100_u32).map(|i| i.to_be_bytes().to_vec()).find(|k| partition_of(k, 8).0 != partition);
        let records = vec![(1, record(&key, 1, &entry)), (2, record(&foreign.unwrap(), 2, &entry))];
        let mixed = applier.apply_merge(batch(0, records), &mut group);
        assert!(matches!(mixed, Err(ChangeError::ForeignKey { .. })), "{mixed:?}");
        assert_eq!(group.changes, 0, "nothing of a refused batch was applied");

        let merged = applier.apply_merge(batch(0, vec![(1, record(&key, 1, &entry))]), &mut group).unwrap();
        assert_eq!(merged, 1);
        assert_eq!(group.state.cursor("b", partition), 1);
        assert_eq!(group.state.seen[&("b".to_string(), partition)], 1);
        // The same record again (relayed through another site) changes nothing and is not logged.
        let again = PeerRecords {
            peer: "c".into(),
            partition,
            records: vec![(1, record(&key, 1, &entry))],
            after: 0,
            through: 1,
        };
        assert_eq!(applier.apply_merge(again, &mut group).unwrap(), 0);
        assert_eq!(group.changes, 1);
    }
}
