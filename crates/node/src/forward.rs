//! Where the KV front end sends a request in a site of several nodes: to this node's store when it is
//! the primary of the key's partition (a write then waits until W replicas hold it), or forwarded to
//! the primary. A forwarded request is marked, and a node that receives a marked request for a
//! partition it does not lead refuses it with NOT_PRIMARY (the two nodes' maps disagree) instead of
//! forwarding it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geostore_placement::NodeId;
use geostore_proto::net::Dialer;
use geostore_proto::outcome::{Reason, failed, unknown};
use geostore_proto::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::replication::intra::Confirmations;
use crate::routing::{PartitionPlace, Routing};
use crate::store::{PartitionRole, Store};

/// The metadata that marks a request forwarded by another node of the site.
pub const FORWARDED_METADATA: &str = "geostore-forwarded";
/// How long a primary waits for W replicas to hold a write before answering UNAVAILABLE with the
/// outcome unknown (the write is durable at the primary and may still reach the others).
pub const WRITE_QUORUM_WAIT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for the site's placement map to be created, and how often it looks.
const MAP_WAIT: Duration = Duration::from_secs(5);
const MAP_POLL: Duration = Duration::from_millis(10);

/// Where a request goes.
pub enum Route {
    /// This node's store; for a write in a partition with followers, the place whose W to wait for.
    Here(Option<PartitionPlace>),
    /// The partition's primary (this member of the site), another node.
    Forward(NodeId, KvClient<Channel>),
}

/// The site's routing for the KV front end, with a channel to each other node of the site.
pub struct Forwarding {
    routing: Arc<Routing>,
    confirmations: Arc<Confirmations>,
    dialer: Dialer,
    clients: Mutex<HashMap<NodeId, KvClient<Channel>>>,
}

impl Forwarding {
    /// Routes by `routing`, waits for W by `confirmations`, and reaches the other nodes through `dialer`.
    pub fn new(routing: Arc<Routing>, confirmations: Arc<Confirmations>, dialer: Dialer) -> Self {
        Forwarding { routing, confirmations, dialer, clients: Mutex::new(HashMap::new()) }
    }

    /// A client of member `node` of this site (one lazily connected channel per member, reused).
    fn client(&self, node: NodeId) -> Result<KvClient<Channel>, Status> {
        let mut clients = self.clients.lock().expect("forwarding clients lock poisoned");
        if let Some(client) = clients.get(&node) {
            return Ok(client.clone());
        }
        let endpoint = self.routing.endpoint(node).ok_or_else(|| {
            failed(
                Code::Internal,
                Reason::Internal,
                format!("the placement map names member {node}, which this node does not know"),
            )
        })?;
        let endpoint = Endpoint::from_shared(endpoint.to_string()).map_err(|e| {
            failed(Code::Internal, Reason::Internal, format!("member {node}'s endpoint {endpoint}: {e}"))
        })?;
        let client = KvClient::new(self.dialer.connect_lazy(endpoint, CONNECT_TIMEOUT))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        clients.insert(node, client.clone());
        Ok(client)
    }

    /// Where `partition` lives. Right after the site starts its map may not exist yet (the placement
    /// group's first leader creates it): a request waits for it, up to [`MAP_WAIT`].
    async fn place(&self, partition: u16) -> Result<PartitionPlace, Status> {
        let deadline = tokio::time::Instant::now() + MAP_WAIT;
        loop {
            if let Some(place) = self.routing.place(partition) {
                return Ok(place);
            }
            if tokio::time::Instant::now() >= deadline {
                let message = format!(
                    "the placement map of site {} is not created yet (its placement group has no leader?); retry shortly",
                    self.routing.site()
                );
                return Err(failed(Code::Unavailable, Reason::NotApplied, message));
            }
            tokio::time::sleep(MAP_POLL).await;
        }
    }

    fn not_primary(&self, partition: u16, place: &PartitionPlace) -> Status {
        let endpoint = self.routing.endpoint(place.primary).unwrap_or_default().to_string();
        let message = format!(
            "node {} is not the primary of partition {partition} in site {} (member {} is, epoch {})",
            self.routing.node(),
            self.routing.site(),
            place.primary,
            place.epoch
        );
        let reason =
            Reason::NotPrimary { partition, epoch: place.epoch, primary: place.primary, primary_endpoint: endpoint };
        failed(Code::Unavailable, reason, message)
    }

    fn too_few(&self, partition: u16, place: &PartitionPlace, up: usize) -> Reason {
        Reason::ReplicasUnavailable {
            partition,
            site: self.routing.site().to_string(),
            up: up as u64,
            replicas: place.replicas.len() as u64,
            needed: place.write_quorum() as u64,
        }
    }

    /// Where a write to `partition` goes. Here only if enough replicas are up for W (else it fails,
    /// with nothing applied).
    pub async fn route_write(&self, partition: u16, forwarded: bool) -> Result<Route, Status> {
        let place = self.place(partition).await?;
        if place.primary != self.routing.node() {
            if forwarded {
                return Err(self.not_primary(partition, &place));
            }
            return Ok(Route::Forward(place.primary, self.client(place.primary)?));
        }
        let needed = place.write_quorum();
        if needed <= 1 {
            return Ok(Route::Here(None));
        }
        let up = 1 + self.confirmations.up(&place);
        if up < needed {
            let message = format!(
                "partition {partition} has {up} of {} replicas up in site {}; a write needs {needed}",
                place.replicas.len(),
                self.routing.site()
            );
            return Err(failed(Code::Unavailable, self.too_few(partition, &place, up), message));
        }
        Ok(Route::Here(Some(place)))
    }

    /// Where a read of `partition` goes: here at its primary, or at another replica when the read's
    /// causal token (`after`: site and sequence) is already reflected here; else to the primary.
    pub async fn route_read(
        &self,
        store: &Store,
        partition: u16,
        after: Option<(&str, u64)>,
        forwarded: bool,
    ) -> Result<Route, Status> {
        let place = self.place(partition).await?;
        match store.role(partition) {
            PartitionRole::Primary => return Ok(Route::Here(None)),
            PartitionRole::Follower
                if after.is_some_and(|(site, sequence)| store.seen(site, partition) >= sequence) =>
            {
                return Ok(Route::Here(None));
            }
            _ => {}
        }
        if forwarded {
            return Err(self.not_primary(partition, &place));
        }
        Ok(Route::Forward(place.primary, self.client(place.primary)?))
    }

    /// Waits until W replicas of `place` hold the write at `sequence` of `partition`; the status to answer
    /// if they do not in time (the write is durable here: outcome unknown).
    pub async fn wait_for_quorum(
        &self,
        method: &str,
        partition: u16,
        place: &PartitionPlace,
        sequence: u64,
    ) -> Result<(), Status> {
        match self.confirmations.wait_for_quorum(partition, place, sequence, WRITE_QUORUM_WAIT).await {
            Ok(()) => Ok(()),
            Err(shortfall) => {
                let message = format!(
                    "{method}: durable at the primary of partition {partition}, but {} of the {} replicas it needs held it after {WRITE_QUORUM_WAIT:?} ({} of {} up in site {}); it may still reach them",
                    shortfall.have,
                    place.write_quorum(),
                    shortfall.up,
                    place.replicas.len(),
                    self.routing.site()
                );
                Err(unknown(Code::Unavailable, self.too_few(partition, place, shortfall.up), message))
            }
        }
    }
}

/// Whether `metadata` marks a request forwarded by another node of the site.
pub fn is_forwarded(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.contains_key(FORWARDED_METADATA)
}

/// `message` as a request forwarded to the primary, with `timeout`.
pub fn forwarded_request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(FORWARDED_METADATA, tonic::metadata::MetadataValue::from_static("1"));
    request.set_timeout(timeout);
    request
}
