//! Opening a data directory: the replica's identity, the progress it had reached, and a new incarnation
//! after a restart that may have lost its unsynced tail.
//!
//! Invariants:
//! - A data directory belongs to one site and one partition count for its whole life.
//! - Without fsync (`Durability::Buffered`) an open that follows no clean shutdown counts as a power loss:
//!   the replica continues as a new incarnation (a new replica id, log sequences past their synced limits,
//!   a clock past its synced limit), so nothing it handed out in the lost tail is handed out again.

use std::collections::BTreeMap;

use geostore_model::{Hlc, HybridClock, ReplicaId};
use geostore_storage::{Batch, Durability, Space, Storage};

use super::keys;
use super::{Identity, OpenError, ProgressState, StoreConfig};

/// What an open found: who this replica is and how far it had come.
pub(super) struct Recovered {
    pub(super) identity: Identity,
    pub(super) state: ProgressState,
}

/// Reads (or, on first use, creates) the replica's identity and progress from `storage`, and moves
/// `clock` past every timestamp the replica may have issued.
pub(super) fn recover(
    storage: &dyn Storage,
    config: &StoreConfig,
    clock: &HybridClock,
    new_replica_id: impl FnOnce() -> u64,
) -> Result<Recovered, OpenError> {
    let (mut identity, created) = load_or_create_identity(storage, config, new_replica_id)?;
    if let Some(high) = read_u64_meta(storage, keys::META_HLC_HIGH)? {
        clock.observe_own(Hlc(high));
    }
    let buffered = config.durability == Durability::Buffered;
    let lossy_restart = buffered && !created && storage.get(Space::Meta, keys::META_CLEAN_SHUTDOWN)?.is_none();
    let mut state = ProgressState::default();
    for partition in 0..identity.partitions {
        let head = read_u64_meta(storage, &keys::meta_sequence_key(partition))?.unwrap_or(0);
        let limit = read_u64_meta(storage, &keys::meta_sequence_limit_key(partition))?.unwrap_or(0);
        // After a possible loss the next record goes past every sequence the lost tail may have held:
        // peers that merged those records must not take new ones for them. The head itself stays the
        // last record written (the log is read up to it).
        state.sequence_floors.push(if lossy_restart { limit } else { 0 });
        state.sequence_limits.push(limit);
        state.heads.push(head);
        state.log_starts.push(read_u64_meta(storage, &keys::meta_log_start_key(partition))?.unwrap_or(1));
        state.log_bytes.push(read_u64_meta(storage, &keys::meta_log_bytes_key(partition))?.unwrap_or(0));
    }
    state.cursors = read_site_partition_meta(storage, keys::META_CURSOR_PREFIX)?;
    state.seen = read_site_partition_meta(storage, keys::META_SEEN_PREFIX)?;
    state.hlc_limit = read_u64_meta(storage, keys::META_HLC_LIMIT)?.unwrap_or(0);
    if lossy_restart {
        identity = begin_incarnation(storage, identity)?;
        clock.observe_own(Hlc(state.hlc_limit));
    }
    if buffered {
        // Until the next clean shutdown, an open counts as possibly lossy.
        let mut batch = Batch::new();
        batch.delete(Space::Meta, keys::META_CLEAN_SHUTDOWN.to_vec());
        storage.write(batch, Durability::Sync)?;
    }
    Ok(Recovered { identity, state })
}

/// Records (with fsync) that the store was shut down cleanly: the next open continues as the same replica.
pub(super) fn mark_clean_shutdown(storage: &dyn Storage) -> Result<(), geostore_storage::StorageError> {
    let mut batch = Batch::new();
    batch.put(Space::Meta, keys::META_CLEAN_SHUTDOWN.to_vec(), vec![1]);
    storage.write(batch, Durability::Sync)
}

pub(super) fn read_u64_meta(storage: &dyn Storage, key: &[u8]) -> Result<Option<u64>, OpenError> {
    match storage.get(Space::Meta, key)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(decode_u64_meta(key, &bytes)?)),
    }
}

fn decode_u64_meta(key: &[u8], bytes: &[u8]) -> Result<u64, OpenError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| OpenError::CorruptMeta {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

fn read_site_partition_meta(storage: &dyn Storage, prefix: &[u8]) -> Result<BTreeMap<(String, u16), u64>, OpenError> {
    let mut values = BTreeMap::new();
    for (key, value) in storage.scan(Space::Meta, prefix, &keys::prefix_end(prefix), usize::MAX)? {
        let (site, partition) = keys::split_meta_site_partition_key(prefix, &key).ok_or_else(|| {
            OpenError::CorruptMeta { key: String::from_utf8_lossy(&key).into_owned(), detail: "bad key".into() }
        })?;
        values.insert((site.to_string(), partition), decode_u64_meta(&key, &value)?);
    }
    Ok(values)
}

/// After a restart that may have lost the unsynced tail (no fsync, no clean shutdown): continue as a new
/// replica, whose CRDT markers and dots cannot collide with those the lost tail held (the log sequences
/// continue past their limits, `ProgressState::sequence_floors`), and write that down with fsync.
fn begin_incarnation(storage: &dyn Storage, identity: Identity) -> Result<Identity, OpenError> {
    let incarnation = read_u64_meta(storage, keys::META_INCARNATION)?.unwrap_or(0) + 1;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&identity.replica.0.to_be_bytes());
    hasher.update(&incarnation.to_be_bytes());
    let replica = ReplicaId(hasher.digest().max(1));
    let mut batch = Batch::new();
    batch.put(Space::Meta, keys::META_REPLICA_ID.to_vec(), replica.0.to_be_bytes().to_vec());
    batch.put(Space::Meta, keys::META_INCARNATION.to_vec(), incarnation.to_be_bytes().to_vec());
    storage.write(batch, Durability::Sync)?;
    tracing::warn!(
        previous = identity.replica.0,
        replica = replica.0,
        incarnation,
        "this store runs without fsync and was not shut down cleanly: writes in its unsynced tail may be lost; \
         it continues as a new replica, past every timestamp and sequence it may have issued"
    );
    Ok(Identity { replica, ..identity })
}

/// The identity stored, or a new one written; and whether it was new.
fn load_or_create_identity(
    storage: &dyn Storage,
    config: &StoreConfig,
    new_replica_id: impl FnOnce() -> u64,
) -> Result<(Identity, bool), OpenError> {
    let stored_replica = read_u64_meta(storage, keys::META_REPLICA_ID)?;
    let stored_site = storage.get(Space::Meta, keys::META_SITE)?;
    let stored_partitions = storage.get(Space::Meta, keys::META_PARTITIONS)?;
    match (stored_replica, stored_site, stored_partitions) {
        (Some(replica), Some(site), Some(partitions)) => {
            let site = String::from_utf8(site)
                .map_err(|e| OpenError::CorruptMeta { key: "site".into(), detail: e.to_string() })?;
            let partitions = <[u8; 2]>::try_from(partitions.as_slice())
                .map(u16::from_be_bytes)
                .map_err(|_| OpenError::CorruptMeta { key: "partitions".into(), detail: "expected 2 bytes".into() })?;
            if site != config.site {
                return Err(OpenError::SiteMismatch { stored: site, configured: config.site.clone() });
            }
            if partitions != config.partitions {
                return Err(OpenError::PartitionsMismatch { stored: partitions, configured: config.partitions });
            }
            Ok((Identity { replica: ReplicaId(replica), site, partitions }, false))
        }
        (None, None, None) => {
            let identity = Identity {
                replica: ReplicaId(new_replica_id()),
                site: config.site.clone(),
                partitions: config.partitions,
            };
            let mut batch = Batch::new();
            batch.put(Space::Meta, keys::META_REPLICA_ID.to_vec(), identity.replica.0.to_be_bytes().to_vec());
            batch.put(Space::Meta, keys::META_SITE.to_vec(), identity.site.as_bytes().to_vec());
            batch.put(Space::Meta, keys::META_PARTITIONS.to_vec(), identity.partitions.to_be_bytes().to_vec());
            storage.write(batch, Durability::Sync)?;
            Ok((identity, true))
        }
        _ => Err(OpenError::CorruptMeta {
            key: "identity".into(),
            detail: "only part of the replica identity is stored".into(),
        }),
    }
}
