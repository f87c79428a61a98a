//! The state machine openraft drives: applies committed entries to the [`Applied`] state held in
//! [`Shared`], builds and installs snapshots, and stores the latest snapshot under `snapshot`.

use std::io::Cursor;
use std::sync::Arc;

use geostore_storage::{Batch, Durability, Space, Storage};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, RaftSnapshotBuilder, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use super::shared::{Applied, Shared};
use super::{SNAPSHOT_KEY, get_record, key, read_error, write_error};
use crate::codec::{decode, encode};
use crate::{Entry, LogId, Machine, Member, NodeId, Response, StorageError, TypeConfig};

/// The state machine openraft drives for the group that replicates `M`.
pub struct StateMachine<M: Machine> {
    storage: Arc<dyn Storage>,
    shared: Arc<Shared<M>>,
    local: M::Local,
}

/// A snapshot as stored: its metadata and the serialized [`Applied`] state.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

impl<M: Machine> StateMachine<M> {
    /// Opens the state machine from the latest snapshot in `storage`, if any, giving the state this
    /// node's `local` settings.
    pub fn open(storage: Arc<dyn Storage>, local: M::Local) -> Result<Self, StorageError> {
        let mut applied = match get_record::<StoredSnapshot>(storage.as_ref(), &key::<M>(SNAPSHOT_KEY))? {
            Some(snapshot) => decode::<Applied<M>>(&snapshot.data)
                .map_err(|e| read_error(ErrorSubject::Snapshot(Some(snapshot.meta.signature())), e))?,
            None => Applied::default(),
        };
        applied.state.localize(&local);
        Ok(StateMachine { storage, shared: Shared::new(applied), local })
    }

    /// The applied state as the rest of the node reads and waits on it.
    pub fn shared(&self) -> Arc<Shared<M>> {
        self.shared.clone()
    }

    /// Writes `stored` as the latest snapshot, with fsync.
    fn store_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let mut batch = Batch::new();
        batch.put(Space::Raft, key::<M>(SNAPSHOT_KEY), encode(stored));
        self.storage
            .write(batch, Durability::Sync)
            .map_err(|e| write_error(ErrorSubject::Snapshot(Some(stored.meta.signature())), e))
    }
}

impl<M: Machine> RaftSnapshotBuilder<TypeConfig<M>> for StateMachine<M> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig<M>>, StorageError> {
        let (data, last_log_id, last_membership) =
            self.shared.read(|applied| (encode(applied), applied.last_applied, applied.membership.clone()));
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        self.store_snapshot(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl<M: Machine> RaftStateMachine<TypeConfig<M>> for StateMachine<M> {
    type SnapshotBuilder = StateMachine<M>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, Member>), StorageError> {
        Ok(self.shared.read(|applied| (applied.last_applied, applied.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response<M::Event>>, StorageError>
    where
        I: IntoIterator<Item = Entry<M>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let last_index = self.shared.update(|applied| {
            for entry in entries {
                let index = entry.log_id.index;
                applied.last_applied = Some(entry.log_id);
                let events = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Vec::new()
                    }
                    EntryPayload::Normal(command) => applied.state.apply(index, command),
                };
                responses.push(Response { index, events });
            }
            applied.applied_index()
        });
        // Outside the state lock: waking a waiter may run its task at once.
        for response in &responses {
            self.shared.publish(&response.events);
        }
        self.shared.announce_applied(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine { storage: self.storage.clone(), shared: self.shared.clone(), local: self.local.clone() }
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
        let mut applied: Applied<M> =
            decode(&data).map_err(|e| read_error(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        applied.state.localize(&self.local);
        self.store_snapshot(&StoredSnapshot { meta: meta.clone(), data })?;
        let (events, last_index) = self.shared.update(|current| {
            let events = current.state.replaced_by(&applied.state);
            *current = applied;
            (events, current.applied_index())
        });
        // What the machine says the replacement changed (for the lock group: every lock in either state;
        // requests decided inside the snapshot are lost to their waiters here: they time out as unknown,
        // and a retry with the same id gets the remembered outcome).
        self.shared.publish(&events);
        self.shared.announce_applied(last_index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig<M>>>, StorageError> {
        let Some(stored) = get_record::<StoredSnapshot>(self.storage.as_ref(), &key::<M>(SNAPSHOT_KEY))? else {
            return Ok(None);
        };
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
