//! What the rest of the node reads from the state machine and waits on, shared with the gRPC services
//! and the leader's timer loop: the [`MachineState`], the callers waiting for their requests' outcomes,
//! and the broadcasts of lock changes and of the applied index.
//!
//! Only the state machine (`machine.rs`) changes the state and publishes; everyone else reads and
//! subscribes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use geostore_locks::{Event, LockTable, Outcome, RequestId};
use openraft::StoredMembership;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot, watch};

use crate::types::{LogId, Member, NodeId};

/// The replicated state: the lock table, the last applied log id and the group's membership (which holds
/// the cluster's sites and nodes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineState {
    /// The locks, their holders and waiters.
    pub table: LockTable,
    /// The last log entry applied to `table`.
    pub last_applied: Option<LogId>,
    /// The membership as of the last membership entry applied.
    pub membership: StoredMembership<NodeId, Member>,
}

/// What the rest of the node reads from the state machine and waits on: shared with the gRPC services.
pub struct Shared {
    state: Mutex<MachineState>,
    /// Final outcomes of acquires and releases, for the callers waiting on them on this node.
    waiters: Mutex<HashMap<RequestId, oneshot::Sender<Outcome>>>,
    /// Names of locks whose state changed, as entries are applied here.
    changes: broadcast::Sender<String>,
    /// The last applied index: the leader's timer loop wakes up on every change.
    applied: watch::Sender<u64>,
}

/// Lock-name changes a slow watcher may fall behind by before it is told to start over.
const CHANGES_BUFFER: usize = 4096;

impl Shared {
    pub(super) fn new(state: MachineState) -> Arc<Self> {
        let applied = state.last_applied.map_or(0, |id| id.index);
        Arc::new(Shared {
            state: Mutex::new(state),
            waiters: Mutex::new(HashMap::new()),
            changes: broadcast::channel(CHANGES_BUFFER).0,
            applied: watch::channel(applied).0,
        })
    }

    /// Reads the state machine (without holding the lock across an await).
    pub fn read<T>(&self, reader: impl FnOnce(&MachineState) -> T) -> T {
        reader(&self.state.lock().expect("state machine lock poisoned"))
    }

    /// Changes the state machine. Publishing what changed is the caller's next step, outside this lock
    /// ([`Shared::publish`], [`Shared::announce_changed`], [`Shared::announce_applied`]).
    pub(super) fn update<T>(&self, writer: impl FnOnce(&mut MachineState) -> T) -> T {
        writer(&mut self.state.lock().expect("state machine lock poisoned"))
    }

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

    /// The last applied log index, as it moves.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// How many requests on this node wait for an outcome.
    pub fn waiting_requests(&self) -> usize {
        self.waiters.lock().expect("waiters lock poisoned").len()
    }

    /// Tells waiters and watchers what an applied entry did.
    pub(super) fn publish<'a>(&self, events: impl Iterator<Item = &'a Event>) {
        for event in events {
            match event {
                Event::Decided { id, outcome } if !matches!(outcome, Outcome::Queued { .. }) => {
                    let waiter = self.waiters.lock().expect("waiters lock poisoned").remove(id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(outcome.clone());
                    }
                }
                Event::Changed { name } => self.announce_changed(name.clone()),
                _ => {}
            }
        }
    }

    /// Tells watchers that lock `name` may have changed.
    pub(super) fn announce_changed(&self, name: String) {
        // No watcher subscribed is not an error.
        let _ = self.changes.send(name);
    }

    /// Tells the leader's timer loop (and anyone else subscribed) the last applied index.
    pub(super) fn announce_applied(&self, index: u64) {
        self.applied.send_replace(index);
    }
}
