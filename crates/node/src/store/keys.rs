//! The store's key schema: how it lays its keys out in the storage [`Space`](geostore_storage::Space)s. The storage crate stores
//! bytes and knows none of this.
//!
//! - `Data`: `partition (u16, big-endian) ++ user key` -> encoded entry. Keys of one partition are
//!   contiguous, so a partition can be scanned, digested or moved on its own.
//! - `Log`: `partition (u16 BE) ++ sequence (u64 BE)` -> change record. Big-endian numbers sort in
//!   numeric order, so a partition's log reads in sequence order.
//! - `Meta`: short ASCII names (below), plus per partition `seq/ ++ partition (u16 BE)` -> the last
//!   sequence, `logstart/ ++ partition` -> the first sequence still in the log, `logbytes/ ++ partition` ->
//!   the encoded bytes of the records still in the log, and per peer site and
//!   partition `cursor/ ++ site ++ / ++ partition` -> the last sequence of that peer's log merged here, and
//!   per origin site and partition `seen/ ++ site ++ / ++ partition` -> the highest origin sequence whose
//!   change is reflected here.

/// This replica's id (u64 BE).
pub const META_REPLICA_ID: &[u8] = b"replica_id";
/// The site the data directory belongs to (UTF-8).
pub const META_SITE: &[u8] = b"site";
/// The partition count fixed at creation (u16 BE).
pub const META_PARTITIONS: &[u8] = b"partitions";
/// The highest HLC timestamp this replica has written, so that a restart never issues a lower one.
pub const META_HLC_HIGH: &[u8] = b"hlc_high";
/// Without fsync (`Durability::Buffered`) a machine losing power loses the tail of what was written, and a
/// restarted replica must not hand out again what it handed out in that tail. These are written with
/// fsync: `clean_shutdown` by a clean shutdown (removed at open), `incarnation` counts the restarts that
/// may have lost a tail, `hlc_limit` and `seqlimit/ ++ partition` are bounds, kept ahead of use, on the
/// HLC timestamps and log sequences issued.
pub const META_CLEAN_SHUTDOWN: &[u8] = b"clean_shutdown";
/// See [`META_CLEAN_SHUTDOWN`].
pub const META_INCARNATION: &[u8] = b"incarnation";
/// See [`META_CLEAN_SHUTDOWN`].
pub const META_HLC_LIMIT: &[u8] = b"hlc_limit";

/// `seqlimit/ ++ partition`: the bound on `partition`'s log sequences (see [`META_CLEAN_SHUTDOWN`]).
pub fn meta_sequence_limit_key(partition: u16) -> Vec<u8> {
    let mut bytes = b"seqlimit/".to_vec();
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes
}

/// The `Data` key of user (or reserved) key `key` in `partition`.
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

/// The `Log` key of `partition`'s record `sequence`.
pub fn log_key(partition: u16, sequence: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(10);
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes.extend_from_slice(&sequence.to_be_bytes());
    bytes
}

/// Splits a log key back into partition and sequence; `None` if it is not 10 bytes.
pub fn split_log_key(bytes: &[u8]) -> Option<(u16, u64)> {
    let bytes: &[u8; 10] = bytes.try_into().ok()?;
    let (partition, sequence) = bytes.split_at(2);
    Some((u16::from_be_bytes(partition.try_into().ok()?), u64::from_be_bytes(sequence.try_into().ok()?)))
}

/// `seq/ ++ partition`: the partition's last sequence.
pub fn meta_sequence_key(partition: u16) -> Vec<u8> {
    let mut bytes = b"seq/".to_vec();
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes
}

/// `logstart/ ++ partition`: the first sequence still in the partition's log.
pub fn meta_log_start_key(partition: u16) -> Vec<u8> {
    let mut bytes = b"logstart/".to_vec();
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes
}

/// `logbytes/ ++ partition`: the encoded bytes of the records still in the partition's log.
pub fn meta_log_bytes_key(partition: u16) -> Vec<u8> {
    let mut bytes = b"logbytes/".to_vec();
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes
}

/// Prefix of the replication cursors (see [`meta_site_partition_key`]).
pub const META_CURSOR_PREFIX: &[u8] = b"cursor/";
/// Prefix of the `seen` counters (see [`meta_site_partition_key`]).
pub const META_SEEN_PREFIX: &[u8] = b"seen/";

/// `prefix ++ site ++ / ++ partition (u16 BE)`.
pub fn meta_site_partition_key(prefix: &[u8], site: &str, partition: u16) -> Vec<u8> {
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(site.as_bytes());
    bytes.push(b'/');
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes
}

/// The site and partition of a key made by [`meta_site_partition_key`] with `prefix`.
pub fn split_meta_site_partition_key<'a>(prefix: &[u8], bytes: &'a [u8]) -> Option<(&'a str, u16)> {
    let rest = bytes.strip_prefix(prefix)?;
    let (site, partition) = rest.split_last_chunk::<2>()?;
    let site = site.strip_suffix(b"/")?;
    Some((std::str::from_utf8(site).ok()?, u16::from_be_bytes(*partition)))
}

/// The end of the range of keys that start with `prefix` (for scans).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
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
    fn site_partition_keys_round_trip() {
        let key = meta_site_partition_key(META_CURSOR_PREFIX, "us-east", 300);
        assert_eq!(split_meta_site_partition_key(META_CURSOR_PREFIX, &key), Some(("us-east", 300)));
        assert!(key.as_slice() < prefix_end(META_CURSOR_PREFIX).as_slice());
        assert_eq!(prefix_end(b"ab"), b"ac");
    }

    #[test]
    fn log_keys_round_trip_and_a_short_one_is_refused() {
        assert_eq!(split_log_key(&log_key(3, 1 << 40)), Some((3, 1 << 40)));
        assert_eq!(split_log_key(&log_key(3, 7)[..9]), None);
        assert_eq!(split_log_key(b""), None);
    }

    #[test]
    fn data_keys_round_trip() {
        assert_eq!(split_data_key(&data_key(513, b"user:1")), Some((513, &b"user:1"[..])));
    }
}
