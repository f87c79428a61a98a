//! The types the Raft group replicates, and what the rest of geostore asks of it.

use std::io::Cursor;

use geostore_locks::{Command, Event, RequestId};
use serde::{Deserialize, Serialize};

/// A member of the lock group, as stored in the group's membership: the cluster's metadata (which node is
/// in which site, and where to reach it) lives here, replicated with the group.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    /// The member's site.
    pub site: String,
    /// Its gRPC endpoint, `http://HOST:PORT`.
    pub endpoint: String,
}

/// An entry's payload: a lock-table command, stamped with the leader's clock when it was proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub Command);

/// What applying an entry produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The log index of the entry (a grant's fencing token, for an acquire granted at once).
    pub index: u64,
    /// What the entry did: outcomes decided, locks changed.
    pub events: Vec<Event>,
}

openraft::declare_raft_types!(
    /// The lock group's openraft configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::runtime::Runtime,
);

/// The lock group's openraft instance.
pub type Raft = openraft::Raft<TypeConfig>;
/// A member's id.
pub type NodeId = u64;
/// A log position: term and index.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A failure of the group's log or state machine storage.
pub type StorageError = openraft::StorageError<NodeId>;

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
