//! Anti-entropy: comparing a partition's digest with a peer's and merging only the keys that differ.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use geostore_model::decode_entry;
use geostore_model::planted;
use geostore_proto::v1 as pb;
use geostore_proto::v1::replication_client::ReplicationClient;
use geostore_runtime::shutdown::{CancellationToken, pause};
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::puller::Peer;
use crate::store::{DIGEST_BUCKETS, PartitionRole, Store};

const ANTI_ENTROPY_BUCKETS_PER_CALL: usize = 16;
const ANTI_ENTROPY_KEYS_PER_CALL: usize = 512;
/// Deadline of one anti-entropy call.
const ANTI_ENTROPY_CALL_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Every `interval`, compares every partition with `peer` and repairs what differs (counted in
/// `geostore_anti_entropy_repairs_total`).
pub(super) async fn run_anti_entropy(store: Arc<Store>, peer: Peer, interval: Duration, stop: CancellationToken) {
    loop {
        if !pause(interval, &stop).await {
            return;
        }
        let round = async {
            let mut client = peer.connect().await?;
            let mut repaired = 0;
            let mut failed = None;
            // Only a partition's primary repairs it (a follower's log is a copy of the primary's); a peer
            // node without a replica of the partition refuses, and another node of its site answers.
            let led = (0..store.identity().partitions).filter(|p| store.role(*p) == PartitionRole::Primary);
            for partition in led.collect::<Vec<_>>() {
                match anti_entropy(&store, &mut client, &peer.config.site, partition, false).await {
                    Ok(keys) => repaired += keys,
                    Err(error) => failed = Some(error),
                }
            }
            match failed {
                Some(error) if repaired == 0 => Err(error),
                _ => Ok::<usize, String>(repaired),
            }
        };
        let result = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            result = round => result,
        };
        match result {
            Ok(0) => {}
            Ok(repaired) => tracing::info!(peer = %peer.config.site, repaired, "anti-entropy repaired keys"),
            Err(error) => tracing::debug!(peer = %peer.config.site, %error, "anti-entropy round failed"),
        }
    }
}
