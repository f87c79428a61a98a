//! Change-log records: what a partition's log holds and what replication ships.

use geostore_model::Hlc;

/// One change: the whole state of a key after it, and where the change first happened.
///
/// The record carries state, not the operation, so applying it anywhere is a merge: idempotent and
/// insensitive to order and duplicates. A record relayed through another site keeps its origin, so a
/// reader's causal token `(origin site, partition, origin sequence)` is satisfied whichever way it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The user key (or reserved key) that changed.
    pub key: Vec<u8>,
    /// The HLC timestamp of the change at its origin.
    pub hlc: Hlc,
    /// The site where the change was written.
    pub origin: String,
    /// Its sequence number in the origin's log of the same partition; 0 for a repair by anti-entropy,
    /// which has no single origin.
    pub origin_sequence: u64,
    /// The key's encoded `Entry` after the change.
    pub entry: Vec<u8>,
}

const FORMAT_V1: u8 = 1;

impl LogRecord {
    /// `[1] ++ hlc (u64 BE) ++ origin sequence (u64 BE) ++ origin length (u8) ++ origin ++ key length
    /// (u32 BE) ++ key ++ entry`.
    pub fn encode(&self) -> Vec<u8> {
        let origin = self.origin.as_bytes();
        assert!(origin.len() <= usize::from(u8::MAX), "site names are at most 255 bytes");
        let mut bytes = Vec::with_capacity(1 + 8 + 8 + 1 + origin.len() + 4 + self.key.len() + self.entry.len());
        bytes.push(FORMAT_V1);
        bytes.extend_from_slice(&self.hlc.0.to_be_bytes());
        bytes.extend_from_slice(&self.origin_sequence.to_be_bytes());
        bytes.push(origin.len() as u8);
        bytes.extend_from_slice(origin);
        bytes.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&self.key);
        bytes.extend_from_slice(&self.entry);
        bytes
    }

    /// The length of [`LogRecord::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + 8 + 8 + 1 + self.origin.len() + 4 + self.key.len() + self.entry.len()
    }

    /// The record, or `None` if the bytes are not a record this build can read.
    pub fn decode(bytes: &[u8]) -> Option<LogRecord> {
        let (&FORMAT_V1, rest) = bytes.split_first()? else { return None };
        let (hlc, rest) = rest.split_first_chunk::<8>()?;
        let (origin_sequence, rest) = rest.split_first_chunk::<8>()?;
        let (&origin_len, rest) = rest.split_first()?;
        let (origin, rest) = rest.split_at_checked(usize::from(origin_len))?;
        let (key_len, rest) = rest.split_first_chunk::<4>()?;
        let (key, entry) = rest.split_at_checked(u32::from_be_bytes(*key_len) as usize)?;
        Some(LogRecord {
            key: key.to_vec(),
            hlc: Hlc(u64::from_be_bytes(*hlc)),
            origin: String::from_utf8(origin.to_vec()).ok()?,
            origin_sequence: u64::from_be_bytes(*origin_sequence),
            entry: entry.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = LogRecord {
            key: b"user:1".to_vec(),
            hlc: Hlc(42),
            origin: "eu".into(),
            origin_sequence: 7,
            entry: vec![1, 2, 3],
        };
        assert_eq!(LogRecord::decode(&record.encode()), Some(record.clone()));
        assert_eq!(record.encoded_len(), record.encode().len());
        let encoded = record.encode();
        assert_eq!(LogRecord::decode(&encoded[..10]), None);
        assert_eq!(LogRecord::decode(&[9, 0, 0]), None);
    }
}
