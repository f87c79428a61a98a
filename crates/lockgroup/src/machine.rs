//! The lock table as the state machine of the cross-site lock group ([`LockState`]), what clients propose
//! to it ([`Proposal`]), and what this node does with what it applies ([`LockObserver`]: the callers
//! waiting for their requests' outcomes and the watchers of lock changes).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use geostore_locks::{Command, Event, LockTable, Outcome, RequestId};
use geostore_raft::Machine;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

/// The name of the lock group in messages between members (the `Raft` service's default group).
pub const GROUP: &str = geostore_raft::service::DEFAULT_GROUP;

/// The replicated lock table. (Stored and sent exactly as version 0.1's state machine: a struct of one
/// field encodes as that field.)
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LockState {
    /// The locks, their holders and waiters.
    pub table: LockTable,
}

impl Machine for LockState {
    const GROUP: &'static str = GROUP;
    // Empty: the lock group's keys stay where version 0.1 wrote them.
    const KEY_PREFIX: &'static [u8] = b"";
    type Proposal = Proposal;
    type Command = Command;
    type Event = Event;
    /// This member's lock-delay (what it applies when it leads), in ms.
    type Local = u64;
    type Observer = LockObserver;

    fn command(proposal: Proposal, now_ms: u64) -> Command {
        proposal.at(now_ms)
    }

    fn apply(&mut self, index: u64, command: Command) -> Vec<Event> {
        self.table.apply(index, command)
    }

    fn localize(&mut self, lock_delay_ms: &u64) {
        self.table.set_lock_delay_ms(*lock_delay_ms);
    }

    fn replaced_by(&self, next: &Self) -> Vec<Event> {
        // Every lock of either table may have changed.
        let names: BTreeSet<&String> = self.table.names().chain(next.table.names()).collect();
        names.into_iter().map(|name| Event::Changed { name: name.clone() }).collect()
    }

    fn observe(observer: &LockObserver, events: &[Event]) {
        observer.publish(events);
    }
}

/// What this node does with the entries it applies: wakes the callers waiting on this node for their
/// requests' outcomes, and tells watchers which locks changed.
pub struct LockObserver {
    /// Final outcomes of acquires and releases, for the callers waiting on them on this node.
    waiters: Mutex<HashMap<RequestId, oneshot::Sender<Outcome>>>,
    /// Names of locks whose state changed, as entries are applied here.
    changes: broadcast::Sender<String>,
}

/// Lock-name changes a slow watcher may fall behind by before it is told to start over.
const CHANGES_BUFFER: usize = 4096;

impl Default for LockObserver {
    fn default() -> Self {
        LockObserver { waiters: Mutex::new(HashMap::new()), changes: broadcast::channel(CHANGES_BUFFER).0 }
    }
}

impl LockObserver {
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

    /// The names of locks as entries change them (a receiver that lags may miss some: re-read then).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// How many requests on this node wait for an outcome.
    pub fn waiting_requests(&self) -> usize {
        self.waiters.lock().expect("waiters lock poisoned").len()
    }

    /// Tells waiters and watchers what applied entries did.
    fn publish(&self, events: &[Event]) {
        for event in events {
            match event {
                Event::Decided { id, outcome } if !matches!(outcome, Outcome::Queued { .. }) => {
                    let waiter = self.waiters.lock().expect("waiters lock poisoned").remove(id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(outcome.clone());
                    }
                }
                // No watcher subscribed is not an error.
                Event::Changed { name } => {
                    let _ = self.changes.send(name.clone());
                }
                _ => {}
            }
        }
    }
}

/// What a client asks of the lock group, without a clock: the leader turns it into a [`Command`] with its
/// own time, so waits and leases are measured by one clock whichever node took the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    /// Take lock `name` (see the `Lock.Acquire` RPC).
    Acquire {
        /// The request's id, applied at most once.
        id: RequestId,
        /// The lock.
        name: String,
        /// The lease length.
        ttl_ms: u64,
        /// `None`: fail at once if held; otherwise wait this long in line.
        wait_ms: Option<u64>,
        /// Free text kept with the grant.
        label: String,
    },
    /// Release lock `name` held under `token`.
    Release {
        /// The request's id, applied at most once.
        id: RequestId,
        /// The lock.
        name: String,
        /// The holder's token.
        token: u64,
        /// Left for the next holder.
        note: Option<String>,
    },
    /// Extend the lease of `name` held under `token`.
    KeepAlive {
        /// The lock.
        name: String,
        /// The holder's token.
        token: u64,
    },
}

impl Proposal {
    /// The command for this proposal at the leader's time `now_ms`.
    pub fn at(self, now_ms: u64) -> Command {
        match self {
            Proposal::Acquire { id, name, ttl_ms, wait_ms, label } => {
                let wait = match wait_ms {
                    None => geostore_locks::Wait::Try,
                    Some(wait_ms) => geostore_locks::Wait::Until(now_ms.saturating_add(wait_ms)),
                };
                Command::Acquire { id, name, ttl_ms, wait, label, now_ms }
            }
            Proposal::Release { id, name, token, note } => Command::Release { id, name, token, note, now_ms },
            Proposal::KeepAlive { name, token } => Command::KeepAlive { name, token, now_ms },
        }
    }
}
