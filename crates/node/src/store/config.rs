//! The store's settings and its errors.

use geostore_model::{InvalidRequest, Limits, OpError};
use geostore_storage::{Durability, StorageError};

use crate::config;

/// Settings of the store engine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The site this replica belongs to (fixed when its data directory is created).
    pub site: String,
    /// The cluster's partition count (fixed when the cluster is created).
    pub partitions: u16,
    /// Whether a write is acknowledged after fsync ([`Durability::Sync`]) or after the OS has it.
    pub durability: Durability,
    /// Limits on keys, values and set sizes.
    pub limits: Limits,
    /// How far ahead of our wall clock a received timestamp may be before it is refused.
    pub max_drift_ms: u64,
    /// Requests that may wait for the writer thread; callers wait for room beyond this.
    pub write_queue_max: usize,
    /// Operations the writer applies in one group (one storage batch, one fsync).
    pub group_ops_max: usize,
    /// Change-log records kept per partition; older ones are trimmed (a peer further behind catches up
    /// by anti-entropy instead).
    pub log_retention_ops: u64,
    /// Change-log bytes kept per node (spread evenly over the partitions).
    pub log_retention_bytes: u64,
    /// Change-log records older than this are trimmed.
    pub log_retention_ms: u64,
    /// Apply each request in the caller's task instead of on the writer thread (no group commit across
    /// callers). For the deterministic simulation, where an OS thread would escape the seed.
    pub inline_writer: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            site: config::SITE_DEFAULT.to_string(),
            partitions: config::PARTITIONS_DEFAULT,
            durability: Durability::Sync,
            limits: Limits::default(),
            max_drift_ms: config::MAX_DRIFT_DEFAULT.as_millis() as u64,
            write_queue_max: config::WRITE_QUEUE_MAX_DEFAULT,
            group_ops_max: config::GROUP_OPS_MAX_DEFAULT,
            log_retention_ops: config::LOG_RETENTION_OPS_DEFAULT,
            log_retention_bytes: config::LOG_RETENTION_BYTES_DEFAULT,
            log_retention_ms: config::LOG_RETENTION_DEFAULT.as_millis() as u64,
            inline_writer: false,
        }
    }
}

/// A failure of the store itself, as opposed to a refusal of one request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Storage could not be read.
    #[error("storage read failed: {0}")]
    Read(#[from] StorageError),
    /// Bytes stored here could not be decoded: the data directory is damaged.
    #[error("corrupt {what} {key:?}: {detail}")]
    Corrupt {
        /// What the bytes should have been (an entry, a log record, ...).
        what: &'static str,
        /// The storage key they are under, as text.
        key: String,
        /// Why they do not decode.
        detail: String,
    },
    /// The store has been shut down and takes no more changes.
    #[error("the store is shut down")]
    ShutDown,
    /// A storage write failed; the store takes no changes until the node is restarted (RocksDB's state
    /// after a failed fsync is not trustworthy).
    #[error("storage write failed: {0}; restart the node")]
    WriteFailed(StorageError),
    /// The writer stopped before answering: a change it had been given may or may not have been applied.
    #[error("the writer stopped before answering")]
    WriterStopped,
    /// A scan run on a blocking thread did not finish.
    #[error("a background scan did not finish: {0}")]
    Scan(String),
}

impl StoreError {
    /// A damaged stored value or key, named for the error message.
    pub(crate) fn corrupt(what: &'static str, key: &[u8], detail: impl ToString) -> Self {
        StoreError::Corrupt { what, key: String::from_utf8_lossy(key).into_owned(), detail: detail.to_string() }
    }
}

/// Why a write failed, and so whether it may have been applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The request is malformed: not applied.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The request conflicts with the key's state: not applied.
    #[error(transparent)]
    Rejected(#[from] OpError),
    /// The store cannot take writes (storage failed earlier, or it is shutting down): not applied.
    #[error("not applied: {0}")]
    Unavailable(StoreError),
    /// Storage failed while this write was being made durable: it may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(StoreError),
    /// Made under a lock token older than one this replica knows: not applied.
    #[error("stale fence: lock {lock:?} token {token} is below the highest token this replica knows, {known}")]
    Fenced {
        /// The lock the write was made under.
        lock: String,
        /// The write's token.
        token: u64,
        /// The highest token this replica knows for the lock.
        known: u64,
    },
    /// This node is not the primary of the key's partition in its site: not applied.
    #[error("not applied: this node is not the primary of partition {partition} in its site")]
    NotPrimary {
        /// The key's partition.
        partition: u16,
    },
}

/// Why a read failed. A read changes nothing, whatever the error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The key is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The store could not read it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The causal token names a write this replica had not seen when the wait ran out.
    #[error(
        "not yet replicated: this replica has seen {site}'s partition {partition} up to sequence {seen}, the token needs {needed}; waited {waited_ms} ms"
    )]
    NotYetReplicated {
        /// The token's site.
        site: String,
        /// The token's partition.
        partition: u16,
        /// How far this replica has seen that site's log of the partition.
        seen: u64,
        /// The sequence the token names.
        needed: u64,
        /// How long the read waited, in milliseconds.
        waited_ms: u64,
    },
    /// The causal token names a partition this cluster does not have.
    #[error("bad causal token: partition {partition} does not exist (there are {partitions})")]
    NoSuchPartition {
        /// The token's partition.
        partition: u64,
        /// How many partitions the cluster has.
        partitions: u16,
    },
    /// The read asked to wait a negative time.
    #[error("bad causal wait: wait_ms must not be negative; got {wait_ms}")]
    NegativeWait {
        /// The wait asked for.
        wait_ms: i64,
    },
}

/// Why a peer's records, an anti-entropy repair, a tombstone collection or a log trim was not applied.
/// Each is all or nothing: nothing of a refused batch was applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    /// The store failed (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The batch names a partition this cluster does not have.
    #[error("partition {partition} does not exist (there are {partitions})")]
    NoSuchPartition {
        /// The batch's partition.
        partition: u16,
        /// How many partitions the cluster has.
        partitions: u16,
    },
    /// The batch does not continue the peer's log where this replica's cursor stands.
    #[error(
        "out of order: the cursor on {peer}'s partition {partition} is at {cursor}, the batch continues from {after}"
    )]
    OutOfOrder {
        /// The peer whose log it is.
        peer: String,
        /// The partition.
        partition: u16,
        /// Where this replica's cursor on that log stands.
        cursor: u64,
        /// Where the batch continues from.
        after: u64,
    },
    /// A record or repaired entry holds a key of another partition than the batch's.
    #[error("a {what} from {peer} for partition {partition} holds a key of another partition")]
    ForeignKey {
        /// A record or an entry.
        what: &'static str,
        /// The peer it came from.
        peer: String,
        /// The batch's partition.
        partition: u16,
    },
    /// The change needs a role this node does not have for the partition: merges, repairs and
    /// collections are for its primary, copies of the primary's log for its other replicas.
    #[error("partition {partition}: {detail}")]
    WrongRole {
        /// The partition.
        partition: u16,
        /// What this node is not.
        detail: &'static str,
    },
    /// A peer's record holds an entry that cannot be decoded.
    #[error("unreadable entry in record {sequence} from {peer}: {detail}")]
    UnreadableRecord {
        /// The peer it came from.
        peer: String,
        /// Its sequence in the peer's log.
        sequence: u64,
        /// Why it does not decode.
        detail: String,
    },
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Storage failed while reading or writing the store's metadata.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The data directory belongs to another site.
    #[error(
        "this data directory belongs to site {stored:?}, not {configured:?}; a node cannot change site (use a new data directory)"
    )]
    SiteMismatch {
        /// The site the directory was created for.
        stored: String,
        /// The site configured now.
        configured: String,
    },
    /// The data directory was created with another partition count.
    #[error(
        "this data directory was created with {stored} partitions, not {configured}; the partition count is fixed when a cluster is created"
    )]
    PartitionsMismatch {
        /// The partition count the directory was created with.
        stored: u16,
        /// The count configured now.
        configured: u16,
    },
    /// Metadata could not be decoded.
    #[error("corrupt metadata {key}: {detail}")]
    CorruptMeta {
        /// The metadata key.
        key: String,
        /// Why it does not decode.
        detail: String,
    },
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    WriterThread(String),
}
