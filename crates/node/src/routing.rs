//! Where each partition lives in this node's site, as its placement map says: which node is the
//! primary (it orders the partition's writes), which nodes hold the other replicas (they copy the
//! primary's log), and how to reach them. Read by the KV front end (forward to the primary), the store
//! (refuse writes a primary must order), intra-site replication (whom to follow) and the pullers (which
//! partitions to pull from other sites).
//!
//! A node without a member id has no placement map: it is its site's only node and leads every
//! partition; no `Routing` is built for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use geostore_placement::NodeId;

use crate::placement::{PlacementGroup, SiteMap};
use crate::store::PartitionRole;

/// One partition's place in the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlace {
    /// The node that orders its writes.
    pub primary: NodeId,
    /// The primary's epoch.
    pub epoch: u64,
    /// Every node with a replica, the primary included (N of them), ascending.
    pub replicas: Vec<NodeId>,
}

impl PartitionPlace {
    /// The replicas that must have a write durably before it is acknowledged: a majority of the N,
    /// `floor(N / 2) + 1`, the primary among them.
    pub fn write_quorum(&self) -> usize {
        self.replicas.len() / 2 + 1
    }

    /// The replicas other than the primary.
    pub fn followers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas.iter().copied().filter(|node| *node != self.primary)
    }
}

/// This node's view of its site's placement.
pub struct Routing {
    node: NodeId,
    site: String,
    /// The gRPC endpoint of every member of this node's site.
    endpoints: BTreeMap<NodeId, String>,
    placement: Arc<PlacementGroup>,
}

impl Routing {
    /// The routing of member `node` of `site`, whose members are reached at `endpoints`, by the map
    /// `placement` holds.
    pub fn new(
        node: NodeId,
        site: String,
        endpoints: BTreeMap<NodeId, String>,
        placement: Arc<PlacementGroup>,
    ) -> Self {
        Routing { node, site, endpoints, placement }
    }

    /// This node's member id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// This node's site.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The gRPC endpoint of member `node` of this site.
    pub fn endpoint(&self, node: NodeId) -> Option<&str> {
        self.endpoints.get(&node).map(String::as_str)
    }

    /// How many nodes the site has, by its configured members.
    pub fn site_nodes(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the site's map exists yet (its placement group's first leader creates it).
    pub fn ready(&self) -> bool {
        self.with_map(|map| map.is_some())
    }

    fn with_map<T>(&self, reader: impl FnOnce(Option<&SiteMap>) -> T) -> T {
        self.placement.raft_group().shared().read(|applied| reader(applied.state.map.as_ref()))
    }

    /// Where `partition` lives; `None` before the map exists.
    pub fn place(&self, partition: u16) -> Option<PartitionPlace> {
        self.with_map(|map| {
            let map = map?;
            let replicas = map.placement.partitions.get(usize::from(partition))?;
            Some(PartitionPlace {
                primary: replicas.primary,
                epoch: map.epochs.get(usize::from(partition)).copied().unwrap_or(0),
                replicas: replicas.replicas.clone(),
            })
        })
    }

    /// What this node is for `partition` (absent before the map exists: it takes no writes yet).
    pub fn role(&self, partition: u16) -> PartitionRole {
        self.with_map(|map| {
            let Some(replicas) = map.and_then(|map| map.placement.partitions.get(usize::from(partition))) else {
                return PartitionRole::Absent;
            };
            if replicas.primary == self.node {
                PartitionRole::Primary
            } else if replicas.replicas.contains(&self.node) {
                PartitionRole::Follower
            } else {
                PartitionRole::Absent
            }
        })
    }

    /// The partitions this node is the primary of, ascending.
    pub fn primaries(&self) -> Vec<u16> {
        self.with_map(|map| {
            let Some(map) = map else { return Vec::new() };
            (0..map.placement.partitions.len() as u16)
                .filter(|partition| map.placement.partitions[usize::from(*partition)].primary == self.node)
                .collect()
        })
    }

    /// The partitions this node holds a replica of without being their primary, by primary.
    pub fn followed(&self) -> BTreeMap<NodeId, Vec<u16>> {
        self.with_map(|map| {
            let mut followed: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
            let Some(map) = map else { return followed };
            for (partition, replicas) in map.placement.partitions.iter().enumerate() {
                if replicas.primary != self.node && replicas.replicas.contains(&self.node) {
                    followed.entry(replicas.primary).or_default().push(partition as u16);
                }
            }
            followed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_quorum_is_a_majority_of_the_replicas() {
        let place = |n: u64| PartitionPlace { primary: 1, epoch: 1, replicas: (1..=n).collect() };
        assert_eq!([1, 2, 3, 4, 5].map(|n| place(n).write_quorum()), [1, 2, 2, 3, 3]);
        assert_eq!(place(3).followers().collect::<Vec<_>>(), vec![2, 3]);
    }
}
