//! Which partition a key belongs to.

/// The number of partitions a cluster gets unless it asks for another at creation.
pub const DEFAULT_PARTITIONS: u16 = 64;

/// A partition number, `0..partitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u16);

/// The partition of `key` among `partitions`. The hash is XXH3-64 with seed 0, whose output is fixed by
/// its specification: the same key maps to the same partition on every node, build and platform, which the
/// data on disk depends on. Never change it for an existing cluster.
pub fn partition_of(key: &[u8], partitions: u16) -> PartitionId {
    assert!(partitions > 0, "a cluster has at least one partition");
    PartitionId((xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions)) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned values: if these change, existing data directories would be read from the wrong partition.
        assert_eq!(partition_of(b"", 64), PartitionId((0x2d06800538d394c2_u64 % 64) as u16));
        assert_eq!(partition_of(b"user:42", 64), partition_of(b"user:42", 64));
    }

    #[test]
    fn keys_spread_over_every_partition() {
        let mut seen = [0_u32; 64];
        for i in 0..6400 {
            seen[partition_of(format!("key-{i}").as_bytes(), 64).0 as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
