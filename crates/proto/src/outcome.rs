//! The outcome protocol: whether a failed call may have been applied, and why it failed, decided from data.
//!
//! Every error a geostore server returns, from every service (KV, Lock, Cluster, Replication, Raft),
//! carries
//! - its [`Outcome`] in the response metadata under [`OUTCOME_METADATA`] (`failed` or `unknown`);
//! - its [`Reason`] (`STALE_FENCE`, `INVALID_REQUEST`, ...) under [`REASON_METADATA`];
//! - both again, with the reason's fields (the lock, the stale and the known token, ...), as a
//!   `google.rpc.ErrorInfo` in the status details (the `grpc-status-details-bin` trailer that gRPC's
//!   libraries decode: `grpc_status.rpc_status.from_call` in Python, `status.FromError` in Go), with
//!   domain [`ERROR_DOMAIN`] and the outcome as metadata `outcome`.
//!
//! Servers build their statuses with [`failed`] and [`unknown`]; callers read them back with
//! [`outcome_of`] and [`reason_of`]. Nothing in geostore decides anything from an error's message text:
//! messages are for people.
//!
//! A status that did not come from a geostore handler has no outcome in its metadata: it was made by the
//! transport on the caller's side (a deadline, a broken connection, a reply too large) or by tonic's server
//! before any handler ran. [`outcome_of`] calls such a status `Unknown`, except where the data proves that
//! nothing was sent: the connection was never opened ([`NotConnected`] in the error's source chain, put
//! there by every [`crate::net::Dialer`]) or the method does not exist on the server (`UNIMPLEMENTED`).

use std::collections::{BTreeMap, HashMap};
use std::error::Error as _;
use std::fmt;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The response metadata key holding a failed call's [`Outcome`] (`failed` or `unknown`).
pub const OUTCOME_METADATA: &str = "geostore-outcome";
/// The response metadata key holding a failed call's [`Reason`] name (e.g. `STALE_FENCE`).
pub const REASON_METADATA: &str = "geostore-reason";
/// The `domain` of every `google.rpc.ErrorInfo` a geostore server sends.
pub const ERROR_DOMAIN: &str = "geostore";
/// The `google.rpc.ErrorInfo` metadata key that repeats the outcome.
pub const OUTCOME_FIELD: &str = "outcome";

/// Whether a failed call may have taken effect, as Jepsen records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Certainly not applied: the call may be retried freely.
    Failed,
    /// May or may not have been applied.
    Unknown,
}

impl Outcome {
    /// The form on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }

    /// Reads the form on the wire; `None` for anything else.
    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "failed" => Some(Outcome::Failed),
            "unknown" => Some(Outcome::Unknown),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call failed, with the facts a caller may act on. The status code says the class; the reason says
/// which of the failures sharing a code it was (FAILED_PRECONDITION alone means four things) and carries
/// its fields. On the wire: [`Reason::name`] and [`Reason::fields`], documented in `proto/geostore/v1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The request is wrong in itself (an empty key, a TTL out of range, a malformed token, ...).
    InvalidRequest {
        /// The request field at fault (`key`, `value`, `ttl_ms`, `fence`, `after`, `name`, ...).
        field: String,
    },
    /// The write carried a fencing token lower than one this replica already knows for that lock.
    StaleFence {
        /// The lock the write was made under.
        lock: String,
        /// The write's token.
        token: u64,
        /// The highest token this replica knows for the lock.
        known_token: u64,
    },
    /// The operation does not fit the type the key holds (an increment of a set, ...).
    TypeMismatch {
        /// The type the key holds: `register`, `counter` or `set`.
        holds: String,
        /// The type the operation needs.
        needs: String,
    },
    /// The operation needs an existing key (Expire) and the key is absent, deleted or expired.
    KeyNotFound,
    /// An increment would take the counter past the 64-bit range.
    CounterOverflow {
        /// The counter's value as this replica sees it.
        current: i64,
        /// The refused increment.
        delta: i64,
    },
    /// A read's causal token names a write this node had not seen when the wait ran out.
    NotYetReplicated {
        /// The token waited for, in its text form (see [`crate::token`]).
        after: String,
    },
    /// The node could not take the write (its writer is stopped or full); nothing was applied.
    NotApplied,
    /// The write may or may not be durable: the node failed while it was being committed.
    WriteInDoubt,
    /// The lock is held by someone else and the caller asked not to wait.
    LockBusy {
        /// The lock.
        lock: String,
        /// The holder's token, if the lock is held (it may be only queued for).
        holder_token: Option<u64>,
    },
    /// The caller's token does not hold the lock it tried to release or keep alive (the lease expired,
    /// was released, or the lock was granted to someone else).
    NotHolder {
        /// The lock.
        lock: String,
        /// The caller's token.
        token: u64,
        /// The token that holds the lock now, if any.
        current_token: Option<u64>,
    },
    /// The lock was not granted within the caller's wait; the request left the queue.
    NotGranted {
        /// The lock.
        lock: String,
    },
    /// The lock group could not decide the request: no leader, or the leader was lost while deciding.
    LockGroupUnavailable,
    /// The request would exceed a limit of the server (too many locks or waiters, ...).
    LimitReached,
    /// The lock request id was already used for a different request.
    RequestIdReused,
    /// The node is not the primary of the key's partition in its site (it answers a client that routes
    /// by a cached placement map, or forwards for one that does not): the request went nowhere.
    NotPrimary {
        /// The partition.
        partition: u16,
        /// The primary's epoch, as this node knows it.
        epoch: u64,
        /// The primary's member id (0: unknown).
        primary: u64,
        /// The primary's gRPC endpoint (empty: unknown).
        primary_endpoint: String,
    },
    /// Too few replicas of the partition are up in the site for a write to reach W of them.
    ReplicasUnavailable {
        /// The partition.
        partition: u16,
        /// The site.
        site: String,
        /// The replicas that are up (the primary included).
        up: u64,
        /// The partition's replicas in the site (N).
        replicas: u64,
        /// The replicas a write must reach (W).
        needed: u64,
    },
    /// The server failed (a storage error); see the message.
    Internal,
}

impl Reason {
    /// The reason's name on the wire: `google.rpc.ErrorInfo.reason`, the `geostore-reason` metadata and
    /// `WriteResult.reason`.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::InvalidRequest { .. } => "INVALID_REQUEST",
            Reason::StaleFence { .. } => "STALE_FENCE",
            Reason::TypeMismatch { .. } => "TYPE_MISMATCH",
            Reason::KeyNotFound => "KEY_NOT_FOUND",
            Reason::CounterOverflow { .. } => "COUNTER_OVERFLOW",
            Reason::NotYetReplicated { .. } => "NOT_YET_REPLICATED",
            Reason::NotApplied => "NOT_APPLIED",
            Reason::WriteInDoubt => "WRITE_IN_DOUBT",
            Reason::LockBusy { .. } => "LOCK_BUSY",
            Reason::NotHolder { .. } => "NOT_HOLDER",
            Reason::NotGranted { .. } => "NOT_GRANTED",
            Reason::LockGroupUnavailable => "LOCK_GROUP_UNAVAILABLE",
            Reason::LimitReached => "LIMIT_REACHED",
            Reason::RequestIdReused => "REQUEST_ID_REUSED",
            Reason::NotPrimary { .. } => "NOT_PRIMARY",
            Reason::ReplicasUnavailable { .. } => "REPLICAS_UNAVAILABLE",
            Reason::Internal => "INTERNAL",
        }
    }

    /// Every reason's name, for tests and documentation.
    pub const NAMES: [&'static str; 17] = [
        "INVALID_REQUEST",
        "STALE_FENCE",
        "TYPE_MISMATCH",
        "KEY_NOT_FOUND",
        "COUNTER_OVERFLOW",
        "NOT_YET_REPLICATED",
        "NOT_APPLIED",
        "WRITE_IN_DOUBT",
        "LOCK_BUSY",
        "NOT_HOLDER",
        "NOT_GRANTED",
        "LOCK_GROUP_UNAVAILABLE",
        "LIMIT_REACHED",
        "REQUEST_ID_REUSED",
        "NOT_PRIMARY",
        "REPLICAS_UNAVAILABLE",
        "INTERNAL",
    ];

    /// The reason's fields as `google.rpc.ErrorInfo` metadata (numbers in decimal; an absent optional
    /// field is left out).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let optional = |name: &'static str, value: &Option<u64>| value.map(|value| (name, value.to_string()));
        match self {
            Reason::InvalidRequest { field } => vec![("field", field.clone())],
            Reason::StaleFence { lock, token, known_token } => {
                vec![("lock", lock.clone()), ("token", token.to_string()), ("known_token", known_token.to_string())]
            }
            Reason::TypeMismatch { holds, needs } => vec![("holds", holds.clone()), ("needs", needs.clone())],
            Reason::CounterOverflow { current, delta } => {
                vec![("current", current.to_string()), ("delta", delta.to_string())]
            }
            Reason::NotYetReplicated { after } => vec![("after", after.clone())],
            Reason::LockBusy { lock, holder_token } => {
                std::iter::once(("lock", lock.clone())).chain(optional("holder_token", holder_token)).collect()
            }
            Reason::NotHolder { lock, token, current_token } => [("lock", lock.clone()), ("token", token.to_string())]
                .into_iter()
                .chain(optional("current_token", current_token))
                .collect(),
            Reason::NotGranted { lock } => vec![("lock", lock.clone())],
            Reason::NotPrimary { partition, epoch, primary, primary_endpoint } => vec![
                ("partition", partition.to_string()),
                ("epoch", epoch.to_string()),
                ("primary", primary.to_string()),
                ("primary_endpoint", primary_endpoint.clone()),
            ],
            Reason::ReplicasUnavailable { partition, site, up, replicas, needed } => vec![
                ("partition", partition.to_string()),
                ("site", site.clone()),
                ("up", up.to_string()),
                ("replicas", replicas.to_string()),
                ("needed", needed.to_string()),
            ],
            Reason::KeyNotFound
            | Reason::NotApplied
            | Reason::WriteInDoubt
            | Reason::LockGroupUnavailable
            | Reason::LimitReached
            | Reason::RequestIdReused
            | Reason::Internal => Vec::new(),
        }
    }

    /// The reason named `name` with `fields`, as [`Reason::name`] and [`Reason::fields`] wrote them;
    /// `None` for a name this build does not know (a newer server's) or a field that is missing or
    /// malformed.
    pub fn from_wire(name: &str, fields: &dyn Fn(&str) -> Option<String>) -> Option<Reason> {
        let text = |key: &str| fields(key);
        let number = |key: &str| text(key)?.parse::<u64>().ok();
        let signed = |key: &str| text(key)?.parse::<i64>().ok();
        // An optional number: absent is `Some(None)`, malformed is `None`.
        let optional = |key: &str| match text(key) {
            None => Some(None),
            Some(value) => value.parse::<u64>().ok().map(Some),
        };
        Some(match name {
            "INVALID_REQUEST" => Reason::InvalidRequest { field: text("field")? },
            "STALE_FENCE" => {
                Reason::StaleFence { lock: text("lock")?, token: number("token")?, known_token: number("known_token")? }
            }
            "TYPE_MISMATCH" => Reason::TypeMismatch { holds: text("holds")?, needs: text("needs")? },
            "KEY_NOT_FOUND" => Reason::KeyNotFound,
            "COUNTER_OVERFLOW" => Reason::CounterOverflow { current: signed("current")?, delta: signed("delta")? },
            "NOT_YET_REPLICATED" => Reason::NotYetReplicated { after: text("after")? },
            "NOT_APPLIED" => Reason::NotApplied,
            "WRITE_IN_DOUBT" => Reason::WriteInDoubt,
            "LOCK_BUSY" => Reason::LockBusy { lock: text("lock")?, holder_token: optional("holder_token")? },
            "NOT_HOLDER" => Reason::NotHolder {
                lock: text("lock")?,
                token: number("token")?,
                current_token: optional("current_token")?,
            },
            "NOT_GRANTED" => Reason::NotGranted { lock: text("lock")? },
            "LOCK_GROUP_UNAVAILABLE" => Reason::LockGroupUnavailable,
            "LIMIT_REACHED" => Reason::LimitReached,
            "REQUEST_ID_REUSED" => Reason::RequestIdReused,
            "NOT_PRIMARY" => Reason::NotPrimary {
                partition: u16::try_from(number("partition")?).ok()?,
                epoch: number("epoch")?,
                primary: number("primary")?,
                primary_endpoint: text("primary_endpoint")?,
            },
            "REPLICAS_UNAVAILABLE" => Reason::ReplicasUnavailable {
                partition: u16::try_from(number("partition")?).ok()?,
                site: text("site")?,
                up: number("up")?,
                replicas: number("replicas")?,
                needed: number("needed")?,
            },
            "INTERNAL" => Reason::Internal,
            _ => return None,
        })
    }

    /// A refusal of `field`, for the many checks of a request's form.
    pub fn invalid(field: &str) -> Reason {
        Reason::InvalidRequest { field: field.to_string() }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A status whose call certainly changed nothing, failed for `reason`.
pub fn failed(code: Code, reason: Reason, message: impl Into<String>) -> Status {
    status(code, Outcome::Failed, &reason, message.into())
}

/// A status after which the call may or may not have been applied, failed for `reason`.
pub fn unknown(code: Code, reason: Reason, message: impl Into<String>) -> Status {
    status(code, Outcome::Unknown, &reason, message.into())
}

fn status(code: Code, outcome: Outcome, reason: &Reason, message: String) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(OUTCOME_METADATA, MetadataValue::from_static(outcome.as_str()));
    metadata.insert(REASON_METADATA, MetadataValue::from_static(reason.name()));
    let mut fields: HashMap<String, String> =
        reason.fields().into_iter().map(|(key, value)| (key.to_string(), value)).collect();
    fields.insert(OUTCOME_FIELD.to_string(), outcome.as_str().to_string());
    let details = ErrorDetails::with_error_info(reason.name(), ERROR_DOMAIN, fields);
    Status::with_error_details_and_metadata(code, message, details, metadata)
}

/// Whether the call that failed with `status` may have been applied (see the module documentation).
pub fn outcome_of(status: &Status) -> Outcome {
    let said = status.metadata().get(OUTCOME_METADATA).and_then(|value| value.to_str().ok());
    if let Some(outcome) = said.and_then(Outcome::parse) {
        return outcome;
    }
    if status.code() == Code::Unimplemented || never_connected(status) { Outcome::Failed } else { Outcome::Unknown }
}

/// Why the call failed, from the `google.rpc.ErrorInfo` a geostore server put in the status details;
/// `None` if there is none (the status did not come from a geostore handler) or this build does not
/// know its reason.
pub fn reason_of(status: &Status) -> Option<Reason> {
    let info = status.get_details_error_info().filter(|info| info.domain == ERROR_DOMAIN)?;
    Reason::from_wire(&info.reason, &|key| info.metadata.get(key).cloned())
}

/// A failed call's outcome, reason and fields in the form a batch result carries them
/// (`WriteResult.outcome`, `.reason`, `.fields`).
pub fn result_parts(status: &Status) -> (String, String, BTreeMap<String, String>) {
    let reason = reason_of(status);
    let fields = reason.iter().flat_map(Reason::fields).map(|(key, value)| (key.to_string(), value)).collect();
    (outcome_of(status).as_str().to_string(), reason.map(|r| r.name().to_string()).unwrap_or_default(), fields)
}

/// Whether `status` failed because its connection could not be opened, so that nothing was sent.
pub fn never_connected(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(error) = source {
        if error.is::<NotConnected>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The error of a connection that was never opened (refused, unreachable, timed out while connecting):
/// a call that fails with it in its source chain was certainly not sent. Every [`crate::net::Dialer`]
/// reports its connect failures as this.
#[derive(Debug)]
pub struct NotConnected(pub std::io::Error);

impl fmt::Display for NotConnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect: {}", self.0)
    }
}

impl std::error::Error for NotConnected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_reason() -> Vec<Reason> {
        vec![
            Reason::invalid("key"),
            Reason::StaleFence { lock: "orders".into(), token: 7, known_token: 9 },
            Reason::TypeMismatch { holds: "set".into(), needs: "counter".into() },
            Reason::KeyNotFound,
            Reason::CounterOverflow { current: i64::MAX, delta: 1 },
            Reason::NotYetReplicated { after: "eu:3:41".into() },
            Reason::NotApplied,
            Reason::WriteInDoubt,
            Reason::LockBusy { lock: "l".into(), holder_token: Some(4) },
            Reason::LockBusy { lock: "l".into(), holder_token: None },
            Reason::NotHolder { lock: "l".into(), token: 3, current_token: Some(5) },
            Reason::NotHolder { lock: "l".into(), token: 3, current_token: None },
            Reason::NotGranted { lock: "l".into() },
            Reason::LockGroupUnavailable,
            Reason::LimitReached,
            Reason::RequestIdReused,
            Reason::NotPrimary { partition: 7, epoch: 2, primary: 4, primary_endpoint: "http://h:1".into() },
            Reason::ReplicasUnavailable { partition: 7, site: "eu".into(), up: 1, replicas: 3, needed: 2 },
            Reason::Internal,
        ]
    }

    #[test]
    fn every_reason_survives_the_status_details() {
        let mut names = std::collections::BTreeSet::new();
        for reason in every_reason() {
            let status = failed(Code::FailedPrecondition, reason.clone(), "refused");
            assert_eq!(outcome_of(&status), Outcome::Failed);
            assert_eq!(reason_of(&status), Some(reason.clone()));
            assert_eq!(status.metadata().get(REASON_METADATA).unwrap().to_str().unwrap(), reason.name());
            let info = status.get_details_error_info().unwrap();
            assert_eq!((info.domain.as_str(), info.metadata[OUTCOME_FIELD].as_str()), (ERROR_DOMAIN, "failed"));
            names.insert(reason.name());
        }
        assert_eq!(names, Reason::NAMES.into_iter().collect(), "NAMES lists every reason once");
        let status = unknown(Code::Unavailable, Reason::WriteInDoubt, "lost the writer");
        assert_eq!(outcome_of(&status), Outcome::Unknown);
        assert_eq!(status.get_details_error_info().unwrap().metadata[OUTCOME_FIELD], "unknown");
    }

    #[test]
    fn a_reason_with_a_missing_or_malformed_field_is_not_trusted() {
        let fields = BTreeMap::from([("lock".to_string(), "l".to_string()), ("token".to_string(), "x".to_string())]);
        assert_eq!(Reason::from_wire("STALE_FENCE", &|key| fields.get(key).cloned()), None);
        assert_eq!(Reason::from_wire("NOT_HOLDER", &|key| fields.get(key).cloned()), None);
        assert_eq!(Reason::from_wire("SOMETHING_NEWER", &|_| None), None);
        assert_eq!(Reason::from_wire("KEY_NOT_FOUND", &|_| None), Some(Reason::KeyNotFound));
    }

    #[test]
    fn batch_results_carry_the_same_parts() {
        let reason = Reason::StaleFence { lock: "orders".into(), token: 7, known_token: 9 };
        let (outcome, name, fields) = result_parts(&failed(Code::FailedPrecondition, reason.clone(), "stale"));
        assert_eq!((outcome.as_str(), name.as_str()), ("failed", "STALE_FENCE"));
        assert_eq!(Reason::from_wire(&name, &|key| fields.get(key).cloned()), Some(reason));
    }

    #[test]
    fn a_status_without_an_outcome_is_unknown_unless_nothing_was_sent() {
        // A deadline or a broken connection on the caller's side: the request may have arrived.
        assert_eq!(outcome_of(&Status::unavailable("not applied")), Outcome::Unknown);
        assert_eq!(reason_of(&Status::unavailable("not applied")), None);
        assert_eq!(outcome_of(&Status::invalid_argument("decode")), Outcome::Unknown);
        assert_eq!(outcome_of(&Status::unimplemented("no such method")), Outcome::Failed);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = Status::from_error(Box::new(NotConnected(refused)));
        assert!(never_connected(&status));
        assert_eq!(outcome_of(&status), Outcome::Failed);
    }

    #[test]
    fn an_unknown_outcome_word_is_not_trusted() {
        let mut status = Status::unavailable("x");
        status.metadata_mut().insert(OUTCOME_METADATA, MetadataValue::from_static("maybe"));
        assert_eq!(outcome_of(&status), Outcome::Unknown);
    }

    #[tokio::test]
    async fn a_call_over_a_connection_that_never_opened_is_failed() {
        // A port nothing listens on: the dialer's connect fails, so the call was never sent.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        let channel = crate::net::Dialer::Tcp.connect_lazy(endpoint, std::time::Duration::from_secs(2));
        let mut client = crate::v1::raft_client::RaftClient::new(channel);
        let status = client.group_status(crate::v1::GroupStatusRequest::default()).await.unwrap_err();
        assert!(never_connected(&status), "{status:?}");
        assert_eq!(outcome_of(&status), Outcome::Failed);
    }
}
