//! How a Raft group encodes what it stores (log entries, votes, snapshots) and what members send each
//! other: one format byte, then postcard (compact, and several times cheaper to encode and decode than
//! JSON, which the Raft traffic of every lock operation pays for on every member).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The only format so far. A reader refuses any other, so a future format is never misread.
pub const FORMAT_V1: u8 = 1;

/// Bytes that are not a record of this format: empty, another format byte, or a body that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("raft record: {0}")]
pub struct CodecError(String);

/// `value` as a record: [`FORMAT_V1`], then postcard.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT_V1];
    bytes.extend(postcard::to_stdvec(value).expect("raft records always serialize"));
    bytes
}

/// The value a record made by [`encode`] holds.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(|e| CodecError(e.to_string())),
        Some((format, _)) => Err(CodecError(format!("unknown format {format}"))),
        None => Err(CodecError("empty".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_other_formats_are_refused() {
        let value = (7_u64, "lock".to_string(), Some(vec![1_u8, 2]));
        assert_eq!(decode::<(u64, String, Option<Vec<u8>>)>(&encode(&value)).unwrap(), value);
        let mut bytes = encode(&value);
        bytes[0] = 2;
        assert!(decode::<(u64, String, Option<Vec<u8>>)>(&bytes).unwrap_err().to_string().contains("format 2"));
        assert!(decode::<u64>(&[]).is_err());
    }
}
