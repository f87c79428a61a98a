//! The writer: the one thread (or, in the simulation, the one inline caller) that changes the store, and
//! its group commit.
//!
//! The writer takes every request that is waiting, up to `group_ops_max` operations (the loop is
//! [`geostore_runtime::group_commit`], shared with the lock group's log flusher), applies them in
//! order to one [`Group`] (`apply.rs`), adds the bookkeeping (sequences, cursors, `seen`, HLC limits) to
//! the group's batch, writes it with one fsync, and only then publishes the new progress and answers
//! every request of the group. Concurrent callers so share one fsync, and nothing is acknowledged before
//! it is durable.
//!
//! After a storage write fails the writer refuses every later change: RocksDB's state after a failed
//! fsync is not trustworthy, so the node must be restarted (and recover from its write-ahead log).

use std::sync::Arc;

use geostore_model::{Entry, Hlc};
use geostore_runtime::group_commit;
use geostore_storage::{Durability, Space, StorageError};
use tokio::sync::{mpsc, oneshot};

use super::apply::{Applier, Group};
use super::progress::{HLC_LIMIT_AHEAD_MS, Progress, SEQUENCE_LIMIT_AHEAD};
use super::{
    ChangeError, FencedOp, PeerRecords, PrimaryRecords, ProgressState, StoreError, WriteError, WriteOutcome, keys,
};

/// Work for the writer thread.
pub(super) enum Request {
    Write {
        ops: Vec<FencedOp>,
        reply: oneshot::Sender<Vec<Result<WriteOutcome, WriteError>>>,
    },
    Merge {
        records: PeerRecords,
        reply: oneshot::Sender<Result<usize, ChangeError>>,
    },
    /// The site's primary's log records of a partition, copied verbatim; answers the new head.
    Replicate {
        records: PrimaryRecords,
        reply: oneshot::Sender<Result<u64, ChangeError>>,
    },
    /// Whole entries fetched by anti-entropy; `cursor` optionally moves a peer's cursor afterwards.
    Repair {
        peer: String,
        partition: u16,
        entries: Vec<(Vec<u8>, Entry)>,
        cursor: Option<u64>,
        reply: oneshot::Sender<Result<usize, ChangeError>>,
    },
    /// Remove dead keys (deleted or expired) whose state is still exactly `expected`: garbage collection
    /// of tombstones every site has acknowledged.
    Collect {
        partition: u16,
        candidates: Vec<(Vec<u8>, Entry)>,
        reply: oneshot::Sender<Result<usize, ChangeError>>,
    },
    /// Drop a partition's log records below `start`.
    Trim {
        partition: u16,
        start: u64,
        bytes_removed: u64,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
}

impl Request {
    /// What this request counts against `group_ops_max`: its operations, records, entries or candidates
    /// (at least one: a write is never empty, and the group-commit loop counts any request as one or more).
    pub(super) fn op_count(&self) -> usize {
        match self {
            Request::Write { ops, .. } => ops.len(),
            Request::Merge { records, .. } => records.records.len().max(1),
            Request::Replicate { records, .. } => records.records.len().max(1),
            Request::Repair { entries, .. } => entries.len().max(1),
            Request::Collect { candidates, .. } => candidates.len().max(1),
            Request::Trim { .. } => 1,
        }
    }
}

/// The writer's state. Only the writer changes data, log, sequences and cursors.
pub(super) struct Writer {
    pub(super) applier: Applier,
    pub(super) durability: Durability,
    pub(super) group_ops_max: usize,
    /// The committed progress; a group works on a copy and installs it only once its batch is durable.
    pub(super) state: ProgressState,
    /// Set when a storage write fails; every later change is refused with it.
    pub(super) failed: Option<StorageError>,
    pub(super) progress: Arc<Progress>,
}

/// A request's answer, held until the group is durable.
enum Reply {
    Write(oneshot::Sender<Vec<Result<WriteOutcome, WriteError>>>, Vec<Result<WriteOutcome, WriteError>>),
    Count(oneshot::Sender<Result<usize, ChangeError>>, Result<usize, ChangeError>),
    Head(oneshot::Sender<Result<u64, ChangeError>>, Result<u64, ChangeError>),
    Done(oneshot::Sender<Result<(), ChangeError>>, Result<(), ChangeError>),
}

impl Writer {
    /// The writer thread: commits the queued requests in groups of up to `group_ops_max` operations (the
    /// request that reaches the bound is the group's last) until every sender is gone.
    pub(super) fn run(mut self, receiver: mpsc::Receiver<Request>) {
        let group_ops_max = self.group_ops_max;
        group_commit::run(receiver, group_ops_max, Request::op_count, |group| self.commit_group(group));
        tracing::info!("writer stopped");
    }

    pub(super) fn commit_group(&mut self, requests: Vec<Request>) {
        let started = std::time::Instant::now();
        if let Some(error) = &self.failed {
            for request in requests {
                refuse(request, StoreError::WriteFailed(error.clone()));
            }
            return;
        }
        let mut group = Group::new(&self.state);
        let applier = &self.applier;
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            replies.push(match request {
                Request::Write { ops, reply } => {
                    let results = ops
                        .iter()
                        .map(|(key, op, fence)| {
                            let result = applier.apply_local(key, op, fence.as_ref(), &mut group);
                            applier.metrics.observe_write(op, &result);
                            result
                        })
                        .collect();
                    Reply::Write(reply, results)
                }
                Request::Merge { records, reply } => Reply::Count(reply, applier.apply_merge(records, &mut group)),
                Request::Replicate { records, reply } => {
                    Reply::Head(reply, applier.apply_replicate(records, &mut group))
                }
                Request::Repair { peer, partition, entries, cursor, reply } => {
                    Reply::Count(reply, applier.apply_repair(&peer, partition, entries, cursor, &mut group))
                }
                Request::Collect { partition, candidates, reply } => {
                    Reply::Count(reply, applier.apply_collect(partition, candidates, &mut group))
                }
                Request::Trim { partition, start, bytes_removed, reply } => {
                    Reply::Done(reply, applier.apply_trim(partition, start, bytes_removed, &mut group))
                }
            });
        }

        let mut committed = true;
        // A merge that changed nothing still moved a cursor: that must be written too. A cursor that
        // falls back at a restart makes the node merge old records again, and an old record merged after
        // its key's tombstone was collected brings a deleted value back (found by the simulation).
        if !group.batch.is_empty() || !group.touched_cursors.is_empty() {
            self.add_bookkeeping(&mut group);
            let durability = self.raise_limits(&mut group);
            let write_started = std::time::Instant::now();
            match applier.storage.write(std::mem::take(&mut group.batch), durability) {
                Ok(()) => {
                    applier.metrics.storage_write_seconds.observe(write_started.elapsed().as_secs_f64());
                    applier.metrics.group_ops.observe(group.changes as f64);
                }
                Err(error) => {
                    tracing::error!(%error, "storage write failed: the store stops taking changes; restart the node");
                    applier.metrics.storage_failures.inc();
                    let failed = StoreError::WriteFailed(error.clone());
                    for reply in replies.iter_mut() {
                        match reply {
                            Reply::Write(_, results) => {
                                for result in results.iter_mut().filter(|result| result.is_ok()) {
                                    *result = Err(WriteError::Unknown(failed.clone()));
                                }
                            }
                            Reply::Count(_, result) => *result = Err(failed.clone().into()),
                            Reply::Head(_, result) => *result = Err(failed.clone().into()),
                            Reply::Done(_, result) => *result = Err(failed.clone().into()),
                        }
                    }
                    self.failed = Some(error);
                    committed = false;
                }
            }
        }
        if committed {
            let log_grew = group.touched_heads.iter().any(|touched| *touched);
            let seen_moved = !group.touched_seen.is_empty() || log_grew;
            self.state = group.state;
            self.progress.publish(&self.state, log_grew, seen_moved);
        }
        for reply in replies {
            // A caller that stopped waiting no longer needs its answer.
            match reply {
                Reply::Write(sender, results) => drop(sender.send(results)),
                Reply::Count(sender, result) => drop(sender.send(result)),
                Reply::Head(sender, result) => drop(sender.send(result)),
                Reply::Done(sender, result) => drop(sender.send(result)),
            }
        }
        self.applier.metrics.group_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// Without fsync: when this group's writes reach the HLC or sequence limits, moves them ahead in the
    /// batch and writes it with fsync (about once per `SEQUENCE_LIMIT_AHEAD` records per partition and
    /// once per `HLC_LIMIT_AHEAD_MS` of writing). Returns the durability to write the batch with.
    fn raise_limits(&self, group: &mut Group) -> Durability {
        if self.durability != Durability::Buffered {
            return self.durability;
        }
        let mut raised = false;
        for partition in 0..group.state.heads.len() {
            if group.touched_heads[partition] && group.state.heads[partition] > group.state.sequence_limits[partition] {
                let limit = group.state.heads[partition] + SEQUENCE_LIMIT_AHEAD;
                group.state.sequence_limits[partition] = limit;
                let key = keys::meta_sequence_limit_key(partition as u16);
                group.batch.put(Space::Meta, key, limit.to_be_bytes().to_vec());
                raised = true;
            }
        }
        if let Some(hlc) = group.hlc_high
            && hlc.0 > group.state.hlc_limit
        {
            let limit = Hlc::from_parts(hlc.unix_ms() + HLC_LIMIT_AHEAD_MS, 0).map_or(u64::MAX, |limit| limit.0);
            group.state.hlc_limit = limit;
            group.batch.put(Space::Meta, keys::META_HLC_LIMIT.to_vec(), limit.to_be_bytes().to_vec());
            raised = true;
        }
        if raised { Durability::Sync } else { self.durability }
    }

    /// Puts the sequences, cursors, origin progress and HLC high-water mark the group changed into its batch.
    fn add_bookkeeping(&self, group: &mut Group) {
        for (partition, _) in group.touched_heads.iter().enumerate().filter(|(_, touched)| **touched) {
            let head = group.state.heads[partition];
            let bytes = group.state.log_bytes[partition];
            group.batch.put(Space::Meta, keys::meta_sequence_key(partition as u16), head.to_be_bytes().to_vec());
            group.batch.put(Space::Meta, keys::meta_log_bytes_key(partition as u16), bytes.to_be_bytes().to_vec());
        }
        for (peer, partition) in &group.touched_cursors {
            let cursor = group.state.cursors[&(peer.clone(), *partition)];
            let key = keys::meta_site_partition_key(keys::META_CURSOR_PREFIX, peer, *partition);
            group.batch.put(Space::Meta, key, cursor.to_be_bytes().to_vec());
        }
        for (origin, partition) in &group.touched_seen {
            let seen = group.state.seen[&(origin.clone(), *partition)];
            let key = keys::meta_site_partition_key(keys::META_SEEN_PREFIX, origin, *partition);
            group.batch.put(Space::Meta, key, seen.to_be_bytes().to_vec());
        }
        if let Some(hlc) = group.hlc_high {
            group.batch.put(Space::Meta, keys::META_HLC_HIGH.to_vec(), hlc.0.to_be_bytes().to_vec());
        }
    }
}

/// Answers a request the writer will not apply (the store stopped after a storage failure): not applied.
fn refuse(request: Request, error: StoreError) {
    match request {
        Request::Write { ops, reply } => {
            let _ = reply.send(ops.iter().map(|_| Err(WriteError::Unavailable(error.clone()))).collect());
        }
        Request::Merge { reply, .. } | Request::Repair { reply, .. } | Request::Collect { reply, .. } => {
            let _ = reply.send(Err(error.into()));
        }
        Request::Trim { reply, .. } => {
            let _ = reply.send(Err(error.into()));
        }
        Request::Replicate { reply, .. } => {
            let _ = reply.send(Err(error.into()));
        }
    }
}
