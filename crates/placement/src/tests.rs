//! Example tests: small placements whose right answer can be worked out by hand, every error, and
//! a run at the largest size we plan for. The properties over many sizes are in
//! `tests/properties.rs`.

use std::time::Instant;

use super::*;

/// Replicas and primaries per node, in the order of `nodes`.
fn counts(placement: &SitePlacement, nodes: &[NodeId]) -> (Vec<usize>, Vec<usize>) {
    let replicas = nodes.iter().map(|n| placement.partitions.iter().filter(|p| p.replicas.contains(n)).count());
    let primaries = nodes.iter().map(|n| placement.partitions.iter().filter(|p| p.primary == *n).count());
    (replicas.collect(), primaries.collect())
}

#[test]
fn three_nodes_three_replicas_hold_everything() {
    let placement = place(&[10, 20, 30], 64, 3).unwrap();
    placement.check(&[10, 20, 30]).unwrap();
    assert!(placement.partitions.iter().all(|p| p.replicas == [10, 20, 30]));
    let (replicas, mut primaries) = counts(&placement, &[10, 20, 30]);
    assert_eq!(replicas, [64, 64, 64]);
    primaries.sort_unstable();
    assert_eq!(primaries, [21, 21, 22]);
}

#[test]
fn initial_placement_spreads_pairs_evenly() {
    let nodes = [1, 2, 3, 4, 5];
    let placement = place(&nodes, 1000, 3).unwrap();
    for a in nodes {
        for b in nodes.iter().filter(|&&b| b != a) {
            let shared = placement.partitions.iter().filter(|p| p.replicas.contains(&a) && p.replicas.contains(b));
            // 1000 partitions * 3 pairs each / 10 pairs.
            assert_eq!(shared.count(), 300, "nodes {a} and {b}");
        }
    }
    // Even pairs are what lets any node leave without extra moves.
    for gone in nodes {
        let rest: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != gone).collect();
        let next = rebalance(&placement, &rest).unwrap();
        assert!(moves(&placement, &next).iter().all(|m| m.from == Some(gone)));
    }
}

#[test]
fn single_node_single_replica() {
    let placement = place(&[7], 3, 1).unwrap();
    assert_eq!(placement.partitions, vec![PartitionReplicas { primary: 7, replicas: vec![7] }; 3]);
}

#[test]
fn node_order_does_not_matter() {
    assert_eq!(place(&[3, 1, 2, 9], 64, 2).unwrap(), place(&[1, 2, 3, 9], 64, 2).unwrap());
    let current = place(&[1, 2, 3], 64, 3).unwrap();
    assert_eq!(rebalance(&current, &[4, 2, 3, 1]).unwrap(), rebalance(&current, &[1, 2, 3, 4]).unwrap());
}

#[test]
fn default_replicas_per_site_is_at_most_three() {
    let defaults: Vec<usize> = (0..6).map(default_replicas_per_site).collect();
    assert_eq!(defaults, [0, 1, 2, 3, 3, 3]);
}

#[test]
fn errors_say_what_is_wrong() {
    assert_eq!(place(&[], 64, 1), Err(PlacementError::NoNodes));
    assert_eq!(place(&[1], 64, 0), Err(PlacementError::ZeroReplicas));
    assert_eq!(place(&[1], 0, 1), Err(PlacementError::ZeroPartitions));
    assert_eq!(place(&[1, 2, 1], 64, 1), Err(PlacementError::DuplicateNode { node: 1 }));
    let too_few = place(&[1, 2], 64, 3).unwrap_err();
    assert_eq!(too_few, PlacementError::TooFewNodes { nodes: 2, replicas_per_site: 3 });
    assert_eq!(too_few.to_string(), "site has 2 nodes, replicas_per_site 3 needs at least 3");
    let current = place(&[1, 2, 3], 8, 3).unwrap();
    assert_eq!(rebalance(&current, &[1, 2]), Err(too_few));
    let empty = SitePlacement { replicas_per_site: 1, partitions: Vec::new() };
    assert_eq!(rebalance(&empty, &[1]), Err(PlacementError::ZeroPartitions));
}

#[test]
fn check_rejects_each_broken_invariant() {
    let nodes = [1, 2, 3];
    let good = place(&nodes, 6, 2).unwrap();
    good.check(&nodes).unwrap();
    good.check(&[3, 2, 1]).unwrap();
    let broken = |edit: fn(&mut SitePlacement)| {
        let mut placement = good.clone();
        edit(&mut placement);
        placement.check(&nodes).unwrap_err()
    };
    assert!(matches!(broken(|p| p.partitions[0].replicas.push(3)), PlacementError::WrongReplicaCount { .. }));
    assert!(matches!(broken(|p| p.partitions[0].replicas.reverse()), PlacementError::NotCanonical { .. }));
    assert!(matches!(broken(|p| p.partitions[0].replicas = vec![1, 1]), PlacementError::NotCanonical { .. }));
    assert!(matches!(
        broken(|p| p.partitions[0].replicas = vec![1, 99]),
        PlacementError::UnknownNode { partition: 0, node: 99 } | PlacementError::PrimaryNotReplica { .. }
    ));
    assert!(matches!(broken(|p| p.partitions[0].primary = 42), PlacementError::PrimaryNotReplica { partition: 0, .. }));
    // All partitions on nodes 1 and 2: node 3 holds nothing.
    let skewed = broken(|p| {
        for part in &mut p.partitions {
            *part = PartitionReplicas { primary: part.primary.min(2), replicas: vec![1, 2] };
        }
    });
    assert!(matches!(skewed, PlacementError::ReplicaImbalance { min: 4, max: 4, .. }));
    // Replicas balanced, but node 1 primary everywhere it can be.
    let primaries = broken(|p| {
        for part in &mut p.partitions {
            part.primary = part.replicas[0];
        }
    });
    assert!(matches!(primaries, PlacementError::PrimaryImbalance { node: 1, primaries: 4, min: 2, max: 2 }));
    assert_eq!(good.check(&[1, 2]), Err(PlacementError::UnknownNode { partition: 1, node: 3 }));
}

#[test]
fn unchanged_nodes_change_nothing() {
    let current = place(&[1, 2, 3, 4, 5], 64, 3).unwrap();
    assert_eq!(rebalance(&current, &[1, 2, 3, 4, 5]).unwrap(), current);
}

#[test]
fn rebalance_repairs_a_skewed_map() {
    // Well formed but unbalanced: every partition on nodes 1 and 2, node 1 always primary.
    let skewed = SitePlacement {
        replicas_per_site: 2,
        partitions: vec![PartitionReplicas { primary: 1, replicas: vec![1, 2] }; 12],
    };
    let nodes = [1, 2, 3, 4];
    let fixed = rebalance(&skewed, &nodes).unwrap();
    fixed.check(&nodes).unwrap();
    // Nodes 3 and 4 need 6 replicas each, and every one of them is a move.
    assert_eq!(moves(&skewed, &fixed).len(), 12);
    assert_eq!(counts(&fixed, &nodes), (vec![6, 6, 6, 6], vec![3, 3, 3, 3]));
}

#[test]
fn adding_a_node_moves_only_what_it_receives() {
    let old = [1, 2, 3];
    let current = place(&old, 64, 3).unwrap();
    let next = rebalance(&current, &[1, 2, 3, 4]).unwrap();
    next.check(&[1, 2, 3, 4]).unwrap();
    let moved = moves(&current, &next);
    // 64*3/4 = 48 replicas reach node 4, and each is one move from an old node.
    assert_eq!(moved.len(), 48);
    assert!(moved.iter().all(|m| m.to == Some(4) && old.contains(&m.from.unwrap())));
    // Node 4 needs 16 primaries; no more change than that.
    assert_eq!(primary_changes(&current, &next).len(), 16);
}

#[test]
fn removing_a_node_moves_only_its_replicas() {
    let current = place(&[1, 2, 3, 4], 64, 3).unwrap();
    let next = rebalance(&current, &[1, 2, 4]).unwrap();
    next.check(&[1, 2, 4]).unwrap();
    let moved = moves(&current, &next);
    assert_eq!(moved.len(), 48);
    assert!(moved.iter().all(|m| m.from == Some(3)));
    let lost = current.partitions.iter().filter(|p| p.primary == 3).count();
    assert_eq!(primary_changes(&current, &next).len(), lost);
}

#[test]
fn replacing_a_node_moves_its_replicas_to_the_newcomer() {
    let current = place(&[1, 2, 3, 4], 64, 2).unwrap();
    let next = rebalance(&current, &[1, 2, 4, 5]).unwrap();
    next.check(&[1, 2, 4, 5]).unwrap();
    let moved = moves(&current, &next);
    assert_eq!(moved.len(), 32);
    assert!(moved.iter().all(|m| m.from == Some(3) && m.to == Some(5)));
}

#[test]
fn moves_pairs_removals_with_additions() {
    let a = SitePlacement {
        replicas_per_site: 2,
        partitions: vec![PartitionReplicas { primary: 1, replicas: vec![1, 2] }; 2],
    };
    let mut b = a.clone();
    b.partitions[1] = PartitionReplicas { primary: 3, replicas: vec![2, 3] };
    assert_eq!(moves(&a, &b), [Move { partition: 1, from: Some(1), to: Some(3) }]);
    assert_eq!(primary_changes(&a, &b), [PrimaryChange { partition: 1, from: Some(1), to: Some(3) }]);
    b.partitions.push(PartitionReplicas { primary: 1, replicas: vec![1] });
    assert_eq!(moves(&a, &b)[1..], [Move { partition: 2, from: None, to: Some(1) }]);
    assert_eq!(primary_changes(&a, &b)[1..], [PrimaryChange { partition: 2, from: None, to: Some(1) }]);
    assert!(moves(&a, &a).is_empty() && primary_changes(&a, &a).is_empty());
}

#[test]
fn serde_round_trip() {
    let placement = place(&[5, 6, 7], 16, 2).unwrap();
    let json = serde_json::to_string(&placement).unwrap();
    assert_eq!(serde_json::from_str::<SitePlacement>(&json).unwrap(), placement);
}

/// The largest site we plan for; prints the time taken (run with `--nocapture` to see it), asserts
/// only correctness so that a slow machine does not fail it.
#[test]
fn large_site() {
    let nodes: Vec<NodeId> = (1..=64).collect();
    let start = Instant::now();
    let placed = place(&nodes, 4096, 3).unwrap();
    let placed_in = start.elapsed();
    placed.check(&nodes).unwrap();
    let grown: Vec<NodeId> = (1..=65).collect();
    let start = Instant::now();
    let added = rebalance(&placed, &grown).unwrap();
    let added_in = start.elapsed();
    added.check(&grown).unwrap();
    let shrunk: Vec<NodeId> = (2..=65).collect();
    let start = Instant::now();
    let removed = rebalance(&added, &shrunk).unwrap();
    let removed_in = start.elapsed();
    removed.check(&shrunk).unwrap();
    let doubled: Vec<NodeId> = (1..=128).collect();
    let start = Instant::now();
    let twice = rebalance(&placed, &doubled).unwrap();
    let doubled_in = start.elapsed();
    twice.check(&doubled).unwrap();
    eprintln!(
        "P=4096 N=3: place k=64 {placed_in:?}, add one node {added_in:?}, remove one node {removed_in:?}, \
         64 -> 128 nodes {doubled_in:?}"
    );
}
