//! Where the replicas and the primary of every partition live inside one site.
//!
//! Keys hash into `P` fixed partitions, and a site with `k` nodes keeps `N` replicas of each
//! partition (`N` = `replicas_per_site`) on `N` distinct nodes, one of which is the partition's
//! primary in the site. This crate computes that map: [`place`] builds one for a new site,
//! [`rebalance`] adapts an existing one to nodes joining and leaving while moving as little as
//! possible, [`SitePlacement::check`] verifies a map, and [`moves`] / [`primary_changes`] say what
//! changed between two maps. Each site is placed on its own; nothing here looks at other sites.
//!
//! The map is agreed on through Raft and every node recomputes it from the same input, so every
//! function here is a deterministic pure function of its arguments: it does no I/O, reads no clock,
//! draws no random numbers and never iterates a hash map. The order in which nodes are given does
//! not matter either, since they are sorted first.
//!
//! A placement returned by [`place`] or [`rebalance`] always satisfies these invariants, and
//! [`SitePlacement::check`] verifies all of them:
//!
//! 1. every partition has exactly `N` replicas, on distinct nodes of the site, listed in ascending
//!    node id order, and its primary is one of them;
//! 2. every node holds `floor(P*N/k)` or `ceil(P*N/k)` replicas and is the primary of `floor(P/k)`
//!    or `ceil(P/k)` partitions.
//!
//! [`rebalance`] also keeps movement small (see its documentation for the exact bounds): when a node
//! joins, the only replicas that move are the ones it receives; when a node leaves, its replicas
//! move, plus at most one extra move for each of them, and in practice almost never any. Primaries
//! change only where a replica moved or balance needs it, and never by moving data.

#![warn(missing_docs)]

mod solver;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A node of the site, as the cluster names it. Placement only compares and sorts ids, so any
/// stable numbering works.
pub type NodeId = u64;

/// Where one partition lives in the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReplicas {
    /// The node that serves as the partition's primary in the site; always one of `replicas`.
    pub primary: NodeId,
    /// The `N` distinct nodes holding a replica, the primary included, in ascending id order so that
    /// two equal placements are also equal as values.
    pub replicas: Vec<NodeId>,
}

/// The placement of every partition in one site, the value the Raft group agrees on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePlacement {
    /// How many replicas every partition has in the site (`N`); kept with the map so that a
    /// rebalance knows what to preserve.
    pub replicas_per_site: usize,
    /// One entry per partition, indexed by partition number.
    pub partitions: Vec<PartitionReplicas>,
}

/// One replica changing node between two placements, as listed by [`moves`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Move {
    /// The partition whose replica moves.
    pub partition: u16,
    /// The node that loses the replica; `None` when a replica is only added (the replica count or
    /// the partition count grew).
    pub from: Option<NodeId>,
    /// The node that gains the replica; `None` when a replica is only dropped.
    pub to: Option<NodeId>,
}

/// One partition changing primary between two placements, as listed by [`primary_changes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PrimaryChange {
    /// The partition whose primary changes.
    pub partition: u16,
    /// The previous primary; `None` when the partition is new.
    pub from: Option<NodeId>,
    /// The new primary; `None` when the partition is gone.
    pub to: Option<NodeId>,
}

/// Why a placement cannot be computed, or why a placement is not valid for a node set.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    /// A site needs at least one node to hold anything.
    #[error("the site has no nodes")]
    NoNodes,
    /// A partition with no replica in the site would not be stored there at all.
    #[error("replicas_per_site is 0, every partition needs at least one replica in the site")]
    ZeroReplicas,
    /// Replicas of one partition must be on distinct nodes, so `N` cannot exceed the node count.
    #[error("site has {nodes} nodes, replicas_per_site {replicas_per_site} needs at least {replicas_per_site}")]
    TooFewNodes {
        /// Nodes given.
        nodes: usize,
        /// Replicas asked for per partition.
        replicas_per_site: usize,
    },
    /// The key space must hash into at least one partition.
    #[error("the placement has no partitions")]
    ZeroPartitions,
    /// Partition numbers are `u16`, so a map cannot have more partitions than that.
    #[error("the placement has {partitions} partitions, at most {} are possible", u16::MAX)]
    TooManyPartitions {
        /// Partitions in the map.
        partitions: usize,
    },
    /// A node listed twice would be counted twice for balance.
    #[error("node {node} is listed twice")]
    DuplicateNode {
        /// The repeated id.
        node: NodeId,
    },
    /// A replica on a node outside the site cannot be served.
    #[error("partition {partition} has a replica on node {node}, which is not in the site")]
    UnknownNode {
        /// The partition concerned.
        partition: usize,
        /// The unknown node.
        node: NodeId,
    },
    /// Every partition must have exactly `replicas_per_site` replicas.
    #[error("partition {partition} has {found} replicas, expected {expected}")]
    WrongReplicaCount {
        /// The partition concerned.
        partition: usize,
        /// `replicas_per_site`.
        expected: usize,
        /// Replicas listed.
        found: usize,
    },
    /// Two replicas on one node are one replica, and the canonical form lists nodes in ascending
    /// order so that equal maps compare equal.
    #[error("partition {partition} lists its replicas out of ascending order or twice (node {node})")]
    NotCanonical {
        /// The partition concerned.
        partition: usize,
        /// The first node out of order or repeated.
        node: NodeId,
    },
    /// The primary serves the partition from its local replica, so it must hold one.
    #[error("partition {partition} has primary {primary}, which holds no replica of it")]
    PrimaryNotReplica {
        /// The partition concerned.
        partition: usize,
        /// The primary named.
        primary: NodeId,
    },
    /// A node with more replicas than the others would run out of space or bandwidth first.
    #[error("node {node} holds {replicas} replicas, balance needs {min} to {max}")]
    ReplicaImbalance {
        /// The node concerned.
        node: NodeId,
        /// Replicas it holds.
        replicas: usize,
        /// `floor(P*N/k)`.
        min: usize,
        /// `ceil(P*N/k)`.
        max: usize,
    },
    /// A node with more primaries than the others would take more of the write load.
    #[error("node {node} is primary of {primaries} partitions, balance needs {min} to {max}")]
    PrimaryImbalance {
        /// The node concerned.
        node: NodeId,
        /// Partitions it is primary of.
        primaries: usize,
        /// `floor(P/k)`.
        min: usize,
        /// `ceil(P/k)`.
        max: usize,
    },
    /// The solver reached a state its proofs rule out; reported instead of panicking so that a
    /// state machine applying the result can refuse it and stay up. Always a bug in this crate.
    #[error("internal placement error (a bug in geostore-placement): {what}")]
    Internal {
        /// What went wrong.
        what: &'static str,
    },
}

/// The replica count a site uses unless told otherwise: three copies survive two node losses, and a
/// smaller site cannot hold more than one replica per node.
pub fn default_replicas_per_site(nodes_in_site: usize) -> usize {
    nodes_in_site.min(3)
}

/// The placement for a new site: `partitions` partitions with `replicas_per_site` replicas each on
/// `nodes`, balanced for replicas and primaries.
///
/// Partitions are filled in order, each replica on the least loaded node (ties broken towards the
/// node sharing fewest partitions with the replicas already chosen, then the lowest id). Keeping
/// every pair of nodes sharing about as many partitions is what lets a later removal hand each
/// survivor its share of the leaving node's partitions without extra moves. Primaries are then
/// balanced among each partition's replicas. The order of `nodes` does not matter.
pub fn place(nodes: &[NodeId], partitions: u16, replicas_per_site: usize) -> Result<SitePlacement, PlacementError> {
    if partitions == 0 {
        return Err(PlacementError::ZeroPartitions);
    }
    let nodes = sorted_nodes(nodes, replicas_per_site)?;
    let count = usize::from(partitions);
    solver::solve(&nodes, replicas_per_site, vec![Vec::new(); count], vec![None; count])
}

/// The placement of `current`'s partitions on a new node set, keeping as much of `current` as
/// balance allows. The order of `nodes` does not matter, and `current` need not be balanced (it
/// must be well formed: `N` distinct replicas in ascending order per partition, primary among them).
///
/// Replicas on nodes that stay, stay, unless their node holds more than its share; a node's share is
/// `floor(P*N/k)` or `ceil(P*N/k)`, the larger shares going to the nodes holding most already. Nodes
/// above their share hand replicas directly to the least loaded nodes below theirs (preferring
/// replicas that are not the node's primaries), then the replicas of removed nodes go to the least
/// loaded nodes with room that lack the partition. When every node with room already has the
/// partition, replicas placed by this same call are placed again elsewhere if that makes room (their
/// data has to be copied anyway), and only if that fails does one replica already in place move. So:
///
/// - adding nodes to a balanced placement moves only the replicas the new nodes end up with (for one
///   node added to `k`, `floor` or `ceil` of `P*N/(k+1)`), and none between old nodes;
/// - removing nodes from a balanced placement moves their replicas, plus at most one extra replica per
///   replica of the removed nodes. That bound is proven (the solver module's `fill_by_swap` explains
///   why one swap always suffices); in practice extra moves are rare: over 14,000 random removals in the property tests,
///   42 needed any, 62 in total, at most 11 in one removal of 159 replicas.
///
/// Primaries whose node keeps the partition's replica stay unless their node has more than
/// `ceil(P/k)`; missing and surplus primaries, and primaries for nodes below `floor(P/k)`, are handed
/// to another replica of the same partition along the shortest chain that reaches a node with room,
/// so no data moves for a primary. Each primary to place and each one a node lacks or has too many
/// costs one chain, which changes at most `k` primaries; chains are almost always one hand-over long.
/// When one node joins, at most `ceil(P/(k+1))` primaries change besides those whose replica moved
/// (checked by the property tests rather than proven).
pub fn rebalance(current: &SitePlacement, nodes: &[NodeId]) -> Result<SitePlacement, PlacementError> {
    let n = current.replicas_per_site;
    check_partition_count(current.partitions.len())?;
    let nodes = sorted_nodes(nodes, n)?;
    current.check_shape()?;
    let index = |node: NodeId| nodes.binary_search(&node).ok();
    let reps = current.partitions.iter().map(|part| part.replicas.iter().filter_map(|&r| index(r)).collect()).collect();
    let prim = current.partitions.iter().map(|part| index(part.primary)).collect();
    solver::solve(&nodes, n, reps, prim)
}

/// The replica changes that turn `from` into `to`, sorted by partition. Within a partition, nodes
/// that lose a replica are paired with nodes that gain one, both in ascending id order; unpaired
/// ones (replica or partition counts differ) come as a pure removal or addition.
pub fn moves(from: &SitePlacement, to: &SitePlacement) -> Vec<Move> {
    let mut out = Vec::new();
    let count = from.partitions.len().max(to.partitions.len());
    for p in 0..count {
        let empty = Vec::new();
        let before = from.partitions.get(p).map_or(&empty, |part| &part.replicas);
        let after = to.partitions.get(p).map_or(&empty, |part| &part.replicas);
        let mut lost = before.iter().copied().filter(|r| !after.contains(r));
        let mut gained = after.iter().copied().filter(|r| !before.contains(r));
        loop {
            let (a, b) = (lost.next(), gained.next());
            if a.is_none() && b.is_none() {
                break;
            }
            out.push(Move { partition: p as u16, from: a, to: b });
        }
    }
    out
}

/// The partitions whose primary differs between `from` and `to`, sorted by partition.
pub fn primary_changes(from: &SitePlacement, to: &SitePlacement) -> Vec<PrimaryChange> {
    let count = from.partitions.len().max(to.partitions.len());
    (0..count)
        .filter_map(|p| {
            let a = from.partitions.get(p).map(|part| part.primary);
            let b = to.partitions.get(p).map(|part| part.primary);
            (a != b).then_some(PrimaryChange { partition: p as u16, from: a, to: b })
        })
        .collect()
}

impl SitePlacement {
    /// Verifies every invariant of the crate documentation against the site's `nodes` (in any
    /// order): a map that passes can be served as is. Meant for tests and for the Raft state machine,
    /// which checks every map it applies.
    pub fn check(&self, nodes: &[NodeId]) -> Result<(), PlacementError> {
        let n = self.replicas_per_site;
        check_partition_count(self.partitions.len())?;
        let nodes = sorted_nodes(nodes, n)?;
        self.check_shape()?;
        let k = nodes.len();
        let mut replicas = vec![0usize; k];
        let mut primaries = vec![0usize; k];
        for (p, part) in self.partitions.iter().enumerate() {
            for &r in &part.replicas {
                let x = nodes.binary_search(&r).map_err(|_| PlacementError::UnknownNode { partition: p, node: r })?;
                replicas[x] += 1;
            }
            let x = nodes
                .binary_search(&part.primary)
                .map_err(|_| PlacementError::UnknownNode { partition: p, node: part.primary })?;
            primaries[x] += 1;
        }
        let total = self.partitions.len() * n;
        let (min, max) = (total / k, total.div_ceil(k));
        if let Some(x) = (0..k).find(|&x| replicas[x] < min || replicas[x] > max) {
            return Err(PlacementError::ReplicaImbalance { node: nodes[x], replicas: replicas[x], min, max });
        }
        let total = self.partitions.len();
        let (min, max) = (total / k, total.div_ceil(k));
        if let Some(x) = (0..k).find(|&x| primaries[x] < min || primaries[x] > max) {
            return Err(PlacementError::PrimaryImbalance { node: nodes[x], primaries: primaries[x], min, max });
        }
        Ok(())
    }

    /// The checks that need no node list: `N` replicas per partition, ascending and distinct, with
    /// the primary among them. [`rebalance`] accepts any map that passes them.
    fn check_shape(&self) -> Result<(), PlacementError> {
        let n = self.replicas_per_site;
        for (p, part) in self.partitions.iter().enumerate() {
            if part.replicas.len() != n {
                return Err(PlacementError::WrongReplicaCount {
                    partition: p,
                    expected: n,
                    found: part.replicas.len(),
                });
            }
            if let Some(w) = part.replicas.windows(2).find(|w| w[0] >= w[1]) {
                return Err(PlacementError::NotCanonical { partition: p, node: w[1] });
            }
            if !part.replicas.contains(&part.primary) {
                return Err(PlacementError::PrimaryNotReplica { partition: p, primary: part.primary });
            }
        }
        Ok(())
    }
}

/// Rejects partition counts a map cannot have.
fn check_partition_count(partitions: usize) -> Result<(), PlacementError> {
    match partitions {
        0 => Err(PlacementError::ZeroPartitions),
        p if p > usize::from(u16::MAX) => Err(PlacementError::TooManyPartitions { partitions: p }),
        _ => Ok(()),
    }
}

/// The node set in canonical (ascending) order, after checking it can hold `replicas_per_site`
/// distinct replicas per partition.
fn sorted_nodes(nodes: &[NodeId], replicas_per_site: usize) -> Result<Vec<NodeId>, PlacementError> {
    if nodes.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    if replicas_per_site == 0 {
        return Err(PlacementError::ZeroReplicas);
    }
    let mut sorted = nodes.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(PlacementError::DuplicateNode { node: w[0] });
    }
    if replicas_per_site > sorted.len() {
        return Err(PlacementError::TooFewNodes { nodes: sorted.len(), replicas_per_site });
    }
    Ok(sorted)
}
