//! This node's site's placement group: a Raft group of the site's nodes (the same machinery as the
//! cross-site lock group, `geostore-raft`) that holds the site's placement map, which nodes keep a replica
//! of each partition and which of them is its primary, versioned, with an epoch per partition.
//!
//! Why a group inside each site rather than the cross-site lock group: a site cut off from the others must
//! still be able to change its own placement (replace a failed primary) without a cross-site majority, and
//! a placement change then costs an intra-site round trip, not a WAN one. The cross-site group keeps what
//! is cluster-wide: locks and fences.
//!
//! Today every site has one node, so the map puts every partition's one replica and primary on it; the map
//! is created by the group's first leader from the configured members and is what later steps route
//! writes by (docs/ARCHITECTURE.md, "Placement").

use std::sync::Arc;
use std::time::Duration;

use geostore_placement::{PlacementError, SitePlacement};
use geostore_proto::v1 as pb;
use geostore_raft::{GroupConfig, LeaseClock, Machine, NodeId, RaftGroup};
use geostore_runtime::Backoff;
use geostore_runtime::shutdown::{CancellationToken, TaskTracker};
use geostore_storage::Storage;
use prometheus::IntGauge;
use serde::{Deserialize, Serialize};

/// The placement group's name in messages between members.
pub const GROUP: &str = "placement";

/// First and longest pause between a leader's attempts to create the map.
const CREATE_RETRY_FIRST: Duration = Duration::from_millis(50);
const CREATE_RETRY_MAX: Duration = Duration::from_secs(2);

/// The site's placement map as the group agreed on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteMap {
    /// The site's nodes the map was made for, ascending.
    pub nodes: Vec<NodeId>,
    /// Every partition's replicas and primary.
    pub placement: SitePlacement,
    /// Per partition, the epoch of its primary: 1 at creation, raised by every change of primary (so a
    /// writer identity per (site, partition, epoch) is never reused).
    pub epochs: Vec<u64>,
    /// The log index of the entry that last changed the map: grows with every change.
    pub version: u64,
}

/// The replicated state: the map, once the group's first leader has created it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PlacementState {
    /// `None` until created.
    pub map: Option<SiteMap>,
}

/// What the placement group applies (the leader proposes them; no clock is needed yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementCommand {
    /// Create the site's map, if it does not exist yet.
    Create {
        /// The site's nodes.
        nodes: Vec<NodeId>,
        /// The cluster's partitions.
        partitions: u16,
        /// N.
        replicas_per_site: usize,
    },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementEvent {
    /// The map was created at this version.
    Created {
        /// The map's version.
        version: u64,
    },
    /// A map already existed (made by an earlier leader); it is unchanged.
    Exists {
        /// Its version.
        version: u64,
    },
    /// The command could not be applied; nothing changed.
    Refused {
        /// Why, for people.
        reason: String,
    },
}

impl Machine for PlacementState {
    const GROUP: &'static str = GROUP;
    const KEY_PREFIX: &'static [u8] = b"placement/";
    type Proposal = PlacementCommand;
    type Command = PlacementCommand;
    type Event = PlacementEvent;
    type Local = ();
    type Observer = ();

    fn command(proposal: PlacementCommand, _now_ms: u64) -> PlacementCommand {
        proposal
    }

    fn apply(&mut self, index: u64, command: PlacementCommand) -> Vec<PlacementEvent> {
        let event = match command {
            PlacementCommand::Create { .. } if self.map.is_some() => {
                PlacementEvent::Exists { version: self.map.as_ref().map_or(0, |map| map.version) }
            }
            PlacementCommand::Create { mut nodes, partitions, replicas_per_site } => {
                nodes.sort_unstable();
                match geostore_placement::place(&nodes, partitions, replicas_per_site) {
                    Ok(placement) => {
                        let epochs = vec![1; usize::from(partitions)];
                        self.map = Some(SiteMap { nodes, placement, epochs, version: index });
                        PlacementEvent::Created { version: index }
                    }
                    Err(error) => PlacementEvent::Refused { reason: error.to_string() },
                }
            }
        };
        vec![event]
    }

    fn localize(&mut self, _local: &()) {}

    fn replaced_by(&self, _next: &Self) -> Vec<PlacementEvent> {
        Vec::new()
    }

    fn observe(_observer: &(), _events: &[PlacementEvent]) {}
}

/// How this node takes part in its site's placement group.
#[derive(Debug, Clone)]
pub struct PlacementConfig {
    /// The site's members (all voters), timing and transport.
    pub group: GroupConfig,
    /// The cluster's partitions.
    pub partitions: u16,
    /// N, for the map this node would create.
    pub replicas_per_site: usize,
}

impl PlacementConfig {
    /// Checks what a bad configuration could get wrong, before anything starts.
    pub fn check(&self) -> Result<(), String> {
        self.group.check().map_err(|message| format!("placement group: {message}"))?;
        let nodes: Vec<NodeId> = self.group.members.iter().map(|member| member.id).collect();
        geostore_placement::place(&nodes, self.partitions, self.replicas_per_site).map(drop).map_err(
            |error| match error {
                PlacementError::TooFewNodes { nodes, replicas_per_site } => format!(
                    "replicas_per_site {replicas_per_site} needs at least that many nodes in the site; it has {nodes}"
                ),
                other => format!("placement: {other}"),
            },
        )
    }
}

/// This node's member of its site's placement group.
pub struct PlacementGroup {
    group: Arc<RaftGroup<PlacementState>>,
}

impl PlacementGroup {
    /// Starts this node's member of the site's placement group on `storage`; its leader creates the map
    /// if there is none. The leader's loop runs on `tasks` until `stop` is cancelled.
    pub async fn start(
        config: PlacementConfig,
        storage: Arc<dyn Storage>,
        clock: LeaseClock,
        registry: &prometheus::Registry,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> anyhow::Result<Arc<PlacementGroup>> {
        config.check().map_err(anyhow::Error::msg)?;
        let create = PlacementCommand::Create {
            nodes: config.group.members.iter().map(|member| member.id).collect(),
            partitions: config.partitions,
            replicas_per_site: config.replicas_per_site,
        };
        let group = RaftGroup::start(config.group, (), storage, clock).await?;
        tasks.spawn(leader_loop(group.clone(), create, PlacementMetrics::new(registry), stop));
        Ok(Arc::new(PlacementGroup { group }))
    }

    /// The Raft group itself, to serve it in the `Raft` service.
    pub fn raft_group(&self) -> Arc<RaftGroup<PlacementState>> {
        self.group.clone()
    }

    /// The map as this node has applied it (`None` before it is created).
    pub fn map(&self) -> Option<SiteMap> {
        self.group.shared().read(|applied| applied.state.map.clone())
    }

    /// Stops Raft (the node is shutting down).
    pub async fn shutdown(&self) {
        self.group.shutdown().await;
    }

    /// The group and the map as this node sees them, for `Cluster.Status`.
    pub fn status(&self) -> pb::PlacementStatus {
        let group = self.group.status();
        let endpoint_of = |id: NodeId| {
            group
                .members
                .iter()
                .find(|member| member.id == id)
                .map(|member| member.endpoint.clone())
                .unwrap_or_default()
        };
        let Some(map) = self.map() else {
            return pb::PlacementStatus { group: Some(group), ..Default::default() };
        };
        let partitions = map
            .placement
            .partitions
            .iter()
            .zip(&map.epochs)
            .enumerate()
            .map(|(partition, (replicas, epoch))| pb::PartitionPlacement {
                partition: partition as u32,
                primary: replicas.primary,
                replicas: replicas.replicas.clone(),
                epoch: *epoch,
            })
            .collect::<Vec<_>>();
        let nodes = map
            .nodes
            .iter()
            .map(|&id| pb::NodePlacement {
                id,
                endpoint: endpoint_of(id),
                partitions: partitions.iter().filter(|p| p.replicas.contains(&id)).map(|p| p.partition).collect(),
                primaries: partitions.iter().filter(|p| p.primary == id).map(|p| p.partition).collect(),
            })
            .collect();
        pb::PlacementStatus {
            group: Some(group),
            version: map.version,
            replicas_per_site: map.placement.replicas_per_site as u32,
            partitions,
            nodes,
        }
    }
}

/// The placement group's Prometheus metrics.
struct PlacementMetrics {
    /// The version of the map this node has applied (0 before it is created).
    version: IntGauge,
    /// 1 while this node leads its site's placement group.
    leader: IntGauge,
}

impl PlacementMetrics {
    fn new(registry: &prometheus::Registry) -> Self {
        let version =
            IntGauge::new("geostore_placement_version", "The version of the site's placement map applied here")
                .expect("valid metric");
        let leader = IntGauge::new("geostore_placement_leader", "1 while this node leads its site's placement group")
            .expect("valid metric");
        for gauge in [&version, &leader] {
            // Registering twice only happens if two groups share a registry; keep the first.
            let _ = registry.register(Box::new(gauge.clone()));
        }
        PlacementMetrics { version, leader }
    }
}

/// Keeps the metrics current (openraft's metrics change with every applied entry and every change of
/// role) and, while this node leads the placement group, creates the map if there is none (retried until
/// it is, or until the leadership moves on).
async fn leader_loop(
    group: Arc<RaftGroup<PlacementState>>,
    create: PlacementCommand,
    gauges: PlacementMetrics,
    stop: CancellationToken,
) {
    let mut metrics = group.raft().metrics();
    loop {
        metrics.mark_unchanged();
        let leading = group.is_leader();
        let version = group.shared().read(|applied| applied.state.map.as_ref().map(|map| map.version));
        gauges.leader.set(i64::from(leading));
        gauges.version.set(i64::try_from(version.unwrap_or(0)).unwrap_or(i64::MAX));
        let created = version.is_some();
        if leading && !created {
            let mut backoff = Backoff::new(CREATE_RETRY_FIRST, CREATE_RETRY_MAX);
            while group.is_leader() && !stop.is_cancelled() {
                match group.propose_command(create.clone()).await {
                    Ok(response) => {
                        match response.events.first() {
                            Some(PlacementEvent::Created { version }) => {
                                tracing::info!(version, "placement map created");
                            }
                            Some(PlacementEvent::Refused { reason }) => {
                                tracing::error!(reason, "placement map refused");
                            }
                            _ => {}
                        }
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(message = error.message, "placement map not created yet; retrying");
                        if !geostore_runtime::shutdown::pause(backoff.next_delay(), &stop).await {
                            return;
                        }
                    }
                }
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(nodes: &[NodeId], partitions: u16, replicas_per_site: usize) -> PlacementCommand {
        PlacementCommand::Create { nodes: nodes.to_vec(), partitions, replicas_per_site }
    }

    #[test]
    fn the_first_create_makes_the_map_and_later_ones_change_nothing() {
        let mut state = PlacementState::default();
        assert_eq!(state.apply(5, create(&[3, 1, 2], 8, 3)), [PlacementEvent::Created { version: 5 }]);
        let map = state.map.clone().unwrap();
        assert_eq!(map.nodes, [1, 2, 3]);
        assert_eq!(map.epochs, [1; 8]);
        map.placement.check(&map.nodes).unwrap();
        assert_eq!(state.apply(9, create(&[1, 2, 3, 4], 8, 1)), [PlacementEvent::Exists { version: 5 }]);
        assert_eq!(state.map.unwrap(), map, "a second create leaves the first map");
    }

    #[test]
    fn an_impossible_map_is_refused_and_nothing_changes() {
        let mut state = PlacementState::default();
        let events = state.apply(1, create(&[1, 2], 8, 3));
        assert!(matches!(&events[..], [PlacementEvent::Refused { .. }]), "{events:?}");
        assert!(state.map.is_none());
    }

    #[test]
    fn one_node_holds_every_partition_and_is_every_primary() {
        let mut state = PlacementState::default();
        state.apply(1, create(&[7], 4, 1));
        let map = state.map.unwrap();
        assert!(map.placement.partitions.iter().all(|p| p.primary == 7 && p.replicas == [7]));
    }

    #[test]
    fn the_key_prefix_keeps_the_placement_log_apart_from_the_lock_groups() {
        geostore_raft::store::check_prefix::<PlacementState>().unwrap();
        geostore_raft::store::check_prefix::<geostore_lockgroup::LockState>().unwrap();
        assert_ne!(PlacementState::GROUP, geostore_lockgroup::LockState::GROUP);
    }
}
