//! geostore's chaos simulation harness: the real node code (store, replication, lock group, fencing)
//! for three sites on turmoil's simulated network and clock, driven by one seed that decides the
//! topology, the workload and the faults, and checked against the invariants in [`check`].

pub mod check;
pub mod env;
pub mod history;
pub mod lockcheck;
pub mod plan;
pub mod workload;
pub mod world;

/// The commit this binary was built from (for replay instructions).
pub const COMMIT: &str = env!("GEOSTORE_COMMIT");
