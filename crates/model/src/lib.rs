//! geostore's value model: what a key holds, how writes change it and how replicas merge.
//!
//! This crate does no I/O, reads no clock and draws no random numbers: time comes in through
//! [`clock::WallClock`], and every function is a plain function of its inputs. Storage, networking and
//! the lock group live elsewhere and depend on this crate, never the other way round.

#![warn(missing_docs)]

pub mod clock;
pub mod encoding;
pub mod entry;
pub mod fence;
pub mod limits;
pub mod marker;
pub mod partition;
pub mod planted;

pub use clock::{ClockError, Hlc, HybridClock, ManualWallClock, OffsetWallClock, SystemWallClock, WallClock};
pub use encoding::{decode_entry, encode_entry};
pub use entry::{Absence, Applied, Entry, Kind, Op, OpError, Read, Value};
pub use fence::{Fence, fence_key};
pub use limits::{InvalidRequest, Limits};
pub use marker::{Marker, ReplicaId};
pub use partition::{DEFAULT_PARTITIONS, PartitionId, partition_of};
