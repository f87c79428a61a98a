//! What the rest of the node reads from a group's state machine and waits on, shared with the gRPC
//! services and the leader's timer loop: the [`Applied`] state, the machine's observer (for the lock group:
//! the callers waiting for their requests' outcomes and the watchers of lock changes), and the broadcast
//! of the applied index.
//!
//! Only the state machine (`machine.rs`) changes the state and publishes; everyone else reads and
//! subscribes.

use std::sync::{Arc, Mutex};

use openraft::StoredMembership;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{LogId, Machine, Member, NodeId};

/// The replicated state: the machine's state, the last applied log id and the group's membership (which
/// holds the sites and endpoints of its members).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Applied<M: Machine> {
    /// The machine's state.
    pub state: M,
    /// The last log entry applied to `state`.
    pub last_applied: Option<LogId>,
    /// The membership as of the last membership entry applied.
    pub membership: StoredMembership<NodeId, Member>,
}

impl<M: Machine> Applied<M> {
    /// The index of the last entry applied (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.last_applied.map_or(0, |id| id.index)
    }
}

/// What the rest of the node reads from the state machine and waits on.
pub struct Shared<M: Machine> {
    applied: Mutex<Applied<M>>,
    observer: M::Observer,
    /// The last applied index: the leader's timer loop wakes up on every change.
    applied_index: watch::Sender<u64>,
}

impl<M: Machine> Shared<M> {
    pub(super) fn new(applied: Applied<M>) -> Arc<Self> {
        let index = applied.applied_index();
        Arc::new(Shared {
            applied: Mutex::new(applied),
            observer: M::Observer::default(),
            applied_index: watch::channel(index).0,
        })
    }

    /// Reads the applied state (without holding the lock across an await).
    pub fn read<T>(&self, reader: impl FnOnce(&Applied<M>) -> T) -> T {
        reader(&self.applied.lock().expect("state machine lock poisoned"))
    }

    /// Changes the applied state. Publishing what changed is the caller's next step, outside this lock
    /// ([`Shared::publish`], [`Shared::announce_applied`]).
    pub(super) fn update<T>(&self, writer: impl FnOnce(&mut Applied<M>) -> T) -> T {
        writer(&mut self.applied.lock().expect("state machine lock poisoned"))
    }

    /// This node's observer of the events applied here.
    pub fn observer(&self) -> &M::Observer {
        &self.observer
    }

    /// The last applied log index, as it moves.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    /// Tells the observer what applied entries did.
    pub(super) fn publish(&self, events: &[M::Event]) {
        M::observe(&self.observer, events);
    }

    /// Tells the leader's timer loop (and anyone else subscribed) the last applied index.
    pub(super) fn announce_applied(&self, index: u64) {
        self.applied_index.send_replace(index);
    }
}
