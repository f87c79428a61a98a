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

use super::{Acks, HEARTBEAT_INTERVAL};
use crate::store::Store;

/// Batches queued for one pull stream before the sender waits for the receiver.
const PULL_QUEUE_BATCHES_MAX: usize = 8;
/// Records and bytes per batch.
const PULL_BATCH_RECORDS_MAX: usize = 1024;
const PULL_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// The serving side: any node's log and digests, for the pullers of other sites.
pub struct ReplicationService {
    store: Arc<Store>,
    acks: Acks,
    /// Cancelled when the node shuts down: the pull streams it serves end then.
    stop: CancellationToken,
    /// Where the tasks feeding those streams run, so that shutdown waits for them.
    tasks: TaskTracker,
}

impl ReplicationService {
    /// Serves `store`'s log and digests, records acknowledgements in `acks`, and runs the stream tasks on
    /// `tasks` until `stop` is cancelled.
    pub fn new(store: Arc<Store>, acks: Acks, stop: CancellationToken, tasks: TaskTracker) -> Self {
        Self { store, acks, stop, tasks }
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
        if request.site == self.store.identity().site {
            let message = "Pull: a node does not pull from its own site";
            return Err(failed(Code::InvalidArgument, Reason::invalid("site"), message));
        }
        let (sender, receiver) = mpsc::channel(PULL_QUEUE_BATCHES_MAX);
        let stop = self.stop.clone();
        let serve = serve_pull(self.store.clone(), request.site, request.cursors, sender);
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
