//! The pulling side of replication: one long-lived stream from each peer site, merged batch by batch, and
//! the acknowledgements that tell the peer how far this node has durably merged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use geostore_model::ClockError;
use geostore_proto::net::Dialer;
use geostore_proto::v1 as pb;
use geostore_proto::v1::replication_client::ReplicationClient;
use geostore_runtime::Backoff;
use geostore_runtime::shutdown::{CancellationToken, TaskTracker, pause};
use tonic::Request;
use tonic::transport::Channel;

use super::anti_entropy::{anti_entropy, run_anti_entropy};
use super::{PeerState, PeerStates, STREAM_IDLE_TIMEOUT};
use crate::config::PeerConfig;
use crate::log::LogRecord;
use crate::routing::Routing;
use crate::store::{ChangeError, PeerRecords, Store};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a puller waiting for its site's placement map looks again.
const MAP_POLL: Duration = Duration::from_millis(20);
/// Merges a puller queues before waiting for the oldest to be durable.
const MERGES_IN_FLIGHT_MAX: usize = 32;
/// Pause before reconnecting, doubling from the first to the last after repeated failures (each with
/// jitter: `geostore_runtime::Backoff`).
const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a puller acknowledges what it has merged.
const ACKNOWLEDGE_INTERVAL: Duration = Duration::from_secs(1);

/// Starts, on `tasks`, a puller, an acknowledger and a periodic anti-entropy task for every peer. They end
/// when `stop` is cancelled.
pub fn start(
    store: Arc<Store>,
    peers: Vec<PeerConfig>,
    routing: Option<Arc<Routing>>,
    dialer: Dialer,
    anti_entropy_interval: Duration,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> PeerStates {
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
                (peer.endpoint.clone(), state)
            })
            .collect(),
    ));
    for peer in peers {
        let peer = Peer { config: peer, dialer: dialer.clone(), routing: routing.clone() };
        tasks.spawn(run_puller(store.clone(), peer.clone(), states.clone(), stop.clone()));
        tasks.spawn(run_acknowledger(store.clone(), peer.clone(), stop.clone()));
        tasks.spawn(run_anti_entropy(store.clone(), peer, anti_entropy_interval, stop.clone()));
    }
    states
}

/// A peer site and how to reach it.
#[derive(Clone)]
pub(super) struct Peer {
    pub(super) config: PeerConfig,
    dialer: Dialer,
    /// This node's site's placement: it pulls only the partitions it is the primary of.
    routing: Option<Arc<Routing>>,
}

impl Peer {
    pub(super) async fn connect(&self) -> Result<ReplicationClient<Channel>, String> {
        super::connect(&self.dialer, &self.config.endpoint).await
    }
}

async fn run_puller(store: Arc<Store>, peer: Peer, states: PeerStates, stop: CancellationToken) {
    let mut backoff = Backoff::new(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX);
    loop {
        let result = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            result = pull_from(&store, &peer, &states) => result,
        };
        {
            let mut states = states.lock().expect("peer states lock poisoned");
            let state = states.get_mut(&peer.config.endpoint).expect("every peer has a state");
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
        if !pause(backoff.next_delay(), &stop).await {
            return;
        }
    }
}

/// Runs one pull stream until it fails; `Ok` means "reconnect at once" (after a catch-up by anti-entropy).
async fn pull_from(store: &Arc<Store>, peer: &Peer, states: &PeerStates) -> Result<(), String> {
    // With several nodes in this site, each pulls the partitions it is the primary of (from every node of
    // the peer site: each serves those it leads there).
    let partitions = match &peer.routing {
        None => Vec::new(),
        Some(routing) => {
            // The site's map appears moments after the site starts (its placement group's first leader
            // creates it); until then this node leads nothing.
            while !routing.ready() {
                tokio::time::sleep(MAP_POLL).await;
            }
            let led = routing.primaries();
            if led.is_empty() {
                tokio::time::sleep(STREAM_IDLE_TIMEOUT).await;
                return Err("this node leads no partition of its site".into());
            }
            led.into_iter().map(u32::from).collect()
        }
    };
    let mut client = peer.connect().await?;
    let endpoint = peer.config.endpoint.clone();
    let peer = &peer.config;
    let cursors = store.progress().cursors_of(&peer.site);
    let request = pb::PullRequest { site: store.identity().site.clone(), cursors, partitions, node: 0 };
    let mut stream =
        client.pull(request).await.map_err(|e| format!("pull from {}: {}", peer.site, e.message()))?.into_inner();
    set_state(states, &endpoint, |state| {
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
            pending.finish(states, &endpoint).await?;
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
            Some(pb::pull_message::Message::Heartbeat(heartbeat)) => set_state(states, &endpoint, |state| {
                if heartbeat.heads.len() == state.heads.len() {
                    state.heads = heartbeat.heads;
                }
            }),
            Some(pb::pull_message::Message::TruncatedPartition(partition)) => {
                let partition = u16::try_from(partition).map_err(|_| "bad partition in truncation notice")?;
                tracing::info!(peer = %peer.site, partition, "peer's log is trimmed past our cursor: anti-entropy");
                for pending in in_flight.drain(..) {
                    pending.finish(states, &endpoint).await?;
                }
                anti_entropy(store, &mut client, &peer.site, partition, true).await?;
                return Ok(());
            }
            None => return Err(format!("empty message from {}", peer.site)),
        }
    }
}

fn set_state(states: &PeerStates, endpoint: &str, change: impl FnOnce(&mut PeerState)) {
    if let Some(state) = states.lock().expect("peer states lock poisoned").get_mut(endpoint) {
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

    async fn finish(self, states: &PeerStates, endpoint: &str) -> Result<(), String> {
        self.outcome.await.map_err(|e| format!("merge task failed: {e}"))?.map_err(|e| e.to_string())?;
        set_state(states, endpoint, |state| {
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

/// Tells `peer`, about once a second, how far this node has durably merged its log.
async fn run_acknowledger(store: Arc<Store>, peer: Peer, stop: CancellationToken) {
    let mut client = None;
    while pause(ACKNOWLEDGE_INTERVAL, &stop).await {
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
