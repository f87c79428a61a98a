//! The randomness behind retry jitter: one generator per thread, seeded from the operating system unless
//! the simulation harness seeds it ([`seed`]), which it does once per run on the thread every simulated
//! node runs on.

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static RANDOM: RefCell<StdRng> = RefCell::new(StdRng::from_os_rng());
}

/// Reseeds this thread's generator.
pub fn seed(seed: u64) {
    RANDOM.with(|random| *random.borrow_mut() = StdRng::seed_from_u64(seed));
}

/// A number from this thread's generator.
pub fn next_u64() -> u64 {
    RANDOM.with(|random| random.borrow_mut().next_u64())
}
