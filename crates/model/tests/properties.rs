//! Merge laws for every value type, and each documented concurrent case, checked on histories that three
//! replicas build by writing and merging in random orders.

use std::collections::BTreeSet;

use geostore_model::{Absence, Entry, Hlc, Marker, Op, OpError, ReplicaId, Value};
use proptest::prelude::*;

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01

/// One replica's copy of the key and its own clock.
#[derive(Clone)]
struct Replica {
    id: ReplicaId,
    entry: Entry,
    now_ms: i64,
    count: u64,
}

impl Replica {
    fn new(id: u64) -> Self {
        Self { id: ReplicaId(id), entry: Entry::default(), now_ms: START_MS, count: 0 }
    }

    fn marker(&mut self, fence: u64) -> Marker {
        self.count += 1;
        Marker::new(fence, Hlc::from_parts(self.now_ms, self.count).unwrap(), self.id)
    }

    fn write(&mut self, op: Op) -> Result<(), OpError> {
        let marker = self.marker(0);
        self.entry.apply(&op, marker).map(|_| ())
    }

    fn receive(&mut self, from: &Replica) {
        self.entry.merge(from.entry.clone());
    }

    fn read(&self, now_ms: i64) -> Option<Value> {
        self.entry.read(now_ms).map(|read| read.value)
    }
}

#[derive(Debug, Clone)]
enum Step {
    Write { replica: usize, op: Op, advance_ms: i64 },
    Merge { from: usize, to: usize },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let member = prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    prop_oneof![
        (prop::collection::vec(any::<u8>(), 0..4), prop::option::of(1_u64..50))
            .prop_map(|(value, ttl_ms)| Op::Put { value, ttl_ms }),
        Just(Op::Delete),
        (-5_i64..6).prop_map(|delta| Op::Increment { delta }),
        prop::collection::vec(member.clone(), 1..3).prop_map(|members| Op::SetAdd { members }),
        prop::collection::vec(member, 1..3).prop_map(|members| Op::SetRemove { members }),
        (1_u64..50).prop_map(|ttl_ms| Op::Expire { ttl_ms }),
    ]
}

fn history_strategy() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0_usize..3, op_strategy(), 0_i64..20).prop_map(|(replica, op, advance_ms)| Step::Write { replica, op, advance_ms }),
        1 => (0_usize..3, 0_usize..3).prop_map(|(from, to)| Step::Merge { from, to }),
    ];
    prop::collection::vec(step, 0..40)
}

/// Runs a history; type mismatches and other refused writes are part of the history and change nothing.
fn run(history: &[Step]) -> Vec<Replica> {
    let mut replicas = vec![Replica::new(1), Replica::new(2), Replica::new(3)];
    for step in history {
        match step {
            Step::Write { replica, op, advance_ms } => {
                let replica = &mut replicas[*replica];
                replica.now_ms += advance_ms;
                let before = replica.entry.clone();
                if replica.write(op.clone()).is_err() {
                    assert_eq!(replica.entry, before, "a refused {op:?} changed the entry");
                }
            }
            Step::Merge { from, to } => {
                let source = replicas[*from].clone();
                replicas[*to].receive(&source);
            }
        }
    }
    replicas
}

fn merged(a: &Entry, b: &Entry) -> Entry {
    let mut result = a.clone();
    result.merge(b.clone());
    result
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative(history in history_strategy()) {
        let r = run(&history);
        prop_assert_eq!(merged(&r[0].entry, &r[1].entry), merged(&r[1].entry, &r[0].entry));
    }

    #[test]
    fn merge_is_associative(history in history_strategy()) {
        let r = run(&history);
        let (a, b, c) = (&r[0].entry, &r[1].entry, &r[2].entry);
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
    }

    #[test]
    fn merge_is_idempotent(history in history_strategy()) {
        let r = run(&history);
        for replica in &r {
            prop_assert_eq!(merged(&replica.entry, &replica.entry), replica.entry.clone());
        }
        let ab = merged(&r[0].entry, &r[1].entry);
        prop_assert_eq!(merged(&ab, &r[1].entry), ab);
    }

    #[test]
    fn replicas_that_exchange_everything_read_the_same(history in history_strategy(), read_after_ms in 0_i64..2000) {
        let mut r = run(&history);
        let everything = merged(&merged(&r[0].entry, &r[1].entry), &r[2].entry);
        for replica in r.iter_mut() {
            replica.entry.merge(everything.clone());
        }
        let now_ms = START_MS + read_after_ms;
        prop_assert_eq!(r[0].read(now_ms), r[1].read(now_ms));
        prop_assert_eq!(r[1].read(now_ms), r[2].read(now_ms));
    }

    #[test]
    fn digests_are_equal_exactly_when_states_are(history in history_strategy()) {
        let r = run(&history);
        for (a, b) in [(&r[0].entry, &r[1].entry), (&r[1].entry, &r[2].entry)] {
            prop_assert_eq!(a == b, a.digest() == b.digest());
        }
        // Merging in different orders gives equal states, whose digests must agree although their
        // encodings may differ.
        let everything = merged(&merged(&r[0].entry, &r[1].entry), &r[2].entry);
        let other_order = merged(&merged(&r[2].entry, &r[0].entry), &r[1].entry);
        prop_assert_eq!(everything.digest(), other_order.digest());
    }

    #[test]
    fn the_encoding_round_trips(history in history_strategy()) {
        for replica in run(&history) {
            let decoded = geostore_model::decode_entry(&geostore_model::encode_entry(&replica.entry)).unwrap();
            prop_assert_eq!(decoded, replica.entry);
        }
    }

    #[test]
    fn counter_increments_from_three_replicas_add_up(deltas in prop::collection::vec((0_usize..3, -1000_i64..1000), 1..60)) {
        let mut r = [Replica::new(1), Replica::new(2), Replica::new(3)];
        for (replica, delta) in &deltas {
            r[*replica].now_ms += 1;
            r[*replica].write(Op::Increment { delta: *delta }).unwrap();
        }
        let everything = merged(&merged(&r[0].entry, &r[1].entry), &r[2].entry);
        let expected: i64 = deltas.iter().map(|(_, delta)| delta).sum();
        // Increments by 0 change nothing: a key only ever incremented by 0 is still absent.
        let expected = deltas.iter().any(|(_, delta)| *delta != 0).then_some(Value::Counter(expected));
        prop_assert_eq!(everything.read(START_MS + 1000).map(|read| read.value), expected);
    }
}

fn set(members: &[&str]) -> Option<Value> {
    Some(Value::Set(members.iter().map(|m| m.as_bytes().to_vec()).collect::<BTreeSet<_>>()))
}

#[test]
fn set_add_wins_over_a_concurrent_remove() {
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::SetAdd { members: vec![b"x".to_vec(), b"y".to_vec()] }).unwrap();
    b.receive(&a);
    // Concurrently: B removes x (which it has seen), A adds x again.
    b.write(Op::SetRemove { members: vec![b"x".to_vec()] }).unwrap();
    a.write(Op::SetAdd { members: vec![b"x".to_vec()] }).unwrap();
    a.receive(&b);
    b.receive(&a);
    assert_eq!(a.read(START_MS), set(&["x", "y"]));
    assert_eq!(b.read(START_MS), set(&["x", "y"]));
}

#[test]
fn set_remove_of_an_observed_member_sticks() {
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::SetAdd { members: vec![b"x".to_vec(), b"y".to_vec()] }).unwrap();
    b.receive(&a);
    b.write(Op::SetRemove { members: vec![b"x".to_vec()] }).unwrap();
    a.receive(&b);
    assert_eq!(a.read(START_MS), set(&["y"]));
}

#[test]
fn register_write_vs_delete_goes_to_the_higher_marker() {
    // Delete later in HLC order than the concurrent write: the key is gone everywhere.
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::Put { value: b"old".to_vec(), ttl_ms: None }).unwrap();
    b.receive(&a);
    a.now_ms += 5;
    a.write(Op::Put { value: b"new".to_vec(), ttl_ms: None }).unwrap();
    b.now_ms += 10;
    b.write(Op::Delete).unwrap();
    a.receive(&b);
    b.receive(&a);
    assert_eq!(a.read(START_MS + 20), None);
    assert_eq!(b.read(START_MS + 20), None);

    // Write later than the delete: the write survives everywhere.
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::Put { value: b"old".to_vec(), ttl_ms: None }).unwrap();
    b.receive(&a);
    b.now_ms += 5;
    b.write(Op::Delete).unwrap();
    a.now_ms += 10;
    a.write(Op::Put { value: b"new".to_vec(), ttl_ms: None }).unwrap();
    a.receive(&b);
    b.receive(&a);
    assert_eq!(a.read(START_MS + 20), Some(Value::Register(b"new".to_vec())));
    assert_eq!(b.read(START_MS + 20), Some(Value::Register(b"new".to_vec())));
}

#[test]
fn counter_increment_not_seen_by_a_delete_survives_it() {
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::Increment { delta: 5 }).unwrap();
    b.receive(&a);
    b.write(Op::Delete).unwrap();
    a.write(Op::Increment { delta: 2 }).unwrap();
    a.receive(&b);
    b.receive(&a);
    assert_eq!(a.read(START_MS), Some(Value::Counter(2)));
    assert_eq!(b.read(START_MS), Some(Value::Counter(2)));
}

#[test]
fn write_vs_ttl_goes_to_the_higher_marker() {
    // Expire after the put in marker order: the key expires.
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::Put { value: b"v".to_vec(), ttl_ms: None }).unwrap();
    b.receive(&a);
    a.now_ms += 5;
    a.write(Op::Put { value: b"w".to_vec(), ttl_ms: None }).unwrap();
    b.now_ms += 10;
    b.write(Op::Expire { ttl_ms: 100 }).unwrap();
    a.receive(&b);
    b.receive(&a);
    for r in [&a, &b] {
        assert_eq!(r.read(START_MS + 109), Some(Value::Register(b"w".to_vec())));
        assert_eq!(r.read(START_MS + 110), None);
    }

    // A put without TTL after the expire in marker order clears it.
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::Put { value: b"v".to_vec(), ttl_ms: None }).unwrap();
    b.receive(&a);
    b.now_ms += 5;
    b.write(Op::Expire { ttl_ms: 100 }).unwrap();
    a.now_ms += 10;
    a.write(Op::Put { value: b"w".to_vec(), ttl_ms: None }).unwrap();
    a.receive(&b);
    b.receive(&a);
    for r in [&a, &b] {
        assert_eq!(r.read(START_MS + 1_000_000), Some(Value::Register(b"w".to_vec())));
    }
}

#[test]
fn an_expired_counter_starts_again_from_zero() {
    let mut a = Replica::new(1);
    a.write(Op::Increment { delta: 7 }).unwrap();
    a.write(Op::Expire { ttl_ms: 10 }).unwrap();
    a.now_ms += 10;
    assert_eq!(a.read(a.now_ms), None);
    a.write(Op::Increment { delta: 1 }).unwrap();
    assert_eq!(a.read(a.now_ms), Some(Value::Counter(1)));
    assert_eq!(a.entry.read(a.now_ms).unwrap().expires_at_unix_ms, None);
}

#[test]
fn a_write_of_the_wrong_type_is_refused_and_changes_nothing() {
    let mut a = Replica::new(1);
    a.write(Op::SetAdd { members: vec![b"x".to_vec()] }).unwrap();
    let before = a.entry.clone();
    let error = a.write(Op::Increment { delta: 1 }).unwrap_err();
    assert_eq!(error.to_string(), "the key holds a set; Increment needs a counter");
    assert_eq!(a.entry, before);
}

#[test]
fn an_absent_key_says_whether_it_was_deleted_or_expired_and_since_when() {
    let mut a = Replica::new(1);
    assert_eq!(a.entry.absence(START_MS), Some(Absence::NoRecord));
    a.write(Op::Put { value: b"v".to_vec(), ttl_ms: Some(1_000) }).unwrap();
    assert_eq!(a.entry.absence(START_MS), None, "live");
    assert_eq!(a.entry.absence(START_MS + 1_000), Some(Absence::Expired { at_unix_ms: START_MS + 1_000 }));
    a.now_ms += 5_000;
    a.write(Op::Delete).unwrap();
    assert_eq!(a.entry.absence(a.now_ms), Some(Absence::Deleted { at_unix_ms: START_MS + 5_000 }));
    let mut b = Replica::new(2);
    b.write(Op::SetAdd { members: vec![b"m".to_vec()] }).unwrap();
    b.now_ms += 250;
    b.write(Op::SetRemove { members: vec![b"m".to_vec()] }).unwrap();
    assert_eq!(b.entry.absence(b.now_ms), Some(Absence::Deleted { at_unix_ms: START_MS + 250 }), "emptied set");
}

#[test]
fn counter_overflow_is_refused() {
    let mut a = Replica::new(1);
    a.write(Op::Increment { delta: i64::MAX }).unwrap();
    assert!(matches!(a.write(Op::Increment { delta: 1 }), Err(OpError::CounterOverflow { .. })));
    assert_eq!(a.read(START_MS), Some(Value::Counter(i64::MAX)));
}

#[test]
fn a_fenced_register_write_beats_a_later_unfenced_one() {
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    let fenced = a.marker(7);
    a.entry.apply(&Op::Put { value: b"fenced".to_vec(), ttl_ms: None }, fenced).unwrap();
    b.now_ms += 60_000;
    b.write(Op::Put { value: b"late".to_vec(), ttl_ms: None }).unwrap();
    a.receive(&b);
    b.receive(&a);
    assert_eq!(a.read(START_MS), Some(Value::Register(b"fenced".to_vec())));
    assert_eq!(b.read(START_MS), Some(Value::Register(b"fenced".to_vec())));
}

#[test]
fn a_key_collected_at_one_replica_and_written_again_loses_nothing_against_a_replica_still_holding_it() {
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::Increment { delta: 7 }).unwrap();
    b.receive(&a);
    b.write(Op::Delete).unwrap();
    a.receive(&b);
    // a collects the dead key (its whole state goes); b still holds the old state.
    a.entry = Entry::default();
    a.now_ms += 1;
    a.write(Op::Increment { delta: 1 }).unwrap();
    b.receive(&a);
    a.receive(&b);
    assert_eq!(a.read(a.now_ms), Some(Value::Counter(1)));
    assert_eq!(b.read(a.now_ms), Some(Value::Counter(1)));

    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(Op::SetAdd { members: vec![b"x".to_vec()] }).unwrap();
    b.receive(&a);
    b.write(Op::SetRemove { members: vec![b"x".to_vec()] }).unwrap();
    a.receive(&b);
    a.entry = Entry::default();
    a.now_ms += 1;
    a.write(Op::SetAdd { members: vec![b"x".to_vec()] }).unwrap();
    b.receive(&a);
    a.receive(&b);
    assert_eq!(a.read(a.now_ms), set(&["x"]));
    assert_eq!(b.read(a.now_ms), set(&["x"]));
}
