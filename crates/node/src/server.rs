//! The gRPC front end: translates requests into store operations and store results into replies and
//! status codes. No state of its own.

use std::sync::Arc;
use std::time::Duration;

use geostore_model::{Absence, Kind, Op, OpError, Read, Value};
use geostore_proto::outcome::{Reason, failed, unknown};
use geostore_proto::v1 as pb;
use geostore_proto::v1::kv_server::Kv;
use tonic::{Code, Request, Response, Status};

use crate::metrics::Metrics;
use crate::store::{CausalToken, FencedOp, Lookup, ReadError, Store, WriteError, WriteOutcome};

/// The `KV` service over this node's store.
pub struct KvService {
    store: Arc<Store>,
    metrics: Metrics,
    /// The longest a read waits for a causal token.
    causal_wait_max: Duration,
}

impl KvService {
    /// Serves `store`, counting requests in `metrics`; reads wait at most `causal_wait_max` for a token.
    pub fn new(store: Arc<Store>, metrics: Metrics, causal_wait_max: Duration) -> Self {
        Self { store, metrics, causal_wait_max }
    }

    async fn write(
        &self,
        method: &'static str,
        key: Vec<u8>,
        op: Op,
        fence: Option<pb::Fence>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let result = self.store.write_fenced(key.clone(), op, fence.map(fence_of)).await;
        let reply = result.map(|outcome| Response::new(write_response(outcome)));
        self.count(method, reply.map_err(|error| write_status(method, &key, &error)))
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
        let request = request.into_inner();
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
        let put = request.into_inner();
        let ttl_ms = match put.ttl_ms.map(|ttl_ms| check_ttl("Put", &put.key, ttl_ms)).transpose() {
            Ok(ttl_ms) => ttl_ms,
            Err(status) => return self.count("Put", Err(status)),
        };
        self.write("Put", put.key, Op::Put { value: put.value, ttl_ms }, put.fence).await
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let delete = request.into_inner();
        self.write("Delete", delete.key, Op::Delete, delete.fence).await
    }

    async fn increment(&self, request: Request<pb::IncrementRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let increment = request.into_inner();
        self.write("Increment", increment.key, Op::Increment { delta: increment.delta }, increment.fence).await
    }

    async fn set_add(&self, request: Request<pb::SetAddRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let add = request.into_inner();
        self.write("SetAdd", add.key, Op::SetAdd { members: add.members }, add.fence).await
    }

    async fn set_remove(&self, request: Request<pb::SetRemoveRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let remove = request.into_inner();
        self.write("SetRemove", remove.key, Op::SetRemove { members: remove.members }, remove.fence).await
    }

    async fn set_members(
        &self,
        request: Request<pb::SetMembersRequest>,
    ) -> Result<Response<pb::SetMembersResponse>, Status> {
        let request = request.into_inner();
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
        let expire = request.into_inner();
        let ttl_ms = match check_ttl("Expire", &expire.key, expire.ttl_ms) {
            Ok(ttl_ms) => ttl_ms,
            Err(status) => return self.count("Expire", Err(status)),
        };
        self.write("Expire", expire.key, Op::Expire { ttl_ms }, expire.fence).await
    }

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        const BATCH_OPS_MAX: usize = 10_000;
        let ops = request.into_inner().ops;
        if ops.len() > BATCH_OPS_MAX {
            let message = format!("Batch: {} operations; the limit is {BATCH_OPS_MAX}", ops.len());
            let status = failed(Code::InvalidArgument, Reason::invalid("ops"), message);
            return self.count("Batch", Err(status));
        }
        // Operations that cannot even be converted fail alone; the rest go to the store together.
        let mut results: Vec<Option<pb::WriteResult>> = Vec::with_capacity(ops.len());
        let mut store_ops = Vec::with_capacity(ops.len());
        for op in ops {
            match batch_op(op) {
                Ok(store_op) => {
                    results.push(None);
                    store_ops.push(store_op);
                }
                Err(status) => results.push(Some(status_result(&status))),
            }
        }
        let keys: Vec<Vec<u8>> = store_ops.iter().map(|(key, _, _)| key.clone()).collect();
        let methods: Vec<&'static str> = store_ops.iter().map(|(_, op, _)| op.name()).collect();
        let mut outcomes = self.store.write_fenced_many(store_ops).await.into_iter().zip(keys.iter().zip(methods));
        for slot in results.iter_mut().filter(|slot| slot.is_none()) {
            let (outcome, (key, method)) = outcomes.next().expect("one outcome per store operation");
            *slot = Some(match outcome {
                Ok(outcome) => pb::WriteResult {
                    code: Code::Ok as i32,
                    response: Some(write_response(outcome)),
                    ..Default::default()
                },
                Err(error) => status_result(&write_status(method, key, &error)),
            });
        }
        let reply = pb::BatchResponse {
            results: results.into_iter().map(|r| r.expect("every operation has a result")).collect(),
        };
        self.count("Batch", Ok(Response::new(reply)))
    }
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
