//! Group commit: the one loop shape of the threads that make queued work durable together, the node's
//! store writer (`geostore_node`'s `store/writer.rs`) and the lock group's Raft log flusher
//! (`geostore_lockgroup`'s `store/flusher.rs`).
//!
//! [`run`] waits for one job, then takes the jobs already queued behind it, without waiting for more,
//! until the group reaches its weight bound or the queue is empty; it hands the group to a commit
//! closure (which writes it with one fsync and answers its jobs), and repeats until the queue is closed
//! and empty. Callers that queue up while one group is being written so share the next fsync.
//!
//! What a caller can rely on:
//! - **Order.** The groups are consecutive runs of the queue, in the order the jobs were received, and a
//!   group is committed before the next one is taken. A commit closure that handles its group in order
//!   therefore handles every job in queue order.
//! - **Bound.** A group stops taking jobs once its weight reaches `weight_max`. Every job weighs at least
//!   one (a job whose weight function says 0 counts as 1), so a group holds at most `weight_max` jobs.
//!   The job that reaches or crosses the bound stays in its group (a channel cannot be peeked, and
//!   putting it back would reorder it), so a group weighs less than `weight_max` plus the weight of its
//!   last job. A first job heavier than `weight_max` is a group on its own.
//! - **No added latency.** The loop never waits for a second job: a job alone in the queue is committed
//!   at once.
//!
//! The loop itself does no I/O and reads no clock; it blocks only on its queue. The commit closure does
//! the writing.

/// A queue that a group-commit loop takes jobs from: implemented for the receivers of std's and tokio's
/// bounded mpsc channels.
pub trait JobQueue {
    /// What one sender queued.
    type Job;

    /// Waits for the next job; `None` once every sender is gone and the queue is empty.
    fn wait_next(&mut self) -> Option<Self::Job>;

    /// The next job if one is queued already, without waiting.
    fn next_queued(&mut self) -> Option<Self::Job>;
}

impl<T> JobQueue for std::sync::mpsc::Receiver<T> {
    type Job = T;

    fn wait_next(&mut self) -> Option<T> {
        self.recv().ok()
    }

    fn next_queued(&mut self) -> Option<T> {
        self.try_recv().ok()
    }
}

/// Waiting uses tokio's `blocking_recv`, which panics inside an async runtime: run the loop on a thread
/// of its own.
impl<T> JobQueue for tokio::sync::mpsc::Receiver<T> {
    type Job = T;

    fn wait_next(&mut self) -> Option<T> {
        self.blocking_recv()
    }

    fn next_queued(&mut self) -> Option<T> {
        self.try_recv().ok()
    }
}

/// Waits for a job and returns it with the jobs queued behind it, up to the bound described in the
/// [module documentation](self): the group stops taking jobs once the sum of `weight(job).max(1)`
/// reaches `weight_max`. `None` once the queue is closed and empty.
pub fn next_group<Q: JobQueue>(
    queue: &mut Q,
    weight_max: usize,
    weight: impl Fn(&Q::Job) -> usize,
) -> Option<Vec<Q::Job>> {
    let first = queue.wait_next()?;
    let mut group_weight = weight(&first).max(1);
    let mut group = vec![first];
    while group_weight < weight_max {
        let Some(job) = queue.next_queued() else { break };
        group_weight = group_weight.saturating_add(weight(&job).max(1));
        group.push(job);
    }
    Some(group)
}

/// Takes groups from `queue` with [`next_group`] and hands each to `commit`, in order, until the queue is
/// closed and empty.
pub fn run<Q: JobQueue>(
    mut queue: Q,
    weight_max: usize,
    weight: impl Fn(&Q::Job) -> usize,
    mut commit: impl FnMut(Vec<Q::Job>),
) {
    while let Some(group) = next_group(&mut queue, weight_max, &weight) {
        commit(group);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A job for the tests: its place in the queue and its weight.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Job {
        number: usize,
        weight: usize,
    }

    /// Queues jobs of these weights (numbered from 0) on a std channel, closes it, and returns the groups
    /// `run` commits, as job numbers.
    fn groups_of(weights: &[usize], weight_max: usize) -> Vec<Vec<usize>> {
        let (sender, receiver) = mpsc::channel();
        for (number, &weight) in weights.iter().enumerate() {
            sender.send(Job { number, weight }).unwrap();
        }
        drop(sender);
        let mut groups = Vec::new();
        run(receiver, weight_max, |job| job.weight, |group| groups.push(group.iter().map(|job| job.number).collect()));
        groups
    }

    #[test]
    fn a_group_stops_taking_jobs_at_the_weight_bound() {
        assert_eq!(groups_of(&[1; 7], 3), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    }

    #[test]
    fn the_job_that_crosses_the_bound_ends_its_group_and_a_heavy_first_job_is_alone() {
        // 2 (below 3) takes the next 2 (4: stop); 5 alone is over; 1 + 1 = 2 takes the last 4.
        assert_eq!(groups_of(&[2, 2, 5, 1, 1, 4, 1], 3), vec![vec![0, 1], vec![2], vec![3, 4, 5], vec![6]]);
    }

    #[test]
    fn a_job_of_weight_zero_counts_as_one() {
        assert_eq!(groups_of(&[0; 5], 2), vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn a_bound_of_one_or_zero_commits_each_job_alone() {
        assert_eq!(groups_of(&[1, 1, 1], 1), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(groups_of(&[1, 1], 0), vec![vec![0], vec![1]]);
    }

    #[test]
    fn jobs_queued_while_a_group_commits_come_in_order_and_within_the_bound() {
        const JOBS: usize = 5000;
        const WEIGHT_MAX: usize = 64;
        let (sender, receiver) = mpsc::channel();
        let producer = std::thread::spawn(move || {
            for number in 0..JOBS {
                sender.send(Job { number, weight: 1 + number % 3 }).unwrap();
            }
        });
        let mut groups: Vec<Vec<Job>> = Vec::new();
        run(receiver, WEIGHT_MAX, |job| job.weight, |group| groups.push(group));
        producer.join().unwrap();
        for group in &groups {
            let before_last: usize = group[..group.len() - 1].iter().map(|job| job.weight).sum();
            assert!(before_last < WEIGHT_MAX, "a group took a job after reaching the bound: {group:?}");
        }
        let numbers: Vec<usize> = groups.iter().flatten().map(|job| job.number).collect();
        assert_eq!(numbers, (0..JOBS).collect::<Vec<_>>(), "every job once, in queue order");
    }

    #[test]
    fn a_lone_job_is_committed_without_waiting_for_more() {
        let (sender, receiver) = mpsc::channel();
        let (committed, commits) = mpsc::channel();
        let committer = std::thread::spawn(move || {
            run(receiver, 1024, |_: &usize| 1, |group| committed.send(group).unwrap());
        });
        for number in 0..3 {
            sender.send(number).unwrap();
            // The next job is only sent once this one is committed: a loop that waited to fill its
            // group would never answer.
            let group = commits.recv_timeout(Duration::from_secs(10)).expect("a lone job is committed");
            assert_eq!(group, vec![number]);
        }
        drop(sender);
        committer.join().unwrap();
    }

    #[test]
    fn works_on_a_tokio_channel_and_ends_when_it_closes() {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        for number in 0..10 {
            sender.try_send(Job { number, weight: 1 }).unwrap();
        }
        let producer = std::thread::spawn(move || {
            for number in 10..20 {
                sender.blocking_send(Job { number, weight: 1 }).unwrap();
            }
        });
        let mut groups = Vec::new();
        run(receiver, 4, |job| job.weight, |group| groups.push(group));
        producer.join().unwrap();
        assert!(groups.iter().all(|group| group.len() <= 4));
        let numbers: Vec<usize> = groups.iter().flatten().map(|job| job.number).collect();
        assert_eq!(numbers, (0..20).collect::<Vec<_>>());
    }
}
