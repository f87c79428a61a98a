//! The lock table: the deterministic state machine that the cross-site Raft group replicates.
//!
//! Every change is a [`Command`] applied at a Raft log index by [`LockTable::apply`]. The table reads no
//! clock: time comes inside the commands, as the leader's clock when it proposed them. That is how leases
//! are "timed by the leader": the leader proposes [`Command::Expire`] when, by its clock, a lease ran out,
//! and a new leader first proposes [`Command::RestartLeases`], which gives every lease a full TTL from its
//! own clock, so a lease is never cut short by a change of leader.
//!
//! Invariants (asserted where they are established):
//! - A lock has at most one holder.
//! - The fencing token of a grant is the log index of the entry that made it, so tokens strictly increase
//!   per lock and across all locks, whichever leader proposed them.
//! - Waiters are granted in the order they asked (first come, first served); a waiter is granted in the
//!   same entry that frees the lock, so nobody wakes up to a timer.
//! - A request id is applied once: a retried acquire or release gets the outcome of the first.

#![warn(missing_docs)]

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Request ids remembered for exactly-once retries; the oldest are forgotten beyond this.
pub const REMEMBERED_REQUESTS_MAX: usize = 100_000;
/// Entries between two passes that forget unused locks (each entry forgets the lock it touched).
const FORGET_SWEEP_EVERY: u64 = 1024;
/// Release notes remembered (one per lock name); the oldest are forgotten beyond this.
pub const NOTES_MAX: usize = 100_000;
/// Waiters one lock may queue.
pub const WAITERS_PER_LOCK_MAX: usize = 10_000;

/// Who asks: a client id and its request number (unique per client).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The client's id, chosen by the client to be unique among all clients (a random string, say).
    pub client: String,
    /// The request's number; a retry of the same request reuses it.
    pub request: u64,
}

/// How long an acquire may wait for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    /// Fail at once if the lock is held.
    Try,
    /// Queue until the leader's clock reaches this time (ms since the Unix epoch).
    Until(u64),
}

/// A change to the table, with the leader's clock (`now_ms`, ms since the Unix epoch) when proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Take lock `name`: granted at once if it is free (no holder, no waiter, no lock-delay), otherwise
    /// busy or queued according to `wait`.
    Acquire {
        /// The request, for exactly-once retries; the grant's holder.
        id: RequestId,
        /// The lock's name.
        name: String,
        /// The lease: the grant expires this many milliseconds after the entry (or the last keep-alive)
        /// by the leader's clock.
        ttl_ms: u64,
        /// Whether to queue, and until when.
        wait: Wait,
        /// Free text kept with the grant: who holds it, or an election's proposal.
        label: String,
        /// The leader's clock when proposed, in ms since the Unix epoch.
        now_ms: u64,
    },
    /// Give lock `name` up, if `token` holds it; the first waiter is granted it in the same entry.
    Release {
        /// The request, for exactly-once retries.
        id: RequestId,
        /// The lock's name.
        name: String,
        /// The fencing token of the grant being released.
        token: u64,
        /// Left for the next holder (handed over in its grant): typically the causal token of the last
        /// write made under the lock, so the next holder can read after it.
        #[serde(default)]
        note: Option<String>,
        /// The leader's clock when proposed, in ms since the Unix epoch.
        now_ms: u64,
    },
    /// Extend the lease of the grant `token` of lock `name` to a full TTL from `now_ms`. A token that no
    /// longer holds the lock changes nothing (the answer says so).
    KeepAlive {
        /// The lock's name.
        name: String,
        /// The fencing token of the grant to keep alive.
        token: u64,
        /// The leader's clock when proposed, in ms since the Unix epoch.
        now_ms: u64,
    },
    /// The leader saw this grant's lease run out by its clock. The lock is then not granted again for
    /// `delay_ms` (lock-delay): the value travels in the entry so every member applies the same one.
    Expire {
        /// The lock's name.
        name: String,
        /// The grant that expired; if another grant holds the lock by now, or this one was kept alive
        /// since, the entry changes nothing.
        token: u64,
        /// The lock-delay in milliseconds (0 for none).
        delay_ms: u64,
        /// The leader's clock when proposed, in ms since the Unix epoch.
        now_ms: u64,
    },
    /// The leader saw this waiter's deadline pass.
    GiveUp {
        /// The waiting acquire.
        id: RequestId,
        /// The lock it waits for.
        name: String,
        /// The leader's clock when proposed, in ms since the Unix epoch.
        now_ms: u64,
    },
    /// A lock-delay ended: grant the lock to its first waiter, if any.
    EndDelay {
        /// The lock's name.
        name: String,
        /// The leader's clock when proposed, in ms since the Unix epoch.
        now_ms: u64,
    },
    /// A new leader restarts every lease's clock from its own: each lease runs at least a full TTL from
    /// `now_ms` (none is shortened).
    RestartLeases {
        /// The new leader's clock when proposed, in ms since the Unix epoch.
        now_ms: u64,
    },
}

impl Command {
    /// The leader's clock when the command was proposed.
    pub fn now_ms(&self) -> u64 {
        match self {
            Command::Acquire { now_ms, .. }
            | Command::Release { now_ms, .. }
            | Command::KeepAlive { now_ms, .. }
            | Command::Expire { now_ms, .. }
            | Command::GiveUp { now_ms, .. }
            | Command::EndDelay { now_ms, .. }
            | Command::RestartLeases { now_ms } => *now_ms,
        }
    }

    /// The same command, stamped with a later leader time. A leader proposes each timer command it
    /// found due (expiries, wait deadlines, lock-delays) with its clock at the moment it proposes it:
    /// a command that waited behind a slow commit must not carry the older time, because the entry that
    /// frees a lock also grants it to the next waiter, whose lease is measured from the entry's time.
    pub fn stamped(mut self, now: u64) -> Command {
        match &mut self {
            Command::Acquire { now_ms, .. }
            | Command::Release { now_ms, .. }
            | Command::KeepAlive { now_ms, .. }
            | Command::Expire { now_ms, .. }
            | Command::GiveUp { now_ms, .. }
            | Command::EndDelay { now_ms, .. }
            | Command::RestartLeases { now_ms } => *now_ms = now.max(*now_ms),
        }
        self
    }
}

/// A lock held by one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The lock's name.
    pub name: String,
    /// The fencing token: the log index of the entry that made the grant, so later grants of any lock
    /// have higher tokens.
    pub token: u64,
    /// The acquire request that was granted.
    pub holder: RequestId,
    /// The lease length in milliseconds, which each keep-alive restarts.
    pub ttl_ms: u64,
    /// When the lease runs out unless kept alive, in ms since the Unix epoch by the leader's clock.
    pub expires_at_ms: u64,
    /// The free text the acquire carried.
    pub label: String,
    /// The note of the last holder that released this lock with one, if any.
    #[serde(default)]
    pub previous_note: Option<String>,
}

/// What happened to an acquire or release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The acquire holds the lock now.
    Granted(Grant),
    /// Queued behind the holder and earlier waiters; a later entry grants it or gives up.
    Queued {
        /// Place in the queue, 1 for the first waiter.
        position: usize,
    },
    /// `Wait::Try` and the lock is held (or in its lock-delay).
    Busy {
        /// The holder's token; `None` when the lock is free but in its lock-delay or has waiters.
        holder_token: Option<u64>,
    },
    /// The release freed the lock.
    Released,
    /// Release or keep-alive with a token that does not hold the lock (it expired, or never did).
    NotHolder {
        /// The token that holds the lock now, if any.
        current_token: Option<u64>,
    },
    /// The waiter's deadline passed.
    TimedOut,
    /// Refused without any change (a limit).
    Refused(String),
}

/// Something a waiting caller may be told about, produced by an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The outcome of the request `id` is now known.
    Decided {
        /// The request.
        id: RequestId,
        /// What happened to it. A queued acquire is decided again when it is granted or gives up.
        outcome: Outcome,
    },
    /// A grant ended without a release (its lease expired); its holder has lost the lock.
    Expired {
        /// The lock's name.
        name: String,
        /// The token of the grant that ended.
        token: u64,
    },
    /// The answer to a keep-alive: the lease's new expiry, or `None` if `token` no longer holds the lock.
    KeptAlive {
        /// The lock's name.
        name: String,
        /// The token the keep-alive was for.
        token: u64,
        /// The new expiry in ms since the Unix epoch by the leader's clock.
        expires_at_ms: Option<u64>,
    },
    /// The holder or the waiters of this lock may have changed.
    Changed {
        /// The lock's name.
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Waiter {
    id: RequestId,
    ttl_ms: u64,
    deadline_ms: u64,
    label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lock {
    holder: Option<Grant>,
    waiters: VecDeque<Waiter>,
    /// After an expiry, no grant before this time (lock-delay).
    delayed_until_ms: u64,
    /// The last token granted for this lock.
    last_token: u64,
}

/// The replicated lock table. Serializable whole, for Raft snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTable {
    locks: BTreeMap<String, Lock>,
    /// Outcomes of recent requests, for retries; `order` says which to forget first.
    #[serde(with = "as_pairs")]
    decided: BTreeMap<RequestId, Outcome>,
    order: VecDeque<RequestId>,
    /// The highest token granted by any lock, and the last index applied.
    last_token: u64,
    last_index: u64,
    /// The note each lock's last releasing holder left, by lock name; `note_order` says which to forget
    /// first beyond [`NOTES_MAX`].
    #[serde(with = "as_pairs")]
    notes: BTreeMap<String, String>,
    note_order: VecDeque<String>,
    /// How long an expired (not released) lock stays ungranted: what this member proposes when it leads.
    #[serde(skip)]
    lock_delay_ms: u64,
}

impl LockTable {
    /// An empty table whose member, when it leads, proposes a lock-delay of `lock_delay_ms` milliseconds
    /// after each expiry (0 for none).
    pub fn new(lock_delay_ms: u64) -> Self {
        LockTable { lock_delay_ms, ..LockTable::default() }
    }

    /// Sets the lock-delay this member proposes when it leads (after loading a snapshot, say).
    pub fn set_lock_delay_ms(&mut self, lock_delay_ms: u64) {
        self.lock_delay_ms = lock_delay_ms;
    }

    /// The log index of the last entry applied (0 before any).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The current holder of a lock.
    pub fn holder(&self, name: &str) -> Option<&Grant> {
        self.locks.get(name).and_then(|lock| lock.holder.as_ref())
    }

    /// The requests queued for a lock, in grant order.
    pub fn waiters(&self, name: &str) -> Vec<RequestId> {
        self.locks.get(name).map(|lock| lock.waiters.iter().map(|w| w.id.clone()).collect()).unwrap_or_default()
    }

    /// Every held lock, by name.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.locks.values().filter_map(|lock| lock.holder.as_ref())
    }

    /// Every lock that is held, awaited or in its lock-delay, by name.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.locks.keys()
    }

    /// The earliest time at which [`LockTable::due`] will have something to propose, if any: the leader
    /// sleeps until then (or until the next entry is applied).
    pub fn next_due_ms(&self) -> Option<u64> {
        self.locks
            .values()
            .flat_map(|lock| {
                let expiry = lock.holder.as_ref().map(|grant| grant.expires_at_ms);
                let delay_end = (lock.holder.is_none() && !lock.waiters.is_empty()).then_some(lock.delayed_until_ms);
                let deadline = lock.waiters.iter().map(|w| w.deadline_ms).min();
                [expiry, delay_end, deadline]
            })
            .flatten()
            .min()
    }

    /// What the leader should propose by `now_ms`: expiries of leases, waiters past their deadline, and
    /// lock-delays that ended.
    pub fn due(&self, now_ms: u64) -> Vec<Command> {
        let mut due = Vec::new();
        for (name, lock) in &self.locks {
            if let Some(grant) = &lock.holder
                && grant.expires_at_ms <= now_ms
            {
                due.push(Command::Expire {
                    name: name.clone(),
                    token: grant.token,
                    delay_ms: self.lock_delay_ms,
                    now_ms,
                });
            }
            if lock.holder.is_none() && !lock.waiters.is_empty() && lock.delayed_until_ms <= now_ms {
                due.push(Command::EndDelay { name: name.clone(), now_ms });
            }
            for waiter in lock.waiters.iter().filter(|w| w.deadline_ms <= now_ms) {
                due.push(Command::GiveUp { id: waiter.id.clone(), name: name.clone(), now_ms });
            }
        }
        due
    }

    /// Applies the entry at `index` (strictly after the last one) and returns what it decided.
    pub fn apply(&mut self, index: u64, command: Command) -> Vec<Event> {
        assert!(index > self.last_index, "entry {index} applied after entry {}", self.last_index);
        self.last_index = index;
        let now_ms = command.now_ms();
        let touched = match &command {
            Command::Acquire { name, .. }
            | Command::Release { name, .. }
            | Command::KeepAlive { name, .. }
            | Command::Expire { name, .. }
            | Command::GiveUp { name, .. }
            | Command::EndDelay { name, .. } => Some(name.clone()),
            Command::RestartLeases { .. } => None,
        };
        let mut events = Vec::new();
        match command {
            Command::Acquire { id, name, ttl_ms, wait, label, now_ms } => {
                if let Some(outcome) = self.decided.get(&id) {
                    events.push(Event::Decided { id, outcome: outcome.clone() });
                    return events;
                }
                let lock = self.locks.entry(name.clone()).or_default();
                if lock.waiters.iter().any(|w| w.id == id) {
                    // A retry of a queued acquire: still queued.
                    let position = lock.waiters.iter().position(|w| w.id == id).expect("present") + 1;
                    events.push(Event::Decided { id, outcome: Outcome::Queued { position } });
                    return events;
                }
                let free = lock.holder.is_none() && lock.waiters.is_empty() && lock.delayed_until_ms <= now_ms;
                let outcome = if free {
                    events.push(Event::Changed { name: name.clone() });
                    let grant = self.grant(index, &name, id.clone(), ttl_ms, label, now_ms);
                    Outcome::Granted(grant)
                } else {
                    let lock = self.locks.get_mut(&name).expect("created above");
                    match wait {
                        Wait::Try => Outcome::Busy { holder_token: lock.holder.as_ref().map(|g| g.token) },
                        Wait::Until(_) if lock.waiters.len() >= WAITERS_PER_LOCK_MAX => {
                            Outcome::Refused(format!("lock {name:?} already has {WAITERS_PER_LOCK_MAX} waiters"))
                        }
                        Wait::Until(deadline_ms) => {
                            lock.waiters.push_back(Waiter { id: id.clone(), ttl_ms, deadline_ms, label });
                            let position = lock.waiters.len();
                            events.push(Event::Changed { name: name.clone() });
                            events.push(Event::Decided { id, outcome: Outcome::Queued { position } });
                            return events;
                        }
                    }
                };
                self.decide(id, outcome, &mut events);
            }
            Command::Release { id, name, token, note, now_ms } => {
                if let Some(outcome) = self.decided.get(&id) {
                    events.push(Event::Decided { id, outcome: outcome.clone() });
                    return events;
                }
                let current = self.holder(&name).map(|grant| grant.token);
                if current == Some(token) {
                    self.locks.get_mut(&name).expect("held").holder = None;
                    if let Some(note) = note {
                        self.leave_note(&name, note);
                    }
                    events.push(Event::Changed { name: name.clone() });
                    self.decide(id, Outcome::Released, &mut events);
                    self.grant_next(index, &name, now_ms, &mut events);
                } else {
                    self.decide(id, Outcome::NotHolder { current_token: current }, &mut events);
                }
            }
            Command::KeepAlive { name, token, now_ms } => {
                let mut expires_at_ms = None;
                if let Some(grant) = self.locks.get_mut(&name).and_then(|lock| lock.holder.as_mut())
                    && grant.token == token
                {
                    grant.expires_at_ms = now_ms + grant.ttl_ms;
                    expires_at_ms = Some(grant.expires_at_ms);
                }
                events.push(Event::KeptAlive { name, token, expires_at_ms });
            }
            Command::Expire { name, token, delay_ms, now_ms } => {
                let Some(lock) = self.locks.get_mut(&name) else { return events };
                // Only the grant the leader saw expire, and only if it has not been kept alive since.
                if lock.holder.as_ref().is_some_and(|g| g.token == token && g.expires_at_ms <= now_ms) {
                    lock.holder = None;
                    lock.delayed_until_ms = now_ms + delay_ms;
                    events.push(Event::Expired { name: name.clone(), token });
                    events.push(Event::Changed { name: name.clone() });
                    self.grant_next(index, &name, now_ms, &mut events);
                }
            }
            Command::GiveUp { id, name, now_ms } => {
                let Some(lock) = self.locks.get_mut(&name) else { return events };
                if let Some(position) = lock.waiters.iter().position(|w| w.id == id && w.deadline_ms <= now_ms) {
                    lock.waiters.remove(position);
                    events.push(Event::Changed { name: name.clone() });
                    self.decide(id, Outcome::TimedOut, &mut events);
                }
            }
            Command::EndDelay { name, now_ms } => self.grant_next(index, &name, now_ms, &mut events),
            Command::RestartLeases { now_ms } => {
                for grant in self.locks.values_mut().filter_map(|lock| lock.holder.as_mut()) {
                    grant.expires_at_ms = grant.expires_at_ms.max(now_ms + grant.ttl_ms);
                }
            }
        }
        // The lock this entry touched, and every 1024th entry all of them (locks whose lock-delay ran out
        // with nobody waiting): the table does not grow with every name ever used, and an entry costs
        // O(1) amortised, not a pass over every lock.
        if let Some(name) = touched {
            self.forget_if_unused(&name, now_ms);
        }
        if index.is_multiple_of(FORGET_SWEEP_EVERY) {
            self.forget_unused(now_ms);
        }
        events
    }

    /// Grants `name` to its first waiter if it is free and not in its lock-delay.
    fn grant_next(&mut self, index: u64, name: &str, now_ms: u64, events: &mut Vec<Event>) {
        // Waiters whose deadline has passed are told so instead of being granted.
        loop {
            let Some(lock) = self.locks.get_mut(name) else { return };
            if lock.holder.is_some() || lock.delayed_until_ms > now_ms {
                return;
            }
            let Some(waiter) = lock.waiters.pop_front() else { return };
            events.push(Event::Changed { name: name.to_string() });
            if waiter.deadline_ms <= now_ms {
                self.decide(waiter.id, Outcome::TimedOut, events);
                continue;
            }
            let grant = self.grant(index, name, waiter.id.clone(), waiter.ttl_ms, waiter.label, now_ms);
            self.decide(waiter.id, Outcome::Granted(grant), events);
            return;
        }
    }

    fn grant(&mut self, index: u64, name: &str, holder: RequestId, ttl_ms: u64, label: String, now_ms: u64) -> Grant {
        let previous_note = self.notes.get(name).cloned();
        let lock = self.locks.get_mut(name).expect("the lock exists");
        assert!(lock.holder.is_none(), "lock {name:?} granted while held");
        // The fencing token is the index of this entry: strictly above every earlier grant, of this lock
        // and of any other, whichever leader proposed it.
        assert!(index > lock.last_token && index > self.last_token, "fencing token {index} does not increase");
        lock.last_token = index;
        self.last_token = index;
        let grant = Grant {
            name: name.to_string(),
            token: index,
            holder,
            ttl_ms,
            expires_at_ms: now_ms + ttl_ms,
            label,
            previous_note,
        };
        lock.holder = Some(grant.clone());
        grant
    }

    fn leave_note(&mut self, name: &str, note: String) {
        if self.notes.insert(name.to_string(), note).is_none() {
            self.note_order.push_back(name.to_string());
        }
        while self.note_order.len() > NOTES_MAX {
            if let Some(oldest) = self.note_order.pop_front() {
                self.notes.remove(&oldest);
            }
        }
    }

    fn decide(&mut self, id: RequestId, outcome: Outcome, events: &mut Vec<Event>) {
        self.decided.insert(id.clone(), outcome.clone());
        self.order.push_back(id.clone());
        while self.order.len() > REMEMBERED_REQUESTS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.decided.remove(&oldest);
            }
        }
        events.push(Event::Decided { id, outcome });
    }

    fn forget_if_unused(&mut self, name: &str, now_ms: u64) {
        if self.locks.get(name).is_some_and(|lock| Self::unused(lock, now_ms)) {
            self.locks.remove(name);
        }
    }

    fn unused(lock: &Lock, now_ms: u64) -> bool {
        lock.holder.is_none() && lock.waiters.is_empty() && lock.delayed_until_ms <= now_ms
    }

    /// Drops locks that are neither held, awaited nor in a lock-delay, so the table does not grow with every
    /// name ever used. Their last token need not be kept: tokens are log indexes and only grow.
    fn forget_unused(&mut self, now_ms: u64) {
        self.locks.retain(|_, lock| !Self::unused(lock, now_ms));
    }
}

/// Serializes a map as a list of pairs, for formats (JSON) whose map keys must be strings.
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, K: Serialize, V: Serialize>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?.into_iter().collect())
    }
}
