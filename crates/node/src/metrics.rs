//! Prometheus metrics of one node. Each node has its own registry, so that several nodes in one process
//! (tests, the simulation) do not mix their figures.

use geostore_model::{Op, OpError};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::store::{WriteError, WriteOutcome};

/// The node's Prometheus metrics, served on the HTTP side port (cheap to clone: handles share values).
#[derive(Clone)]
pub struct Metrics {
    /// The registry holding every metric of the node (the lock group's too).
    pub registry: Registry,
    /// Writes by operation and result (`ok`, `rejected`, `unavailable`, `unknown`).
    pub writes: IntCounterVec,
    /// Writes refused before reaching the writer (malformed requests).
    pub writes_invalid: IntCounter,
    /// Operations applied per group commit (one storage batch, one fsync).
    pub group_ops: Histogram,
    /// Time for one storage batch write, fsync included.
    pub storage_write_seconds: Histogram,
    /// Time for one whole group: applying the operations and the storage write.
    pub group_seconds: Histogram,
    /// Storage writes that failed (after which the node takes no more writes).
    pub storage_failures: IntCounter,
    /// gRPC requests by method and status code.
    pub requests: IntCounterVec,
    /// Time from a change's origin timestamp to its merge here (across sites: the replication lag).
    pub replication_lag_seconds: Histogram,
    /// Records from each peer that changed this replica's state.
    pub replicated_records: IntCounterVec,
    /// Keys that anti-entropy found different and repaired here.
    pub anti_entropy_repairs: IntCounter,
    /// Remote timestamps refused for being further ahead than the allowed clock drift.
    pub clock_drift_refusals: IntCounter,
    /// Dead keys (deleted or expired) removed once every site had acknowledged them.
    pub tombstones_collected: IntCounter,
    /// Passes of the tombstone collector over every partition, whether or not they removed anything: a
    /// test that checks nothing was collected waits for a pass to have run.
    pub gc_passes: IntCounter,
    /// Fenced writes refused because this replica knew a higher token for their lock.
    /// Writes refused for a stale fencing token.
    pub fenced_rejections: IntCounter,
}

impl Metrics {
    /// Creates every metric in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let writes =
            IntCounterVec::new(Opts::new("geostore_writes_total", "Writes by operation and result"), &["op", "result"])
                .expect("valid metric");
        let writes_invalid =
            IntCounter::new("geostore_writes_invalid_total", "Malformed writes refused before the write path")
                .expect("valid metric");
        let group_ops = Histogram::with_opts(
            HistogramOpts::new("geostore_group_commit_ops", "Operations per group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0]),
        )
        .expect("valid metric");
        let storage_write_seconds = Histogram::with_opts(
            HistogramOpts::new("geostore_storage_write_seconds", "Time to write one batch to storage, fsync included")
                .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        let group_seconds = Histogram::with_opts(
            HistogramOpts::new("geostore_group_commit_seconds", "Time for one group commit")
                .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        let storage_failures =
            IntCounter::new("geostore_storage_failures_total", "Storage writes that failed").expect("valid metric");
        let requests = IntCounterVec::new(
            Opts::new("geostore_grpc_requests_total", "gRPC requests by method and code"),
            &["method", "code"],
        )
        .expect("valid metric");
        let replication_lag_seconds = Histogram::with_opts(
            HistogramOpts::new("geostore_replication_lag_seconds", "Origin timestamp to merge here, per record")
                .buckets(vec![
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.045, 0.05, 0.055, 0.06, 0.07, 0.08, 0.1, 0.15, 0.2,
                    0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                ]),
        )
        .expect("valid metric");
        let replicated_records = IntCounterVec::new(
            Opts::new("geostore_replicated_records_total", "Records from a peer that changed state here"),
            &["peer"],
        )
        .expect("valid metric");
        let anti_entropy_repairs =
            IntCounter::new("geostore_anti_entropy_repairs_total", "Keys repaired by anti-entropy")
                .expect("valid metric");
        let clock_drift_refusals = IntCounter::new(
            "geostore_clock_drift_refusals_total",
            "Remote timestamps refused for exceeding the allowed drift",
        )
        .expect("valid metric");
        let tombstones_collected = IntCounter::new(
            "geostore_tombstones_collected_total",
            "Deleted or expired keys removed once every site acknowledged them",
        )
        .expect("valid metric");
        let gc_passes = IntCounter::new(
            "geostore_gc_passes_total",
            "Passes of the tombstone collector over every partition, including those that removed nothing",
        )
        .expect("valid metric");
        let fenced_rejections = IntCounter::new(
            "geostore_fenced_rejections_total",
            "Fenced writes refused because this replica knew a higher token for their lock",
        )
        .expect("valid metric");
        for collector in [
            Box::new(tombstones_collected.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(gc_passes.clone()),
            Box::new(fenced_rejections.clone()),
            Box::new(replication_lag_seconds.clone()),
            Box::new(replicated_records.clone()),
            Box::new(anti_entropy_repairs.clone()),
            Box::new(clock_drift_refusals.clone()),
            Box::new(writes.clone()),
            Box::new(writes_invalid.clone()),
            Box::new(group_ops.clone()),
            Box::new(storage_write_seconds.clone()),
            Box::new(group_seconds.clone()),
            Box::new(storage_failures.clone()),
            Box::new(requests.clone()),
        ] {
            registry.register(collector).expect("each metric is registered once");
        }
        Self {
            registry,
            writes,
            writes_invalid,
            group_ops,
            storage_write_seconds,
            group_seconds,
            storage_failures,
            requests,
            replication_lag_seconds,
            replicated_records,
            anti_entropy_repairs,
            clock_drift_refusals,
            tombstones_collected,
            gc_passes,
            fenced_rejections,
        }
    }

    /// Counts a write by operation and result.
    pub fn observe_write(&self, op: &Op, result: &Result<WriteOutcome, WriteError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(WriteError::Invalid(_)) => "invalid",
            Err(WriteError::Rejected(
                OpError::TypeMismatch { .. } | OpError::CounterOverflow { .. } | OpError::NotFound,
            )) => "rejected",
            Err(WriteError::Unavailable(_) | WriteError::NotPrimary { .. }) => "unavailable",
            Err(WriteError::Unknown(_)) => "unknown",
            Err(WriteError::Fenced { .. }) => "fenced",
        };
        self.writes.with_label_values(&[op.name(), outcome]).inc();
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
