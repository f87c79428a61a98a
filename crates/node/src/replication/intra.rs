//! Replication inside a site: every replica of a partition other than its primary follows the primary's
//! log, and tells the primary how far it has made it durable; the primary acknowledges a write once W
//! replicas (itself among them) have it.
//!
//! The follower pulls, as a puller of another site does (`Replication.Pull`, with its member id and the
//! partitions it follows), one stream per primary it follows. The stream carries the primary's records
//! verbatim; the follower writes each at the same sequence (`Store::begin_replicate`), so every replica's
//! log of a partition is a prefix of its primary's, and a cursor of another site on that log means the
//! same on every replica. After each batch is durable it calls `Replication.Confirm` with its new head;
//! the primary keeps those heads in [`Confirmations`] (in memory: after a restart of the primary, the
//! followers' next confirmations fill them again).
//!
//! Other sites are served only what W replicas hold ([`Confirmations::committed`]), so a change that
//! reached another site survives the loss of any N - W replicas of its origin site.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geostore_model::ClockError;
use geostore_placement::NodeId;
use geostore_proto::net::Dialer;
use geostore_proto::v1 as pb;
use geostore_proto::v1::replication_client::ReplicationClient;
use geostore_runtime::Backoff;
use geostore_runtime::shutdown::{CancellationToken, TaskTracker, pause};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::STREAM_IDLE_TIMEOUT;
use crate::routing::{PartitionPlace, Routing};
use crate::store::{PrimaryRecords, Store};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Copies a follower queues before waiting for the oldest to be durable.
const COPIES_IN_FLIGHT_MAX: usize = 32;
const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often a follower waiting for its site's placement map looks again.
const MAP_POLL: Duration = Duration::from_millis(100);
/// How often the intra-site gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// What the primary knows of its followers: per (partition, follower) the head the follower holds
/// durably, and which followers have a stream open to it now (they are up).
#[derive(Default)]
pub struct Confirmations {
    state: Mutex<ConfirmState>,
    /// Bumped by every confirmation and every follower stream opened or closed: writers waiting for W and
    /// the streams serving other sites wait on it.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct ConfirmState {
    heads: HashMap<(u16, NodeId), u64>,
    streams: HashMap<NodeId, usize>,
}

/// Why a write did not reach W replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumShortfall {
    /// The replicas that have it (the primary included).
    pub have: usize,
    /// The replicas that are up (the primary included).
    pub up: usize,
}

/// Counts a follower's stream as open while it lives.
pub struct StreamGuard {
    confirmations: Arc<Confirmations>,
    node: NodeId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut state = self.confirmations.lock();
        if let Some(open) = state.streams.get_mut(&self.node) {
            *open -= 1;
            if *open == 0 {
                state.streams.remove(&self.node);
            }
        }
        drop(state);
        self.confirmations.bump();
    }
}

impl Confirmations {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConfirmState> {
        self.state.lock().expect("confirmations lock poisoned")
    }

    fn bump(&self) {
        self.changed.send_modify(|version| *version = version.wrapping_add(1));
    }

    /// Changes with every confirmation and follower stream change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Follower `node` holds `partition`'s log durably up to `head`.
    pub fn confirm(&self, node: NodeId, partition: u16, head: u64) {
        let mut state = self.lock();
        let slot = state.heads.entry((partition, node)).or_insert(0);
        if head <= *slot {
            return;
        }
        *slot = head;
        drop(state);
        self.bump();
    }

    /// Records that follower `node` opened a stream; it counts as up until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>, node: NodeId) -> StreamGuard {
        *self.lock().streams.entry(node).or_insert(0) += 1;
        self.bump();
        StreamGuard { confirmations: self.clone(), node }
    }

    /// The followers of `place` that have a stream open to this node.
    pub fn up(&self, place: &PartitionPlace) -> usize {
        let state = self.lock();
        place.followers().filter(|node| state.streams.contains_key(node)).count()
    }

    /// Each follower of `place`: its confirmed head of `partition` and whether it is up.
    pub fn progress(&self, partition: u16, place: &PartitionPlace) -> Vec<(NodeId, u64, bool)> {
        let state = self.lock();
        place
            .followers()
            .map(|node| {
                let head = state.heads.get(&(partition, node)).copied().unwrap_or(0);
                (node, head, state.streams.contains_key(&node))
            })
            .collect()
    }

    /// How many replicas of `place` (the primary, which has it, included) hold `sequence`.
    fn holding(&self, partition: u16, place: &PartitionPlace, sequence: u64) -> usize {
        let state = self.lock();
        1 + place
            .followers()
            .filter(|node| state.heads.get(&(partition, *node)).is_some_and(|h| *h >= sequence))
            .count()
    }

    /// The last sequence of `partition`'s log (whose head here, at the primary, is `head`) that W replicas
    /// hold: what other sites may be sent.
    pub fn committed(&self, partition: u16, place: &PartitionPlace, head: u64) -> u64 {
        let needed = place.write_quorum();
        if needed <= 1 {
            return head;
        }
        let state = self.lock();
        let mut heads: Vec<u64> =
            place.followers().map(|node| state.heads.get(&(partition, node)).copied().unwrap_or(0)).collect();
        heads.sort_unstable_by(|a, b| b.cmp(a));
        heads.get(needed - 2).copied().unwrap_or(0).min(head)
    }

    /// Waits until W replicas of `place` hold `partition`'s `sequence`, for at most `wait`.
    pub async fn wait_for_quorum(
        &self,
        partition: u16,
        place: &PartitionPlace,
        sequence: u64,
        wait: Duration,
    ) -> Result<(), QuorumShortfall> {
        let needed = place.write_quorum();
        let mut changed = self.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            changed.borrow_and_update();
            let have = self.holding(partition, place, sequence);
            if have >= needed {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(QuorumShortfall { have, up: 1 + self.up(place) }),
            }
        }
    }
}

/// Starts, on `tasks`, one follower per primary this node follows (once the site's map exists). They
/// end when `stop` is cancelled.
pub fn start_followers(
    store: Arc<Store>,
    routing: Arc<Routing>,
    dialer: Dialer,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    let spawner = tasks.clone();
    let stop = stop.clone();
    tasks.spawn(async move {
        while !routing.ready() {
            if !pause(MAP_POLL, &stop).await {
                return;
            }
        }
        // The map is fixed once created in this version (no moves or failovers yet): follow it as it is.
        for (primary, partitions) in routing.followed() {
            let Some(endpoint) = routing.endpoint(primary).map(str::to_string) else {
                tracing::error!(primary, "the placement map names a primary that is not a member of this site");
                continue;
            };
            let follower = Follower {
                store: store.clone(),
                routing: routing.clone(),
                dialer: dialer.clone(),
                primary,
                endpoint,
                partitions,
            };
            spawner.spawn(follower.run(stop.clone()));
        }
    });
}

/// This node following one primary, for the partitions it holds replicas of under it.
struct Follower {
    store: Arc<Store>,
    routing: Arc<Routing>,
    dialer: Dialer,
    primary: NodeId,
    endpoint: String,
    partitions: Vec<u16>,
}

impl Follower {
    async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX);
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                result = self.follow() => result,
            };
            if let Err(error) = result {
                tracing::debug!(primary = self.primary, %error, "follower stream ended");
            }
            if !pause(backoff.next_delay(), &stop).await {
                return;
            }
        }
    }

    /// One stream from the primary, until it fails.
    async fn follow(&self) -> Result<(), String> {
        let mut client = super::connect(&self.dialer, &self.endpoint).await?;
        let heads = self.store.log_bounds().into_iter().map(|(_, head)| head).collect::<Vec<_>>();
        let request = pb::PullRequest {
            site: self.routing.site().to_string(),
            cursors: heads.clone(),
            partitions: self.partitions.iter().map(|p| u32::from(*p)).collect(),
            node: self.routing.node(),
        };
        let mut stream = client
            .pull(request)
            .await
            .map_err(|e| format!("follow primary {}: {}", self.primary, e.message()))?
            .into_inner();
        // Confirmations go out from their own task, coalesced: the partitions whose head moved since the
        // last call, in one call, while the stream keeps being read and copied.
        let confirmer = Confirmer::start(client.clone(), self.routing.node());
        // The heads this follower holds now count as confirmed: a primary that restarted learns them.
        for partition in &self.partitions {
            confirmer.confirmed(*partition, heads[usize::from(*partition)]);
        }
        let mut in_flight: std::collections::VecDeque<PendingCopy> = std::collections::VecDeque::new();
        loop {
            if let Some(error) = confirmer.failed() {
                return Err(error);
            }
            if in_flight.len() >= COPIES_IN_FLIGHT_MAX {
                let copy = in_flight.pop_front().expect("checked non-empty");
                let done = copy.outcome.await;
                confirmer.confirmed(copy.partition, copied_head(done)?);
                continue;
            }
            let next = match in_flight.front_mut() {
                None => tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.message()).await,
                // Something is being made durable: confirm it as soon as it is, even with no new message.
                Some(front) => tokio::select! {
                    biased;
                    done = &mut front.outcome => {
                        let partition = front.partition;
                        in_flight.pop_front();
                        confirmer.confirmed(partition, copied_head(done)?);
                        continue;
                    }
                    message = tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.message()) => message,
                },
            };
            let message = match next {
                Err(_) => return Err(format!("nothing from primary {} for {STREAM_IDLE_TIMEOUT:?}", self.primary)),
                Ok(Err(status)) => return Err(format!("stream from primary {}: {}", self.primary, status.message())),
                Ok(Ok(None)) => return Err(format!("primary {} ended the stream", self.primary)),
                Ok(Ok(Some(message))) => message.message,
            };
            match message {
                Some(pb::pull_message::Message::Batch(batch)) => in_flight.push_back(self.queue(batch).await?),
                Some(pb::pull_message::Message::Heartbeat(_)) => {}
                Some(pb::pull_message::Message::TruncatedPartition(partition)) => {
                    // Moving a replica (copying a snapshot) is the next step of the scale-out work; until
                    // then a follower that fell behind the primary's retained log cannot catch up.
                    return Err(format!(
                        "primary {}'s log of partition {partition} is trimmed past this replica's head",
                        self.primary
                    ));
                }
                None => return Err(format!("empty message from primary {}", self.primary)),
            }
        }
    }

    async fn queue(&self, batch: pb::PullBatch) -> Result<PendingCopy, String> {
        let partition = u16::try_from(batch.partition).map_err(|_| "bad partition in batch")?;
        if !self.partitions.contains(&partition) {
            return Err(format!(
                "primary {} sent partition {partition}, which this node does not follow",
                self.primary
            ));
        }
        let mut records = Vec::with_capacity(batch.entries.len());
        for entry in batch.entries {
            if let Some(record) = crate::log::LogRecord::decode(&entry.record)
                && let Err(error) = self.store.clock().observe(record.hlc)
            {
                if let ClockError::DriftTooLarge { .. } = error {
                    self.store.metrics().clock_drift_refusals.inc();
                }
                return Err(format!("refused a record from primary {}: {error}", self.primary));
            }
            records.push((entry.sequence, entry.record));
        }
        let outcome = self
            .store
            .begin_replicate(PrimaryRecords { primary: self.primary, partition, records, after: batch.after })
            .await
            .map_err(|e| e.to_string())?;
        Ok(PendingCopy { outcome: tokio::spawn(outcome), partition })
    }
}

/// Sends a follower's confirmations to its primary from a task of its own: the heads that moved since the
/// last call go in one call, so a slow call never holds up copying.
struct Confirmer {
    state: Arc<Mutex<ConfirmerState>>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ConfirmerState {
    pending: std::collections::BTreeMap<u16, u64>,
    failed: Option<String>,
}

impl Confirmer {
    fn start(mut client: ReplicationClient<Channel>, node: NodeId) -> Confirmer {
        let state = Arc::new(Mutex::new(ConfirmerState::default()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let (state, wake) = (state.clone(), wake.clone());
            async move {
                loop {
                    wake.notified().await;
                    let pending = std::mem::take(&mut state.lock().expect("confirmer lock poisoned").pending);
                    if pending.is_empty() {
                        continue;
                    }
                    let heads = pending
                        .into_iter()
                        .map(|(partition, head)| pb::PartitionHead { partition: u32::from(partition), head })
                        .collect();
                    let mut request = tonic::Request::new(pb::ConfirmRequest { node, heads });
                    request.set_timeout(CONNECT_TIMEOUT);
                    if let Err(status) = client.confirm(request).await {
                        state.lock().expect("confirmer lock poisoned").failed =
                            Some(format!("confirm: {}", status.message()));
                        return;
                    }
                }
            }
        });
        Confirmer { state, wake, task }
    }

    /// `partition` is durable here up to `head`.
    fn confirmed(&self, partition: u16, head: u64) {
        let mut state = self.state.lock().expect("confirmer lock poisoned");
        let slot = state.pending.entry(partition).or_insert(0);
        *slot = (*slot).max(head);
        drop(state);
        self.wake.notify_one();
    }

    /// Why confirming failed, if it did (the stream is then started again).
    fn failed(&self) -> Option<String> {
        self.state.lock().expect("confirmer lock poisoned").failed.clone()
    }
}

impl Drop for Confirmer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The head a finished copy reached, or why it failed.
fn copied_head(done: Result<Result<u64, crate::store::ChangeError>, tokio::task::JoinError>) -> Result<u64, String> {
    done.map_err(|e| format!("copy task failed: {e}"))?.map_err(|e| e.to_string())
}

/// A copy queued for writing, confirmed to the primary once durable.
struct PendingCopy {
    outcome: tokio::task::JoinHandle<Result<u64, crate::store::ChangeError>>,
    partition: u16,
}

/// Keeps two gauges of the partitions this node leads up to date, every second:
/// `geostore_partitions_under_replicated` (fewer than N replicas up) and
/// `geostore_intra_site_lag_records` (the most records a follower is behind its primary here).
pub fn start_gauges(
    registry: &prometheus::Registry,
    store: Arc<Store>,
    routing: Arc<Routing>,
    confirmations: Arc<Confirmations>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    let under_replicated = prometheus::IntGauge::new(
        "geostore_partitions_under_replicated",
        "Partitions this node is the primary of with fewer than N replicas up in the site",
    )
    .expect("valid metric");
    let lag = prometheus::IntGauge::new(
        "geostore_intra_site_lag_records",
        "The most records a follower of a partition this node leads is behind it",
    )
    .expect("valid metric");
    for gauge in [&under_replicated, &lag] {
        if let Err(error) = registry.register(Box::new(gauge.clone())) {
            tracing::warn!(%error, "intra-site gauges not registered");
        }
    }
    let stop = stop.clone();
    tasks.spawn(async move {
        while pause(GAUGE_INTERVAL, &stop).await {
            let bounds = store.log_bounds();
            let (mut short, mut behind) = (0, 0);
            for partition in routing.primaries() {
                let Some(place) = routing.place(partition) else { continue };
                let head = bounds[usize::from(partition)].1;
                let progress = confirmations.progress(partition, &place);
                short += i64::from(1 + confirmations.up(&place) < place.replicas.len());
                behind =
                    progress.iter().map(|(_, confirmed, _)| head.saturating_sub(*confirmed)).fold(behind, u64::max);
            }
            under_replicated.set(short);
            lag.set(i64::try_from(behind).unwrap_or(i64::MAX));
        }
    });
}
