//! How a node's long-running tasks learn that it is shutting down, and how it waits for them.
//!
//! One [`CancellationToken`] per node is cancelled when shutdown begins; every background task (pullers,
//! acknowledgers, anti-entropy, log trimming, tombstone collection, the HTTP side port, the pull streams
//! the node serves, the lock group's leader loop) watches it. Each runs on one [`TaskTracker`], and the node
//! closes its store only after `tracker.close(); tracker.wait().await` has returned, so no task still reads
//! or writes a closed store.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// Sleeps for `duration` on tokio's clock unless `stop` is cancelled first (or already was). Returns
/// whether to go on: `false` once `stop` is cancelled, even if the sleep also ended.
pub async fn pause(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far longer than any test here should take: reaching it means `pause` ignored the cancellation.
    const NEVER: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn pause_goes_on_after_the_duration() {
        let stop = CancellationToken::new();
        assert!(pause(Duration::from_millis(5), &stop).await);
    }

    #[tokio::test]
    async fn pause_stops_when_cancelled_during_the_sleep() {
        let stop = CancellationToken::new();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            canceller.cancel();
        });
        assert!(!pause(NEVER, &stop).await);
    }

    #[tokio::test]
    async fn pause_after_cancellation_returns_false_even_for_no_sleep() {
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(!pause(Duration::ZERO, &stop).await);
        assert!(!pause(NEVER, &stop).await);
    }

    #[tokio::test]
    async fn a_tracker_waits_for_every_task_it_ran() {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..3 {
            let (stop, finished) = (stop.clone(), finished.clone());
            tasks.spawn(async move {
                while pause(Duration::from_millis(1), &stop).await {}
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
