//! The invariants checked after a run, from the recorded history and the replicas' final values.

use std::collections::{BTreeMap, BTreeSet};

use geostore_client::Value;

use crate::history::{Call, Op, Outcome};
use crate::lockcheck::{self, AcquireOutcome, LockOp};
use crate::workload::{LOCK_TTL, guarded_key};

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub message: String,
}

pub const INVARIANTS: [&str; 10] = [
    "converge-after-heal",
    "no-lost-acknowledged-write",
    "read-your-writes",
    "causal-read",
    "write-origin",
    "lock-linearizable",
    "checkers-agree",
    "no-stale-token-survives",
    "guarded-no-lost-update",
    "placement-valid",
];

/// What every replica holds once the run is over (`None`: absent).
pub type FinalValues = BTreeMap<String, Option<Value>>;

/// Inputs besides the history.
pub struct Facts<'a> {
    pub ops: &'a [Op],
    /// The converged values (one replica's, after all agreed), if they converged.
    pub final_values: Option<&'a FinalValues>,
    /// Keys whose values still differed between sites when the settle time ran out.
    pub diverged: &'a [String],
    /// Sites whose node lost acknowledged (unsynced) writes to a power loss, with when it happened.
    pub lossy: &'a [(usize, u64)],
    /// Each site's placement as its node reported it at the end (`None`: no answer), by site.
    pub placements: &'a [Option<geostore_proto::v1::PlacementStatus>],
    /// The cluster's partitions.
    pub partitions: u16,
}

/// Every site's placement map was created and is valid: with one node per site (member id site + 1),
/// every partition's one replica and primary is that node, at an epoch of at least 1.
fn check_placements(facts: &Facts, violation: &mut impl FnMut(&'static str, String)) {
    for (site, placement) in facts.placements.iter().enumerate() {
        let node = site as u64 + 1;
        let Some(placement) = placement else {
            violation("placement-valid", format!("site {site}: its node reported no placement"));
            continue;
        };
        if placement.version == 0 {
            violation("placement-valid", format!("site {site}: the placement map was never created"));
            continue;
        }
        if placement.partitions.len() != usize::from(facts.partitions) {
            let count = placement.partitions.len();
            violation("placement-valid", format!("site {site}: {count} partitions placed, not {}", facts.partitions));
        }
        for (index, partition) in placement.partitions.iter().enumerate() {
            if partition.partition as usize != index
                || partition.primary != node
                || partition.replicas != [node]
                || partition.epoch == 0
            {
                violation("placement-valid", format!("site {site}: partition {index} placed as {partition:?}"));
            }
        }
    }
}

/// Whether an acknowledged write may be lost without breaking a promise: a power loss on a node that does
/// not fsync (`sync = "none"`) loses the writes it acknowledged before, by design.
fn lost_possible(facts: &Facts, op: &Op) -> bool {
    facts.lossy.iter().any(|&(site, at)| site == op.site && op.invoked_ms <= at)
}

fn register(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::Register(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Some(other) => Some(format!("<{}>", other.type_name())),
        None => None,
    }
}

/// The value a write to a register leaves (`None`: a delete).
fn written(op: &Op) -> Option<String> {
    match &op.call {
        Call::Put { value, .. } => Some(value.clone()),
        _ => None,
    }
}

/// What a register written only by `writes` (one application's, in its order) may hold once the writes
/// invoked before `before_ms` are done: the last acknowledged one's value or that of any later write that
/// may have been applied; with no acknowledged write, absent or any write that may have been applied.
fn allowed_values(writes: &[&Op], before_ms: u64) -> BTreeSet<Option<String>> {
    let done: Vec<&Op> =
        writes.iter().copied().filter(|w| w.invoked_ms < before_ms && w.outcome != Outcome::Fail).collect();
    match done.iter().rposition(|w| w.outcome == Outcome::Ok) {
        Some(index) => done[index..].iter().map(|w| written(w)).collect(),
        None => std::iter::once(None).chain(done.iter().map(|w| written(w))).collect(),
    }
}

pub fn check(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut violation = |invariant: &'static str, message: String| violations.push(Violation { invariant, message });
    for key in facts.diverged {
        violation("converge-after-heal", format!("key {key:?} still differs between sites after healing"));
    }
    check_placements(facts, &mut violation);
    let ops = facts.ops;

    // Writes to keys one application owns, in its own order.
    let mut per_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        match &op.call {
            Call::Put { key, .. } | Call::Delete { key } if key.starts_with("own/") || key.starts_with("once/") => {
                per_key.entry(key).or_default().push(op)
            }
            _ => {}
        }
    }
    for op in ops {
        match &op.call {
            Call::Read { key, read } if op.outcome == Outcome::Ok && key.starts_with("own/") => {
                let writes = per_key.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                // A power loss between the last acknowledged write and this read may have taken the write.
                let last_ok = writes.iter().rev().find(|w| w.outcome == Outcome::Ok && w.invoked_ms < op.invoked_ms);
                let lost_since = |since: u64| {
                    facts.lossy.iter().any(|&(site, at)| site == op.site && since <= at && at <= op.invoked_ms)
                };
                if lost_since(last_ok.map_or(0, |w| w.invoked_ms)) {
                    continue;
                }
                let allowed = allowed_values(writes, op.invoked_ms);
                if !allowed.contains(read) {
                    violation(
                        "read-your-writes",
                        format!(
                            "app{} read {key:?} at its own site at {} ms and got {read:?}; its writes allow only {allowed:?}",
                            op.process, op.invoked_ms
                        ),
                    );
                }
            }
            // A causal token for a write lost with the unsynced tail names a write nobody has.
            Call::CausalRead { key, site, expected, read, writer_site, home }
                if op.outcome == Outcome::Ok && facts.lossy.is_empty() =>
            {
                let home = crate::plan::site_name(*home);
                if read.as_ref() == Some(expected) && writer_site.as_ref().is_some_and(|said| *said != home) {
                    violation(
                        "write-origin",
                        format!(
                            "app{} read {key:?} at dc{site} at {} ms: the value was written in {home}, the node said {writer_site:?}",
                            op.process, op.invoked_ms
                        ),
                    );
                }
                let writes = per_key.get(key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                // Writes after the expected one that may have been applied may be read instead.
                let written_at = writes.iter().position(|w| written(w).as_ref() == Some(expected)).unwrap_or(0);
                let later: BTreeSet<Option<String>> =
                    writes[written_at..].iter().filter(|w| w.outcome != Outcome::Fail).map(|w| written(w)).collect();
                if read.as_ref() != Some(expected) && !later.contains(read) {
                    violation(
                        "causal-read",
                        format!(
                            "app{} read {key:?} at dc{site} after the write of {expected:?} (causal token) at {} ms and got {read:?}",
                            op.process, op.invoked_ms
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    if let Some(final_values) = facts.final_values {
        check_final(facts, final_values, &per_key, &mut violation);
    }
    check_locks(facts, &mut violation);
    violations
}

fn check_final(
    facts: &Facts,
    final_values: &FinalValues,
    per_key: &BTreeMap<&str, Vec<&Op>>,
    violation: &mut impl FnMut(&'static str, String),
) {
    let ops = facts.ops;
    let lost = |op: &Op| lost_possible(facts, op);
    // Own registers: the last acknowledged write, or a later unknown one.
    for (key, writes) in per_key {
        let final_value = register(final_values.get(*key).unwrap_or(&None));
        let Some(last_ok) = writes.iter().rev().find(|w| w.outcome == Outcome::Ok) else { continue };
        if lost(last_ok) {
            continue;
        }
        let allowed = allowed_values(writes, u64::MAX);
        if !allowed.contains(&final_value) {
            violation(
                "no-lost-acknowledged-write",
                format!(
                    "{key:?} ends as {final_value:?}; the last acknowledged write and later ones allow {allowed:?}"
                ),
            );
        }
    }
    // Shared registers: some write that may have been applied.
    let mut shared: BTreeMap<&str, (BTreeSet<String>, bool)> = BTreeMap::new();
    // Counters: between the acknowledged sum and that plus every unknown increment.
    let mut counters: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    // Sets: every acknowledged add never removed is there; nothing never added is.
    let mut must_have: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut may_have: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut removed: BTreeSet<(String, String)> = BTreeSet::new();
    for op in ops {
        let applied = op.outcome != Outcome::Fail;
        match &op.call {
            Call::Put { key, value } if key.starts_with("shared/") => {
                let entry = shared.entry(key).or_default();
                if applied {
                    entry.0.insert(value.clone());
                }
                entry.1 |= op.outcome == Outcome::Ok && !lost(op);
            }
            Call::Increment { key, delta } => {
                let entry = counters.entry(key).or_default();
                if op.outcome == Outcome::Ok && !lost(op) {
                    entry.0 += delta;
                }
                if applied {
                    entry.1 += delta;
                }
            }
            Call::SetAdd { key, member } if applied => {
                may_have.entry(key).or_default().insert(member.clone());
                if op.outcome == Outcome::Ok && !lost(op) {
                    must_have.entry(key).or_default().insert(member.clone());
                }
            }
            Call::SetRemove { key, member } => {
                removed.insert((key.clone(), member.clone()));
            }
            _ => {}
        }
    }
    for (key, (values, some_acknowledged)) in shared {
        let final_value = register(final_values.get(key).unwrap_or(&None));
        let fine = match &final_value {
            Some(value) => values.contains(value),
            None => !some_acknowledged,
        };
        if !fine {
            violation("no-lost-acknowledged-write", format!("{key:?} ends as {final_value:?}, which no write wrote"));
        }
    }
    for (key, (low, high)) in counters {
        let value = match final_values.get(key) {
            Some(Some(Value::Counter(value))) => *value,
            None | Some(None) => 0,
            Some(Some(other)) => {
                violation("no-lost-acknowledged-write", format!("{key:?} ends as a {}", other.type_name()));
                continue;
            }
        };
        if value < low || value > high {
            violation(
                "no-lost-acknowledged-write",
                format!(
                    "counter {key:?} ends at {value}; acknowledged increments sum to {low}, all increments to {high}"
                ),
            );
        }
    }
    for (key, may) in &may_have {
        let members: BTreeSet<String> = match final_values.get(*key) {
            Some(Some(Value::Set(members))) => {
                members.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect()
            }
            _ => BTreeSet::new(),
        };
        for member in must_have.get(key).into_iter().flatten() {
            if !members.contains(member) && !removed.contains(&(key.to_string(), member.clone())) {
                violation(
                    "no-lost-acknowledged-write",
                    format!("set {key:?} lost {member:?}, whose add was acknowledged and never removed"),
                );
            }
        }
        for member in members.difference(may) {
            violation("no-lost-acknowledged-write", format!("set {key:?} holds {member:?}, which nobody added"));
        }
    }
    check_guarded(facts, final_values, violation);
}

/// The lock-protected lists: the final value is the write of the highest accepted token (a stale write
/// never wins the merge), and an acknowledged write whose holder then released the lock with its note is
/// never lost (the next holder read after it).
fn check_guarded(facts: &Facts, final_values: &FinalValues, violation: &mut impl FnMut(&'static str, String)) {
    if !facts.lossy.is_empty() {
        // A write lost with a node's unsynced tail breaks the chain of notes: the next holder reads after
        // a token that names a write nobody has, and may miss what came before it.
        return;
    }
    let mut writes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in facts.ops {
        if let Call::GuardedWrite { lock, .. } = &op.call {
            writes.entry(lock).or_default().push(op);
        }
    }
    for (lock, writes) in writes {
        let key = guarded_key(lock);
        let final_value = register(final_values.get(&key).unwrap_or(&None));
        let token_of = |op: &Op| match &op.call {
            Call::GuardedWrite { token, .. } => *token,
            _ => 0,
        };
        let value_of = |op: &Op| match &op.call {
            Call::GuardedWrite { value, .. } => value.clone(),
            _ => String::new(),
        };
        let Some(highest_ok) =
            writes.iter().filter(|w| w.outcome == Outcome::Ok && !lost_possible(facts, w)).map(|w| token_of(w)).max()
        else {
            continue;
        };
        let winners: Vec<&&Op> =
            writes.iter().filter(|w| w.outcome != Outcome::Fail && token_of(w) >= highest_ok).collect();
        if !winners.iter().any(|w| Some(value_of(w)) == final_value) {
            let stale = writes.iter().find(|w| Some(value_of(w)) == final_value).map(|w| token_of(w));
            violation(
                "no-stale-token-survives",
                format!(
                    "{key:?} ends as {final_value:?} (written under token {stale:?}); the highest acknowledged token is {highest_ok}"
                ),
            );
        }
        let members: BTreeSet<&str> = final_value.as_deref().map(|v| v.split(',').collect()).unwrap_or_default();
        // A power loss on a node that does not fsync may lose an acknowledged write (sync = "none").
        for write in writes.iter().filter(|w| w.outcome == Outcome::Ok && !lost_possible(facts, w)) {
            let Call::GuardedWrite { token, element, .. } = &write.call else { continue };
            let released = facts.ops.iter().any(|op| {
                op.outcome == Outcome::Ok
                    && op.process == write.process
                    && matches!(&op.call, Call::Release { lock: l, token: t } if l == lock && t == token)
            });
            if released && !members.contains(element.as_str()) {
                violation(
                    "guarded-no-lost-update",
                    format!("{key:?} lost {element:?}: written under token {token}, acknowledged, lock released after"),
                );
            }
        }
    }
}

/// The lock history, per lock, against a mutex with leases: the linear check in token order always, the
/// exhaustive search too where the history is small, and the two must agree.
fn check_locks(facts: &Facts, violation: &mut impl FnMut(&'static str, String)) {
    let mut history: Vec<LockOp> = Vec::new();
    for op in facts.ops {
        let client = op.process as u32;
        match &op.call {
            Call::Acquire { lock, token } => history.push(LockOp::Acquire {
                client,
                lock: lock.clone(),
                invoked: op.invoked_ms,
                completed: op.completed_ms,
                outcome: match (op.outcome, token) {
                    (Outcome::Ok, Some(token)) => AcquireOutcome::Granted(*token),
                    (Outcome::Fail, _) => AcquireOutcome::Refused,
                    _ => AcquireOutcome::Unknown,
                },
            }),
            Call::Renew { lock, token } => history.push(LockOp::Renew {
                client,
                lock: lock.clone(),
                token: *token,
                invoked: op.invoked_ms,
                completed: op.completed_ms,
                ok: op.outcome == Outcome::Ok,
            }),
            Call::Release { lock, token } => history.push(LockOp::Release {
                client,
                lock: lock.clone(),
                token: *token,
                invoked: op.invoked_ms,
                completed: op.completed_ms,
            }),
            _ => {}
        }
    }
    let ttl_ms = LOCK_TTL.as_millis() as u64;
    let linear = lockcheck::check_linear(&history, ttl_ms);
    for v in &linear {
        violation("lock-linearizable", format!("{}: {} (tokens {:?})", v.lock, v.message, v.tokens));
    }
    // Cross-check each lock's history with the exhaustive search where it is small enough.
    let locks: BTreeSet<&str> = history.iter().map(lock_of).collect();
    for lock in locks {
        let of_lock: Vec<LockOp> = history.iter().filter(|op| lock_of(op) == lock).cloned().collect();
        if of_lock.iter().any(|op| matches!(op, LockOp::Acquire { outcome: AcquireOutcome::Unknown, .. })) {
            continue;
        }
        if let Some(linearizable) = lockcheck::check_exhaustive(&of_lock, ttl_ms, 12) {
            let linear_ok = !linear.iter().any(|v| v.lock == lock);
            if linearizable != linear_ok {
                violation(
                    "checkers-agree",
                    format!("lock {lock:?}: the linear check says {linear_ok}, the exhaustive search {linearizable}"),
                );
            }
        }
    }
}

fn lock_of(op: &LockOp) -> &str {
    match op {
        LockOp::Acquire { lock, .. } | LockOp::Renew { lock, .. } | LockOp::Release { lock, .. } => lock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causal_read(writer_site: Option<&str>) -> Op {
        Op {
            process: 0,
            site: 1,
            call: Call::CausalRead {
                key: "own/a0/0".into(),
                site: 1,
                expected: "v1".into(),
                read: Some("v1".into()),
                writer_site: writer_site.map(str::to_string),
                home: 0,
            },
            invoked_ms: 10,
            completed_ms: Some(11),
            outcome: Outcome::Ok,
            error: String::new(),
            reason: None,
        }
    }

    fn invariants(ops: &[Op]) -> Vec<&'static str> {
        let facts = Facts { ops, final_values: None, diverged: &[], lossy: &[], placements: &[], partitions: 4 };
        check(&facts).into_iter().map(|violation| violation.invariant).collect()
    }

    /// A site's placement as a one-node site reports it: every partition on node `node`.
    fn one_node_placement(node: u64, partitions: u32) -> geostore_proto::v1::PlacementStatus {
        geostore_proto::v1::PlacementStatus {
            version: 3,
            replicas_per_site: 1,
            partitions: (0..partitions)
                .map(|partition| geostore_proto::v1::PartitionPlacement {
                    partition,
                    primary: node,
                    replicas: vec![node],
                    epoch: 1,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn placement_violations(placements: &[Option<geostore_proto::v1::PlacementStatus>]) -> Vec<String> {
        let facts = Facts { ops: &[], final_values: None, diverged: &[], lossy: &[], placements, partitions: 4 };
        check(&facts).into_iter().filter(|v| v.invariant == "placement-valid").map(|v| v.message).collect()
    }

    #[test]
    fn placements_are_checked_for_creation_and_validity() {
        let good: Vec<_> = (1..=3).map(|node| Some(one_node_placement(node, 4))).collect();
        assert_eq!(placement_violations(&good), Vec::<String>::new());
        let mut bad = good.clone();
        bad[0] = None;
        bad[1] = Some(geostore_proto::v1::PlacementStatus::default());
        let mut wrong = one_node_placement(3, 4);
        wrong.partitions[2].primary = 1;
        wrong.partitions.pop();
        bad[2] = Some(wrong);
        let messages = placement_violations(&bad);
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].contains("site 0: its node reported no placement"), "{messages:?}");
        assert!(messages[1].contains("site 1: the placement map was never created"), "{messages:?}");
        assert!(messages[2].contains("site 2: 3 partitions placed, not 4"), "{messages:?}");
        assert!(messages[3].contains("site 2: partition 2"), "{messages:?}");
    }

    #[test]
    fn a_read_that_names_the_wrong_writer_site_is_a_violation() {
        let put = Op { call: Call::Put { key: "own/a0/0".into(), value: "v1".into() }, site: 0, ..causal_read(None) };
        assert_eq!(invariants(&[put.clone(), causal_read(Some("dc0"))]), Vec::<&str>::new());
        assert_eq!(invariants(&[put.clone(), causal_read(None)]), Vec::<&str>::new(), "not known yet is allowed");
        assert_eq!(invariants(&[put, causal_read(Some("dc2"))]), ["write-origin"]);
    }
}
