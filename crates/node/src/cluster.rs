//! The Cluster service: what the cluster looks like from this node (sites, partitions, replication lag,
//! the lock group, the site's placement).

use std::sync::Arc;

use geostore_lockgroup::LockGroup;
use geostore_proto::v1 as pb;
use geostore_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use crate::placement::PlacementGroup;
use crate::replication::PeerStates;
use crate::replication::intra::Confirmations;
use crate::routing::Routing;
use crate::store::Store;

/// Serves `Cluster.Status` from the store, the pullers' states, and the lock group and placement group if
/// this node is in them.
pub struct ClusterService {
    store: Arc<Store>,
    peers: PeerStates,
    lock_group: Option<Arc<LockGroup>>,
    placement: Option<Arc<PlacementGroup>>,
    routing: Option<(Arc<Routing>, Arc<Confirmations>)>,
}

impl ClusterService {
    /// The service over this node's store, pull states, lock group and placement group, and its routing
    /// and followers' confirmations in a site with a placement map.
    pub fn new(
        store: Arc<Store>,
        peers: PeerStates,
        lock_group: Option<Arc<LockGroup>>,
        placement: Option<Arc<PlacementGroup>>,
        routing: Option<(Arc<Routing>, Arc<Confirmations>)>,
    ) -> Self {
        Self { store, peers, lock_group, placement, routing }
    }

    /// The partitions this node leads, with its followers' progress.
    fn led(&self) -> Vec<pb::LedPartition> {
        let Some((routing, confirmations)) = &self.routing else { return Vec::new() };
        let bounds = self.store.log_bounds();
        routing
            .primaries()
            .into_iter()
            .filter_map(|partition| {
                let place = routing.place(partition)?;
                let head = bounds[usize::from(partition)].1;
                let followers = confirmations
                    .progress(partition, &place)
                    .into_iter()
                    .map(|(node, head, up)| pb::FollowerProgress { node, head, up })
                    .collect();
                Some(pb::LedPartition {
                    partition: u32::from(partition),
                    epoch: place.epoch,
                    head,
                    committed: confirmations.committed(partition, &place, head),
                    replicas: place.replicas.len() as u32,
                    write_quorum: place.write_quorum() as u32,
                    followers,
                })
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let identity = self.store.identity();
        let progress = self.store.progress();
        let now_ms = self.store.clock().wall().now_unix_ms();
        let metrics = self.store.metrics();
        let peers: Vec<pb::PeerStatus> = self
            .peers
            .lock()
            .expect("peer states lock poisoned")
            .values()
            .map(|peer| {
                let (lag_ops, lag_seconds) = peer.lag(&progress.cursors_of(&peer.site), now_ms);
                pb::PeerStatus {
                    site: peer.site.clone(),
                    endpoint: peer.endpoint.clone(),
                    connected: peer.connected,
                    lag_ops,
                    lag_seconds,
                    records_applied: metrics.replicated_records.with_label_values(&[peer.site.as_str()]).get(),
                    last_error: peer.last_error.clone(),
                }
            })
            .collect();
        let mut sites: Vec<String> =
            std::iter::once(identity.site.clone()).chain(peers.iter().map(|p| p.site.clone())).collect();
        sites.sort();
        sites.dedup();
        Ok(Response::new(pb::StatusResponse {
            site: identity.site.clone(),
            replica_id: identity.replica.0,
            partitions: u32::from(identity.partitions),
            log_head_total: progress.heads.iter().sum(),
            peers,
            anti_entropy_repairs: metrics.anti_entropy_repairs.get(),
            clock_drift_refusals: metrics.clock_drift_refusals.get(),
            sites,
            tombstones_collected: metrics.tombstones_collected.get(),
            lock_group: self.lock_group.as_deref().map(|group| group.status()),
            placement: self.placement.as_deref().map(PlacementGroup::status),
            led: self.led(),
        }))
    }
}
