//! Anti-entropy digests of a partition: a flat list of bucket digests, not a Merkle tree.
//!
//! A partition's keys fall into [`DIGEST_BUCKETS`] buckets by a hash of the key; a bucket's digest is the
//! XOR of its keys' digests (a hash of the key and of its stored state), so two replicas holding the same
//! states have the same digests whatever order they learnt them in, and their logs do not matter. Two
//! replicas compare the bucket digests, then the per-key digests of the buckets that differ, and fetch
//! only the keys that differ. Narrowing a difference inside a bucket means reading every key of it: a
//! tree over the keys would not, and is what moving partitions between nodes will want.

use geostore_model::{Entry, decode_entry};
use geostore_storage::Space;

use super::{Store, StoreError, keys};

/// How many buckets a partition's keys are spread over by key hash. A power of two, so that a bucket is
/// the top bits of the hash.
pub const DIGEST_BUCKETS: usize = 256;
const _: () = assert!(DIGEST_BUCKETS.is_power_of_two() && DIGEST_BUCKETS > 1);
/// The shift that leaves the top `log2(DIGEST_BUCKETS)` bits of a 64-bit hash.
const BUCKET_SHIFT: u32 = u64::BITS - DIGEST_BUCKETS.trailing_zeros();
/// Keys read per storage scan while digesting a partition.
const DIGEST_SCAN_KEYS_MAX: usize = 4096;

/// The bucket of a key in a partition digest.
pub fn digest_bucket(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64_with_seed(key, 1) >> BUCKET_SHIFT) as usize
}

/// One key's contribution to a digest: its name and its state, hashed.
fn key_digest(key: &[u8], entry: &Entry) -> u64 {
    let mut bytes = key.to_vec();
    bytes.extend_from_slice(&entry.digest().to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

impl Store {
    /// The digest of each of a partition's [`DIGEST_BUCKETS`] buckets: XOR of its keys' digests.
    pub fn partition_digest(&self, partition: u16) -> Result<Vec<u64>, StoreError> {
        let mut buckets = vec![0_u64; DIGEST_BUCKETS];
        self.for_each_entry(partition, |key, entry| buckets[digest_bucket(key)] ^= key_digest(key, entry))?;
        Ok(buckets)
    }

    /// `(key, digest)` of every key of a partition in the given buckets (numbers out of range are ignored).
    pub fn bucket_digests(&self, partition: u16, buckets: &[usize]) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        let mut wanted = [false; DIGEST_BUCKETS];
        for &bucket in buckets {
            if bucket < DIGEST_BUCKETS {
                wanted[bucket] = true;
            }
        }
        let mut keys = Vec::new();
        self.for_each_entry(partition, |key, entry| {
            if wanted[digest_bucket(key)] {
                keys.push((key.to_vec(), key_digest(key, entry)));
            }
        })?;
        Ok(keys)
    }

    /// Visits every stored key of `partition` in key order, a page of scan at a time.
    fn for_each_entry(&self, partition: u16, mut visit: impl FnMut(&[u8], &Entry)) -> Result<(), StoreError> {
        let mut start = keys::data_key(partition, b"");
        let end = match partition.checked_add(1) {
            Some(next) => keys::data_key(next, b""),
            None => vec![0xff; 3],
        };
        loop {
            let page = self.storage.scan(Space::Data, &start, &end, DIGEST_SCAN_KEYS_MAX)?;
            let full = page.len() == DIGEST_SCAN_KEYS_MAX;
            for (data_key, value) in &page {
                let (_, key) = keys::split_data_key(data_key)
                    .ok_or_else(|| StoreError::corrupt("data key", data_key, "shorter than a partition number"))?;
                let entry = decode_entry(value).map_err(|e| StoreError::corrupt("entry", key, e))?;
                visit(key, &entry);
            }
            match page.last() {
                Some((last, _)) if full => {
                    start = last.clone();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_whole_range() {
        let mut seen = [false; DIGEST_BUCKETS];
        for i in 0..20_000_u32 {
            seen[digest_bucket(&i.to_be_bytes())] = true;
        }
        assert!(seen.iter().all(|hit| *hit), "every bucket is reachable");
    }
}
