//! The types the Raft group replicates, and what the rest of geostore asks of it.

use std::io::Cursor;

use geostore_locks::{Command, Event, RequestId};
use serde::{Deserialize, Serialize};

/// A member of the lock group, as stored in the group's membership: the cluster's metadata (which node is
/// in which site, and where to reach it) lives here, replicated with the group.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
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
    pub index: u64,
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

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// What a client asks of the lock group, without a clock: the leader turns it into a [`Command`] with its
/// own time, so waits and leases are measured by one clock whichever node took the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    Acquire {
        id: RequestId,
        name: String,
        ttl_ms: u64,
        /// `None`: fail at once if held; otherwise wait this long in line.
        wait_ms: Option<u64>,
        label: String,
    },
    Release {
        id: RequestId,
        name: String,
        token: u64,
        note: Option<String>,
    },
    KeepAlive {
        name: String,
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
