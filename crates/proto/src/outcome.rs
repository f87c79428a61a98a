//! The outcome protocol: whether a failed call may have been applied, decided from data.
//!
//! Every error a geostore server returns, from every service (KV, Lock, Cluster, Replication, Raft),
//! carries its [`Outcome`] in the response metadata under [`OUTCOME_METADATA`], and a refusal that a caller
//! may want to act on carries a [`Reason`] under [`REASON_METADATA`]. Servers build their statuses with
//! [`failed`] and [`unknown`]; callers read them back with [`outcome_of`] and [`reason_of`]. Nothing in
//! geostore decides anything from an error's message text: messages are for people.
//!
//! A status that did not come from a geostore handler has no outcome in its metadata: it was made by the
//! transport on the caller's side (a deadline, a broken connection, a reply too large) or by tonic's server
//! before any handler ran. [`outcome_of`] calls such a status `Unknown`, except where the data proves that
//! nothing was sent: the connection was never opened ([`NotConnected`] in the error's source chain, put
//! there by every [`crate::net::Dialer`]) or the method does not exist on the server (`UNIMPLEMENTED`).

use std::error::Error as _;
use std::fmt;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The response metadata key holding a failed call's [`Outcome`] (`failed` or `unknown`).
pub const OUTCOME_METADATA: &str = "geostore-outcome";
/// The response metadata key holding a refusal's [`Reason`] (e.g. `stale_fence`).
pub const REASON_METADATA: &str = "geostore-reason";

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

/// Why a request was refused, for the refusals a caller may act on. The status code says the class; the
/// reason says which of the refusals sharing a code it was (FAILED_PRECONDITION alone means four things).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The write carried a fencing token lower than one the replica already knows for that lock.
    StaleFence,
    /// The operation does not fit the type the key holds (an increment of a set, ...).
    TypeMismatch,
    /// The operation needs an existing key (Expire) and the key is absent.
    KeyNotFound,
    /// An increment would take the counter past the 64-bit range.
    CounterOverflow,
    /// A read's causal token names a write this node has not seen within the wait.
    NotYetReplicated,
    /// The node could not take the write (its writer is stopped or full); nothing was applied.
    NotApplied,
    /// The lock is held by someone else and the caller asked not to wait.
    LockBusy,
    /// The caller does not hold the lock (with that token) it tried to release or keep alive.
    NotHolder,
}

impl Reason {
    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 8] = [
        Reason::StaleFence,
        Reason::TypeMismatch,
        Reason::KeyNotFound,
        Reason::CounterOverflow,
        Reason::NotYetReplicated,
        Reason::NotApplied,
        Reason::LockBusy,
        Reason::NotHolder,
    ];

    /// The form on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::StaleFence => "stale_fence",
            Reason::TypeMismatch => "type_mismatch",
            Reason::KeyNotFound => "key_not_found",
            Reason::CounterOverflow => "counter_overflow",
            Reason::NotYetReplicated => "not_yet_replicated",
            Reason::NotApplied => "not_applied",
            Reason::LockBusy => "lock_busy",
            Reason::NotHolder => "not_holder",
        }
    }

    /// Reads the form on the wire; `None` for a reason this build does not know (a newer server's).
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status whose call certainly changed nothing.
pub fn failed(code: Code, message: impl Into<String>) -> Status {
    with_outcome(Status::new(code, message), Outcome::Failed)
}

/// A status after which the call may or may not have been applied.
pub fn unknown(code: Code, message: impl Into<String>) -> Status {
    with_outcome(Status::new(code, message), Outcome::Unknown)
}

/// `status` marked with `outcome` (replacing any outcome it had).
pub fn with_outcome(mut status: Status, outcome: Outcome) -> Status {
    status.metadata_mut().insert(OUTCOME_METADATA, MetadataValue::from_static(outcome.as_str()));
    status
}

/// `status` marked with `reason`.
pub fn with_reason(mut status: Status, reason: Reason) -> Status {
    status.metadata_mut().insert(REASON_METADATA, MetadataValue::from_static(reason.as_str()));
    status
}

/// Whether the call that failed with `status` may have been applied (see the module documentation).
pub fn outcome_of(status: &Status) -> Outcome {
    let said = status.metadata().get(OUTCOME_METADATA).and_then(|value| value.to_str().ok());
    if let Some(outcome) = said.and_then(Outcome::parse) {
        return outcome;
    }
    if status.code() == Code::Unimplemented || never_connected(status) { Outcome::Failed } else { Outcome::Unknown }
}

/// The reason a server gave for refusing the call, if it gave one this build knows.
pub fn reason_of(status: &Status) -> Option<Reason> {
    status.metadata().get(REASON_METADATA).and_then(|value| value.to_str().ok()).and_then(Reason::parse)
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

    #[test]
    fn outcomes_and_reasons_survive_the_metadata() {
        let status = with_reason(failed(Code::FailedPrecondition, "stale"), Reason::StaleFence);
        assert_eq!(outcome_of(&status), Outcome::Failed);
        assert_eq!(reason_of(&status), Some(Reason::StaleFence));
        let status = unknown(Code::Unavailable, "lost the leader");
        assert_eq!(outcome_of(&status), Outcome::Unknown);
        assert_eq!(reason_of(&status), None);
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn a_status_without_an_outcome_is_unknown_unless_nothing_was_sent() {
        // A deadline or a broken connection on the caller's side: the request may have arrived.
        assert_eq!(outcome_of(&Status::unavailable("not applied")), Outcome::Unknown);
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
        let status = client.group_status(crate::v1::GroupStatusRequest {}).await.unwrap_err();
        assert!(never_connected(&status), "{status:?}");
        assert_eq!(outcome_of(&status), Outcome::Failed);
    }
}
