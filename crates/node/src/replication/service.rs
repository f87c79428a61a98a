//! The serving side of replication: any node's change log and digests, for the pullers of other sites.

use std::pin::Pin;
use std::sync::Arc;

use geostore_model::encode_entry;
use geostore_proto::outcome::{Reason, failed};
use geostore_proto::v1 as pb;
use geostore_proto::v1::replication_server::Replication;
use geostore_runtime::shutdown::{CancellationToken, TaskTracker};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use super::intra::{Confirmations, StreamGuard};
use super::{Acks, HEARTBEAT_INTERVAL};
use crate::routing::{PartitionPlace, Routing};
use crate::store::Store;

/// Batches queued for one pull stream before the sender waits for the receiver.
const PULL_QUEUE_BATCHES_MAX: usize = 8;
/// Records and bytes per batch.
const PULL_BATCH_RECORDS_MAX: usize = 1024;
const PULL_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// The serving side: any node's log and digests, for the pullers of other sites and the followers of
/// its own site.
pub struct ReplicationService {
    store: Arc<Store>,
    acks: Acks,
    /// `None`: this node is its site's only node and serves every partition.
    routing: Option<Arc<Routing>>,
    confirmations: Arc<Confirmations>,
    /// Cancelled when the node shuts down: the pull streams it serves end then.
    stop: CancellationToken,
    /// Where the tasks feeding those streams run, so that shutdown waits for them.
    tasks: TaskTracker,
}

impl ReplicationService {
    /// Serves `store`'s log and digests, records acknowledgements in `acks` and followers' confirmations
    /// in `confirmations`, and runs the stream tasks on `tasks` until `stop` is cancelled.
    pub fn new(
        store: Arc<Store>,
        acks: Acks,
        routing: Option<Arc<Routing>>,
        confirmations: Arc<Confirmations>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self { store, acks, routing, confirmations, stop, tasks }
    }

    /// What a pull stream serves: for a follower of this site, the partitions this node is its primary
    /// of, verbatim; for another site, the partitions asked for that this node leads (every one without
    /// a placement map), without that site's own records, and only as far as W replicas hold them.
    fn plan(&self, request: &pb::PullRequest) -> Result<PullPlan, Status> {
        let partitions = self.store.identity().partitions;
        let mut asked = vec![request.partitions.is_empty(); usize::from(partitions)];
        for partition in &request.partitions {
            asked[usize::from(self.partition(*partition)?)] = true;
        }
        let own_site = request.site == self.store.identity().site;
        let Some(routing) = &self.routing else {
            if own_site {
                let message = "Pull: a node does not pull from its own site";
                return Err(failed(Code::InvalidArgument, Reason::invalid("site"), message));
            }
            let places = vec![None; usize::from(partitions)];
            return Ok(PullPlan { serve: asked, skip_origin: Some(request.site.clone()), places, follower: None });
        };
        if !routing.ready() {
            // A stream planned now would serve nothing for its whole life: let the puller come back.
            let message = format!("Pull: the placement map of site {} is not created yet", routing.site());
            return Err(failed(Code::Unavailable, Reason::NotApplied, message));
        }
        let places: Vec<Option<PartitionPlace>> = (0..partitions).map(|p| routing.place(p)).collect();
        let led = |partition: usize| places[partition].as_ref().is_some_and(|place| place.primary == routing.node());
        if !own_site {
            let serve = (0..usize::from(partitions)).map(|p| asked[p] && led(p)).collect();
            return Ok(PullPlan { serve, skip_origin: Some(request.site.clone()), places, follower: None });
        }
        let node = request.node;
        if node == 0 || node == routing.node() || routing.endpoint(node).is_none() {
            let message = format!("Pull: a stream from this site names another member of it, not {node}");
            return Err(failed(Code::InvalidArgument, Reason::invalid("node"), message));
        }
        let serve = (0..usize::from(partitions))
            .map(|p| asked[p] && led(p) && places[p].as_ref().is_some_and(|place| place.replicas.contains(&node)))
            .collect();
        let guard = self.confirmations.stream_opened(node);
        Ok(PullPlan { serve, skip_origin: None, places: vec![None; usize::from(partitions)], follower: Some(guard) })
    }

    /// `partition`, if this node holds a replica of it (every one without a placement map).
    fn held(&self, partition: u32) -> Result<u16, Status> {
        let partition = self.partition(partition)?;
        if let Some(routing) = &self.routing
            && routing.role(partition) == crate::store::PartitionRole::Absent
        {
            let message = format!("partition {partition} has no replica on this node");
            return Err(failed(Code::FailedPrecondition, Reason::invalid("partition"), message));
        }
        Ok(partition)
    }

    fn partition(&self, partition: u32) -> Result<u16, Status> {
        u16::try_from(partition).ok().filter(|p| *p < self.store.identity().partitions).ok_or_else(|| {
            failed(
                Code::InvalidArgument,
                Reason::invalid("partition"),
                format!("partition {partition} does not exist (there are {})", self.store.identity().partitions),
            )
        })
    }
}

/// A storage failure while serving a peer. Every replication call only reads (or, for Acknowledge,
/// records a peer's progress in memory), so nothing was changed: the outcome is `failed`.
fn internal(error: impl std::fmt::Display) -> Status {
    failed(Code::Internal, Reason::Internal, error.to_string())
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
                Reason::invalid("cursors"),
                format!("Pull: {} cursors, but this cluster has {partitions} partitions", request.cursors.len()),
            ));
        }
        let plan = self.plan(&request)?;
        let (sender, receiver) = mpsc::channel(PULL_QUEUE_BATCHES_MAX);
        let stop = self.stop.clone();
        let serve = serve_pull(self.store.clone(), self.confirmations.clone(), plan, request.cursors, sender);
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                _ = serve => {}
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
            let message = format!("Acknowledge: expected {partitions} cursors and heads");
            return Err(failed(Code::InvalidArgument, Reason::invalid("cursors"), message));
        }
        self.acks.lock().expect("acks lock poisoned").insert(request.site, (request.cursors, request.heads));
        Ok(Response::new(pb::AcknowledgeResponse {}))
    }

    async fn confirm(&self, request: Request<pb::ConfirmRequest>) -> Result<Response<pb::ConfirmResponse>, Status> {
        let request = request.into_inner();
        for confirmed in &request.heads {
            let partition = self.partition(confirmed.partition)?;
            self.confirmations.confirm(request.node, partition, confirmed.head);
        }
        Ok(Response::new(pb::ConfirmResponse {}))
    }

    async fn digest(&self, request: Request<pb::DigestRequest>) -> Result<Response<pb::DigestResponse>, Status> {
        let partition = self.held(request.into_inner().partition)?;
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
        let partition = self.held(request.partition)?;
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
        self.held(request.partition)?;
        let mut entries = Vec::with_capacity(request.keys.len());
        for key in request.keys {
            if let Some(entry) = self.store.entry(&key).map_err(internal)? {
                entries.push(pb::StoredEntry { key, entry: encode_entry(&entry) });
            }
        }
        Ok(Response::new(pb::FetchEntriesResponse { entries }))
    }
}

/// What one pull stream serves (see [`ReplicationService::plan`]).
struct PullPlan {
    /// Per partition: whether the stream carries it.
    serve: Vec<bool>,
    /// Records of this origin are left out (another site's puller has its own site's changes).
    skip_origin: Option<String>,
    /// Per partition led here with followers: where it lives, so that another site is sent only what W
    /// replicas hold (`None`: every record, as soon as it is durable here).
    places: Vec<Option<PartitionPlace>>,
    /// For a follower of this site: counts it as up while the stream lives.
    follower: Option<StreamGuard>,
}

/// Sends the plan's partitions' log after the puller's cursors, then new records as they are written.
async fn serve_pull(
    store: Arc<Store>,
    confirmations: Arc<Confirmations>,
    plan: PullPlan,
    mut cursors: Vec<u64>,
    sender: mpsc::Sender<Result<pb::PullMessage, Status>>,
) {
    let _follower = plan.follower;
    let mut log = store.subscribe_log();
    let mut confirmed = confirmations.subscribe();
    let waits_for_quorum = plan.places.iter().any(|place| place.as_ref().is_some_and(|p| p.write_quorum() > 1));
    let mut truncated = vec![false; cursors.len()];
    let send = |message: pb::pull_message::Message| {
        let sender = sender.clone();
        async move { sender.send(Ok(pb::PullMessage { message: Some(message) })).await.is_ok() }
    };
    // The last sequence of each served partition the puller may have: the head, or what W replicas hold.
    let partitions = cursors.len();
    let servable = |bounds: &[(u64, u64)]| -> Vec<u64> {
        (0..partitions)
            .map(|partition| {
                if !plan.serve[partition] {
                    return 0;
                }
                let head = bounds[partition].1;
                match &plan.places[partition] {
                    Some(place) => confirmations.committed(partition as u16, place, head),
                    None => head,
                }
            })
            .collect()
    };
    loop {
        log.borrow_and_update();
        confirmed.borrow_and_update();
        let bounds = store.log_bounds();
        let limits = servable(&bounds);
        let mut sent_any = false;
        for partition in 0..cursors.len() {
            let (log_start, _) = bounds[partition];
            let limit = limits[partition];
            if !plan.serve[partition] || truncated[partition] || cursors[partition] >= limit {
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
            let records_max =
                usize::try_from(limit - cursors[partition]).unwrap_or(usize::MAX).min(PULL_BATCH_RECORDS_MAX);
            let records = match store.read_log(partition as u16, cursors[partition], records_max, PULL_BATCH_BYTES_MAX)
            {
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
                .filter(|(_, record)| plan.skip_origin.as_ref().is_none_or(|origin| record.origin != *origin))
                .map(|(sequence, record)| pb::LogEntry { sequence, record: record.encode() })
                .collect();
            let batch =
                pb::PullBatch { partition: partition as u32, entries, through, head: limit, after: cursors[partition] };
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
            changed = confirmed.changed(), if waits_for_quorum => if changed.is_err() { return },
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {
                let heads = servable(&store.log_bounds());
                if !send(pb::pull_message::Message::Heartbeat(pb::Heartbeat { heads })).await {
                    return;
                }
            }
        }
    }
}
