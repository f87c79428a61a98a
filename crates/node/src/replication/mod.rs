//! Replication between sites: the serving side of the pull stream and anti-entropy, and the puller that
//! each node runs against the node of every other site.
//!
//! A node pulls from each peer one long-lived stream that carries every partition, each with its own
//! cursor. Each batch is merged and the cursor advanced in one write batch (see `Store::merge`), then the
//! next message is read: the stream's HTTP/2 flow control is the back-pressure, and the sender keeps at most
//! `PULL_QUEUE_BATCHES_MAX` batches of at most `PULL_BATCH_BYTES_MAX` bytes queued per stream.
//!
//! Relaying: a merged record that changed this replica is logged here again (with its origin), so a peer
//! that cannot reach the origin still gets the change through this node. Records whose origin is the
//! puller's own site are not sent back to it.
//!
//! Anti-entropy: when a peer's log no longer holds what follows our cursor (it was trimmed), and also
//! periodically, the two sides compare a partition's digest (256 buckets, each the XOR of its keys'
//! hashed states), then the per-key digests of the differing buckets, and the puller fetches and merges
//! only the keys that differ. Each side repairs itself; the peer does the same in its own puller.

mod anti_entropy;
pub mod intra;
mod puller;
mod service;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::PeerConfig;
use crate::store::Store;

pub use anti_entropy::anti_entropy;
pub use puller::start;
pub use service::ReplicationService;

/// HTTP/2 flow-control windows. The default 64 KiB would cap a stream at 64 KiB per round trip (800 KB/s
/// over 80 ms); these allow about 100 MB/s over such a link, and still bound what is in flight.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// The connection-level window (see [`HTTP2_STREAM_WINDOW_BYTES`]).
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// A stream with nothing to send sends a heartbeat this often...
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// ...and a puller that hears nothing for this long reconnects.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a replication connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest replication message accepted (a batch of up to 1 MiB of records, or a repair's entries).
const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// A Replication client of the node at `endpoint`, with the windows and message size replication needs.
async fn connect(
    dialer: &geostore_proto::net::Dialer,
    endpoint: &str,
) -> Result<geostore_proto::v1::replication_client::ReplicationClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("bad endpoint {endpoint}: {e}"))?
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES);
    let channel =
        dialer.connect(channel, CONNECT_TIMEOUT).await.map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    Ok(geostore_proto::v1::replication_client::ReplicationClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX))
}

/// What each peer last acknowledged: per partition, (its durable cursor on this node's log, its own log
/// head at that moment). Kept in memory only: after a restart, collection waits for fresh acknowledgements.
pub type Acks = Arc<Mutex<BTreeMap<String, (Vec<u64>, Vec<u64>)>>>;

/// What this node knows about its pull stream from one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    /// The peer's site.
    pub site: String,
    /// Where this node pulls from it.
    pub endpoint: String,
    /// Whether the pull stream is up.
    pub connected: bool,
    /// The peer's log head per partition, as last heard.
    pub heads: Vec<u64>,
    /// The origin time (ms since the Unix epoch) of the last record merged from the peer, per partition.
    pub last_applied_unix_ms: Vec<i64>,
    /// The stream's last error (empty if none).
    pub last_error: String,
}

/// The states of every peer node (by endpoint), shared with the status service.
pub type PeerStates = Arc<Mutex<BTreeMap<String, PeerState>>>;

impl PeerState {
    /// Changes in the peer's log not merged here, and the age in seconds of the oldest of them.
    pub fn lag(&self, cursors: &[u64], now_unix_ms: i64) -> (u64, f64) {
        let mut ops = 0;
        let mut seconds: f64 = 0.0;
        for (partition, head) in self.heads.iter().enumerate() {
            let behind = head.saturating_sub(cursors.get(partition).copied().unwrap_or(0));
            ops += behind;
            if behind > 0 {
                // The oldest unmerged change is no older than the last merged one: a bound from below
                // that is exact while the stream keeps up, as the MySQL "seconds behind" is.
                let last = self.last_applied_unix_ms.get(partition).copied().unwrap_or(0);
                if last > 0 {
                    seconds = seconds.max((now_unix_ms - last).max(0) as f64 / 1000.0);
                }
            }
        }
        (ops, seconds)
    }
}

/// Whether every peer has acknowledged this node's log of `partition` and this node has merged each
/// peer's log as far as it went when it acknowledged: then nothing older than the acknowledged point
/// can still arrive anywhere. Returns the sequence of this node's log that every site has, if so.
pub fn collectable_through(store: &Store, peers: &[PeerConfig], acks: &Acks, partition: u16) -> Option<u64> {
    let progress = store.progress();
    let index = usize::from(partition);
    let mut through = progress.heads[index];
    let acks = acks.lock().expect("acks lock poisoned");
    for peer in peers {
        let (cursors, heads) = acks.get(&peer.site)?;
        let merged_theirs = progress.cursor(&peer.site, partition);
        if merged_theirs < *heads.get(index)? {
            return None;
        }
        through = through.min(*cursors.get(index)?);
    }
    Some(through)
}
