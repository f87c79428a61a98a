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

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geostore_model::planted;
use geostore_model::{ClockError, decode_entry, encode_entry};
use geostore_proto::net::Dialer;
use geostore_proto::outcome::failed;
use geostore_proto::v1 as pb;
use geostore_proto::v1::replication_client::ReplicationClient;
use geostore_proto::v1::replication_server::Replication;
use geostore_runtime::Backoff;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::config::PeerConfig;
use crate::log::LogRecord;
use crate::store::{ChangeError, DIGEST_BUCKETS, PeerRecords, Store};

/// Batches queued for one pull stream before the sender waits for the receiver.
const PULL_QUEUE_BATCHES_MAX: usize = 8;
/// Records and bytes per batch.
const PULL_BATCH_RECORDS_MAX: usize = 1024;
const PULL_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// A stream with nothing to send sends a heartbeat this often...
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// ...and a puller that hears nothing for this long reconnects.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Merges a puller queues before waiting for the oldest to be durable.
const MERGES_IN_FLIGHT_MAX: usize = 32;
/// Pause before reconnecting, doubling from the first to the last after repeated failures (each with
/// jitter: `geostore_runtime::Backoff`).
const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// HTTP/2 flow-control windows. The default 64 KiB would cap a stream at 64 KiB per round trip (800 KB/s
/// over 80 ms); these allow about 100 MB/s over such a link, and still bound what is in flight.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Largest message a replication client accepts.
const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Buckets per BucketKeys call and keys per FetchEntries call during anti-entropy.
const ANTI_ENTROPY_BUCKETS_PER_CALL: usize = 16;
const ANTI_ENTROPY_KEYS_PER_CALL: usize = 512;
/// Deadline of one anti-entropy call.
const ANTI_ENTROPY_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What each peer last acknowledged: per partition, (its durable cursor on this node's log, its own log
/// head at that moment). Kept in memory only: after a restart, collection waits for fresh acknowledgements.
pub type Acks = Arc<Mutex<BTreeMap<String, (Vec<u64>, Vec<u64>)>>>;

/// How often a puller acknowledges what it has merged.
const ACKNOWLEDGE_INTERVAL: Duration = Duration::from_secs(1);

/// The serving side: any node's log and digests, for the pullers of other sites.
pub struct ReplicationService {
    store: Arc<Store>,
    acks: Acks,
    /// Turns true when the node shuts down: the pull streams it serves end then.
    stopped: watch::Receiver<bool>,
}

impl ReplicationService {
    pub fn new(store: Arc<Store>, acks: Acks, stopped: watch::Receiver<bool>) -> Self {
        Self { store, acks, stopped }
    }

    fn partition(&self, partition: u32) -> Result<u16, Status> {
        u16::try_from(partition).ok().filter(|p| *p < self.store.identity().partitions).ok_or_else(|| {
            failed(
                Code::InvalidArgument,
                format!("partition {partition} does not exist (there are {})", self.store.identity().partitions),
            )
        })
    }
}

/// A storage failure while serving a peer. Every replication call only reads (or, for Acknowledge,
/// records a peer's progress in memory), so nothing was changed: the outcome is `failed`.
fn internal(error: impl std::fmt::Display) -> Status {
    failed(Code::Internal, error.to_string())
}

type PullStream = Pin<Box<dyn Stream<Item = Result<pb::PullMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for ReplicationService {
    type PullStream = PullStream;

    async fn pull(&self, request: Request<pb::PullRequest>) -> Result<Response<PullStream>, Status> {
        let request = request.into_inner();
        let partitions = usize::from(self.store.identity().partitions);
        if request.cursors.len() != partitions {
            return Err(failed(
                Code::InvalidArgument,
                format!("Pull: {} cursors, but this cluster has {partitions} partitions", request.cursors.len()),
            ));
        }
        if request.site == self.store.identity().site {
            return Err(failed(Code::InvalidArgument, "Pull: a node does not pull from its own site"));
        }
        let (sender, receiver) = mpsc::channel(PULL_QUEUE_BATCHES_MAX);
        let mut stopped = self.stopped.clone();
        let serve = serve_pull(self.store.clone(), request.site, request.cursors, sender);
        tokio::spawn(async move {
            tokio::select! {
                _ = serve => {}
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        let request = request.into_inner();
        let partitions = usize::from(self.store.identity().partitions);
        if request.cursors.len() != partitions || request.heads.len() != partitions {
            return Err(failed(Code::InvalidArgument, format!("Acknowledge: expected {partitions} cursors and heads")));
        }
        self.acks.lock().expect("acks lock poisoned").insert(request.site, (request.cursors, request.heads));
        Ok(Response::new(pb::AcknowledgeResponse {}))
    }

    async fn digest(&self, request: Request<pb::DigestRequest>) -> Result<Response<pb::DigestResponse>, Status> {
        let partition = self.partition(request.into_inner().partition)?;
        // The head is taken before the digest, so the digest reflects at least everything up to it.
        let (_, head) = self.store.log_bounds()[usize::from(partition)];
        let buckets = self
            .store
            .blocking(move |store| store.partition_digest(partition))
            .await
            .and_then(|digest| digest)
            .map_err(internal)?;
        Ok(Response::new(pb::DigestResponse { head, buckets }))
    }

    async fn bucket_keys(
        &self,
        request: Request<pb::BucketKeysRequest>,
    ) -> Result<Response<pb::BucketKeysResponse>, Status> {
        let request = request.into_inner();
        let partition = self.partition(request.partition)?;
        let buckets: Vec<usize> = request.buckets.iter().map(|b| *b as usize).collect();
        let keys = self
            .store
            .blocking(move |store| store.bucket_digests(partition, &buckets))
            .await
            .and_then(|keys| keys)
            .map_err(internal)?;
        Ok(Response::new(pb::BucketKeysResponse {
            keys: keys.into_iter().map(|(key, digest)| pb::KeyDigest { key, digest }).collect(),
        }))
    }

    async fn fetch_entries(
        &self,
        request: Request<pb::FetchEntriesRequest>,
    ) -> Result<Response<pb::FetchEntriesResponse>, Status> {
        let request = request.into_inner();
        self.partition(request.partition)?;
        let mut entries = Vec::with_capacity(request.keys.len());
        for key in request.keys {
            if let Some(entry) = self.store.entry(&key).map_err(internal)? {
                entries.push(pb::StoredEntry { key, entry: encode_entry(&entry) });
            }
        }
        Ok(Response::new(pb::FetchEntriesResponse { entries }))
    }
}

/// Sends `peer` every partition's log after its cursors, then new records as they are written.
async fn serve_pull(
    store: Arc<Store>,
    peer: String,
    mut cursors: Vec<u64>,
    sender: mpsc::Sender<Result<pb::PullMessage, Status>>,
) {
    let mut log = store.subscribe_log();
    let mut truncated = vec![false; cursors.len()];
    let send = |message: pb::pull_message::Message| {
        let sender = sender.clone();
        async move { sender.send(Ok(pb::PullMessage { message: Some(message) })).await.is_ok() }
    };
    loop {
        log.borrow_and_update();
        let bounds = store.log_bounds();
        let mut sent_any = false;
        for partition in 0..cursors.len() {
            let (log_start, head) = bounds[partition];
            if truncated[partition] || cursors[partition] >= head {
                continue;
            }
            sent_any = true;
            if cursors[partition] + 1 < log_start {
                truncated[partition] = true;
                if !send(pb::pull_message::Message::TruncatedPartition(partition as u32)).await {
                    return;
                }
                continue;
            }
            let records = match store.read_log(
                partition as u16,
                cursors[partition],
                PULL_BATCH_RECORDS_MAX,
                PULL_BATCH_BYTES_MAX,
            ) {
                Ok(records) => records,
                Err(error) => {
                    let _ = sender.send(Err(internal(error))).await;
                    return;
                }
            };
            let Some(through) = records.last().map(|(sequence, _)| *sequence) else {
                // Trimmed between reading the progress and the log: the next round reports it.
                continue;
            };
            let entries = records
                .into_iter()
                .filter(|(_, record)| record.origin != peer)
                .map(|(sequence, record)| pb::LogEntry { sequence, record: record.encode() })
                .collect();
            let batch =
                pb::PullBatch { partition: partition as u32, entries, through, head, after: cursors[partition] };
            if !send(pb::pull_message::Message::Batch(batch)).await {
                return;
            }
            cursors[partition] = through;
        }
        if sent_any {
            continue;
        }
        tokio::select! {
            changed = log.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {
                let heads = store.log_bounds().into_iter().map(|(_, head)| head).collect();
                if !send(pb::pull_message::Message::Heartbeat(pb::Heartbeat { heads })).await {
                    return;
                }
            }
        }
    }
}

/// What this node knows about its pull stream from one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    pub site: String,
    pub endpoint: String,
    pub connected: bool,
    /// The peer's log head per partition, as last heard.
    pub heads: Vec<u64>,
    /// The origin time (ms since the Unix epoch) of the last record merged from the peer, per partition.
    pub last_applied_unix_ms: Vec<i64>,
    pub last_error: String,
}

/// The states of every peer, shared with the status service.
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

/// Starts a puller and a periodic anti-entropy task for every peer. They stop when `shutdown` turns true.
pub fn start(
    store: Arc<Store>,
    peers: Vec<PeerConfig>,
    dialer: Dialer,
    anti_entropy_interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> (PeerStates, Vec<tokio::task::JoinHandle<()>>) {
    let partitions = usize::from(store.identity().partitions);
    let states: PeerStates = Arc::new(Mutex::new(
        peers
            .iter()
            .map(|peer| {
                let state = PeerState {
                    site: peer.site.clone(),
                    endpoint: peer.endpoint.clone(),
                    heads: vec![0; partitions],
                    last_applied_unix_ms: vec![0; partitions],
                    ..PeerState::default()
                };
                (peer.site.clone(), state)
            })
            .collect(),
    ));
    let mut tasks = Vec::new();
    for peer in peers {
        let peer = Peer { config: peer, dialer: dialer.clone() };
        tasks.push(tokio::spawn(run_puller(store.clone(), peer.clone(), states.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(run_acknowledger(store.clone(), peer.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(run_anti_entropy(store.clone(), peer, anti_entropy_interval, shutdown.clone())));
    }
    (states, tasks)
}

/// A peer site and how to reach it.
#[derive(Clone)]
struct Peer {
    config: PeerConfig,
    dialer: Dialer,
}

impl Peer {
    async fn connect(&self) -> Result<ReplicationClient<Channel>, String> {
        let endpoint = &self.config.endpoint;
        let endpoint = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("bad endpoint {endpoint}: {e}"))?
            .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES);
        let channel = self
            .dialer
            .connect(endpoint, CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.config.endpoint))?;
        Ok(ReplicationClient::new(channel).max_decoding_message_size(MESSAGE_BYTES_MAX))
    }
}

/// Sleeps for `duration` unless shutdown comes first; returns whether to go on.
async fn pause(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    };
    !stopped && !*shutdown.borrow()
}

async fn run_puller(store: Arc<Store>, peer: Peer, states: PeerStates, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = tokio::select! {
            result = pull_from(&store, &peer, &states) => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        {
            let mut states = states.lock().expect("peer states lock poisoned");
            let state = states.get_mut(&peer.config.site).expect("every peer has a state");
            state.connected = false;
            match &result {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    tracing::debug!(peer = %peer.config.site, %error, "pull stream ended");
                    state.last_error = error.clone();
                }
            }
        }
        if result.is_ok() {
            continue;
        }
        if !pause(backoff.next_delay(), &mut shutdown).await {
            return;
        }
    }
}

/// Runs one pull stream until it fails; `Ok` means "reconnect at once" (after a catch-up by anti-entropy).
async fn pull_from(store: &Arc<Store>, peer: &Peer, states: &PeerStates) -> Result<(), String> {
    let mut client = peer.connect().await?;
    let peer = &peer.config;
    let cursors = store.progress().cursors_of(&peer.site);
    let request = pb::PullRequest { site: store.identity().site.clone(), cursors };
    let mut stream =
        client.pull(request).await.map_err(|e| format!("pull from {}: {}", peer.site, e.message()))?.into_inner();
    set_state(states, &peer.site, |state| {
        state.connected = true;
        state.last_error.clear();
    });
    // Merges queued but not yet durable, oldest first: the next batch is read and queued while earlier
    // ones are being written, so one fsync does not hold up the stream.
    let mut in_flight = std::collections::VecDeque::new();
    loop {
        while in_flight.len() >= MERGES_IN_FLIGHT_MAX
            || in_flight.front().is_some_and(|pending: &PendingMerge| pending.is_finished())
        {
            let pending = in_flight.pop_front().expect("checked non-empty");
            pending.finish(states, &peer.site).await?;
        }
        let message = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.message()).await {
            Err(_) => return Err(format!("nothing from {} for {STREAM_IDLE_TIMEOUT:?}", peer.site)),
            Ok(Err(status)) => return Err(format!("stream from {}: {}", peer.site, status.message())),
            Ok(Ok(None)) => return Err(format!("{} ended the stream", peer.site)),
            Ok(Ok(Some(message))) => message.message,
        };
        match message {
            Some(pb::pull_message::Message::Batch(batch)) => {
                in_flight.push_back(queue_batch(store, peer, batch).await?)
            }
            Some(pb::pull_message::Message::Heartbeat(heartbeat)) => set_state(states, &peer.site, |state| {
                if heartbeat.heads.len() == state.heads.len() {
                    state.heads = heartbeat.heads;
                }
            }),
            Some(pb::pull_message::Message::TruncatedPartition(partition)) => {
                let partition = u16::try_from(partition).map_err(|_| "bad partition in truncation notice")?;
                tracing::info!(peer = %peer.site, partition, "peer's log is trimmed past our cursor: anti-entropy");
                for pending in in_flight.drain(..) {
                    pending.finish(states, &peer.site).await?;
                }
                anti_entropy(store, &mut client, &peer.site, partition, true).await?;
                return Ok(());
            }
            None => return Err(format!("empty message from {}", peer.site)),
        }
    }
}

fn set_state(states: &PeerStates, site: &str, change: impl FnOnce(&mut PeerState)) {
    if let Some(state) = states.lock().expect("peer states lock poisoned").get_mut(site) {
        change(state);
    }
}

/// A batch queued for merging, and what to record about the peer once it is durable.
struct PendingMerge {
    outcome: tokio::task::JoinHandle<Result<usize, ChangeError>>,
    partition: u16,
    head: u64,
    last_applied_unix_ms: Option<i64>,
}

impl PendingMerge {
    fn is_finished(&self) -> bool {
        self.outcome.is_finished()
    }

    async fn finish(self, states: &PeerStates, site: &str) -> Result<(), String> {
        self.outcome.await.map_err(|e| format!("merge task failed: {e}"))?.map_err(|e| e.to_string())?;
        set_state(states, site, |state| {
            let index = usize::from(self.partition);
            if let Some(head) = state.heads.get_mut(index) {
                *head = (*head).max(self.head);
            }
            if let (Some(slot), Some(at)) = (state.last_applied_unix_ms.get_mut(index), self.last_applied_unix_ms) {
                *slot = at;
            }
        });
        Ok(())
    }
}

async fn queue_batch(store: &Arc<Store>, peer: &PeerConfig, batch: pb::PullBatch) -> Result<PendingMerge, String> {
    let partition = u16::try_from(batch.partition).map_err(|_| "bad partition in batch")?;
    let mut records = Vec::with_capacity(batch.entries.len());
    for entry in batch.entries {
        let record = LogRecord::decode(&entry.record).ok_or_else(|| {
            format!("unreadable record {} of partition {partition} from {}", entry.sequence, peer.site)
        })?;
        // Never adopt a timestamp too far ahead: refuse the batch and retry later, when our clock has
        // caught up or theirs has been fixed. The cursor stays, so nothing is lost.
        if let Err(error) = store.clock().observe(record.hlc) {
            if let ClockError::DriftTooLarge { .. } = error {
                store.metrics().clock_drift_refusals.inc();
            }
            return Err(format!("refused a record from {}: {error}", peer.site));
        }
        records.push((entry.sequence, record));
    }
    let last_applied_unix_ms = records.last().map(|(_, record)| record.hlc.unix_ms());
    let outcome = store
        .begin_merge(PeerRecords {
            peer: peer.site.clone(),
            partition,
            records,
            after: batch.after,
            through: batch.through,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(PendingMerge { outcome: tokio::spawn(outcome), partition, head: batch.head, last_applied_unix_ms })
}

/// Compares one partition with `peer` and merges the keys that differ. With `move_cursor`, the peer's
/// cursor then moves to the peer's log head taken before its digest. Returns the keys repaired.
pub async fn anti_entropy(
    store: &Arc<Store>,
    client: &mut ReplicationClient<Channel>,
    peer: &str,
    partition: u16,
    move_cursor: bool,
) -> Result<usize, String> {
    let call = |what: &str, status: Status| format!("anti-entropy {what} with {peer}: {}", status.message());
    let mut request = Request::new(pb::DigestRequest { partition: u32::from(partition) });
    request.set_timeout(ANTI_ENTROPY_CALL_TIMEOUT);
    let remote = client.digest(request).await.map_err(|s| call("digest", s))?.into_inner();
    let local = store.blocking(move |store| store.partition_digest(partition)).await.and_then(|digest| digest);
    let local = local.map_err(|e| format!("anti-entropy digest of partition {partition}: {e}"))?;
    if remote.buckets.len() != DIGEST_BUCKETS {
        return Err(format!("{peer} sent {} digest buckets, expected {DIGEST_BUCKETS}", remote.buckets.len()));
    }
    let differing: Vec<u32> =
        (0..DIGEST_BUCKETS).filter(|&bucket| remote.buckets[bucket] != local[bucket]).map(|b| b as u32).collect();
    let mut repaired = 0;
    for buckets in differing.chunks(ANTI_ENTROPY_BUCKETS_PER_CALL) {
        let mut request =
            Request::new(pb::BucketKeysRequest { partition: u32::from(partition), buckets: buckets.to_vec() });
        request.set_timeout(ANTI_ENTROPY_CALL_TIMEOUT);
        let remote_keys = client.bucket_keys(request).await.map_err(|s| call("bucket keys", s))?.into_inner().keys;
        let bucket_list: Vec<usize> = buckets.iter().map(|b| *b as usize).collect();
        let local_keys =
            store.blocking(move |store| store.bucket_digests(partition, &bucket_list)).await.and_then(|keys| keys);
        let local_keys: HashMap<Vec<u8>, u64> = local_keys
            .map_err(|e| format!("anti-entropy bucket keys of partition {partition}: {e}"))?
            .into_iter()
            .collect();
        let wanted: Vec<Vec<u8>> = remote_keys
            .into_iter()
            .filter(|remote| local_keys.get(&remote.key) != Some(&remote.digest))
            .filter(|remote| {
                !(planted::active(planted::Bug::AntiEntropySkipsRange)
                    && remote.key.as_slice() >= b"once/".as_slice()
                    && remote.key.as_slice() < b"once0".as_slice())
            })
            .map(|remote| remote.key)
            .collect();
        for keys in wanted.chunks(ANTI_ENTROPY_KEYS_PER_CALL) {
            let mut request =
                Request::new(pb::FetchEntriesRequest { partition: u32::from(partition), keys: keys.to_vec() });
            request.set_timeout(ANTI_ENTROPY_CALL_TIMEOUT);
            let fetched = client.fetch_entries(request).await.map_err(|s| call("fetch", s))?.into_inner().entries;
            let mut entries = Vec::with_capacity(fetched.len());
            for stored in fetched {
                let entry = decode_entry(&stored.entry).map_err(|e| format!("unreadable entry from {peer}: {e}"))?;
                entries.push((stored.key, entry));
            }
            repaired += store.repair(peer, partition, entries, None).await.map_err(|e| e.to_string())?;
        }
    }
    if move_cursor {
        store.repair(peer, partition, Vec::new(), Some(remote.head)).await.map_err(|e| e.to_string())?;
    }
    Ok(repaired)
}

/// Tells `peer`, about once a second, how far this node has durably merged its log.
async fn run_acknowledger(store: Arc<Store>, peer: Peer, mut shutdown: watch::Receiver<bool>) {
    let mut client = None;
    while pause(ACKNOWLEDGE_INTERVAL, &mut shutdown).await {
        if client.is_none() {
            client = peer.connect().await.ok();
        }
        let Some(connected) = client.as_mut() else { continue };
        let progress = store.progress();
        let cursors = progress.cursors_of(&peer.config.site);
        let mut request = Request::new(pb::AcknowledgeRequest {
            site: store.identity().site.clone(),
            cursors,
            heads: progress.heads,
        });
        request.set_timeout(CONNECT_TIMEOUT);
        if connected.acknowledge(request).await.is_err() {
            client = None;
        }
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

/// Every `interval`, compares every partition with `peer` and repairs what differs (counted in
/// `geostore_anti_entropy_repairs_total`).
async fn run_anti_entropy(store: Arc<Store>, peer: Peer, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if !pause(interval, &mut shutdown).await {
            return;
        }
        let round = async {
            let mut client = peer.connect().await?;
            let mut repaired = 0;
            for partition in 0..store.identity().partitions {
                repaired += anti_entropy(&store, &mut client, &peer.config.site, partition, false).await?;
            }
            Ok::<usize, String>(repaired)
        };
        let result = tokio::select! {
            result = round => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match result {
            Ok(0) => {}
            Ok(repaired) => tracing::info!(peer = %peer.config.site, repaired, "anti-entropy repaired keys"),
            Err(error) => tracing::debug!(peer = %peer.config.site, %error, "anti-entropy round failed"),
        }
    }
}
