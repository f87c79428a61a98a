//! geostore's Raft machinery: one openraft group on a node, with its log and snapshots in geostore's
//! storage ([`store`]), its transport over gRPC ([`network`]), the async runtime openraft runs on
//! ([`runtime`]), proposing with forwarding to the leader ([`group`]) and the members' internal `Raft`
//! gRPC service ([`service`]), which serves every group a node belongs to.
//!
//! The machinery is generic over the state machine it replicates ([`Machine`]): the cross-site lock
//! group replicates the lock table (`geostore-lockgroup`), and each site's placement group replicates
//! that site's placement map. Each machine gets its own openraft type configuration
//! ([`TypeConfig<M>`]), its own key prefix in the `raft` key space and its own name in the messages
//! members send each other, so one node can belong to several groups at once.

#![warn(missing_docs)]

pub mod codec;
pub mod group;
pub mod network;
pub mod runtime;
pub mod service;
pub mod store;
pub mod testing;

use std::fmt::Debug;
use std::io::Cursor;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use group::{GroupConfig, LeaseClock, MemberConfig, ProposeError, ProposeHereError, RaftGroup, Timing};

/// A state machine a Raft group replicates: a deterministic function from the committed log to a state.
///
/// Proposals carry no clock: the leader turns each into a [`Machine::Command`] with its own time
/// ([`Machine::command`]), so every member applies the same command and time-dependent decisions (lease
/// expiries, failure detection) are measured by one clock whichever node took the request.
pub trait Machine: Default + Debug + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The group's name: in the messages members send each other (one `Raft` service serves every
    /// group of a node), in logs, and as openraft's cluster name.
    const GROUP: &'static str;
    /// The prefix of the group's keys in the `raft` key space (see [`store`]).
    const KEY_PREFIX: &'static [u8];

    /// What a client asks of the group, without a clock.
    type Proposal: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// A log entry's payload: a proposal stamped with the leader's time.
    type Command: Clone + Debug + PartialEq + Eq + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What applying an entry did, for the proposer and for this node's [`Machine::Observer`].
    type Event: Clone + Debug + PartialEq + Eq + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// This node's own settings that the state is given after every load from a snapshot (they are not
    /// replicated).
    type Local: Clone + Send + Sync + 'static;
    /// What this node does with the events it applies (wake the callers waiting on them, tell watchers):
    /// node-local, never replicated.
    type Observer: Default + Send + Sync + 'static;

    /// The command for `proposal` at the leader's time `now_ms`.
    fn command(proposal: Self::Proposal, now_ms: u64) -> Self::Command;
    /// Applies the committed `command` at log `index`.
    fn apply(&mut self, index: u64, command: Self::Command) -> Vec<Self::Event>;
    /// Gives a state just read from a snapshot this node's settings.
    fn localize(&mut self, local: &Self::Local);
    /// The events that replacing this state with `next` (a snapshot installed from the leader) implies
    /// for this node's observer.
    fn replaced_by(&self, next: &Self) -> Vec<Self::Event>;
    /// Tells `observer` what applied entries did. Called outside the state's lock, in log order.
    fn observe(observer: &Self::Observer, events: &[Self::Event]);
}

/// A member of a group, as stored in the group's membership: which site it is in and where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    /// The member's site.
    pub site: String,
    /// Its gRPC endpoint, `http://HOST:PORT`.
    pub endpoint: String,
}

/// A member's id (unique in the cluster, not 0).
pub type NodeId = u64;

/// What applying an entry produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response<E> {
    /// The log index of the entry (a grant's fencing token, for a lock acquire granted at once).
    pub index: u64,
    /// What the entry did.
    pub events: Vec<E>,
}

/// The openraft type configuration of the group that replicates `M`: commands of `M` in the log,
/// [`Member`]s in the membership, snapshots as bytes, and geostore's [`runtime::Runtime`].
pub struct TypeConfig<M>(PhantomData<fn() -> M>);

// openraft asks a type configuration to be a plain value (copyable, comparable, printable); it carries no
// data, so these hold for every `M` (derives would demand them of `M` too).
impl<M> Clone for TypeConfig<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for TypeConfig<M> {}
impl<M> Default for TypeConfig<M> {
    fn default() -> Self {
        TypeConfig(PhantomData)
    }
}
impl<M> PartialEq for TypeConfig<M> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<M> Eq for TypeConfig<M> {}
impl<M> PartialOrd for TypeConfig<M> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for TypeConfig<M> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}
impl<M> Debug for TypeConfig<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypeConfig")
    }
}

impl<M: Machine> openraft::RaftTypeConfig for TypeConfig<M> {
    type D = M::Command;
    type R = Response<M::Event>;
    type NodeId = NodeId;
    type Node = Member;
    type Entry = openraft::Entry<Self>;
    type SnapshotData = Cursor<Vec<u8>>;
    type AsyncRuntime = runtime::Runtime;
    type Responder = openraft::impls::OneshotResponder<Self>;
}

/// The openraft instance of the group that replicates `M`.
pub type Raft<M> = openraft::Raft<TypeConfig<M>>;
/// A log position: term and index.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry of the group that replicates `M`.
pub type Entry<M> = openraft::Entry<TypeConfig<M>>;
/// A failure of a group's log or state machine storage.
pub type StorageError = openraft::StorageError<NodeId>;
