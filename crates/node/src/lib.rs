//! A geostore node: the store engine ([`store`]), its gRPC API ([`server`]) and an HTTP side port for
//! metrics and health ([`http`]).

#![warn(missing_docs)]

pub mod cluster;
pub mod config;
pub mod forward;
pub mod http;
pub mod log;
pub mod metrics;
pub mod placement;
pub mod replication;
pub mod routing;
pub mod server;
pub mod store;
pub mod topology;

use std::future::Future;
use std::sync::Arc;

use geostore_model::SystemWallClock;
use geostore_proto::net::{Dialer, Listener};
use geostore_runtime::shutdown::{CancellationToken, TaskTracker, pause};
use geostore_storage::RocksStorage;
use tokio::net::TcpListener;

pub use config::{NodeConfig, NodeSettings, SyncPolicy};
pub use metrics::Metrics;
pub use store::{Store, StoreConfig};

/// Trims every partition's change log of what every peer has pulled, every `interval`.
async fn trim_logs(store: Arc<Store>, interval: std::time::Duration, stop: CancellationToken) {
    while pause(interval, &stop).await {
        for partition in 0..store.identity().partitions {
            match store.trim_log(partition).await {
                Ok(0) => {}
                Ok(trimmed) => tracing::debug!(partition, trimmed, "change log trimmed"),
                Err(error) => tracing::warn!(partition, %error, "change log trim failed"),
            }
        }
    }
}

/// Removes dead keys that every site has acknowledged, partition by partition, every `interval`.
async fn collect_garbage(
    store: Arc<Store>,
    peers: Vec<config::PeerConfig>,
    acks: replication::Acks,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    // Per partition: the log has been scanned up to here. In memory: a restart scans the retained log again.
    let mut scanned = vec![0_u64; usize::from(store.identity().partitions)];
    while pause(interval, &stop).await {
        for partition in 0..store.identity().partitions {
            let index = usize::from(partition);
            let Some(through) = replication::collectable_through(&store, &peers, &acks, partition) else { continue };
            let after = scanned[index].max(store.log_bounds()[index].0.saturating_sub(1));
            if through <= after {
                continue;
            }
            match store.collect_garbage(partition, after, through).await {
                Ok((collected, up_to)) => {
                    scanned[index] = up_to;
                    if collected > 0 {
                        tracing::debug!(partition, collected, "tombstones collected");
                    }
                }
                Err(error) => tracing::warn!(partition, %error, "tombstone collection failed"),
            }
        }
        store.metrics().gc_passes.inc();
    }
}

/// The system clock, shifted if the configuration asks (fault tests only).
fn wall_clock(offset_ms: i64) -> Arc<dyn geostore_model::WallClock> {
    if offset_ms == 0 {
        return Arc::new(SystemWallClock);
    }
    tracing::warn!(offset_ms, "this node's clock is deliberately offset (clock_offset_ms)");
    Arc::new(geostore_model::OffsetWallClock { inner: Arc::new(SystemWallClock), offset_ms })
}

/// How long a stopping node waits for its clients' connections to close before it closes them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes a gRPC request may have beyond the largest value, for keys, members and framing.
const REQUEST_OVERHEAD_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What a node takes from where it runs. A process gets RocksDB in its data directory, the system clock
/// and TCP ([`run`]); the simulation harness gives memory, a simulated clock and network ([`run_with`]).
pub struct Environment {
    /// Where the store and the lock group keep their data.
    pub storage: Arc<dyn geostore_storage::Storage>,
    /// The wall clock (shifted by `clock_offset_ms` if set).
    pub wall: Arc<dyn geostore_model::WallClock>,
    /// How this node connects to its peers and the other lock group members.
    pub dialer: Dialer,
    /// Where the node's metrics go.
    pub metrics: Metrics,
    /// Makes the replica id of a store opened for the first time.
    pub new_replica_id: Box<dyn FnOnce() -> u64 + Send>,
}

/// Runs a node on already bound listeners until `shutdown` completes, then stops taking requests, lets
/// the writes in flight finish and closes the store.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    let storage = RocksStorage::open(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot open the store in {}: {e}", config.data_dir.display()))?;
    let environment = Environment {
        storage: Arc::new(storage),
        wall: wall_clock(config.clock_offset_ms),
        dialer: Dialer::Tcp,
        metrics: Metrics::new(),
        new_replica_id: Box::new(store::random_replica_id),
    };
    run_with(environment, config, Listener::Tcp(listener), http_listener, shutdown).await
}

/// [`run`] in a given environment, serving on `listener`.
pub async fn run_with(
    environment: Environment,
    config: NodeConfig,
    listener: Listener,
    http_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Environment { storage, wall, dialer, metrics, new_replica_id } = environment;
    let store = Store::open(storage.clone(), wall.clone(), config.store.clone(), metrics.clone(), new_replica_id)?;

    // Shutdown cancels `stop` first, which ends the background tasks and the pull streams this node
    // serves: a peer's stream never ends on its own, and the gRPC server waits for every open request
    // before it returns. Every such task runs on `background`; the store closes after they all end.
    let stop = CancellationToken::new();
    let background = TaskTracker::new();
    let shutdown = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    };
    background.spawn(trim_logs(store.clone(), config.log_trim_interval, stop.clone()));
    // The leaders' clock of both Raft groups (lease and wait deadlines are stamped with it).
    let clock = geostore_lockgroup::LeaseClock::new(u64::try_from(wall.now_unix_ms()).unwrap_or(0));
    let lock_group = match config.lock_group.clone() {
        Some(mut group_config) => {
            group_config.group.dialer = dialer.clone();
            let group = geostore_lockgroup::LockGroup::start(
                group_config,
                storage.clone(),
                clock,
                &metrics.registry,
                stop.clone(),
                &background,
            )
            .await?;
            // Fenced writes are checked against the token holding the lock by this node's lock table.
            let source = group.clone();
            store.set_fence_source(Arc::new(move |lock: &str| {
                source.shared().read(|applied| applied.state.table.holder(lock).map(|grant| grant.token))
            }));
            Some(group)
        }
        None => None,
    };
    let placement = match config.placement.clone() {
        Some(mut placement_config) => {
            placement_config.group.dialer = dialer.clone();
            Some(
                placement::PlacementGroup::start(
                    placement_config,
                    storage.clone(),
                    clock,
                    &metrics.registry,
                    stop.clone(),
                    &background,
                )
                .await?,
            )
        }
        None => None,
    };
    // Where each partition of the site lives, once this node is in a placement group: the store takes
    // local writes only for the partitions it leads, followers copy their primaries' logs, and the KV
    // front end forwards the rest.
    let routing = match (&placement, &config.lock_group) {
        (Some(placement), Some(lock_group)) => {
            let endpoints = lock_group
                .group
                .members
                .iter()
                .filter(|member| member.member.site == config.store.site)
                .map(|member| (member.id, member.member.endpoint.clone()))
                .collect();
            let routing = Arc::new(routing::Routing::new(
                lock_group.group.id,
                config.store.site.clone(),
                endpoints,
                placement.clone(),
            ));
            let source = routing.clone();
            store.set_role_source(Arc::new(move |partition| source.role(partition)));
            Some(routing)
        }
        _ => None,
    };
    let confirmations = Arc::new(replication::intra::Confirmations::default());
    if let Some(routing) = &routing {
        replication::intra::start_followers(store.clone(), routing.clone(), dialer.clone(), &stop, &background);
        replication::intra::start_gauges(
            &metrics.registry,
            store.clone(),
            routing.clone(),
            confirmations.clone(),
            &stop,
            &background,
        );
    }
    let peer_states = replication::start(
        store.clone(),
        config.peers.clone(),
        routing.clone(),
        dialer.clone(),
        config.anti_entropy_interval,
        &stop,
        &background,
    );
    let acks = replication::Acks::default();
    // Tombstone collection needs every replica of every site to have a tombstone; with several nodes
    // in a site that is not tracked yet (the scale-out work's next steps), so nothing is collected.
    let several_nodes_in_a_site = config.lock_group.as_ref().is_some_and(|group| {
        let members = &group.group.members;
        members.iter().any(|member| members.iter().filter(|other| other.member.site == member.member.site).count() > 1)
    });
    if several_nodes_in_a_site {
        tracing::info!(
            "a site has several nodes: tombstones are kept (collection needs every replica's acknowledgement, not tracked yet)"
        );
    } else {
        background.spawn(collect_garbage(
            store.clone(),
            config.peers.clone(),
            acks.clone(),
            config.gc_interval,
            stop.clone(),
        ));
    }
    if let Some(listener) = http_listener {
        let metrics = metrics.clone();
        let stopped = stop.clone().cancelled_owned();
        background.spawn(async move {
            if let Err(error) = http::serve(listener, metrics, stopped).await {
                tracing::error!(%error, "HTTP side port failed");
            }
        });
    }

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(geostore_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let forwarding = routing
        .as_ref()
        .map(|routing| Arc::new(forward::Forwarding::new(routing.clone(), confirmations.clone(), dialer.clone())));
    let kv = geostore_proto::v1::kv_server::KvServer::new(server::KvService::new(
        store.clone(),
        metrics.clone(),
        config.causal_wait_max,
        forwarding,
    ))
    .max_decoding_message_size(config.store.limits.value_bytes_max + REQUEST_OVERHEAD_BYTES_MAX);
    let replication =
        geostore_proto::v1::replication_server::ReplicationServer::new(replication::ReplicationService::new(
            store.clone(),
            acks,
            routing.clone(),
            confirmations.clone(),
            stop.clone(),
            background.clone(),
        ))
        .max_decoding_message_size(config.store.limits.value_bytes_max + REQUEST_OVERHEAD_BYTES_MAX)
        .max_encoding_message_size(usize::MAX);
    let cluster = geostore_proto::v1::cluster_server::ClusterServer::new(cluster::ClusterService::new(
        store.clone(),
        peer_states,
        lock_group.clone(),
        placement.clone(),
        routing.clone().map(|routing| (routing, confirmations.clone())),
    ));
    let lock = lock_group.clone().map(|group| {
        geostore_proto::v1::lock_server::LockServer::new(geostore_lockgroup::service::LockService::new(group))
    });
    // One Raft service for every group this node is in, each message routed by the group it names.
    let mut raft_groups = geostore_raft::service::RaftService::new();
    if let Some(group) = &lock_group {
        raft_groups = raft_groups.serving(group.raft_group());
    }
    if let Some(group) = &placement {
        raft_groups = raft_groups.serving(group.raft_group());
    }
    let raft = (lock_group.is_some() || placement.is_some()).then(|| {
        geostore_proto::v1::raft_server::RaftServer::new(raft_groups)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    });
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(replication::HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(replication::HTTP2_CONNECTION_WINDOW_BYTES)
        .add_service(reflection)
        .add_service(kv)
        .add_service(replication)
        .add_service(cluster)
        .add_optional_service(lock)
        .add_optional_service(raft);
    let served = async move {
        match listener {
            Listener::Tcp(listener) => {
                // Without TCP_NODELAY, small replies wait for the client's delayed ACK (about 40 ms on Linux).
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, shutdown).await
            }
            Listener::Stream(incoming) => router.serve_with_incoming_shutdown(incoming, shutdown).await,
        }
    };
    // A graceful shutdown waits for every connection to close, and HTTP/2 closes one only once its client
    // has answered the goodbye: a client that never does (stuck, or gone without a FIN) would hold the
    // node up forever. After the grace period the connections left are dropped.
    let grace = {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        served = served => served?,
        _ = grace => tracing::warn!(grace = ?SHUTDOWN_GRACE, "clients still connected after the shutdown grace period: closing their connections"),
    }

    tracing::debug!("gRPC server stopped");
    if let Some(group) = &lock_group {
        group.shutdown().await;
    }
    if let Some(group) = &placement {
        group.shutdown().await;
    }
    tracing::debug!("Raft groups stopped");
    background.close();
    background.wait().await;
    tracing::debug!("background tasks stopped");
    store.blocking(|store| store.close()).await.and_then(|closed| closed)?;
    tracing::info!("node stopped");
    Ok(())
}
