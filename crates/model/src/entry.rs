//! The state of one key, its operations and its merge.
//!
//! An [`Entry`] is a product of CRDTs, one slot per value type, plus a delete marker and an expiry.
//! Merging two entries merges slot by slot, so merge is commutative, associative and idempotent as long
//! as each slot's is (property tests in `tests/properties.rs` check the whole). Reads are a deterministic
//! function of the state and the reader's clock.
//!
//! What concurrent operations do (each is a property test):
//! - register vs register: the higher [`Marker`] wins: fence token, then HLC timestamp, then replica.
//! - register vs delete: the higher marker wins (a delete kills registers written before it in marker
//!   order, even ones it never saw).
//! - counter vs delete, set add vs delete or remove: observed-remove. A delete or remove takes away what the
//!   deleting replica had seen; an increment or add it had not seen survives ("add wins").
//! - counter increments from many replicas: they all add up (PN-counter).
//! - write vs TTL: the expiry is a last-writer-wins field of its own. `Put` sets it (with a TTL) or clears
//!   it (without), `Expire` sets it; increments and set changes keep it, like Redis. The highest marker
//!   decides. Once the expiry time has passed the key reads as absent; a write to such a key first
//!   deletes what had expired (as a delete would) and starts a fresh value.
//! - two types on one key: a key holds one type, which a write checks locally. Two sites may still create
//!   the same key with different types concurrently; both slots are kept and merged, and reads show the
//!   live slot with the highest last-write marker, so every replica shows the same one.

use std::collections::BTreeSet;

use crdts::lwwreg::LWWReg;
use crdts::orswot::Orswot;
use crdts::pncounter::PNCounter;
use crdts::{CmRDT, CvRDT};
use num_traits::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::marker::{Marker, ReplicaId};

/// The type of value a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A byte string; concurrent writes resolve to the one with the higher [`Marker`].
    Register,
    /// A signed 64-bit counter that every replica may increment or decrement concurrently.
    Counter,
    /// A set of byte strings with observed-remove semantics (a concurrent add beats a remove).
    Set,
}

impl Kind {
    /// The lower-case name used in messages and by the API: `register`, `counter` or `set`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Counter => "counter",
            Kind::Set => "set",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A write to one key. The marker (and so the replica and the time) comes with it to [`Entry::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set a register. With a TTL the key expires that long after the write; without one, any expiry the
    /// key had is cleared.
    Put {
        /// The register's new value.
        value: Vec<u8>,
        /// Milliseconds after the write at which the key expires; `None` for no expiry.
        ttl_ms: Option<u64>,
    },
    /// Remove the key, whatever its type. A register written before the delete in marker order is gone
    /// even if this replica never saw it; increments and set adds this replica had not seen survive.
    /// Deleting an absent key succeeds.
    Delete,
    /// Add `delta` (negative to subtract) to a counter; an absent key counts from 0. Refused with
    /// [`OpError::CounterOverflow`] if the replica's view of the counter would leave the `i64` range. An
    /// increment by 0 changes nothing: an absent key stays absent.
    Increment {
        /// The amount to add.
        delta: i64,
    },
    /// Add members to a set; an absent key becomes a set. Members already present stay.
    SetAdd {
        /// The members to add (raw bytes).
        members: Vec<Vec<u8>>,
    },
    /// Remove the members this replica has seen from a set. Members not present, or an absent key, are
    /// no error.
    SetRemove {
        /// The members to remove (raw bytes).
        members: Vec<Vec<u8>>,
    },
    /// Give a live key an expiry `ttl_ms` after the write; refused with [`OpError::NotFound`] if the key
    /// is absent or expired.
    Expire {
        /// Milliseconds after the write at which the key expires.
        ttl_ms: u64,
    },
}

impl Op {
    /// The type of value the operation works on; `None` for operations on any type.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Op::Put { .. } => Some(Kind::Register),
            Op::Increment { .. } => Some(Kind::Counter),
            Op::SetAdd { .. } | Op::SetRemove { .. } => Some(Kind::Set),
            Op::Delete | Op::Expire { .. } => None,
        }
    }

    /// The operation's name as the API spells it (`Put`, `Delete`, ...), for messages and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Put { .. } => "Put",
            Op::Delete => "Delete",
            Op::Increment { .. } => "Increment",
            Op::SetAdd { .. } => "SetAdd",
            Op::SetRemove { .. } => "SetRemove",
            Op::Expire { .. } => "Expire",
        }
    }
}

/// Why an operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The key is live and holds another type than the operation works on.
    #[error("the key holds a {holds}; {op} needs a {needs}")]
    TypeMismatch {
        /// The type the key holds.
        holds: Kind,
        /// The refused operation's name (see [`Op::name`]).
        op: &'static str,
        /// The type the operation needs.
        needs: Kind,
    },
    /// An increment would take the counter outside the `i64` range, as this replica sees it.
    #[error("incrementing {current} by {delta} overflows a 64-bit counter")]
    CounterOverflow {
        /// The counter's value before the increment.
        current: i64,
        /// The refused increment.
        delta: i64,
    },
    /// The operation needs a live key ([`Op::Expire`]) and the key is absent, deleted or expired.
    #[error("the key does not exist (or has expired)")]
    NotFound,
}

/// What a successful operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Whether the key was live before the operation.
    pub existed: bool,
    /// For `Increment`: the counter's value after it.
    pub counter: Option<i64>,
}

/// A key's value as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A register's bytes.
    Register(Vec<u8>),
    /// A counter's value.
    Counter(i64),
    /// A set's members, in byte order.
    Set(BTreeSet<Vec<u8>>),
}

impl Value {
    /// The type of the value.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Register(_) => Kind::Register,
            Value::Counter(_) => Kind::Counter,
            Value::Set(_) => Kind::Set,
        }
    }
}

/// A live key as read at some moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The value of the live slot with the highest last-write marker.
    pub value: Value,
    /// When the key expires, in milliseconds since the Unix epoch.
    pub expires_at_unix_ms: Option<i64>,
    /// The marker of the last write to the value that is shown.
    pub last_write: Marker,
}

/// Why a key reads as absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    /// Nothing is recorded for the key: never written, or deleted long enough ago that its tombstone was
    /// collected.
    NoRecord,
    /// Its expiry passed, at this time (milliseconds since the Unix epoch).
    Expired {
        /// When the key expired.
        at_unix_ms: i64,
    },
    /// Deleted (or emptied: a counter whose increments were all deleted, a set whose members were all
    /// removed), by the write at this time (milliseconds since the Unix epoch).
    Deleted {
        /// When the last write that left it absent was made.
        at_unix_ms: i64,
    },
}

/// The identity under which a replica counts its increments and set adds in one incarnation of a key.
///
/// The incarnation is the HLC timestamp of the replica's first write to the slot. When a dead key is
/// garbage-collected and written again, the replica starts a new incarnation, so its new dots never reuse
/// numbers that a peer still holding the old state remembers (which would make the peer drop the new
/// increment or add as already seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The replica that counts under this actor.
    pub replica: ReplicaId,
    /// The raw HLC timestamp ([`crate::Hlc`]'s `u64`) of the replica's first write to this incarnation of
    /// the slot.
    pub incarnation: u64,
}

/// Each replica's current incarnation in a slot; merged by taking the higher one per replica.
type Incarnations = std::collections::BTreeMap<ReplicaId, u64>;

fn merge_incarnations(ours: &mut Incarnations, theirs: Incarnations) {
    for (replica, incarnation) in theirs {
        let slot = ours.entry(replica).or_insert(incarnation);
        *slot = (*slot).max(incarnation);
    }
}

/// The actor `marker.replica` writes a slot as, starting an incarnation if it has none there.
fn actor_for(incarnations: &mut Incarnations, marker: Marker) -> Actor {
    let incarnation = *incarnations.entry(marker.replica).or_insert(marker.hlc.0);
    Actor { replica: marker.replica, incarnation }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct CounterSlot {
    incarnations: Incarnations,
    /// Every increment and decrement ever applied, per actor.
    total: PNCounter<Actor>,
    /// The part of `total` that deletes have taken away: at each delete, the deleting replica merges the
    /// `total` it had observed into this. The value is `total - removed`.
    removed: PNCounter<Actor>,
    last_write: Marker,
}

impl CounterSlot {
    fn value(&self) -> i64 {
        let value = self.total.read() - self.removed.read();
        // Every local increment is checked against i64 before it is applied; concurrent increments from
        // several sites can still add up past it, in which case the value saturates.
        value.to_i64().unwrap_or_else(|| if value.to_f64().unwrap_or(0.0) < 0.0 { i64::MIN } else { i64::MAX })
    }

    /// A counter is live while some increment or decrement has not been taken away by a delete.
    fn is_live(&self) -> bool {
        self.total != self.removed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct SetSlot {
    incarnations: Incarnations,
    members: Orswot<Vec<u8>, Actor>,
    last_write: Marker,
}

/// The replicated state of one key. See the module documentation for the semantics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Entry {
    register: Option<LWWReg<Vec<u8>, Marker>>,
    counter: Option<CounterSlot>,
    set: Option<SetSlot>,
    /// The highest marker of any delete. A register write below it is dead and dropped.
    deleted: Option<Marker>,
    /// The expiry in milliseconds since the Unix epoch (`None`: never), last writer wins.
    expiry: Option<LWWReg<Option<i64>, Marker>>,
}

impl Entry {
    /// Merges another replica's state of the same key into this one.
    pub fn merge(&mut self, other: Entry) {
        merge_option(&mut self.register, other.register, |ours, theirs| ours.merge(theirs));
        merge_option(&mut self.counter, other.counter, |ours, theirs| {
            merge_incarnations(&mut ours.incarnations, theirs.incarnations);
            ours.total.merge(theirs.total);
            ours.removed.merge(theirs.removed);
            ours.last_write = ours.last_write.max(theirs.last_write);
        });
        merge_option(&mut self.set, other.set, |ours, theirs| {
            merge_incarnations(&mut ours.incarnations, theirs.incarnations);
            ours.members.merge(theirs.members);
            ours.last_write = ours.last_write.max(theirs.last_write);
        });
        self.deleted = self.deleted.max(other.deleted);
        merge_option(&mut self.expiry, other.expiry, |ours, theirs| ours.merge(theirs));
        self.drop_deleted_register();
    }

    /// Applies a local write made at `marker` by `marker.replica`. `marker.hlc` is also the time of the
    /// write, from which TTLs count. On error nothing has changed.
    pub fn apply(&mut self, op: &Op, marker: Marker) -> Result<Applied, OpError> {
        let now_unix_ms = marker.hlc.unix_ms();
        let expired = self.is_expired(now_unix_ms);
        let live = if expired { None } else { self.live_kind() };
        if let (Some(holds), Some(needs)) = (live, op.kind())
            && holds != needs
        {
            return Err(OpError::TypeMismatch { holds, op: op.name(), needs });
        }
        if let Op::Expire { .. } = op
            && live.is_none()
        {
            return Err(OpError::NotFound);
        }
        if let Op::Increment { delta } = op {
            let current = if live.is_some() { self.counter.as_ref().map_or(0, CounterSlot::value) } else { 0 };
            if current.checked_add(*delta).is_none() {
                return Err(OpError::CounterOverflow { current, delta: *delta });
            }
        }

        // Checks are done: from here on the operation succeeds.
        if expired {
            // The expired value is gone for good: delete what is there, then start afresh.
            self.delete_observed(marker);
            self.expiry = Some(LWWReg { val: None, marker });
        }
        let mut applied = Applied { existed: live.is_some(), counter: None };
        match op {
            Op::Put { value, ttl_ms } => {
                self.register = Some(LWWReg { val: value.clone(), marker });
                let expires = ttl_ms.map(|ttl| now_unix_ms.saturating_add(ttl as i64));
                self.expiry = Some(LWWReg { val: expires, marker });
            }
            Op::Delete => self.delete_observed(marker),
            Op::Increment { delta } => {
                let slot = self.counter.get_or_insert_with(CounterSlot::default);
                let actor = actor_for(&mut slot.incarnations, marker);
                let op = if *delta >= 0 {
                    slot.total.inc_many(actor, delta.unsigned_abs())
                } else {
                    slot.total.dec_many(actor, delta.unsigned_abs())
                };
                slot.total.apply(op);
                slot.last_write = slot.last_write.max(marker);
                applied.counter = Some(slot.value());
            }
            Op::SetAdd { members } => {
                let slot = self.set.get_or_insert_with(SetSlot::default);
                let actor = actor_for(&mut slot.incarnations, marker);
                let context = slot.members.read_ctx().derive_add_ctx(actor);
                let op = slot.members.add_all(members.iter().cloned(), context);
                slot.members.apply(op);
                slot.last_write = slot.last_write.max(marker);
            }
            Op::SetRemove { members } => {
                if let Some(slot) = self.set.as_mut() {
                    let context = slot.members.read_ctx().derive_rm_ctx();
                    let op = slot.members.rm_all(members.iter().cloned(), context);
                    slot.members.apply(op);
                    slot.last_write = slot.last_write.max(marker);
                }
            }
            Op::Expire { ttl_ms } => {
                let expires = now_unix_ms.saturating_add(*ttl_ms as i64);
                self.expiry = Some(LWWReg { val: Some(expires), marker });
            }
        }
        self.drop_deleted_register();
        Ok(applied)
    }

    /// The key as a reader at `now_unix_ms` sees it; `None` if absent, deleted or expired.
    pub fn read(&self, now_unix_ms: i64) -> Option<Read> {
        if self.is_expired(now_unix_ms) {
            return None;
        }
        let expires_at_unix_ms = self.expiry.as_ref().and_then(|expiry| expiry.val);
        let (value, last_write) = match self.live_kind()? {
            Kind::Register => {
                let register = self.register.as_ref()?;
                (Value::Register(register.val.clone()), register.marker)
            }
            Kind::Counter => {
                let counter = self.counter.as_ref()?;
                (Value::Counter(counter.value()), counter.last_write)
            }
            Kind::Set => {
                let set = self.set.as_ref()?;
                (Value::Set(set.members.read().val.into_iter().collect()), set.last_write)
            }
        };
        Some(Read { value, expires_at_unix_ms, last_write })
    }

    /// Why the key reads as absent at `now_unix_ms`; `None` if it is live.
    pub fn absence(&self, now_unix_ms: i64) -> Option<Absence> {
        if let Some(at_unix_ms) = self.expiry.as_ref().and_then(|expiry| expiry.val).filter(|at| *at <= now_unix_ms) {
            return Some(Absence::Expired { at_unix_ms });
        }
        if self.live_kind().is_some() {
            return None;
        }
        let last = [
            self.deleted,
            self.register.as_ref().map(|register| register.marker),
            self.counter.as_ref().map(|counter| counter.last_write),
            self.set.as_ref().map(|set| set.last_write),
        ];
        Some(match last.into_iter().flatten().map(|marker| marker.hlc).max() {
            Some(at) => Absence::Deleted { at_unix_ms: at.unix_ms() },
            None => Absence::NoRecord,
        })
    }

    /// A 64-bit digest of the whole state that is equal for equal entries on every replica and build: the
    /// state is written in a canonical form (set members sorted) and hashed with XXH3. Anti-entropy compares
    /// these instead of the stored bytes, which are not canonical.
    pub fn digest(&self) -> u64 {
        let set = self.set.as_ref().map(|set| {
            let mut members: Vec<(&Vec<u8>, crdts::VClock<Actor>)> =
                set.members.iter().map(|member| (member.val, member.rm_clock)).collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            // Deferred removes never arise here (every local remove carries the set's own clock), so the
            // clock and the members are the whole state.
            (&set.incarnations, set.members.clock(), members, set.last_write)
        });
        let canonical = (&self.register, &self.counter, set, &self.deleted, &self.expiry);
        let bytes = postcard::to_stdvec(&canonical).expect("encoding into a Vec cannot fail");
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// Whether the key has an expiry that has passed at `now_unix_ms`.
    pub fn is_expired(&self, now_unix_ms: i64) -> bool {
        matches!(self.expiry.as_ref().and_then(|expiry| expiry.val), Some(at) if at <= now_unix_ms)
    }

    /// The type shown to readers (ignoring expiry): the live slot with the highest last-write marker.
    fn live_kind(&self) -> Option<Kind> {
        let register = self.register.as_ref().map(|register| (register.marker, Kind::Register));
        let counter = self.counter.as_ref().filter(|c| c.is_live()).map(|c| (c.last_write, Kind::Counter));
        let set = self.set.as_ref().filter(|s| !s.members.read().val.is_empty()).map(|s| (s.last_write, Kind::Set));
        [register, counter, set].into_iter().flatten().max_by_key(|(marker, _)| *marker).map(|(_, kind)| kind)
    }

    /// Removes everything this replica has observed, as a delete at `marker`.
    fn delete_observed(&mut self, marker: Marker) {
        self.deleted = self.deleted.max(Some(marker));
        if let Some(counter) = self.counter.as_mut() {
            counter.removed.merge(counter.total.clone());
        }
        if let Some(set) = self.set.as_mut() {
            let members: Vec<Vec<u8>> = set.members.read().val.into_iter().collect();
            let context = set.members.read_ctx().derive_rm_ctx();
            let op = set.members.rm_all(members, context);
            set.members.apply(op);
        }
    }

    /// Keeps the state canonical: a register written before the last delete can never be read again, so
    /// it is dropped. Every replica does the same, so equal histories give equal states.
    fn drop_deleted_register(&mut self) {
        if let (Some(register), Some(deleted)) = (&self.register, self.deleted)
            && register.marker < deleted
        {
            self.register = None;
        }
    }
}

fn merge_option<T>(ours: &mut Option<T>, theirs: Option<T>, merge: impl FnOnce(&mut T, T)) {
    match (ours.as_mut(), theirs) {
        (_, None) => {}
        (None, Some(theirs)) => *ours = Some(theirs),
        (Some(ours), Some(theirs)) => merge(ours, theirs),
    }
}
