//! Runtime plumbing shared by the node, the lock group and the client.
//!
//! - [`Backoff`]: the one retry backoff (exponential, capped, with jitter), used by the replication
//!   puller, the lock group's proposer and the client's lock retries.
//! - [`random`]: where that jitter comes from. A generator per thread, seeded from the operating system
//!   in production and by the simulation harness ([`random::seed`]) so that a seed replays the same
//!   delays. It is not the generator openraft's election timeouts draw from (that one is
//!   `geostore_raft::runtime`), so retries do not shift elections.
//! - [`shutdown`]: one cancellation token and one task tracker per node, instead of a flag handed to
//!   every task.
//! - [`group_commit`]: the loop of the threads that write queued work together, one fsync per group,
//!   with a bound on each group: the node's store writer and the lock group's Raft log flusher.
//!
//! **Never** reads the system clock or does I/O: a backoff says how long to wait, every sleep is on
//! tokio's clock (which the simulation harness controls), the group-commit loop blocks only on its
//! queue, and the caller's commit closure does the writing.

#![warn(missing_docs)]

pub mod group_commit;
pub mod random;
pub mod shutdown;

use std::time::Duration;

/// An exponential backoff with "equal jitter": the n-th delay is drawn uniformly from
/// `[d/2, d]` where `d = min(first * 2^n, max)`. Half of each delay is fixed, so retries never come
/// back at once; the random half spreads callers that failed together (an election, a restarted peer)
/// apart.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// The ceiling of the next delay before jitter.
    ceiling: Duration,
}

impl Backoff {
    /// A backoff whose first delay is at most `first` and whose delays never exceed `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.min(max);
        Backoff { first, max, ceiling: first }
    }

    /// The next delay, drawn from this thread's [`random`] generator; the ceiling then doubles.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(random::next_u64())
    }

    /// The next delay with the jitter taken from `random` (any u64): for callers with their own
    /// randomness, and for tests.
    pub fn next_delay_with(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let half = ceiling / 2;
        let span_nanos = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span_nanos == 0 { 0 } else { random % (span_nanos + 1) };
        half + Duration::from_nanos(jitter)
    }

    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.ceiling = self.first;
    }

    /// The largest delay this backoff can return.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_keep_half_of_each() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let ceilings = [100, 200, 400, 700, 700];
        for ceiling in ceilings {
            let ceiling = Duration::from_millis(ceiling);
            let low = backoff.clone().next_delay_with(0);
            let high = backoff.clone().next_delay_with(u64::MAX);
            assert_eq!(low, ceiling / 2);
            assert!(high <= ceiling && high > ceiling / 2, "{high:?} within ({:?}, {ceiling:?}]", ceiling / 2);
            let drawn = backoff.next_delay();
            assert!(drawn >= ceiling / 2 && drawn <= ceiling);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_seeded_thread_replays_its_delays() {
        let draw = || {
            random::seed(42);
            let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn a_first_delay_above_the_cap_is_capped() {
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }
}
