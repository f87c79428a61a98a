//! Identity and order of writes: which replica made a write ([`ReplicaId`]) and where it stands in the
//! order that decides which of two writes wins ([`Marker`]).

use serde::{Deserialize, Serialize};

use crate::clock::Hlc;

/// Identifies one replica (one node's copy of the data) for the life of its data directory. Chosen at
/// random when the directory is created, so two replicas never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct ReplicaId(pub u64);

/// The position of one write in the total order that registers, deletes and expiries use.
///
/// Field order is the order: the fence token first, so that a write made under a newer lock grant beats
/// any write under an older one whatever the clocks say; then the HLC timestamp; then the replica, which
/// breaks ties between replicas. A replica never issues the same HLC timestamp twice, so no two writes
/// anywhere share a marker, which `crdts::LWWReg` requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Marker {
    /// Fencing token the write was made under; 0 for an unfenced write.
    pub fence: u64,
    /// The write's timestamp from its replica's hybrid logical clock.
    pub hlc: Hlc,
    /// The replica that made the write.
    pub replica: ReplicaId,
}

impl Marker {
    /// The marker of a write under fencing token `fence` (0 for none), stamped `hlc` by `replica`.
    pub fn new(fence: u64, hlc: Hlc, replica: ReplicaId) -> Self {
        Self { fence, hlc, replica }
    }
}
