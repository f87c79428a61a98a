//! Which partition a key belongs to.

/// The number of partitions a cluster gets unless it asks for another at creation.
pub const DEFAULT_PARTITIONS: u16 = 64;

/// A partition number, `0..partitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u16);

/// The partition of `key` among `partitions`. The hash is XXH3-64 with seed 0, whose output is fixed by
/// its specification: the same key maps to the same partition on every node, build and platform, which the
/// data on disk depends on. Never change it for an existing cluster. A placed reserved key
/// ([`crate::fence::PLACED_KEY_PREFIX`]) names its partition instead.
pub fn partition_of(key: &[u8], partitions: u16) -> PartitionId {
    assert!(partitions > 0, "a cluster has at least one partition");
    if let Some(partition) = crate::fence::placed_partition(key) {
        return PartitionId(partition % partitions);
    }
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
    fn a_placed_reserved_key_is_in_the_partition_it_names() {
        for partition in [0, 7, 63] {
            assert_eq!(partition_of(&crate::fence::fence_key("job", partition), 64), PartitionId(partition));
            assert_eq!(partition_of(&crate::fence::token_lock_key(9, partition), 64), PartitionId(partition));
            let site = crate::fence::replica_site_key(crate::ReplicaId(5), partition);
            assert_eq!(partition_of(&site, 64), PartitionId(partition));
        }
        // Too short to name one: hashed like any key.
        assert_eq!(
            partition_of(&[0xff, 0x00, b'@', 1], 64),
            PartitionId((xxhash_rust::xxh3::xxh3_64(&[0xff, 0x00, b'@', 1]) % 64) as u16)
        );
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
