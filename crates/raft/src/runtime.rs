//! The async runtime openraft runs on: tokio, as openraft's own `TokioRuntime`, except for its random
//! numbers (the election timeouts). Those come from a generator that the simulation harness can seed
//! ([`seed_random`]), so that a seed replays the same elections; in production it is seeded from the
//! operating system, like the generator it replaces.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::{AsyncRuntime, TokioOneShotSender};
use openraft::{OptionalSend, TokioInstant};
use rand08::rngs::StdRng;
use rand08::{RngCore, SeedableRng};

thread_local! {
    static RANDOM: RefCell<StdRng> = RefCell::new(StdRng::from_entropy());
}

/// Reseeds the generator openraft draws from on this thread. The simulation runs every node on one
/// thread and calls this once per run, before any node starts.
pub fn seed_random(seed: u64) {
    RANDOM.with(|random| *random.borrow_mut() = StdRng::seed_from_u64(seed));
}

/// A handle to this thread's generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl RngCore for ThreadRandom {
    fn next_u32(&mut self) -> u32 {
        RANDOM.with(|random| random.borrow_mut().next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        RANDOM.with(|random| random.borrow_mut().next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        RANDOM.with(|random| random.borrow_mut().fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand08::Error> {
        RANDOM.with(|random| random.borrow_mut().try_fill_bytes(dest))
    }
}

/// openraft's async runtime: tokio, with randomness from [`ThreadRandom`] so a simulation seed replays.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Runtime;

impl AsyncRuntime for Runtime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = ThreadRandom;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ThreadRandom
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(sender), receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand08::Rng;

    #[test]
    fn a_seed_replays_the_same_numbers() {
        let draw = || (0..8).map(|_| Runtime::thread_rng().gen_range(1250..2500)).collect::<Vec<u64>>();
        seed_random(7);
        let first = draw();
        seed_random(7);
        assert_eq!(first, draw());
        seed_random(8);
        assert_ne!(first, draw());
    }
}
