//! Properties of placement over many site shapes: 1 to 12 nodes, the partition counts we use (1, 2,
//! 7, 64, 256) and random ones up to 1024, every replica count up to three, and random sequences of
//! nodes joining and leaving. The invariants are recomputed here from the raw map rather than
//! trusted to `SitePlacement::check`, and `check` must agree.

use std::collections::BTreeSet;

use geostore_placement::{NodeId, SitePlacement, moves, place, primary_changes, rebalance};
use proptest::prelude::*;

/// Partition counts: the ones geostore uses or may use, and a few arbitrary ones.
fn partitions() -> impl Strategy<Value = u16> {
    prop_oneof![Just(1u16), Just(2), Just(7), Just(64), Just(256), 1u16..=1024]
}

/// A site: distinct node ids in random order, a partition count and a replica count that fits.
fn site() -> impl Strategy<Value = (Vec<NodeId>, u16, usize)> {
    (1usize..=12)
        .prop_flat_map(|k| (prop::collection::btree_set(0u64..1000, k), partitions(), 1..=k.min(3)))
        .prop_flat_map(|(ids, p, n)| (Just(ids.into_iter().collect::<Vec<_>>()).prop_shuffle(), Just(p), Just(n)))
}

/// Asserts invariants 1 and 2 of the crate documentation from scratch, then that `check` agrees.
fn assert_valid(placement: &SitePlacement, nodes: &[NodeId], partitions: usize, n: usize) {
    assert_eq!(placement.replicas_per_site, n);
    assert_eq!(placement.partitions.len(), partitions);
    for part in &placement.partitions {
        assert_eq!(part.replicas.len(), n);
        assert!(part.replicas.windows(2).all(|w| w[0] < w[1]), "sorted and distinct: {:?}", part.replicas);
        assert!(part.replicas.iter().all(|r| nodes.contains(r)));
        assert!(part.replicas.contains(&part.primary));
    }
    let k = nodes.len();
    let within = |count: usize, total: usize| total / k <= count && count <= total.div_ceil(k);
    for node in nodes {
        let replicas = placement.partitions.iter().filter(|p| p.replicas.contains(node)).count();
        assert!(within(replicas, partitions * n), "node {node} holds {replicas}");
        let primaries = placement.partitions.iter().filter(|p| p.primary == *node).count();
        assert!(within(primaries, partitions), "node {node} is primary {primaries} times");
    }
    placement.check(nodes).unwrap();
}

/// How many of `from`'s primaries sat on a replica that `moved` takes away from its node.
fn primaries_displaced(from: &SitePlacement, to: &SitePlacement) -> usize {
    moves(from, to).iter().filter(|m| m.from == Some(from.partitions[usize::from(m.partition)].primary)).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn place_is_valid_and_ignores_node_order((nodes, p, n) in site()) {
        let placement = place(&nodes, p, n).unwrap();
        assert_valid(&placement, &nodes, usize::from(p), n);
        let mut sorted = nodes.clone();
        sorted.sort_unstable();
        prop_assert_eq!(&place(&sorted, p, n).unwrap(), &placement);
        prop_assert_eq!(&place(&nodes, p, n).unwrap(), &placement);
        prop_assert_eq!(&rebalance(&placement, &nodes).unwrap(), &placement);
    }

    #[test]
    fn adding_a_node_moves_only_what_it_receives((nodes, p, n) in site(), new in 1000u64..2000) {
        let current = place(&nodes, p, n).unwrap();
        let mut grown = nodes.clone();
        grown.insert(nodes.len() / 2, new);
        let next = rebalance(&current, &grown).unwrap();
        assert_valid(&next, &grown, usize::from(p), n);
        let moved = moves(&current, &next);
        let received = next.partitions.iter().filter(|part| part.replicas.contains(&new)).count();
        prop_assert!(moved.iter().all(|m| m.to == Some(new) && m.from.is_some()));
        prop_assert_eq!(moved.len(), received);
        let total = usize::from(p) * n;
        prop_assert!(total / grown.len() <= received && received <= total.div_ceil(grown.len()));
        let changed = primary_changes(&current, &next).len();
        prop_assert!(changed <= usize::from(p).div_ceil(grown.len()) + primaries_displaced(&current, &next));
    }

    #[test]
    fn removing_a_node_moves_its_replicas((nodes, p, n) in site(), pick in any::<prop::sample::Index>()) {
        prop_assume!(nodes.len() > n);
        let current = place(&nodes, p, n).unwrap();
        let gone = nodes[pick.index(nodes.len())];
        let rest: Vec<NodeId> = nodes.iter().copied().filter(|&x| x != gone).collect();
        let next = rebalance(&current, &rest).unwrap();
        assert_valid(&next, &rest, usize::from(p), n);
        assert_removal_bounds(&current, &next, gone, &rest);
    }

    /// Random joins and leaves from a random start: every step valid, every leave within the bounds,
    /// every join moving only what the newcomer receives, and the whole sequence reproducible.
    #[test]
    fn random_joins_and_leaves(
        (nodes, p, n) in site(),
        steps in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..8),
    ) {
        let run = || {
            let mut live = nodes.clone();
            let mut placement = place(&live, p, n).unwrap();
            let mut history = vec![placement.clone()];
            let mut next_id = 5000;
            for &(join, pick) in &steps {
                let next = if join || live.len() <= n {
                    next_id += 1;
                    live.push(next_id);
                    let next = rebalance(&placement, &live).unwrap();
                    assert!(moves(&placement, &next).iter().all(|m| m.to == Some(next_id)));
                    next
                } else {
                    let gone = live.remove(pick.index(live.len()));
                    let next = rebalance(&placement, &live).unwrap();
                    assert_removal_bounds(&placement, &next, gone, &live);
                    next
                };
                assert_valid(&next, &live, usize::from(p), n);
                assert_eq!(rebalance(&next, &live).unwrap(), next, "a balanced map is left alone");
                placement = next;
                history.push(placement.clone());
            }
            history
        };
        prop_assert_eq!(run(), run());
    }

    #[test]
    fn rebalance_ignores_node_order((nodes, p, n) in site(), new in 1000u64..2000) {
        let current = place(&nodes, p, n).unwrap();
        let mut grown = nodes.clone();
        grown.push(new);
        let mut reversed = grown.clone();
        reversed.reverse();
        prop_assert_eq!(rebalance(&current, &grown).unwrap(), rebalance(&current, &reversed).unwrap());
    }
}

/// The bounds on a removal of `gone` documented on `rebalance`: each of its replicas moves once, at
/// most one other replica moves per replica of `gone`, and every primary that lost its replica or
/// that balance needs elsewhere costs one chain of hand-overs, which visits each of the `k` nodes at
/// most once.
fn assert_removal_bounds(from: &SitePlacement, to: &SitePlacement, gone: NodeId, nodes: &[NodeId]) {
    let held = from.partitions.iter().filter(|part| part.replicas.contains(&gone)).count();
    let moved = moves(from, to);
    let from_gone: BTreeSet<u16> = moved.iter().filter(|m| m.from == Some(gone)).map(|m| m.partition).collect();
    assert_eq!(from_gone.len(), held, "every replica of the leaving node moves, once");
    assert!(moved.len() <= 2 * held, "{} moves for {held} replicas of the leaving node", moved.len());
    assert!(moved.iter().all(|m| m.from.is_some() && m.to.is_some()));
    let changed = primary_changes(from, to).len();
    let displaced = primaries_displaced(from, to);
    let unbalanced = primaries_out_of_balance(from, to, nodes);
    assert!(
        changed <= nodes.len() * (displaced + unbalanced),
        "{changed} primary changes for {displaced} primaries displaced and {unbalanced} out of balance"
    );
}

/// How far the primaries that may stay (their node still holds the partition's replica in `to`) are
/// from balance on `nodes`: the sum over nodes of how many they lack below the floor or have above
/// the ceiling. Balance cannot be restored with fewer changes than this.
fn primaries_out_of_balance(from: &SitePlacement, to: &SitePlacement, nodes: &[NodeId]) -> usize {
    let (p, k) = (from.partitions.len(), nodes.len());
    nodes
        .iter()
        .map(|node| {
            let kept = from.partitions.iter().zip(&to.partitions);
            let kept = kept.filter(|(a, b)| a.primary == *node && b.replicas.contains(node)).count();
            (p / k).saturating_sub(kept) + kept.saturating_sub(p.div_ceil(k))
        })
        .sum()
}
