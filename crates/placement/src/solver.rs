//! The balancing engine behind [`crate::place`] and [`crate::rebalance`].
//!
//! Nodes are handled by their index in the sorted node list, so every loop below runs in a fixed
//! order and the result depends on nothing but the input. The engine starts from a partial
//! placement (replicas and primaries that may stay) and completes it in two steps:
//!
//! 1. replicas: every node gets an exact target, floor or ceil of `P*N/k`, the ceil ones going to the
//!    nodes that already hold most (then to those that could take most of the missing replicas, then
//!    to the lower index), so as few replicas as possible leave a node. Nodes above target hand
//!    replicas straight to nodes below it, then missing replicas are added on the least loaded nodes
//!    with room. When all nodes with room already hold the partition, replicas placed by this run are
//!    placed again elsewhere along a chain (free: their data is copied anyway), and only when no such
//!    chain exists does one replica that was in place move to make room (`fill_by_swap` shows one
//!    always suffices). Every choice prefers the node or partition that keeps the number of
//!    partitions any two nodes share even, which is what makes extra moves rare.
//! 2. primaries: every node must end with floor or ceil of `P/k` primaries, each at one of the
//!    partition's replicas. Missing and surplus primaries are handed over along the shortest chain of
//!    partitions (an augmenting path), so a primary changes only when balance needs it.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::{NodeId, PartitionReplicas, PlacementError, SitePlacement};

/// A placement in the making: node indices instead of ids, and holes where replicas or primaries
/// are still missing.
struct State {
    /// Number of nodes.
    k: usize,
    /// Replicas each partition must end with.
    n: usize,
    /// Per partition, the node indices holding a replica (unsorted until the end).
    reps: Vec<Vec<usize>>,
    /// Per partition, the node index of its primary, if it has one.
    prim: Vec<Option<usize>>,
    /// Per node, the partitions it holds a replica of; its length is the node's replica load.
    parts: Vec<BTreeSet<usize>>,
    /// Per node, the partitions it is the primary of.
    primaries: Vec<BTreeSet<usize>>,
    /// Per pair of nodes, how many partitions both hold. Choices that keep these even spread a
    /// node's partitions over all the others, so that when a node leaves, every survivor lacks
    /// enough of its partitions to take its share of them.
    co: Vec<Vec<u32>>,
    /// The (node, partition) replicas placed by this run: they can still be placed elsewhere at no
    /// cost, as the data has to be copied anyway.
    fresh: BTreeSet<(usize, usize)>,
}

/// Completes a partial placement on `nodes` (sorted, distinct, at least `n` of them). Every entry of
/// `reps` must hold distinct indices below `nodes.len()`, at most `n` of them, and every primary
/// must be one of its partition's replicas.
pub(crate) fn solve(
    nodes: &[NodeId],
    n: usize,
    reps: Vec<Vec<usize>>,
    prim: Vec<Option<usize>>,
) -> Result<SitePlacement, PlacementError> {
    let k = nodes.len();
    let mut state = State {
        k,
        n,
        reps: vec![Vec::new(); reps.len()],
        prim: vec![None; reps.len()],
        parts: vec![BTreeSet::new(); k],
        primaries: vec![BTreeSet::new(); k],
        co: vec![vec![0; k]; k],
        fresh: BTreeSet::new(),
    };
    for (p, held) in reps.into_iter().enumerate() {
        for x in held {
            state.add_replica(p, x);
        }
    }
    state.fresh.clear();
    for (p, x) in prim.into_iter().enumerate() {
        state.set_primary(p, x);
    }
    state.balance_replicas()?;
    state.balance_primaries()?;
    state.into_placement(nodes)
}

/// Exact targets summing to `total`: everyone gets the floor of the mean, and the remainder goes to
/// the nodes with the highest `current` count, which keeps the most of what is already there. Ties
/// go to the nodes with the highest `usable` count (how many missing replicas they could take),
/// then to the lower index.
fn targets(total: usize, current: &[usize], usable: &[usize]) -> Vec<usize> {
    let k = current.len();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by_key(|&x| (Reverse(current[x]), Reverse(usable[x]), x));
    let mut target = vec![total / k; k];
    for &x in &order[..total % k] {
        target[x] += 1;
    }
    target
}

/// How a search reached a node: the partition handed over and the node it came from, or `None` for
/// the nodes the search started at.
type Link = Option<(usize, usize)>;

/// Which way primaries travel along a chain searched by [`State::chain`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// From the searched-from node towards the goal.
    Forward,
    /// From the goal towards the searched-from node.
    Backward,
}

/// Something that cannot happen if the arguments in this module hold: reported, never a panic,
/// because a panic inside a Raft state machine would take the node down.
fn internal(what: &'static str) -> PlacementError {
    PlacementError::Internal { what }
}

impl State {
    fn load(&self, x: usize) -> usize {
        self.parts[x].len()
    }

    fn pcount(&self, x: usize) -> usize {
        self.primaries[x].len()
    }

    fn set_primary(&mut self, p: usize, x: Option<usize>) {
        if let Some(old) = self.prim[p] {
            self.primaries[old].remove(&p);
        }
        if let Some(x) = x {
            self.primaries[x].insert(p);
        }
        self.prim[p] = x;
    }

    fn add_replica(&mut self, p: usize, y: usize) {
        for &r in &self.reps[p] {
            self.co[r][y] += 1;
            self.co[y][r] += 1;
        }
        self.reps[p].push(y);
        self.parts[y].insert(p);
        self.fresh.insert((y, p));
    }

    /// Drops partition `p`'s replica on `x`; a primary on `x` is lost and will be reassigned by the
    /// primary step.
    fn remove_replica(&mut self, p: usize, x: usize) {
        self.reps[p].retain(|&r| r != x);
        for &r in &self.reps[p] {
            self.co[r][x] -= 1;
            self.co[x][r] -= 1;
        }
        self.parts[x].remove(&p);
        self.fresh.remove(&(x, p));
        if self.prim[p] == Some(x) {
            self.set_primary(p, None);
        }
    }

    /// How many partitions `y` shares with the nodes of `others` other than `skip`: low means
    /// putting a replica next to them keeps pairs even.
    fn overlap(&self, y: usize, others: &[usize], skip: usize) -> u32 {
        others.iter().filter(|&&r| r != skip).map(|&r| self.co[y][r]).sum()
    }

    /// The partition on `x` to hand to `y`, among those `y` lacks: preferably not `x`'s primary
    /// (moving it would also move a primary), then the one whose other replicas share least with
    /// `y`. Exists whenever `x` holds more replicas than `y`.
    fn movable(&self, x: usize, y: usize) -> Option<usize> {
        self.parts[x]
            .iter()
            .copied()
            .filter(|&q| !self.reps[q].contains(&y))
            .min_by_key(|&q| (self.prim[q] == Some(x), self.overlap(y, &self.reps[q], x), q))
    }

    fn balance_replicas(&mut self) -> Result<(), PlacementError> {
        let loads: Vec<usize> = (0..self.k).map(|x| self.load(x)).collect();
        let mut usable = vec![0; self.k];
        for held in self.reps.iter().filter(|held| held.len() < self.n) {
            (0..self.k).filter(|x| !held.contains(x)).for_each(|x| usable[x] += 1);
        }
        let target = targets(self.reps.len() * self.n, &loads, &usable);
        // Surplus first: a node above target holds more than any node below target, so it always
        // has a partition the other lacks, and the move needs no further change.
        while let Some(x) =
            (0..self.k).filter(|&x| self.load(x) > target[x]).max_by_key(|&x| (self.load(x) - target[x], Reverse(x)))
        {
            let y = (0..self.k)
                .filter(|&y| self.load(y) < target[y])
                .min_by_key(|&y| (self.load(y), y))
                .ok_or_else(|| internal("a node above target but none below"))?;
            let q = self.movable(x, y).ok_or_else(|| internal("no partition to move to a lighter node"))?;
            self.remove_replica(q, x);
            self.add_replica(q, y);
        }
        // Then the missing replicas, each on the least loaded node with room that lacks the partition
        // (the one sharing least with the partition's other replicas on ties). When all nodes with
        // room have the partition, replicas placed by this run are placed again to make room; only
        // if that fails does an existing replica move.
        for p in 0..self.reps.len() {
            while self.reps[p].len() < self.n {
                let free = (0..self.k)
                    .filter(|&y| self.load(y) < target[y] && !self.reps[p].contains(&y))
                    .min_by_key(|&y| (self.load(y), self.overlap(y, &self.reps[p], usize::MAX), y));
                if let Some(y) = free {
                    self.add_replica(p, y);
                } else if !self.fill_by_replacing(p, &target) {
                    self.fill_by_swap(p, &target)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a replica of `p` by placing replicas of this run elsewhere: the shortest chain of nodes,
    /// starting at a node without `p`, where each node passes one of its fresh replicas to the next,
    /// up to a node with room. No replica that was already in place moves. Returns false when no
    /// such chain exists.
    fn fill_by_replacing(&mut self, p: usize, target: &[usize]) -> bool {
        let mut seen = vec![false; self.k];
        let mut via: Vec<Link> = vec![None; self.k];
        let mut layer: Vec<usize> = (0..self.k).filter(|&y| !self.reps[p].contains(&y)).collect();
        for &y in &layer {
            seen[y] = true;
        }
        while !layer.is_empty() {
            if let Some(end) = layer.iter().copied().find(|&z| self.load(z) < target[z]) {
                // (partition, from, to) per link, from the end back to the start.
                let mut links = Vec::new();
                let mut z = end;
                while let Some((q, y)) = via[z] {
                    links.push((q, y, z));
                    z = y;
                }
                // Each link was checked against the replicas as they are now, which stays true only
                // if no two links (nor the new replica) concern the same partition.
                let mut touched: Vec<usize> = links.iter().map(|&(q, _, _)| q).chain([p]).collect();
                touched.sort_unstable();
                if touched.windows(2).any(|w| w[0] == w[1]) {
                    return false;
                }
                for (q, y, z) in links {
                    self.remove_replica(q, y);
                    self.add_replica(q, z);
                }
                self.add_replica(p, z);
                return true;
            }
            let mut next = Vec::new();
            for &y in &layer {
                for &(_, q) in self.fresh.range((y, 0)..(y + 1, 0)) {
                    for z in 0..self.k {
                        if !seen[z] && !self.reps[q].contains(&z) {
                            seen[z] = true;
                            via[z] = Some((q, y));
                            next.push(z);
                        }
                    }
                }
            }
            layer = next;
        }
        false
    }

    /// Adds a replica of `p` when every node with room already holds `p`: some full node `x` without
    /// `p` hands one of its partitions to a node `y` with room, and takes `p` instead. That costs one
    /// extra move. Such a pair always exists: `x` holds at least as many replicas as `y` (targets
    /// differ by at most one and `y` is below its own), and `y` holds `p` while `x` does not, so `x`
    /// holds some partition `y` lacks.
    fn fill_by_swap(&mut self, p: usize, target: &[usize]) -> Result<(), PlacementError> {
        let mut with_room: Vec<usize> = (0..self.k).filter(|&y| self.load(y) < target[y]).collect();
        with_room.sort_by_key(|&y| (self.load(y), y));
        let mut without_p: Vec<usize> = (0..self.k).filter(|&x| !self.reps[p].contains(&x)).collect();
        without_p.sort_by_key(|&x| (Reverse(self.load(x)), x));
        for &y in &with_room {
            for &x in &without_p {
                if let Some(q) = self.movable(x, y) {
                    self.remove_replica(q, x);
                    self.add_replica(q, y);
                    self.add_replica(p, x);
                    return Ok(());
                }
            }
        }
        Err(internal("no swap frees a node for a missing replica"))
    }

    fn balance_primaries(&mut self) -> Result<(), PlacementError> {
        let partitions = self.reps.len();
        let floor = partitions / self.k;
        let ceil = partitions.div_ceil(self.k);
        // Partitions without a primary: a replica with room below the ceiling takes it, the least
        // loaded first; otherwise a chain of hand-overs makes room.
        for p in 0..partitions {
            if self.prim[p].is_some() {
                continue;
            }
            let direct =
                self.reps[p].iter().copied().filter(|&x| self.pcount(x) < ceil).min_by_key(|&x| (self.pcount(x), x));
            let x = match direct {
                Some(x) => x,
                None => {
                    let sources = self.reps[p].clone();
                    self.hand_over_forward(&sources, ceil)?
                }
            };
            self.set_primary(p, Some(x));
        }
        // Nodes above the ceiling (survivors after a node was added) pass primaries on.
        while let Some(x) = (0..self.k).find(|&x| self.pcount(x) > ceil) {
            self.hand_over_forward(&[x], ceil)?;
        }
        // Nodes below the floor (new nodes) take primaries from nodes above it.
        while let Some(d) = (0..self.k).find(|&d| self.pcount(d) < floor) {
            self.hand_over_backward(d, floor)?;
        }
        Ok(())
    }

    /// Finds the shortest chain of primary hand-overs from one of `sources` to a node that
    /// satisfies `goal`, searching layer by layer and stopping at the first layer that reaches one;
    /// within that layer the node with the smallest `rank` wins. Each link is a partition `q` and the
    /// node it is reached from. `Forward` links pass `q`'s primary from the current node to another
    /// replica of `q`; `Backward` links take `q`'s primary from its holder to the current node, so
    /// the chain is walked the other way.
    fn chain<R: Ord>(
        &self,
        sources: &[usize],
        direction: Direction,
        goal: impl Fn(usize) -> bool,
        rank: impl Fn(usize) -> R,
    ) -> Option<(usize, Vec<Link>)> {
        let mut seen = vec![false; self.k];
        let mut via = vec![None; self.k];
        let mut layer = sources.to_vec();
        for &s in sources {
            seen[s] = true;
        }
        while !layer.is_empty() {
            if let Some(end) = layer.iter().copied().filter(|&z| goal(z)).min_by_key(|&z| (rank(z), z)) {
                return Some((end, via));
            }
            let mut next = Vec::new();
            for &x in &layer {
                let mut reach = |q: usize, y: usize| {
                    if !seen[y] {
                        seen[y] = true;
                        via[y] = Some((q, x));
                        next.push(y);
                    }
                };
                match direction {
                    Direction::Forward => {
                        self.primaries[x].iter().for_each(|&q| self.reps[q].iter().for_each(|&y| reach(q, y)))
                    }
                    Direction::Backward => {
                        self.parts[x].iter().for_each(|&q| self.prim[q].into_iter().for_each(|y| reach(q, y)))
                    }
                }
            }
            layer = next;
        }
        None
    }

    /// Hands primaries along the shortest chain from one of `sources` to a node with fewer than
    /// `ceil` primaries (the least loaded among the nearest). Returns the source the chain starts
    /// from, which now has one primary less: the caller gives it one back, or it was a surplus node.
    fn hand_over_forward(&mut self, sources: &[usize], ceil: usize) -> Result<usize, PlacementError> {
        let (end, via) = self
            .chain(sources, Direction::Forward, |z| self.pcount(z) < ceil, |z| self.pcount(z))
            .ok_or_else(|| internal("no chain of primary hand-overs reaches a node below the ceiling"))?;
        let mut z = end;
        while let Some((q, x)) = via[z] {
            self.set_primary(q, Some(z));
            z = x;
        }
        Ok(z)
    }

    /// Gives `d` one more primary, taken along the shortest chain from a node with more than `floor`
    /// (the most loaded among the nearest); the nodes in between keep their count.
    fn hand_over_backward(&mut self, d: usize, floor: usize) -> Result<(), PlacementError> {
        let (donor, via) = self
            .chain(&[d], Direction::Backward, |x| self.pcount(x) > floor, |x| Reverse(self.pcount(x)))
            .ok_or_else(|| internal("no chain of primary hand-overs reaches a node above the floor"))?;
        let mut x = donor;
        while let Some((q, y)) = via[x] {
            self.set_primary(q, Some(y));
            x = y;
        }
        Ok(())
    }

    /// The canonical placement: ids instead of indices, each replica list sorted by node id.
    fn into_placement(self, nodes: &[NodeId]) -> Result<SitePlacement, PlacementError> {
        let partitions = self
            .reps
            .into_iter()
            .zip(self.prim)
            .map(|(held, primary)| {
                let mut replicas: Vec<NodeId> = held.into_iter().map(|x| nodes[x]).collect();
                replicas.sort_unstable();
                let primary = nodes[primary.ok_or_else(|| internal("a partition was left without a primary"))?];
                Ok(PartitionReplicas { primary, replicas })
            })
            .collect::<Result<_, _>>()?;
        Ok(SitePlacement { replicas_per_site: self.n, partitions })
    }
}
