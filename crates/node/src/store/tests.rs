//! The store's tests: through its public API, on memory and RocksDB storage.

use std::collections::BTreeSet;
use std::time::Duration;

use geostore_model::{InvalidRequest, ManualWallClock, Marker, OpError, Value, encode_entry, fence_key};
use geostore_storage::{Durability, MemoryStorage, RocksStorage};

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
    assert!(matches!(&stale, WriteError::Fenced { lock, token: 4, known: 5 } if lock == "job"), "{stale:?}");
    assert!(stale.to_string().contains("lock \"job\" token 4") && stale.to_string().contains("5"), "{stale}");
    assert_eq!(store.get(b"k").unwrap().unwrap().value, Value::Register(b"v5".to_vec()));
    // The same token may write again; counters and sets are fenced the same way.
    store.write_fenced(b"k".to_vec(), put(b"v5b"), fence(5)).await.unwrap();
    store.write_fenced(b"n".to_vec(), Op::Increment { delta: 1 }, fence(5)).await.unwrap();
    let incr = store.write_fenced(b"n".to_vec(), Op::Increment { delta: 1 }, fence(2)).await.unwrap_err();
    assert!(matches!(incr, WriteError::Fenced { known: 5, .. }));
    assert_eq!(store.get(b"n").unwrap().unwrap().value, Value::Counter(1));
    // Fence registers are per partition (a write changes its own partition only): a key of a partition
    // no write under token 5 reached learns of it from the lock group, below.
    let partitions = store.identity().partitions;
    let other = (0..).map(|i| format!("o{i}").into_bytes()).find(|key| {
        partition_of(key, partitions) != partition_of(b"k", partitions)
            && partition_of(key, partitions) != partition_of(b"n", partitions)
    });
    let other = other.unwrap();
    store.write_fenced(other.clone(), put(b"early"), fence(4)).await.unwrap();
    // A grant the lock group applied raises the bar before any write is made under it.
    store.set_fence_source(Arc::new(|lock: &str| (lock == "job").then_some(9)));
    let stale = store.write_fenced(b"k".to_vec(), put(b"v6"), fence(6)).await.unwrap_err();
    assert!(matches!(&stale, WriteError::Fenced { lock, token: 6, known: 9 } if lock == "job"), "{stale:?}");
    store.write_fenced(b"k".to_vec(), put(b"v9"), fence(9)).await.unwrap();
    assert!(store.write_fenced(other, put(b"late"), fence(8)).await.is_err());
    assert_eq!(store.metrics().fenced_rejections.get(), 4);
    // Other locks are independent, and nobody writes the fence registers directly.
    store.write_fenced(b"k2".to_vec(), put(b"x"), Some(Fence { lock: "other".into(), token: 1 })).await.unwrap();
    let reserved = store.write(fence_key("job", 0), put(b"\0\0\0\0\0\0\0\x01")).await.unwrap_err();
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
    let a = Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall_a), StoreConfig::default(), Metrics::new(), || 1)
        .unwrap();
    let b = Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall_b), StoreConfig::default(), Metrics::new(), || 2)
        .unwrap();
    b.write_fenced(b"k".to_vec(), put(b"new"), fence(7)).await.unwrap();
    // a has not heard of token 7 yet: its stale holder's write is accepted there...
    a.write_fenced(b"k".to_vec(), put(b"stale"), fence(3)).await.unwrap();
    a.write(b"k".to_vec(), put(b"unfenced")).await.unwrap();
    for key in [b"k".to_vec(), fence_key("job", partition_of(b"k", a.identity().partitions).0)] {
        copy_key(&a, &b, &key).await;
        copy_key(&b, &a, &key).await;
    }
    // ...but after merging, the write under the higher token wins in both, and a now refuses token 3.
    for store in [&a, &b] {
        assert_eq!(store.get(b"k").unwrap().unwrap().value, Value::Register(b"new".to_vec()));
    }
    let refused = a.write_fenced(b"k".to_vec(), put(b"late"), fence(3)).await.unwrap_err();
    assert!(matches!(&refused, WriteError::Fenced { lock, token: 3, known: 7 } if lock == "job"), "{refused:?}");
}

#[tokio::test]
async fn an_inline_writer_gives_the_same_results_as_the_writer_thread() {
    let wall = ManualWallClock::new(JAN_2026_MS);
    let mut results = Vec::new();
    for inline_writer in [false, true] {
        let config = StoreConfig { inline_writer, ..StoreConfig::default() };
        let store =
            Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall.clone()), config, Metrics::new(), || 7).unwrap();
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
        // Sequence 1 is the replica's site record, logged in the partition before its first write.
        assert_eq!((first.token.partition, first.token.sequence), (partition, 2));
        assert_eq!(second.token.sequence, 3);
        second.hlc
    };
    // The wall clock went back an hour while the node was down: timestamps must still increase.
    wall.advance_ms(-3_600_000);
    let store = open(Arc::new(RocksStorage::open(dir.path()).unwrap()), &wall);
    let third = store.write(key.clone(), Op::Increment { delta: 1 }).await.unwrap();
    // The site record is already there: the reopened store logs only the write.
    assert_eq!(third.token.sequence, 4);
    assert!(third.hlc > last_hlc);
    assert_eq!(store.identity().replica, ReplicaId(7));
    let log = store.read_log(partition, 0, 10, usize::MAX).unwrap();
    assert_eq!(log.len(), 4);
    let (sequence, record) = &log[3];
    assert_eq!((*sequence, &record.key, record.hlc, record.origin.as_str()), (4, &key, third.hlc, "local"));
    assert_eq!(record.origin_sequence, 4);
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
    let error = Store::open(storage.clone(), Arc::new(wall.clone()), other_site, Metrics::new(), || 8).err().unwrap();
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
    assert!(matches!(error, ChangeError::OutOfOrder { cursor: 5, after: 6, .. }), "{error}");
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
    let a = Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall.clone()), config.clone(), Metrics::new(), || 1)
        .unwrap();
    for i in 0..10 {
        a.write(format!("k{i}").into_bytes(), Op::Put { value: b"v".to_vec(), ttl_ms: None }).await.unwrap();
    }
    // Eleven records: the replica's site record, logged with its first write, then the ten writes.
    assert_eq!(a.trim_log(0).await.unwrap(), 8);
    assert_eq!(a.progress().log_starts[0], 9);
    assert_eq!(a.read_log(0, 0, 100, usize::MAX).unwrap().len(), 3);
    // A second replica given the same states has the same digest, whatever its log holds.
    let b = Store::open(Arc::new(MemoryStorage::new()), Arc::new(wall), config, Metrics::new(), || 2).unwrap();
    assert_ne!(a.partition_digest(0).unwrap(), b.partition_digest(0).unwrap());
    let site_record = geostore_model::fence::replica_site_key(a.identity().replica, 0);
    let entries = (0..10)
        .map(|i| format!("k{i}").into_bytes())
        .chain([site_record])
        .map(|k| (k.clone(), a.entry(&k).unwrap().unwrap()))
        .collect();
    assert_eq!(b.repair("a", 0, entries, Some(11)).await.unwrap(), 11);
    assert_eq!(a.partition_digest(0).unwrap(), b.partition_digest(0).unwrap());
    assert_eq!(b.progress().cursors[&("a".to_string(), 0)], 11);
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

/// A primary's log of `partition` after `after`, as its follower would receive it.
fn primary_records(primary: &Store, partition: u16, after: u64) -> PrimaryRecords {
    let records = primary.read_log(partition, after, 1000, usize::MAX).unwrap();
    PrimaryRecords {
        primary: 1,
        partition,
        records: records.into_iter().map(|(sequence, record)| (sequence, record.encode())).collect(),
        after,
    }
}

#[tokio::test]
async fn a_follower_copies_its_primarys_log_at_the_same_sequences_and_refuses_gaps() {
    let wall = ManualWallClock::new(JAN_2026_MS);
    let primary = open(Arc::new(MemoryStorage::new()), &wall);
    let follower = Store::open(
        Arc::new(MemoryStorage::new()),
        Arc::new(wall.clone()),
        StoreConfig::default(),
        Metrics::new(),
        || 8,
    )
    .unwrap();
    follower.set_role_source(Arc::new(|_| PartitionRole::Follower));
    let partition = partition_of(b"k", 64).0;
    primary.write(b"k".to_vec(), Op::Increment { delta: 2 }).await.unwrap();
    let ack = primary.write(b"k".to_vec(), Op::Increment { delta: 3 }).await.unwrap();

    // A follower takes no local write, merge or repair: its log must stay a copy of the primary's.
    let refused = follower.write(b"k".to_vec(), Op::Increment { delta: 1 }).await.unwrap_err();
    assert!(matches!(refused, WriteError::NotPrimary { partition: p } if p == partition), "{refused:?}");
    let repair = follower.repair("b", partition, Vec::new(), Some(1)).await.unwrap_err();
    assert!(matches!(repair, ChangeError::WrongRole { .. }), "{repair}");

    // A batch that does not continue at the follower's head is refused whole.
    let mut late = primary_records(&primary, partition, 1);
    late.after = 1;
    let gap = follower.begin_replicate(late).await.unwrap().await.unwrap_err();
    assert!(matches!(gap, ChangeError::OutOfOrder { cursor: 0, after: 1, .. }), "{gap}");
    assert_eq!(follower.progress().heads[usize::from(partition)], 0);

    let head = follower.begin_replicate(primary_records(&primary, partition, 0)).await.unwrap().await.unwrap();
    assert_eq!(head, ack.token.sequence);
    assert_eq!(follower.get(b"k").unwrap().unwrap().value, Value::Counter(5));
    // The same records at the same sequences: another site's cursor means the same on both.
    let logs = [&primary, &follower].map(|store| {
        store
            .read_log(partition, 0, 100, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(s, r)| (s, r.encode()))
            .collect::<Vec<_>>()
    });
    assert_eq!(logs[0], logs[1]);
    // A causal read of the primary's write is satisfied at the follower.
    follower.wait_for(&ack.token, Duration::ZERO).await.unwrap();
    // The batch already copied is refused again (the head moved): nothing is applied twice.
    let again = follower.begin_replicate(primary_records(&primary, partition, 0)).await.unwrap().await.unwrap_err();
    assert!(matches!(again, ChangeError::OutOfOrder { .. }), "{again}");
    assert_eq!(follower.get(b"k").unwrap().unwrap().value, Value::Counter(5));
    // A node that leads the partition refuses copies.
    let primary_copy = primary.begin_replicate(primary_records(&primary, partition, 0)).await.unwrap().await;
    assert!(matches!(primary_copy, Err(ChangeError::WrongRole { .. })), "{primary_copy:?}");
}
