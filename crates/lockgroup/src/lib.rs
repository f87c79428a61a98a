//! geostore's global lock group: the [`geostore_locks::LockTable`] replicated by a Raft group (openraft)
//! that spans the sites, with its log and snapshots in geostore's storage ([`store`]), its transport over
//! gRPC ([`network`]), the async runtime openraft runs on ([`runtime`]), the code that proposes and times
//! leases ([`group`]) and the gRPC services ([`service`]): the public `Lock` service and the members'
//! internal `Raft` service.

#![warn(missing_docs)]

pub mod codec;
pub mod group;
pub mod metrics;
pub mod network;
pub mod runtime;
pub mod service;
pub mod store;
pub mod types;

pub use group::{GroupConfig, LeaseClock, LockGroup, MemberConfig, ProposeError, Timing};
pub use types::{Member, NodeId, Proposal};
