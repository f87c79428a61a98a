//! The members' internal `Raft` gRPC service: Raft messages and proposals forwarded to the leader, for
//! every group this node belongs to, each message routed by the group it names.

use std::collections::BTreeMap;
use std::sync::Arc;

use geostore_proto::outcome::{Reason, failed};
use geostore_proto::v1 as pb;
use tonic::{Code, Request, Response, Status};

use crate::{Machine, RaftGroup};

/// The group a message names when its `group` is empty: version 0.1 had only the lock group.
pub const DEFAULT_GROUP: &str = "locks";

/// One group as the `Raft` service reaches it: messages in and out as the bytes of [`crate::codec`].
/// Implemented for every [`RaftGroup`], so the service can hold groups of different machines.
#[tonic::async_trait]
pub trait ServedGroup: Send + Sync + 'static {
    /// The group's name ([`Machine::GROUP`]).
    fn name(&self) -> &'static str;
    /// Answers an AppendEntries.
    async fn append_entries(&self, payload: &[u8]) -> Result<Vec<u8>, Status>;
    /// Answers a Vote.
    async fn vote(&self, payload: &[u8]) -> Result<Vec<u8>, Status>;
    /// Answers an InstallSnapshot.
    async fn install_snapshot(&self, payload: &[u8]) -> Result<Vec<u8>, Status>;
    /// Proposes a forwarded proposal here (see [`RaftGroup::propose_here`]).
    async fn propose(&self, payload: &[u8]) -> Result<Vec<u8>, Status>;
    /// The group as this member sees it.
    fn status(&self) -> pb::LockGroupStatus;
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    crate::codec::decode(payload)
        .map_err(|e| failed(Code::InvalidArgument, Reason::invalid("payload"), format!("bad Raft message: {e}")))
}

#[tonic::async_trait]
impl<M: Machine> ServedGroup for RaftGroup<M> {
    fn name(&self) -> &'static str {
        M::GROUP
    }

    async fn append_entries(&self, payload: &[u8]) -> Result<Vec<u8>, Status> {
        let request = decode(payload)?;
        Ok(crate::codec::encode(&self.raft().append_entries(request).await))
    }

    async fn vote(&self, payload: &[u8]) -> Result<Vec<u8>, Status> {
        let request = decode(payload)?;
        Ok(crate::codec::encode(&self.raft().vote(request).await))
    }

    async fn install_snapshot(&self, payload: &[u8]) -> Result<Vec<u8>, Status> {
        let request = decode(payload)?;
        Ok(crate::codec::encode(&self.raft().install_snapshot(request).await))
    }

    async fn propose(&self, payload: &[u8]) -> Result<Vec<u8>, Status> {
        let proposal: M::Proposal = decode(payload)?;
        Ok(crate::codec::encode(&self.propose_here(proposal).await))
    }

    fn status(&self) -> pb::LockGroupStatus {
        RaftGroup::status(self)
    }
}

/// The `Raft` service over the groups this node belongs to.
#[derive(Default, Clone)]
pub struct RaftService {
    groups: BTreeMap<&'static str, Arc<dyn ServedGroup>>,
}

impl RaftService {
    /// The service over no group yet.
    pub fn new() -> Self {
        RaftService::default()
    }

    /// Also serves `group`.
    pub fn serving(mut self, group: Arc<dyn ServedGroup>) -> Self {
        self.groups.insert(group.name(), group);
        self
    }

    fn group(&self, name: &str) -> Result<&Arc<dyn ServedGroup>, Status> {
        let name = if name.is_empty() { DEFAULT_GROUP } else { name };
        self.groups.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.groups.keys().copied().collect();
            failed(
                Code::InvalidArgument,
                Reason::invalid("group"),
                format!("this node is not a member of group {name:?} (its groups: {})", known.join(", ")),
            )
        })
    }
}

fn reply(payload: Vec<u8>) -> Response<pb::RaftMessage> {
    Response::new(pb::RaftMessage { payload, group: String::new() })
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        let message = request.into_inner();
        self.group(&message.group)?.append_entries(&message.payload).await.map(reply)
    }

    async fn vote(&self, request: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        let message = request.into_inner();
        self.group(&message.group)?.vote(&message.payload).await.map(reply)
    }

    async fn install_snapshot(&self, request: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        let message = request.into_inner();
        self.group(&message.group)?.install_snapshot(&message.payload).await.map(reply)
    }

    async fn propose(&self, request: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        let message = request.into_inner();
        self.group(&message.group)?.propose(&message.payload).await.map(reply)
    }

    async fn group_status(
        &self,
        request: Request<pb::GroupStatusRequest>,
    ) -> Result<Response<pb::LockGroupStatus>, Status> {
        Ok(Response::new(self.group(&request.into_inner().group)?.status()))
    }
}
