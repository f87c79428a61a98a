//! The Rust client for geostore.
//!
//! Every error says whether the operation may have happened ([`Outcome`]), as Jepsen records it: a
//! `Failed` write was certainly not applied and can be retried freely; an `Unknown` one may have been.

#![warn(missing_docs)]

mod lock;

pub use lock::{ELECTION_PREFIX, Grant, LockGuard, Lost, Wait};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use geostore_proto::net::Dialer;
pub use geostore_proto::v1 as pb;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;
use pb::lock_client::LockClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for a connection to one endpoint before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a call may take before the client gives up on it (outcome unknown for a write): bounds a
/// call stuck on a connection that a partition stalls without closing. Reads that wait for a causal
/// token get their wait on top.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Largest reply the client accepts (a big set, a big batch).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

pub use geostore_proto::outcome::{Outcome, Reason};

/// A failed call: its status code, the server's message, whether it may have been applied, and the
/// machine-readable reason with its fields where the server gave one (every geostore server does; a
/// failure of the transport has none). Decide on `outcome` and `reason`, never on the message: e.g.
/// `Some(Reason::StaleFence { known_token, .. })` says which token superseded the caller's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// The gRPC status code (the client's own failures use `Unavailable`, `Internal` and the like).
    pub code: Code,
    /// What went wrong, for people: a server's message, or the client's own description.
    pub message: String,
    /// Whether the operation may have taken effect: `Failed` means certainly not, `Unknown` means maybe.
    pub outcome: Outcome,
    /// The machine-readable cause and its fields, when the server gave one (a stale fence with the known
    /// token, not yet replicated, ...).
    pub reason: Option<Reason>,
}

impl Error {
    /// An error made by the client itself (no server reply to read it from).
    pub fn local(code: Code, outcome: Outcome, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), outcome, reason: None }
    }

    fn from_status(status: tonic::Status) -> Self {
        let outcome = geostore_proto::outcome::outcome_of(&status);
        let reason = geostore_proto::outcome::reason_of(&status);
        let message = match status.code() {
            Code::Unimplemented => format!(
                "{} (is this node in a lock group, and is it the same version as this client?)",
                if status.message().is_empty() { "unimplemented" } else { status.message() }
            ),
            _ if status.message().is_empty() => format!("{:?}", status.code()),
            _ => status.message().to_string(),
        };
        Error { code: status.code(), message, outcome, reason }
    }
}

impl Error {
    /// One failed write of a batch: the outcome and reason travel in the result itself.
    fn from_write_result(result: pb::WriteResult) -> Self {
        // A server always fills the outcome of a failed result; an older one did not, so it stays unknown.
        let outcome = Outcome::parse(&result.outcome).unwrap_or(Outcome::Unknown);
        let reason = Reason::from_wire(&result.reason, &|key| result.fields.get(key).cloned());
        Error { code: Code::from_i32(result.code), message: result.message, outcome, reason }
    }
}

/// The result of a client call.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_text() {
        let token = pb::CausalToken { site: "eu-west".into(), partition: 12, sequence: 345 };
        assert_eq!(parse_token(&format_token(&token)), Ok(token));
        assert!(parse_token("eu:12").unwrap_err().contains("SITE:PARTITION:SEQUENCE"));
        assert!(parse_token("eu:x:1").unwrap_err().contains("partition"));
    }

    #[test]
    fn a_batch_result_gives_the_typed_reason() {
        let result = pb::WriteResult {
            code: Code::FailedPrecondition as i32,
            message: "stale".into(),
            response: None,
            outcome: "failed".into(),
            reason: "STALE_FENCE".into(),
            fields: [("lock", "l"), ("token", "3"), ("known_token", "8")]
                .into_iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        let error = Error::from_write_result(result);
        assert_eq!(error.outcome, Outcome::Failed);
        assert_eq!(error.reason, Some(Reason::StaleFence { lock: "l".into(), token: 3, known_token: 8 }));
    }
}

/// A value read from geostore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A register's bytes.
    Register(Vec<u8>),
    /// A counter's value.
    Counter(i64),
    /// A set's members, in byte order.
    Set(BTreeSet<Vec<u8>>),
}

impl Value {
    /// The type's name as the CLI and the server spell it: `register`, `counter` or `set`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Register(_) => "register",
            Value::Counter(_) => "counter",
            Value::Set(_) => "set",
        }
    }
}

/// A key as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The key's value.
    pub value: Value,
    /// When the key expires, in milliseconds since the Unix epoch; `None` if it has no expiry.
    pub expires_at_unix_ms: Option<i64>,
    /// The HLC timestamp (raw 64 bits, as [`WriteAck::hlc`]) of the last write to the value shown.
    pub last_write_hlc: u64,
    /// That write's wall-clock time, in milliseconds since the Unix epoch.
    pub last_write_unix_ms: i64,
    /// The site where that write was made; `None` while the node has not learnt the writer's site.
    pub last_write_site: Option<String>,
    /// The fence that write was made under (its lock name is empty while the node has not learnt it);
    /// `None` for an unfenced write.
    pub last_write_fence: Option<pb::Fence>,
}

/// Why a key read as absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    /// Nothing is recorded for the key: never written, or deleted or expired long enough ago that every
    /// site dropped its tombstone.
    NoRecord,
    /// Deleted (or emptied) by a write at this time, in milliseconds since the Unix epoch.
    Deleted {
        /// When.
        since_unix_ms: i64,
    },
    /// Its TTL ran out at this time, in milliseconds since the Unix epoch.
    Expired {
        /// When.
        since_unix_ms: i64,
    },
}

/// A key as read, present or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The key is live.
    Found(Found),
    /// The key is absent, and why.
    Absent(Absence),
}

impl Lookup {
    /// The key if it is live.
    pub fn found(self) -> Option<Found> {
        match self {
            Lookup::Found(found) => Some(found),
            Lookup::Absent(_) => None,
        }
    }
}

/// The acknowledgement of a write: it is durable on the node that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAck {
    /// The HLC timestamp the write was stamped with (raw 64 bits: 42 bits of milliseconds since
    /// 2024-01-01 UTC, then a 22-bit counter; ordering the numbers orders the writes of one site).
    pub hlc: u64,
    /// Names the write, for [`Client::get_after`] in any site. The server always sends one; `None` only
    /// if it did not.
    pub token: Option<pb::CausalToken>,
    /// Whether the key was live before the write.
    pub existed: bool,
    /// For increments: the value after the write.
    pub counter: Option<i64>,
}

impl From<pb::WriteResponse> for WriteAck {
    fn from(response: pb::WriteResponse) -> Self {
        WriteAck { hlc: response.hlc, token: response.token, existed: response.existed, counter: response.counter }
    }
}

/// A connection to one geostore node. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    kv: KvClient<Channel>,
    cluster: ClusterClient<Channel>,
    lock: LockClient<Channel>,
    raft: pb::raft_client::RaftClient<Channel>,
    request_ids: Arc<lock::RequestIds>,
    endpoint: String,
    /// Sent with every write made through this client (see [`Client::with_fence`]).
    fence: Option<pb::Fence>,
}

/// Formats a causal token as `SITE:PARTITION:SEQUENCE`, the form `geostore kv get --after` takes (the
/// grammar is [`geostore_proto::token`]'s).
pub fn format_token(token: &pb::CausalToken) -> String {
    geostore_proto::token::format(token)
}

/// Parses `SITE:PARTITION:SEQUENCE`, checked against the grammar; the error says what is wrong.
pub fn parse_token(text: &str) -> std::result::Result<pb::CausalToken, String> {
    geostore_proto::token::parse(text).map_err(|error| error.to_string())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// How a client connects.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// TCP unless told otherwise (the simulation harness passes its network).
    pub dialer: Dialer,
    /// The client part of this client's request ids; random if `None`. Two clients must not share one.
    pub client_id: Option<String>,
}

impl Client {
    /// Connects to the first endpoint (`http://HOST:PORT`) of `endpoints` that answers.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Client> {
        Client::connect_with(endpoints, ConnectOptions::default()).await
    }

    /// [`Client::connect`] with options.
    pub async fn connect_with<S: AsRef<str>>(endpoints: &[S], options: ConnectOptions) -> Result<Client> {
        let mut failures = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref();
            let attempt = async {
                let configured = Endpoint::from_shared(endpoint.to_string())
                    .map_err(|e| format!("{endpoint}: bad endpoint: {e}"))?;
                let channel = options
                    .dialer
                    .connect(configured, CONNECT_TIMEOUT)
                    .await
                    .map_err(|e| format!("{endpoint}: {e}"))?;
                Ok::<_, String>(channel)
            };
            match attempt.await {
                Ok(channel) => {
                    let kv = KvClient::new(channel.clone()).max_decoding_message_size(RESPONSE_BYTES_MAX);
                    let cluster = ClusterClient::new(channel.clone());
                    let lock = LockClient::new(channel.clone());
                    let raft = pb::raft_client::RaftClient::new(channel);
                    return Ok(Client {
                        kv,
                        cluster,
                        lock,
                        raft,
                        request_ids: lock::RequestIds::new(options.client_id.clone()),
                        endpoint: endpoint.to_string(),
                        fence: None,
                    });
                }
                Err(failure) => failures.push(failure),
            }
        }
        let message = if failures.is_empty() {
            "no endpoint given".to_string()
        } else {
            format!("cannot connect to any endpoint: {}", failures.join("; "))
        };
        Err(Error::local(Code::Unavailable, Outcome::Failed, message))
    }

    /// The cluster as the node sees it: sites, partitions, replication lag per peer.
    pub async fn status(&self) -> Result<pb::StatusResponse> {
        Ok(self.cluster.clone().status(timed(pb::StatusRequest {})).await.map_err(Error::from_status)?.into_inner())
    }

    /// The lock group as the node sees it (its role, the leader, the members); fails if the node is not
    /// in a lock group.
    pub async fn group_status(&self) -> Result<pb::LockGroupStatus> {
        let request = pb::GroupStatusRequest::default();
        Ok(self.raft.clone().group_status(timed(request)).await.map_err(Error::from_status)?.into_inner())
    }

    /// A client (sharing this one's connection) whose writes are made under lock `lock` with fencing
    /// token `token`: each replica refuses them (FAILED_PRECONDITION, outcome failed) once it knows a
    /// higher token for the lock, and registers order them by token first.
    pub fn with_fence(&self, lock: &str, token: u64) -> Client {
        Client { fence: Some(pb::Fence { lock: lock.to_string(), token }), ..self.clone() }
    }

    /// The fence this client's writes carry, if any.
    pub fn fence(&self) -> Option<&pb::Fence> {
        self.fence.as_ref()
    }

    /// The endpoint this client is connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Reads a key from the node's own site (possibly behind other sites).
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Found>> {
        self.get_request(pb::GetRequest { key: key.into(), after: None, wait_ms: None }).await
    }

    /// Reads a key once this node has seen the write that returned `token` (read-your-writes across
    /// sites), waiting at most `wait` (the node caps it); fails with "not yet replicated" otherwise.
    pub async fn get_after(
        &self,
        key: impl Into<Vec<u8>>,
        token: pb::CausalToken,
        wait: Option<Duration>,
    ) -> Result<Option<Found>> {
        self.get_request(pb::GetRequest { key: key.into(), after: Some(token), wait_ms: wait.map(millis) }).await
    }

    /// Reads a key as [`Client::get`] does, and also says why an absent key is absent.
    pub async fn lookup(&self, key: impl Into<Vec<u8>>) -> Result<Lookup> {
        self.lookup_request(pb::GetRequest { key: key.into(), after: None, wait_ms: None }).await
    }

    /// Reads a key as [`Client::get_after`] does, and also says why an absent key is absent.
    pub async fn lookup_after(
        &self,
        key: impl Into<Vec<u8>>,
        token: pb::CausalToken,
        wait: Option<Duration>,
    ) -> Result<Lookup> {
        self.lookup_request(pb::GetRequest { key: key.into(), after: Some(token), wait_ms: wait.map(millis) }).await
    }

    async fn get_request(&self, request: pb::GetRequest) -> Result<Option<Found>> {
        self.lookup_request(request).await.map(Lookup::found)
    }

    async fn lookup_request(&self, request: pb::GetRequest) -> Result<Lookup> {
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0).max(0) as u64);
        let mut request = timed(request);
        request.set_timeout(CALL_TIMEOUT + wait);
        let reply = self.kv.clone().get(request).await.map_err(Error::from_status)?.into_inner();
        if !reply.found {
            let since_unix_ms = reply.absent_since_unix_ms.unwrap_or(0);
            return Ok(Lookup::Absent(match reply.absence() {
                pb::Absence::Deleted => Absence::Deleted { since_unix_ms },
                pb::Absence::Expired => Absence::Expired { since_unix_ms },
                pb::Absence::NoRecord | pb::Absence::Unspecified => Absence::NoRecord,
            }));
        }
        let value = match reply.value {
            Some(pb::get_response::Value::Register(bytes)) => Value::Register(bytes),
            Some(pb::get_response::Value::Counter(value)) => Value::Counter(value),
            Some(pb::get_response::Value::Set(set)) => Value::Set(set.members.into_iter().collect()),
            None => {
                return Err(Error::local(Code::Internal, Outcome::Failed, "the server said found but sent no value"));
            }
        };
        Ok(Lookup::Found(Found {
            value,
            expires_at_unix_ms: reply.expires_at_unix_ms,
            last_write_hlc: reply.last_write_hlc,
            last_write_unix_ms: reply.last_write_unix_ms,
            last_write_site: Some(reply.last_write_site).filter(|site| !site.is_empty()),
            last_write_fence: reply.last_write_fence,
        }))
    }

    /// Sets a register; with a TTL the key expires that long after the write.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<WriteAck> {
        let request =
            pb::PutRequest { key: key.into(), value: value.into(), ttl_ms: ttl.map(millis), fence: self.fence.clone() };
        self.put_request(request).await
    }

    /// Sends a put as given, TTL in milliseconds (possibly invalid: for tests of the server's checks).
    pub async fn put_request(&self, request: pb::PutRequest) -> Result<WriteAck> {
        Ok(self.kv.clone().put(timed(request)).await.map_err(Error::from_status)?.into_inner().into())
    }

    /// Deletes a key of any type (deleting an absent key succeeds, with `existed` false).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<WriteAck> {
        let request = pb::DeleteRequest { key: key.into(), fence: self.fence.clone() };
        let reply = self.kv.clone().delete(timed(request)).await.map_err(Error::from_status)?;
        Ok(reply.into_inner().into())
    }

    /// Adds `delta` to a counter; the acknowledgement carries the new value.
    pub async fn increment(&self, key: impl Into<Vec<u8>>, delta: i64) -> Result<WriteAck> {
        let request = pb::IncrementRequest { key: key.into(), delta, fence: self.fence.clone() };
        Ok(self.kv.clone().increment(timed(request)).await.map_err(Error::from_status)?.into_inner().into())
    }

    /// Adds members to a set (an absent key becomes a set). Fails if the key holds another type.
    pub async fn set_add(&self, key: impl Into<Vec<u8>>, members: Vec<Vec<u8>>) -> Result<WriteAck> {
        let request = pb::SetAddRequest { key: key.into(), members, fence: self.fence.clone() };
        Ok(self.kv.clone().set_add(timed(request)).await.map_err(Error::from_status)?.into_inner().into())
    }

    /// Removes members from a set; members not present are no error.
    pub async fn set_remove(&self, key: impl Into<Vec<u8>>, members: Vec<Vec<u8>>) -> Result<WriteAck> {
        let request = pb::SetRemoveRequest { key: key.into(), members, fence: self.fence.clone() };
        Ok(self.kv.clone().set_remove(timed(request)).await.map_err(Error::from_status)?.into_inner().into())
    }

    /// A set's members, sorted; `None` if the key is absent.
    pub async fn set_members(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<Vec<u8>>>> {
        let reply = self
            .kv
            .clone()
            .set_members(timed(pb::SetMembersRequest { key: key.into(), after: None, wait_ms: None }))
            .await;
        let reply = reply.map_err(Error::from_status)?.into_inner();
        Ok(reply.found.then_some(reply.members))
    }

    /// Gives an existing key an expiry `ttl` from now.
    pub async fn expire(&self, key: impl Into<Vec<u8>>, ttl: Duration) -> Result<WriteAck> {
        self.expire_ms(key, millis(ttl)).await
    }

    /// [`Client::expire`] with the TTL as sent on the wire (possibly invalid: for tests of the server's checks).
    pub async fn expire_ms(&self, key: impl Into<Vec<u8>>, ttl_ms: i64) -> Result<WriteAck> {
        let request = pb::ExpireRequest { key: key.into(), ttl_ms, fence: self.fence.clone() };
        Ok(self.kv.clone().expire(timed(request)).await.map_err(Error::from_status)?.into_inner().into())
    }

    /// Many writes in one call, applied in order, each succeeding or failing on its own. The outer error
    /// is for the call as a whole (then every write's outcome is as it says).
    pub async fn batch(&self, ops: Vec<pb::WriteOp>) -> Result<Vec<Result<WriteAck>>> {
        let reply =
            self.kv.clone().batch(timed(pb::BatchRequest { ops })).await.map_err(Error::from_status)?.into_inner();
        Ok(reply
            .results
            .into_iter()
            .map(|result| match result.response {
                Some(response) if result.code == 0 => Ok(response.into()),
                _ => Err(Error::from_write_result(result)),
            })
            .collect())
    }
}
