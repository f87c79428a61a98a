//! Bugs the simulation harness can plant, to show that it finds them. They exist only in a build with
//! the `planted-bugs` feature (`cargo run -p geostore-sim --features planted-bugs`); in any other build
//! [`active`] is the constant `false` and the checks at its call sites compile away.

/// A deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    /// Writes with a stale fencing token are accepted (the store's fence check is skipped).
    FenceCheckOff = 1,
    /// A new lock-group leader treats every lease as already run out on its first timer pass.
    NewLeaderExpiresLeases = 2,
    /// Anti-entropy never repairs keys in the range `once/` to `once0` (the simulation's write-once keys).
    AntiEntropySkipsRange = 3,
}

/// Whether this build can plant bugs.
pub const AVAILABLE: bool = cfg!(feature = "planted-bugs");

#[cfg(feature = "planted-bugs")]
static PLANTED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Plants `bug` (or none) for the whole process. Returns false, changing nothing, in a build without
/// the feature.
pub fn plant(bug: Option<Bug>) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        PLANTED.store(bug.map_or(0, |bug| bug as u8), std::sync::atomic::Ordering::SeqCst);
        true
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

/// Whether `bug` is planted.
#[inline]
pub fn active(bug: Bug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        PLANTED.load(std::sync::atomic::Ordering::SeqCst) == bug as u8
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}
