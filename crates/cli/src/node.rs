use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use geostore_node::config::{LockMemberConfig, PeerConfig};
use geostore_node::{NodeSettings, SyncPolicy};

#[derive(Args)]
pub struct NodeArgs {
    /// TOML file with settings; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the node's data (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC address, HOST:PORT (port 0 picks a free one; the chosen address is printed).
    #[arg(long)]
    listen: Option<String>,
    /// HTTP side port for /metrics, /healthz and /readyz, HOST:PORT.
    #[arg(long)]
    http_listen: Option<String>,
    /// The site (datacenter) this node is in. Default: local.
    #[arg(long)]
    site: Option<String>,
    /// Partitions, fixed when the data directory is created. Default: 64.
    #[arg(long)]
    partitions: Option<u16>,
    /// When writes are acknowledged: always (after fsync, the default) or none (after the OS has them).
    #[arg(long)]
    sync: Option<SyncPolicy>,
    /// Largest value (or set member) in bytes. Default: 1048576.
    #[arg(long)]
    value_bytes_max: Option<usize>,
    /// Largest clock drift accepted from another node, in ms. Default: 500.
    #[arg(long)]
    max_drift_ms: Option<u64>,
    /// Write requests that may queue for the writer. Default: 4096.
    #[arg(long)]
    write_queue_max: Option<usize>,
    /// Operations per group commit. Default: 2048.
    #[arg(long)]
    group_ops_max: Option<usize>,
    /// The node of another site to replicate with, SITE=http://HOST:PORT (repeat for each site).
    #[arg(long = "peer")]
    peers: Vec<PeerConfig>,
    /// Change-log records kept per partition. Default: 1000000.
    #[arg(long)]
    log_retention_ops: Option<u64>,
    /// Change-log bytes kept per node. Default: 4 GiB.
    #[arg(long)]
    log_retention_bytes: Option<u64>,
    /// Change-log records older than this many ms are trimmed. Default: 86400000 (a day).
    #[arg(long)]
    log_retention_ms: Option<u64>,
    /// How often partitions are compared with each peer by Merkle digest, in ms. Default: 60000.
    #[arg(long)]
    anti_entropy_interval_ms: Option<u64>,
    /// The longest a read with a causal token waits, in ms. Default: 5000.
    #[arg(long)]
    causal_wait_max_ms: Option<u64>,
    /// How often the change log is trimmed, in ms. Default: 10000.
    #[arg(long)]
    log_trim_interval_ms: Option<u64>,
    /// How often acknowledged tombstones and expired keys are collected, in ms. Default: 10000.
    #[arg(long)]
    gc_interval_ms: Option<u64>,
    /// Shift this node's clock by this many ms (fault testing only).
    #[arg(long, allow_negative_numbers = true)]
    clock_offset_ms: Option<i64>,
    /// This node's id in the lock group (unique, never reused).
    #[arg(long)]
    node_id: Option<u64>,
    /// A member of the lock group, this node included: ID=SITE=http://HOST:PORT, with =learner at the end
    /// for a non-voting member (repeat for each).
    #[arg(long = "lock-member")]
    lock_members: Vec<LockMemberConfig>,
    /// Raft heartbeat interval of the lock group, in ms. Default: 250.
    #[arg(long)]
    raft_heartbeat_ms: Option<u64>,
    /// Shortest election timeout, in ms. Default: 1250 (sites about 80 ms apart).
    #[arg(long)]
    raft_election_timeout_min_ms: Option<u64>,
    /// Longest election timeout, in ms. Default: 2500.
    #[arg(long)]
    raft_election_timeout_max_ms: Option<u64>,
    /// Entries between lock-group snapshots. Default: 10000.
    #[arg(long)]
    raft_snapshot_every: Option<u64>,
    /// A lock whose lease expired is not granted again for this many ms. Default: 0.
    #[arg(long)]
    lock_delay_ms: Option<u64>,
}

pub async fn run(args: NodeArgs) -> ExitCode {
    match run_node(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(crate::EXIT_FAILED)
        }
    }
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let from_file = match &args.config {
        Some(path) => NodeSettings::from_file(path).map_err(anyhow::Error::msg)?,
        None => NodeSettings::default(),
    };
    let from_flags = NodeSettings {
        data_dir: args.data_dir,
        listen: args.listen,
        http_listen: args.http_listen,
        site: args.site,
        partitions: args.partitions,
        sync: args.sync,
        value_bytes_max: args.value_bytes_max,
        max_drift_ms: args.max_drift_ms,
        write_queue_max: args.write_queue_max,
        group_ops_max: args.group_ops_max,
        peers: if args.peers.is_empty() { None } else { Some(args.peers) },
        log_retention_ops: args.log_retention_ops,
        log_retention_bytes: args.log_retention_bytes,
        log_retention_ms: args.log_retention_ms,
        anti_entropy_interval_ms: args.anti_entropy_interval_ms,
        causal_wait_max_ms: args.causal_wait_max_ms,
        log_trim_interval_ms: args.log_trim_interval_ms,
        clock_offset_ms: args.clock_offset_ms,
        gc_interval_ms: args.gc_interval_ms,
        node_id: args.node_id,
        lock_members: if args.lock_members.is_empty() { None } else { Some(args.lock_members) },
        raft_heartbeat_ms: args.raft_heartbeat_ms,
        raft_election_timeout_min_ms: args.raft_election_timeout_min_ms,
        raft_election_timeout_max_ms: args.raft_election_timeout_max_ms,
        raft_snapshot_every: args.raft_snapshot_every,
        lock_delay_ms: args.lock_delay_ms,
    };
    let config = from_file.overridden_by(from_flags).resolve().map_err(anyhow::Error::msg)?;
    let listener = bind(&config.listen).await?;
    let http_listener = match &config.http_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    // Scripts and tests read these lines to learn the ports chosen for port 0.
    println!("geostore node listening on {}", listener.local_addr()?);
    if let Some(http) = &http_listener {
        println!("geostore node http on {}", http.local_addr()?);
    }
    std::io::stdout().flush()?;
    geostore_node::run(config, listener, http_listener, shutdown_signal()).await
}

/// Binds a TCP listener, with an error that names the address.
pub async fn bind(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
