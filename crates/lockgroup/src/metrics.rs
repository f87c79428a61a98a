//! Prometheus metrics of the lock group on one node, registered in the node's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The lock group's metrics (cheap to clone: the handles share their values).
#[derive(Clone)]
pub struct GroupMetrics {
    /// 1 while this node leads the group.
    pub is_leader: IntGauge,
    /// The Raft term this node is in.
    pub term: IntGauge,
    /// Leases that ran out (proposed by this node as leader).
    pub expiries: IntCounter,
    /// Lock requests taken by this node, by operation and result (`ok`, `failed`, `unknown`).
    pub requests: IntCounterVec,
    /// Time from taking an acquire to answering it (waiting in line included).
    pub acquire_seconds: Histogram,
}

impl GroupMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let is_leader = IntGauge::new("geostore_lock_group_leader", "1 while this node leads the lock group")
            .expect("valid metric");
        let term =
            IntGauge::new("geostore_lock_group_term", "The lock group's Raft term on this node").expect("valid metric");
        let expiries =
            IntCounter::new("geostore_lock_expiries_total", "Leases that ran out, proposed by this node as leader")
                .expect("valid metric");
        let requests = IntCounterVec::new(
            Opts::new("geostore_lock_requests_total", "Lock requests by operation and result"),
            &["op", "result"],
        )
        .expect("valid metric");
        let acquire_seconds = Histogram::with_opts(
            HistogramOpts::new("geostore_lock_acquire_seconds", "Time to answer an acquire, waiting included")
                .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 18).expect("valid buckets")),
        )
        .expect("valid metric");
        for collector in [
            Box::new(is_leader.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(term.clone()),
            Box::new(expiries.clone()),
            Box::new(requests.clone()),
            Box::new(acquire_seconds.clone()),
        ] {
            // Registering twice only happens if two groups share a registry; keep the first.
            let _ = registry.register(collector);
        }
        GroupMetrics { is_leader, term, expiries, requests, acquire_seconds }
    }
}
