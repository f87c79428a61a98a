//! Time for the core: a wall clock behind a trait, and a hybrid logical clock (HLC) driven by it.
//!
//! Nothing in the core reads the system time directly. Production uses [`SystemWallClock`]; tests and the
//! simulation use [`ManualWallClock`] and move it (or skew it per node) themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use hlc_gen::HlcGenerator;
use hlc_gen::source::ManualClock;
use serde::{Deserialize, Serialize};

/// A source of physical time in milliseconds since the Unix epoch.
pub trait WallClock: Send + Sync + 'static {
    /// The current time, in milliseconds since 1970-01-01 UTC. It may go backwards (a clock step); the
    /// [`HybridClock`] built on it never does.
    fn now_unix_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now_unix_ms(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the system clock is set before 1970");
        i64::try_from(since_epoch.as_millis()).expect("the system clock is past year 292 million")
    }
}

/// A clock that only moves when told to: for tests and the simulation.
#[derive(Debug, Clone)]
pub struct ManualWallClock {
    now_unix_ms: Arc<AtomicI64>,
}

impl ManualWallClock {
    /// A clock standing at `now_unix_ms` (milliseconds since the Unix epoch). Clones share the time.
    pub fn new(now_unix_ms: i64) -> Self {
        Self { now_unix_ms: Arc::new(AtomicI64::new(now_unix_ms)) }
    }

    /// Sets the time to `now_unix_ms` (milliseconds since the Unix epoch), forwards or backwards.
    pub fn set(&self, now_unix_ms: i64) {
        self.now_unix_ms.store(now_unix_ms, Ordering::SeqCst);
    }

    /// Moves the time by `delta_ms` milliseconds (negative moves it back).
    pub fn advance_ms(&self, delta_ms: i64) {
        self.now_unix_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl WallClock for ManualWallClock {
    fn now_unix_ms(&self) -> i64 {
        self.now_unix_ms.load(Ordering::SeqCst)
    }
}

/// Another clock shifted by a fixed offset: for fault tests that give one node a skewed clock.
#[derive(Clone)]
pub struct OffsetWallClock {
    /// The clock whose readings are shifted.
    pub inner: Arc<dyn WallClock>,
    /// Milliseconds added to every reading of `inner` (negative: this clock runs behind).
    pub offset_ms: i64,
}

impl WallClock for OffsetWallClock {
    fn now_unix_ms(&self) -> i64 {
        self.inner.now_unix_ms() + self.offset_ms
    }
}

/// A hybrid logical clock timestamp, in `hlc-gen`'s layout: 42 bits of milliseconds since 2024-01-01 UTC,
/// then a 22-bit logical counter. Ordering the `u64` orders the timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The timestamp with physical part `unix_ms` and logical counter `count` (tests and tools; the write
    /// path only uses [`HybridClock::next`]).
    pub fn from_parts(unix_ms: i64, count: u64) -> Result<Hlc, ClockError> {
        hlc_gen::HlcTimestamp::from_parts(unix_ms, count).map(|t| Hlc(t.as_u64())).map_err(|_| ClockError::OutOfRange)
    }

    /// The physical part of the timestamp, in milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> i64 {
        // The bit layout is hlc-gen's; converting through it keeps the epoch in one place.
        match hlc_gen::HlcTimestamp::try_from(self.0) {
            Ok(timestamp) => timestamp.timestamp(),
            Err(_) => 0,
        }
    }
}

/// Why a remote timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The remote timestamp's physical part is further ahead of the local wall clock than the clock allows;
    /// the clock did not move.
    #[error("remote timestamp is {drift_ms} ms ahead of this node's clock; the limit is {max_drift_ms} ms")]
    DriftTooLarge {
        /// How far ahead of the local wall clock the timestamp was, in milliseconds.
        drift_ms: u64,
        /// The largest drift the clock accepts, in milliseconds.
        max_drift_ms: u64,
    },
    /// The timestamp (or the parts it was built from) does not fit the 42-bit milliseconds and 22-bit
    /// counter layout of [`Hlc`].
    #[error("timestamp out of the representable range")]
    OutOfRange,
}

/// The node's hybrid logical clock. Every write is stamped with [`HybridClock::next`]; every timestamp
/// received from another node goes through [`HybridClock::observe`], which refuses one that is further
/// ahead of the local wall clock than `max_drift_ms` instead of adopting it.
pub struct HybridClock {
    wall: Arc<dyn WallClock>,
    /// `hlc-gen` reads its physical time from a `ManualClock` that is set from `wall` before each use, so
    /// that the injected wall clock (possibly skewed by the simulation) is the only time source.
    generator: HlcGenerator<ManualClock>,
    max_drift_ms: u64,
}

impl HybridClock {
    /// `max_drift_ms` must be positive: hlc-gen treats 0 as "no check", which a cluster must never run with.
    pub fn new(wall: Arc<dyn WallClock>, max_drift_ms: u64) -> Self {
        assert!(max_drift_ms > 0, "a zero maximum drift would disable the drift check");
        let generator = HlcGenerator::manual(usize::try_from(max_drift_ms).unwrap_or(usize::MAX));
        generator.set_current_timestamp(wall.now_unix_ms());
        Self { wall, generator, max_drift_ms }
    }

    /// The wall clock this clock reads its physical time from.
    pub fn wall(&self) -> &Arc<dyn WallClock> {
        &self.wall
    }

    /// How far ahead of the local wall clock, in milliseconds, [`HybridClock::observe`] accepts a
    /// remote timestamp.
    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// A new timestamp, greater than every timestamp this clock has issued or observed.
    pub fn next(&self) -> Hlc {
        self.generator.set_current_timestamp(self.wall.now_unix_ms());
        let timestamp = self
            .generator
            .next_timestamp()
            .expect("the HLC logical counter overflowed (4 million timestamps in one millisecond)");
        Hlc(timestamp.as_u64())
    }

    /// Advances the clock past a timestamp received from elsewhere (or read back from disk).
    pub fn observe(&self, remote: Hlc) -> Result<(), ClockError> {
        self.generator.set_current_timestamp(self.wall.now_unix_ms());
        let remote = hlc_gen::HlcTimestamp::try_from(remote.0).map_err(|_| ClockError::OutOfRange)?;
        match self.generator.update(&remote) {
            Ok(_) => Ok(()),
            Err(hlc_gen::error::HlcError::DriftTooLarge(drift_ms, max_drift_ms)) => {
                Err(ClockError::DriftTooLarge { drift_ms: drift_ms as u64, max_drift_ms: max_drift_ms as u64 })
            }
            Err(_) => Err(ClockError::OutOfRange),
        }
    }

    /// Like [`HybridClock::observe`] but without the drift check: for timestamps this node issued itself
    /// before a restart, which it must never go below whatever the wall clock says now.
    pub fn observe_own(&self, own: Hlc) {
        // Present the timestamp's own physical time as "now", so the drift check sees no drift.
        self.generator.set_current_timestamp(self.wall.now_unix_ms().max(own.unix_ms()));
        let own = hlc_gen::HlcTimestamp::try_from(own.0).expect("a timestamp this node issued is in range");
        self.generator.update(&own).expect("no drift between a timestamp and itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_2026_MS: i64 = 1_767_225_600_000;

    #[test]
    fn timestamps_increase_even_when_the_wall_clock_stands_still_or_goes_back() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let clock = HybridClock::new(Arc::new(wall.clone()), 500);
        let first = clock.next();
        let second = clock.next();
        wall.advance_ms(-10_000);
        let third = clock.next();
        assert!(first < second && second < third);
        assert_eq!(first.unix_ms(), JAN_2026_MS);
    }

    #[test]
    fn observing_a_timestamp_within_the_drift_moves_the_clock_past_it() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let clock = HybridClock::new(Arc::new(wall.clone()), 500);
        let ahead = HybridClock::new(Arc::new(ManualWallClock::new(JAN_2026_MS + 400)), 500).next();
        clock.observe(ahead).unwrap();
        assert!(clock.next() > ahead);
    }

    #[test]
    fn a_timestamp_beyond_the_drift_is_refused_and_not_adopted() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let clock = HybridClock::new(Arc::new(wall.clone()), 500);
        let far_ahead = HybridClock::new(Arc::new(ManualWallClock::new(JAN_2026_MS + 60_000)), 500).next();
        let error = clock.observe(far_ahead).unwrap_err();
        assert!(matches!(error, ClockError::DriftTooLarge { max_drift_ms: 500, .. }), "{error}");
        assert!(clock.next() < far_ahead);
    }

    #[test]
    fn own_timestamps_from_before_a_restart_are_never_reissued() {
        let wall = ManualWallClock::new(JAN_2026_MS);
        let before_restart = HybridClock::new(Arc::new(ManualWallClock::new(JAN_2026_MS + 60_000)), 500).next();
        let clock = HybridClock::new(Arc::new(wall), 500);
        clock.observe_own(before_restart);
        assert!(clock.next() > before_restart);
    }
}
