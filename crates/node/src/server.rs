//! The gRPC front end: translates requests into store operations and store results into replies and
//! status codes. No state of its own.

use std::sync::Arc;
use std::time::Duration;

use geostore_model::{Absence, Kind, Op, OpError, Read, Value};
use geostore_proto::outcome::{Reason, failed, unknown};
use geostore_proto::v1 as pb;
use geostore_proto::v1::kv_client::KvClient;
use geostore_proto::v1::kv_server::Kv;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::forward::{Forwarding, Route, forwarded_request};
use crate::metrics::Metrics;
use crate::routing::PartitionPlace;
use crate::store::{CausalToken, FencedOp, Lookup, ReadError, Store, WriteError, WriteOutcome};

/// The deadline of a write forwarded to its partition's primary (which waits up to
/// [`crate::forward::WRITE_QUORUM_WAIT`] for W replicas).
const FORWARDED_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `KV` service over this node's store.
pub struct KvService {
    store: Arc<Store>,
    metrics: Metrics,
    /// The longest a read waits for a causal token.
    causal_wait_max: Duration,
    /// `None`: this node is its site's only node and serves every partition itself.
    forwarding: Option<Arc<Forwarding>>,
}

impl KvService {
    /// Serves `store`, counting requests in `metrics`; reads wait at most `causal_wait_max` for a token;
    /// with `forwarding`, requests for partitions another node of the site leads go to that node.
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        causal_wait_max: Duration,
        forwarding: Option<Arc<Forwarding>>,
    ) -> Self {
        Self { store, metrics, causal_wait_max, forwarding }
    }

    fn partition(&self, key: &[u8]) -> u16 {
        geostore_model::partition_of(key, self.store.identity().partitions).0
    }

    /// Where a write of `key` goes.
    async fn route_write(&self, key: &[u8], forwarded: bool) -> Result<Route, Status> {
        match &self.forwarding {
            None => Ok(Route::Here(None)),
            Some(forwarding) => forwarding.route_write(self.partition(key), forwarded).await,
        }
    }

    /// Where a read of `key` (after `after`, if given) goes.
    async fn route_read(&self, key: &[u8], after: Option<&pb::CausalToken>, forwarded: bool) -> Result<Route, Status> {
        match &self.forwarding {
            None => Ok(Route::Here(None)),
            Some(forwarding) => {
                let after = after.map(|token| (token.site.as_str(), token.sequence));
                forwarding.route_read(&self.store, self.partition(key), after, forwarded).await
            }
        }
    }

    /// Applies a write here and, in a partition with followers, waits until W replicas hold it.
    async fn write(
        &self,
        method: &'static str,
        key: Vec<u8>,
        op: Op,
        fence: Option<pb::Fence>,
        place: Option<PartitionPlace>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let result = self.store.write_fenced(key.clone(), op, fence.map(fence_of)).await;
        let reply = match result {
            Ok(outcome) => {
                let (partition, sequence) = (outcome.token.partition, outcome.token.sequence);
                self.wait_for_quorum(method, place.as_ref(), partition, sequence)
                    .await
                    .map(|()| write_response(outcome))
            }
            Err(error) => Err(write_status(method, &key, &error)),
        };
        self.count(method, reply.map(Response::new))
    }

    /// Waits until W replicas of `place` (if the partition has followers) hold `sequence`.
    async fn wait_for_quorum(
        &self,
        method: &str,
        place: Option<&PartitionPlace>,
        partition: u16,
        sequence: u64,
    ) -> Result<(), Status> {
        match (&self.forwarding, place) {
            (Some(forwarding), Some(place)) => forwarding.wait_for_quorum(method, partition, place, sequence).await,
            _ => Ok(()),
        }
    }

    /// A read that `route_read` sends to another replica of the site: `Err` with that node's reply (or
    /// the refusal), or `Ok` with the request, to read here.
    async fn read_here_or_forward<M: ReadRequest, R, F, Fut>(
        &self,
        method: &'static str,
        request: Request<M>,
        call: F,
    ) -> Result<M, Result<Response<R>, Status>>
    where
        F: FnOnce(KvClient<Channel>, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<R>, Status>>,
    {
        let forwarded = crate::forward::is_forwarded(request.metadata());
        let message = request.into_inner();
        match self.route_read(message.key(), message.after(), forwarded).await {
            Err(status) => Err(self.count(method, Err(status))),
            Ok(Route::Forward(_, client)) => {
                let reply = call(client, forwarded_request(message, self.forwarded_read_timeout())).await;
                Err(self.count(method, reply.map_err(|status| relayed(status, false))))
            }
            Ok(Route::Here(_)) => Ok(message),
        }
    }

    /// The deadline of a read forwarded to the primary: its longest causal wait, and then some.
    fn forwarded_read_timeout(&self) -> Duration {
        self.causal_wait_max + Duration::from_secs(30)
    }

    /// A write that `route` sends to the primary or applies here.
    async fn routed_write<M, F, Fut>(
        &self,
        method: &'static str,
        request: Request<M>,
        key: impl FnOnce(&M) -> &[u8],
        call: F,
        here: impl FnOnce(M) -> Result<(Vec<u8>, Op, Option<pb::Fence>), Status>,
    ) -> Result<Response<pb::WriteResponse>, Status>
    where
        F: FnOnce(KvClient<Channel>, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<pb::WriteResponse>, Status>>,
    {
        let forwarded = crate::forward::is_forwarded(request.metadata());
        let message = request.into_inner();
        match self.route_write(key(&message), forwarded).await {
            Err(status) => self.count(method, Err(status)),
            Ok(Route::Forward(_, client)) => {
                let reply = call(client, forwarded_request(message, FORWARDED_WRITE_TIMEOUT)).await;
                self.count(method, reply.map_err(|status| relayed(status, true)))
            }
            Ok(Route::Here(place)) => match here(message) {
                Err(status) => self.count(method, Err(status)),
                Ok((key, op, fence)) => self.write(method, key, op, fence, place).await,
            },
        }
    }

    /// Counts a reply by method and status code, and passes it on.
    fn count<T>(&self, method: &'static str, reply: Result<T, Status>) -> Result<T, Status> {
        let code = match &reply {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.metrics.requests.with_label_values(&[method, code_name(code)]).inc();
        reply
    }

    /// Reads a key with `reader`, first waiting for the write named by `after` if there is one.
    async fn read<T>(
        &self,
        method: &'static str,
        key: &[u8],
        after: Option<pb::CausalToken>,
        wait_ms: Option<i64>,
        reader: impl FnOnce(&Store, &[u8]) -> Result<T, ReadError>,
    ) -> Result<T, Status> {
        // A read changes nothing, whatever happens: every error is `failed`.
        let status = |error: ReadError| {
            let message = format!("{method} {}: {error}", show_key(key));
            match error {
                ReadError::Invalid(invalid) => failed(Code::InvalidArgument, Reason::invalid(invalid.field()), message),
                ReadError::NoSuchPartition { .. } => failed(Code::InvalidArgument, Reason::invalid("after"), message),
                ReadError::NegativeWait { .. } => failed(Code::InvalidArgument, Reason::invalid("wait_ms"), message),
                ReadError::NotYetReplicated { site, partition, needed, .. } => {
                    let after = geostore_proto::token::format(&pb::CausalToken {
                        site,
                        partition: u32::from(partition),
                        sequence: needed,
                    });
                    failed(Code::Unavailable, Reason::NotYetReplicated { after }, message)
                }
                ReadError::Store(_) => failed(Code::Internal, Reason::Internal, message),
            }
        };
        geostore_model::limits::validate_key(key).map_err(|invalid| status(ReadError::Invalid(invalid)))?;
        if let Some(token) = after {
            geostore_proto::token::validate(&token).map_err(|invalid| {
                failed(
                    Code::InvalidArgument,
                    Reason::invalid("after"),
                    format!("{method} {}: {invalid}", show_key(key)),
                )
            })?;
            let partition = u16::try_from(token.partition).map_err(|_| {
                let partitions = self.store.identity().partitions;
                status(ReadError::NoSuchPartition { partition: u64::from(token.partition), partitions })
            })?;
            let wait = match wait_ms {
                None => self.causal_wait_max,
                Some(wait_ms) if wait_ms < 0 => return Err(status(ReadError::NegativeWait { wait_ms })),
                Some(ms) => Duration::from_millis(ms as u64).min(self.causal_wait_max),
            };
            let token = CausalToken { site: token.site, partition, sequence: token.sequence };
            self.store.wait_for(&token, wait).await.map_err(status)?;
        }
        reader(&self.store, key).map_err(status)
    }
}

/// A read request: the key it reads and the causal token it waits for.
trait ReadRequest {
    fn key(&self) -> &[u8];
    fn after(&self) -> Option<&pb::CausalToken>;
}

impl ReadRequest for pb::GetRequest {
    fn key(&self) -> &[u8] {
        &self.key
    }
    fn after(&self) -> Option<&pb::CausalToken> {
        self.after.as_ref()
    }
}

impl ReadRequest for pb::SetMembersRequest {
    fn key(&self) -> &[u8] {
        &self.key
    }
    fn after(&self) -> Option<&pb::CausalToken> {
        self.after.as_ref()
    }
}

/// A status from the primary a request was forwarded to, as this node answers it: as it came if the
/// primary's handler made it (it says its outcome); a write that never reached the primary is `failed`,
/// one whose connection broke is `unknown`; a read is always `failed`.
fn relayed(status: Status, write: bool) -> Status {
    if status.metadata().contains_key(geostore_proto::outcome::OUTCOME_METADATA) {
        return status;
    }
    let message = format!("forwarding to the partition's primary: {}", status.message());
    if !write || geostore_proto::outcome::never_connected(&status) {
        failed(Code::Unavailable, Reason::NotApplied, message)
    } else {
        unknown(Code::Unavailable, Reason::WriteInDoubt, message)
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unavailable => "unavailable",
        Code::Internal => "internal",
        _ => "other",
    }
}

/// A key as it appears in error messages: text if it is printable, cut to a readable length.
fn show_key(key: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 64;
    let shown = &key[..key.len().min(SHOWN_BYTES_MAX)];
    let text = String::from_utf8_lossy(shown);
    if key.len() > SHOWN_BYTES_MAX { format!("key {text:?}... ({} bytes)", key.len()) } else { format!("key {text:?}") }
}

fn write_status(method: &str, key: &[u8], error: &WriteError) -> Status {
    let message = format!("{method} {}: {error}", show_key(key));
    match error {
        WriteError::Invalid(invalid) => failed(Code::InvalidArgument, Reason::invalid(invalid.field()), message),
        WriteError::Rejected(rejected) => {
            let reason = match rejected {
                OpError::TypeMismatch { holds, needs, .. } => {
                    Reason::TypeMismatch { holds: holds.name().into(), needs: needs.name().into() }
                }
                OpError::CounterOverflow { current, delta } => {
                    Reason::CounterOverflow { current: *current, delta: *delta }
                }
                OpError::NotFound => Reason::KeyNotFound,
            };
            failed(Code::FailedPrecondition, reason, message)
        }
        WriteError::Unavailable(_) => failed(Code::Unavailable, Reason::NotApplied, message),
        WriteError::Unknown(_) => unknown(Code::Unavailable, Reason::WriteInDoubt, message),
        WriteError::NotPrimary { .. } => failed(Code::Unavailable, Reason::NotApplied, message),
        WriteError::Fenced { lock, token, known } => failed(
            Code::FailedPrecondition,
            Reason::StaleFence { lock: lock.clone(), token: *token, known_token: *known },
            message,
        ),
    }
}

fn token(token: CausalToken) -> pb::CausalToken {
    pb::CausalToken { site: token.site, partition: u32::from(token.partition), sequence: token.sequence }
}

fn write_response(outcome: WriteOutcome) -> pb::WriteResponse {
    pb::WriteResponse {
        hlc: outcome.hlc.0,
        token: Some(token(outcome.token)),
        existed: outcome.applied.existed,
        counter: outcome.applied.counter,
    }
}

fn value_type(kind: Kind) -> pb::ValueType {
    match kind {
        Kind::Register => pb::ValueType::Register,
        Kind::Counter => pb::ValueType::Counter,
        Kind::Set => pb::ValueType::Set,
    }
}

/// The reply for a live key: its value, expiry, and the write that decided it.
fn found_response(read: Read, site: Option<String>, lock: Option<String>) -> pb::GetResponse {
    let kind = read.value.kind();
    let value = match read.value {
        Value::Register(bytes) => pb::get_response::Value::Register(bytes),
        Value::Counter(value) => pb::get_response::Value::Counter(value),
        Value::Set(members) => pb::get_response::Value::Set(pb::SetValue { members: members.into_iter().collect() }),
    };
    let marker = read.last_write;
    pb::GetResponse {
        found: true,
        r#type: value_type(kind) as i32,
        value: Some(value),
        expires_at_unix_ms: read.expires_at_unix_ms,
        last_write_hlc: marker.hlc.0,
        last_write_unix_ms: marker.hlc.unix_ms(),
        last_write_fence: (marker.fence != 0)
            .then(|| pb::Fence { lock: lock.unwrap_or_default(), token: marker.fence }),
        last_write_site: site.unwrap_or_default(),
        absence: pb::Absence::Unspecified as i32,
        absent_since_unix_ms: None,
    }
}

/// The reply for an absent key: why it is absent, and since when.
fn absent_response(absence: Absence) -> pb::GetResponse {
    let (absence, since) = match absence {
        Absence::NoRecord => (pb::Absence::NoRecord, None),
        Absence::Deleted { at_unix_ms } => (pb::Absence::Deleted, Some(at_unix_ms)),
        Absence::Expired { at_unix_ms } => (pb::Absence::Expired, Some(at_unix_ms)),
    };
    pb::GetResponse { absence: absence as i32, absent_since_unix_ms: since, ..Default::default() }
}

fn check_ttl(method: &str, key: &[u8], ttl_ms: i64) -> Result<u64, Status> {
    geostore_model::limits::validate_ttl_ms(ttl_ms).map_err(|invalid| {
        failed(
            Code::InvalidArgument,
            Reason::invalid(invalid.field()),
            format!("{method} {}: {invalid}", show_key(key)),
        )
    })
}

fn fence_of(fence: pb::Fence) -> geostore_model::Fence {
    geostore_model::Fence { lock: fence.lock, token: fence.token }
}

/// The store operation a batched write stands for, or the reason it cannot be one.
fn batch_op(op: pb::WriteOp) -> Result<FencedOp, Status> {
    use pb::write_op::Op as W;
    let (key, op, fence) = match op.op {
        None => return Err(failed(Code::InvalidArgument, Reason::invalid("ops"), "Batch: an operation is empty")),
        Some(W::Put(put)) => {
            let ttl_ms = put.ttl_ms.map(|ttl_ms| check_ttl("Put", &put.key, ttl_ms)).transpose()?;
            (put.key, Op::Put { value: put.value, ttl_ms }, put.fence)
        }
        Some(W::Delete(delete)) => (delete.key, Op::Delete, delete.fence),
        Some(W::Increment(increment)) => (increment.key, Op::Increment { delta: increment.delta }, increment.fence),
        Some(W::SetAdd(add)) => (add.key, Op::SetAdd { members: add.members }, add.fence),
        Some(W::SetRemove(remove)) => (remove.key, Op::SetRemove { members: remove.members }, remove.fence),
        Some(W::Expire(expire)) => {
            let ttl_ms = check_ttl("Expire", &expire.key, expire.ttl_ms)?;
            (expire.key, Op::Expire { ttl_ms }, expire.fence)
        }
    };
    Ok((key, op, fence.map(fence_of)))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let call = |mut client: KvClient<Channel>, request| async move { client.get(request).await };
        let request = match self.read_here_or_forward("Get", request, call).await {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        let key = request.key;
        let reply = self.read("Get", &key, request.after, request.wait_ms, Store::lookup).await.map(|lookup| {
            Response::new(match lookup {
                Lookup::Found { read, site, lock } => found_response(read, site, lock),
                Lookup::Absent(absence) => absent_response(absence),
            })
        });
        self.count("Get", reply)
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let call = |mut client: KvClient<Channel>, request| async move { client.put(request).await };
        self.routed_write(
            "Put",
            request,
            |put| &put.key,
            call,
            |put| {
                let ttl_ms = put.ttl_ms.map(|ttl_ms| check_ttl("Put", &put.key, ttl_ms)).transpose()?;
                Ok((put.key, Op::Put { value: put.value, ttl_ms }, put.fence))
            },
        )
        .await
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let call = |mut client: KvClient<Channel>, request| async move { client.delete(request).await };
        self.routed_write(
            "Delete",
            request,
            |delete| &delete.key,
            call,
            |delete| Ok((delete.key, Op::Delete, delete.fence)),
        )
        .await
    }

    async fn increment(&self, request: Request<pb::IncrementRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let call = |mut client: KvClient<Channel>, request| async move { client.increment(request).await };
        self.routed_write(
            "Increment",
            request,
            |increment| &increment.key,
            call,
            |increment| Ok((increment.key, Op::Increment { delta: increment.delta }, increment.fence)),
        )
        .await
    }

    async fn set_add(&self, request: Request<pb::SetAddRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let call = |mut client: KvClient<Channel>, request| async move { client.set_add(request).await };
        self.routed_write(
            "SetAdd",
            request,
            |add| &add.key,
            call,
            |add| Ok((add.key, Op::SetAdd { members: add.members }, add.fence)),
        )
        .await
    }

    async fn set_remove(&self, request: Request<pb::SetRemoveRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let call = |mut client: KvClient<Channel>, request| async move { client.set_remove(request).await };
        self.routed_write(
            "SetRemove",
            request,
            |remove| &remove.key,
            call,
            |remove| Ok((remove.key, Op::SetRemove { members: remove.members }, remove.fence)),
        )
        .await
    }

    async fn set_members(
        &self,
        request: Request<pb::SetMembersRequest>,
    ) -> Result<Response<pb::SetMembersResponse>, Status> {
        let call = |mut client: KvClient<Channel>, request| async move { client.set_members(request).await };
        let request = match self.read_here_or_forward("SetMembers", request, call).await {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        let key = request.key;
        // The value alone: not the winning write's site and lock, which `Store::lookup` reads besides.
        let read = self.read("SetMembers", &key, request.after, request.wait_ms, Store::get).await;
        let reply = read.and_then(|read| match read.map(|read| read.value) {
            None => Ok(pb::SetMembersResponse { found: false, members: Vec::new() }),
            Some(Value::Set(members)) => {
                Ok(pb::SetMembersResponse { found: true, members: members.into_iter().collect() })
            }
            Some(other) => Err(failed(
                Code::FailedPrecondition,
                Reason::TypeMismatch { holds: other.kind().name().into(), needs: Kind::Set.name().into() },
                format!("SetMembers {}: the key holds a {}; SetMembers needs a set", show_key(&key), other.kind()),
            )),
        });
        self.count("SetMembers", reply).map(Response::new)
    }

    async fn expire(&self, request: Request<pb::ExpireRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let call = |mut client: KvClient<Channel>, request| async move { client.expire(request).await };
        self.routed_write(
            "Expire",
            request,
            |expire| &expire.key,
            call,
            |expire| {
                let ttl_ms = check_ttl("Expire", &expire.key, expire.ttl_ms)?;
                Ok((expire.key, Op::Expire { ttl_ms }, expire.fence))
            },
        )
        .await
    }

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        const BATCH_OPS_MAX: usize = 10_000;
        let forwarded = crate::forward::is_forwarded(request.metadata());
        let ops = request.into_inner().ops;
        if ops.len() > BATCH_OPS_MAX {
            let message = format!("Batch: {} operations; the limit is {BATCH_OPS_MAX}", ops.len());
            let status = failed(Code::InvalidArgument, Reason::invalid("ops"), message);
            return self.count("Batch", Err(status));
        }
        // Each operation goes where its partition is led: here (to the store, together), or in one
        // sub-batch per other primary of the site. Operations that cannot even be converted fail alone.
        let mut results: Vec<Option<pb::WriteResult>> = vec![None; ops.len()];
        let mut local = Vec::with_capacity(ops.len());
        let mut remote: std::collections::BTreeMap<u64, (KvClient<Channel>, Vec<usize>, Vec<pb::WriteOp>)> =
            std::collections::BTreeMap::new();
        for (index, op) in ops.into_iter().enumerate() {
            let route = match write_op_key(&op) {
                None => Ok(Route::Here(None)),
                Some(key) => self.route_write(key, forwarded).await,
            };
            match route {
                Err(status) => results[index] = Some(status_result(&status)),
                Ok(Route::Forward(node, client)) => {
                    let slot = remote.entry(node).or_insert_with(|| (client, Vec::new(), Vec::new()));
                    slot.1.push(index);
                    slot.2.push(op);
                }
                Ok(Route::Here(place)) => match batch_op(op) {
                    Ok(store_op) => local.push((index, store_op, place)),
                    Err(status) => results[index] = Some(status_result(&status)),
                },
            }
        }
        let forwards: Vec<_> = remote
            .into_values()
            .map(|(mut client, indexes, ops)| {
                let request = forwarded_request(pb::BatchRequest { ops }, FORWARDED_WRITE_TIMEOUT);
                (indexes, tokio::spawn(async move { client.batch(request).await }))
            })
            .collect();
        let mut indexes = Vec::with_capacity(local.len());
        let mut store_ops = Vec::with_capacity(local.len());
        let mut places = Vec::with_capacity(local.len());
        for (index, store_op, place) in local {
            indexes.push(index);
            store_ops.push(store_op);
            places.push(place);
        }
        let keys: Vec<Vec<u8>> = store_ops.iter().map(|(key, _, _)| key.clone()).collect();
        let methods: Vec<&'static str> = store_ops.iter().map(|(_, op, _)| op.name()).collect();
        let outcomes = self.store.write_fenced_many(store_ops).await;
        // One wait per partition, for the last of its writes: W replicas holding it hold the earlier ones.
        let mut last: std::collections::BTreeMap<u16, (u64, PartitionPlace)> = std::collections::BTreeMap::new();
        for (outcome, place) in outcomes.iter().zip(&places) {
            if let (Ok(outcome), Some(place)) = (outcome, place) {
                let slot = last.entry(outcome.token.partition).or_insert((0, place.clone()));
                slot.0 = slot.0.max(outcome.token.sequence);
            }
        }
        let mut short: std::collections::BTreeMap<u16, Status> = std::collections::BTreeMap::new();
        for (partition, (sequence, place)) in last {
            if let Err(status) = self.wait_for_quorum("Batch", Some(&place), partition, sequence).await {
                short.insert(partition, status);
            }
        }
        for (((index, outcome), key), method) in indexes.into_iter().zip(outcomes).zip(&keys).zip(methods) {
            results[index] = Some(match outcome {
                Ok(outcome) => match short.get(&outcome.token.partition) {
                    Some(status) => status_result(status),
                    None => pb::WriteResult {
                        code: Code::Ok as i32,
                        response: Some(write_response(outcome)),
                        ..Default::default()
                    },
                },
                Err(error) => status_result(&write_status(method, key, &error)),
            });
        }
        for (indexes, forward) in forwards {
            let reply = match forward.await {
                Ok(reply) => reply.map_err(|status| relayed(status, true)),
                Err(error) => {
                    Err(unknown(Code::Internal, Reason::Internal, format!("Batch: forwarding failed: {error}")))
                }
            };
            match reply {
                Ok(reply) if reply.get_ref().results.len() == indexes.len() => {
                    for (index, result) in indexes.into_iter().zip(reply.into_inner().results) {
                        results[index] = Some(result);
                    }
                }
                Ok(_) => {
                    let status = unknown(
                        Code::Internal,
                        Reason::Internal,
                        "Batch: the primary answered a different number of results",
                    );
                    indexes.into_iter().for_each(|index| results[index] = Some(status_result(&status)));
                }
                Err(status) => indexes.into_iter().for_each(|index| results[index] = Some(status_result(&status))),
            }
        }
        let reply = pb::BatchResponse {
            results: results.into_iter().map(|r| r.expect("every operation has a result")).collect(),
        };
        self.count("Batch", Ok(Response::new(reply)))
    }
}

/// The key a batched write is for (`None` for an empty operation, which is refused later).
fn write_op_key(op: &pb::WriteOp) -> Option<&[u8]> {
    use pb::write_op::Op as W;
    Some(match op.op.as_ref()? {
        W::Put(put) => &put.key,
        W::Delete(delete) => &delete.key,
        W::Increment(increment) => &increment.key,
        W::SetAdd(add) => &add.key,
        W::SetRemove(remove) => &remove.key,
        W::Expire(expire) => &expire.key,
    })
}

/// A failed write of a batch, with the outcome and reason its status carries.
fn status_result(status: &Status) -> pb::WriteResult {
    let (outcome, reason, fields) = geostore_proto::outcome::result_parts(status);
    pb::WriteResult {
        code: status.code() as i32,
        message: status.message().to_string(),
        response: None,
        outcome,
        reason,
        fields: fields.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_cut_in_messages() {
        assert_eq!(show_key(b"user:1"), "key \"user:1\"");
        assert!(show_key(&[b'x'; 2000]).ends_with("... (2000 bytes)"));
    }
}
