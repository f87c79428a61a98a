//! How the store engine lays keys out in the storage [`Space`](crate::Space)s.
//!
//! - `Data`: `partition (u16, big-endian) ++ user key` -> encoded entry. Keys of one partition are
//!   contiguous, so a partition can be scanned, digested or moved on its own.
//! - `Log`: `partition (u16 BE) ++ sequence (u64 BE)` -> change record. Big-endian numbers sort in
//!   numeric order, so a partition's log reads in sequence order.
//! - `Meta`: short ASCII names (below), plus `seq/ ++ partition (u16 BE)` -> the partition's last sequence.

pub const META_REPLICA_ID: &[u8] = b"replica_id";
pub const META_SITE: &[u8] = b"site";
pub const META_PARTITIONS: &[u8] = b"partitions";
/// The highest HLC timestamp this replica has written, so that a restart never issues a lower one.
pub const META_HLC_HIGH: &[u8] = b"hlc_high";

pub fn data_key(partition: u16, key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(2 + key.len());
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes.extend_from_slice(key);
    bytes
}

/// Splits a data key back into partition and user key.
pub fn split_data_key(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let (partition, key) = bytes.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*partition), key))
}

pub fn log_key(partition: u16, sequence: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(10);
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes.extend_from_slice(&sequence.to_be_bytes());
    bytes
}

pub fn meta_sequence_key(partition: u16) -> Vec<u8> {
    let mut bytes = b"seq/".to_vec();
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_partition_then_sequence() {
        assert!(log_key(1, 255) < log_key(1, 256));
        assert!(log_key(1, u64::MAX) < log_key(2, 0));
    }

    #[test]
    fn data_keys_round_trip() {
        assert_eq!(split_data_key(&data_key(513, b"user:1")), Some((513, &b"user:1"[..])));
    }
}
