//! The state machine openraft drives: applies committed entries to the [`MachineState`] held in
//! [`Shared`], builds and installs snapshots, and stores the latest snapshot under `snapshot`.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;

use geostore_storage::{Batch, Durability, Space, Storage};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, RaftSnapshotBuilder, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use super::shared::{MachineState, Shared};
use super::{SNAPSHOT_KEY, get_record, read_error, write_error};
use crate::codec::{decode, encode};
use crate::types::{Entry, LogId, Member, NodeId, Response, StorageError, TypeConfig};

/// The state machine openraft drives.
pub struct StateMachine {
    storage: Arc<dyn Storage>,
    shared: Arc<Shared>,
    lock_delay_ms: u64,
}

/// A snapshot as stored: its metadata and the serialized [`MachineState`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

impl StateMachine {
    /// Opens the state machine from the latest snapshot in `storage`, if any. `lock_delay_ms` is what this
    /// member proposes as lock-delay when it leads.
    pub fn open(storage: Arc<dyn Storage>, lock_delay_ms: u64) -> Result<Self, StorageError> {
        let mut state = match get_record::<StoredSnapshot>(storage.as_ref(), SNAPSHOT_KEY)? {
            Some(snapshot) => decode::<MachineState>(&snapshot.data)
                .map_err(|e| read_error(ErrorSubject::Snapshot(Some(snapshot.meta.signature())), e))?,
            None => MachineState::default(),
        };
        state.table.set_lock_delay_ms(lock_delay_ms);
        Ok(StateMachine { storage, shared: Shared::new(state), lock_delay_ms })
    }

    /// The applied state as the rest of the node reads and waits on it.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Writes `stored` as the latest snapshot, with fsync.
    fn store_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let mut batch = Batch::new();
        batch.put(Space::Raft, SNAPSHOT_KEY.to_vec(), encode(stored));
        self.storage
            .write(batch, Durability::Sync)
            .map_err(|e| write_error(ErrorSubject::Snapshot(Some(stored.meta.signature())), e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_log_id, last_membership) =
            self.shared.read(|state| (encode(state), state.last_applied, state.membership.clone()));
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        self.store_snapshot(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, Member>), StorageError> {
        Ok(self.shared.read(|state| (state.last_applied, state.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let last_index = self.shared.update(|state| {
            for entry in entries {
                let index = entry.log_id.index;
                state.last_applied = Some(entry.log_id);
                let events = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Vec::new()
                    }
                    EntryPayload::Normal(request) => state.table.apply(index, request.0),
                };
                responses.push(Response { index, events });
            }
            state.last_applied.map_or(0, |id| id.index)
        });
        // Outside the state lock: waking a waiter may run its task at once.
        self.shared.publish(responses.iter().flat_map(|response| &response.events));
        self.shared.announce_applied(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine { storage: self.storage.clone(), shared: self.shared.clone(), lock_delay_ms: self.lock_delay_ms }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut state: MachineState =
            decode(&data).map_err(|e| read_error(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        state.table.set_lock_delay_ms(self.lock_delay_ms);
        self.store_snapshot(&StoredSnapshot { meta: meta.clone(), data })?;
        let (names, last_index) = self.shared.update(|current| {
            let names: BTreeSet<String> = current.table.names().chain(state.table.names()).cloned().collect();
            *current = state;
            (names, current.last_applied.map_or(0, |id| id.index))
        });
        // Every lock may have changed, and requests decided inside the snapshot are lost to their waiters
        // here: they time out as unknown, and a retry with the same id gets the remembered outcome.
        for name in names {
            self.shared.announce_changed(name);
        }
        self.shared.announce_applied(last_index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(stored) = get_record::<StoredSnapshot>(self.storage.as_ref(), SNAPSHOT_KEY)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
