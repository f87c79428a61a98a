//! Replication progress (log heads and bounds, cursors on peers' logs, what this replica has seen of
//! each origin) and the causal waits built on it.
//!
//! The writer thread owns the committed [`ProgressState`] and publishes a copy after every durable group;
//! readers take copies or wait for the next publication. Nothing here is written to storage: the writer
//! puts the bookkeeping into each group's batch (`writer.rs`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{ReadError, Store};

/// Names one write in one site's change log: a read elsewhere can wait until it has seen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CausalToken {
    /// The site whose log holds the write.
    pub site: String,
    /// The key's partition.
    pub partition: u16,
    /// The write's sequence in that site's log of the partition.
    pub sequence: u64,
}

/// Replication progress, shared between the writer (which changes it after each commit) and readers.
#[derive(Debug, Default, Clone)]
pub struct ProgressState {
    /// The last sequence in each partition's log.
    pub heads: Vec<u64>,
    /// The first sequence still in each partition's log.
    pub log_starts: Vec<u64>,
    /// The encoded bytes of the records in each partition's log.
    pub log_bytes: Vec<u64>,
    /// `(peer, partition)` -> the last sequence of the peer's log merged here.
    pub cursors: BTreeMap<(String, u16), u64>,
    /// `(origin, partition)` -> the highest origin sequence reflected here.
    pub seen: BTreeMap<(String, u16), u64>,
    /// Without fsync: per partition, a sequence no record has reached, written with fsync before one does.
    pub sequence_limits: Vec<u64>,
    /// Per partition, the next record's sequence is above this (the limit found after a possible loss).
    pub sequence_floors: Vec<u64>,
    /// Without fsync: an HLC timestamp no write has reached, written with fsync before one does.
    pub hlc_limit: u64,
}

/// How far ahead of use the sequence limits above are moved: a restart after a loss skips at most this
/// many sequences per partition.
pub(super) const SEQUENCE_LIMIT_AHEAD: u64 = 4096;
/// How far ahead of use the HLC limit is moved: a restart after a loss starts its clock at most this far
/// ahead (well inside the allowed drift).
pub(super) const HLC_LIMIT_AHEAD_MS: i64 = 200;

impl ProgressState {
    /// This node's cursor on `peer`'s log of `partition` (0: nothing merged yet).
    pub fn cursor(&self, peer: &str, partition: u16) -> u64 {
        self.cursors.get(&(peer.to_string(), partition)).copied().unwrap_or(0)
    }

    /// This node's cursors on `peer`'s log, one per partition.
    pub fn cursors_of(&self, peer: &str) -> Vec<u64> {
        (0..self.heads.len() as u16).map(|partition| self.cursor(peer, partition)).collect()
    }
}

/// The published progress and the signals of its changes.
pub(super) struct Progress {
    pub(super) state: Mutex<ProgressState>,
    /// Bumped after every commit that appended to the log; log readers (pull streams) wait on it.
    pub(super) log_version: watch::Sender<u64>,
    /// Woken after every commit that advanced `seen`; causal reads wait on it.
    pub(super) seen_changed: Notify,
}

impl Progress {
    pub(super) fn new(state: ProgressState) -> Self {
        Progress { state: Mutex::new(state), log_version: watch::channel(0).0, seen_changed: Notify::new() }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().expect("progress lock poisoned")
    }

    /// Installs the progress of a durable group and wakes whoever waits for what it changed.
    pub(super) fn publish(&self, state: &ProgressState, log_grew: bool, seen_moved: bool) {
        *self.lock() = state.clone();
        if log_grew {
            self.log_version.send_modify(|version| *version += 1);
        }
        if seen_moved {
            self.seen_changed.notify_waiters();
        }
    }
}

impl Store {
    /// A copy of the replication progress.
    pub fn progress(&self) -> ProgressState {
        self.progress.lock().clone()
    }

    /// Each partition's log bounds `(first retained sequence, last sequence)`, without copying the
    /// replication maps that [`Store::progress`] also returns: for the pull streams, which read them after
    /// every commit.
    pub fn log_bounds(&self) -> Vec<(u64, u64)> {
        let state = self.progress.lock();
        state.log_starts.iter().copied().zip(state.heads.iter().copied()).collect()
    }

    /// Changes whenever the log grows: wait on it for new records.
    pub fn subscribe_log(&self) -> watch::Receiver<u64> {
        self.progress.log_version.subscribe()
    }

    /// Waits until this replica reflects the write named by `token`, for at most `wait`.
    pub async fn wait_for(&self, token: &CausalToken, wait: Duration) -> Result<(), ReadError> {
        if token.partition >= self.identity.partitions {
            return Err(ReadError::NoSuchPartition {
                partition: u64::from(token.partition),
                partitions: self.identity.partitions,
            });
        }
        // tokio's clock, not the system's: the simulation replays waits exactly.
        let started = tokio::time::Instant::now();
        let deadline = started + wait;
        loop {
            // Register for the wake-up before checking, so a commit in between is not missed.
            let changed = self.progress.seen_changed.notified();
            let seen = self.seen(&token.site, token.partition);
            if seen >= token.sequence {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(ReadError::NotYetReplicated {
                    site: token.site.clone(),
                    partition: token.partition,
                    seen,
                    needed: token.sequence,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
        }
    }

    /// The highest sequence of `site`'s log of `partition` reflected here (this site's own: its head).
    pub fn seen(&self, site: &str, partition: u16) -> u64 {
        let state = self.progress.lock();
        if site == self.identity.site {
            return state.heads.get(usize::from(partition)).copied().unwrap_or(0);
        }
        state.seen.get(&(site.to_string(), partition)).copied().unwrap_or(0)
    }
}
