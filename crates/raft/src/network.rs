//! The Raft transport: openraft's messages (encoded by [`crate::codec`]) inside the `geostore.v1.Raft` gRPC
//! service, named by their group ([`crate::Machine::GROUP`]), over one lazily connected HTTP/2 channel per
//! member.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use geostore_proto::net::Dialer;
use geostore_proto::v1 as pb;
use geostore_proto::v1::raft_client::RaftClient;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::{Machine, Member, NodeId, TypeConfig};

/// How long to wait for a TCP connection to another member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a member may stay unreachable before this node warns about it. Members that are starting,
/// restarting or electing are unreachable for a moment; openraft's own per-message warnings about them are
/// filtered out of a node's default log, and this one warning (and a note when it is back) replaces them.
const UNREACHABLE_WARN_AFTER: Duration = Duration::from_secs(10);

/// A channel to `endpoint` that connects on first use and reconnects after failures.
pub fn lazy_channel(dialer: &Dialer, endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(endpoint.to_string())?
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(dialer.connect_lazy(endpoint, CONNECT_TIMEOUT))
}

/// Makes a [`MemberClient`] per member, for one group.
#[derive(Clone, Default)]
pub struct Network {
    /// The group whose messages this network carries.
    pub group: &'static str,
    /// Where this node reaches a member, if not at the endpoint in the membership: each node's own
    /// configuration says how it reaches the others (through a proxy, a NAT, another network).
    pub routes: Arc<HashMap<NodeId, String>>,
    /// How connections are opened (TCP, or the simulation's network).
    pub dialer: Dialer,
}

impl Network {
    /// The endpoint this node uses to reach `member`.
    pub fn route(&self, id: NodeId, member: &Member) -> String {
        self.routes.get(&id).cloned().unwrap_or_else(|| member.endpoint.clone())
    }
}

impl<M: Machine> RaftNetworkFactory<TypeConfig<M>> for Network {
    type Network = MemberClient;

    async fn new_client(&mut self, target: NodeId, member: &Member) -> MemberClient {
        let endpoint = self.route(target, member);
        let channel = lazy_channel(&self.dialer, &endpoint).ok();
        MemberClient {
            group: self.group,
            target,
            member: Member { site: member.site.clone(), endpoint },
            channel,
            unreachable_since: None,
            warned: false,
        }
    }
}

/// The Raft RPCs of one group to one member.
pub struct MemberClient {
    group: &'static str,
    target: NodeId,
    member: Member,
    /// `None` if the member's endpoint is not a valid URI: every call then fails as unreachable.
    channel: Option<Channel>,
    /// Since when every call to the member has failed to reach it (tokio's clock: the simulation's).
    unreachable_since: Option<tokio::time::Instant>,
    /// Whether this unreachable spell has been warned about.
    warned: bool,
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

impl MemberClient {
    /// Notes whether the last call reached the member, and warns once it has been unreachable for
    /// [`UNREACHABLE_WARN_AFTER`].
    fn note_reachable(&mut self, reached: bool, error: impl std::fmt::Display) {
        if reached {
            if self.warned {
                tracing::info!(group = self.group, member = self.target, site = %self.member.site, "member reachable again");
            }
            self.unreachable_since = None;
            self.warned = false;
            return;
        }
        let since = *self.unreachable_since.get_or_insert_with(tokio::time::Instant::now);
        if !self.warned && since.elapsed() >= UNREACHABLE_WARN_AFTER {
            self.warned = true;
            tracing::warn!(
                group = self.group,
                member = self.target,
                site = %self.member.site,
                endpoint = %self.member.endpoint,
                %error,
                "{} group member unreachable for {}s",
                self.group,
                since.elapsed().as_secs()
            );
        }
    }

    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(channel) = self.channel.clone() else {
            let error = std::io::Error::other(format!("bad endpoint {:?}", self.member.endpoint));
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        };
        let payload = crate::codec::encode(request);
        let mut request = tonic::Request::new(pb::RaftMessage { payload, group: self.group.to_string() });
        request.set_timeout(option.hard_ttl());
        let mut client = RaftClient::new(channel).max_decoding_message_size(usize::MAX);
        let reply = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        };
        // For the warning, a call that timed out did not reach the member either (a partition that
        // stalls the link rather than closing it).
        let unreachable = matches!(&reply, Err(status) if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ));
        self.note_reachable(!unreachable, reply.as_ref().err().map(|status| status.message()).unwrap_or_default());
        let reply = reply.map_err(|status| match status.code() {
            // Not connected, or the member is down: openraft backs off before trying again.
            tonic::Code::Unavailable | tonic::Code::Cancelled => RPCError::Unreachable(Unreachable::new(&status)),
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            crate::codec::decode(&reply.into_inner().payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result
            .map_err(|error| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.member.clone(), error)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl<M: Machine> RaftNetwork<TypeConfig<M>> for MemberClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig<M>>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        self.call(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig<M>>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcError> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
