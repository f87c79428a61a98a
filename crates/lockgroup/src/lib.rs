//! geostore's global lock group: the [`geostore_locks::LockTable`] replicated by a Raft group that spans
//! the sites. The Raft machinery (openraft, its log and snapshots in geostore's storage, the transport
//! and the members' `Raft` service) is `geostore-raft`'s; this crate holds what is the lock table's: the
//! state machine and what clients propose to it ([`machine`]), the leader's lease timers and the group's
//! metrics ([`group`], [`metrics`]), and the public `Lock` gRPC service ([`service`]).

#![warn(missing_docs)]

pub mod group;
pub mod machine;
pub mod metrics;
pub mod service;

pub use geostore_raft::{GroupConfig, LeaseClock, Member, MemberConfig, NodeId, ProposeError, Timing};
pub use group::{LockGroup, LockGroupConfig};
pub use machine::{LockObserver, LockState, Proposal};
