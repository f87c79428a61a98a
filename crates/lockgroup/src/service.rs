//! The lock group's public gRPC service, `Lock`. (Members speak to each other through the Raft
//! machinery's `Raft` service, `geostore_raft::service`.)

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geostore_locks::{Event, Grant, Outcome, RequestId};
use geostore_proto::outcome::{Reason, failed, unknown};
use geostore_proto::v1 as pb;
use geostore_raft::ProposeError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::group::LockGroup;
use crate::machine::Proposal;

/// The longest lock name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// The longest label of an acquire, and the longest release note, in bytes.
pub const LABEL_BYTES_MAX: usize = 1024;
/// The longest client part of a request id, in bytes.
pub const CLIENT_ID_BYTES_MAX: usize = 128;
/// Leases shorter than this cannot be kept alive across sites.
pub const LEASE_TTL_MS_MIN: u64 = 100;
/// The longest lease a lock may be granted (a key's TTL has its own, far longer limit,
/// `geostore_model::limits::KEY_TTL_MS_MAX`).
pub const LEASE_TTL_MS_MAX: u64 = 24 * 3600 * 1000;
/// The longest an acquire may wait in line.
pub const WAIT_MS_MAX: u64 = 24 * 3600 * 1000;
/// How long past its deadline a queued acquire waits for the leader's verdict before answering "unknown".
const VERDICT_GRACE: Duration = Duration::from_secs(3);

fn propose_status(error: ProposeError) -> Status {
    match error {
        ProposeError::Failed(message) => failed(Code::Unavailable, Reason::LockGroupUnavailable, message),
        ProposeError::Unknown(message) => unknown(Code::Unavailable, Reason::LockGroupUnavailable, message),
    }
}

fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        let message = format!("lock name must be 1 to {NAME_BYTES_MAX} bytes");
        return Err(failed(Code::InvalidArgument, Reason::invalid("name"), message));
    }
    Ok(())
}

fn request_id(id: Option<pb::RequestId>) -> Result<RequestId, Status> {
    let id = id.ok_or_else(|| failed(Code::InvalidArgument, Reason::invalid("id"), "missing request id"))?;
    if id.client.is_empty() || id.client.len() > CLIENT_ID_BYTES_MAX {
        let message = format!("client id must be 1 to {CLIENT_ID_BYTES_MAX} bytes");
        return Err(failed(Code::InvalidArgument, Reason::invalid("id"), message));
    }
    Ok(RequestId { client: id.client, request: id.request })
}

fn grant_to_pb(grant: &Grant) -> pb::Grant {
    pb::Grant {
        name: grant.name.clone(),
        token: grant.token,
        lease: grant.token,
        ttl_ms: grant.ttl_ms,
        expires_unix_ms: grant.expires_at_ms,
        label: grant.label.clone(),
        holder: Some(pb::RequestId { client: grant.holder.client.clone(), request: grant.holder.request }),
        previous_note: grant.previous_note.clone().unwrap_or_default(),
        previous_after: grant.previous_note.as_deref().and_then(|note| geostore_proto::token::parse(note).ok()),
    }
}

fn reused(id: &RequestId) -> Status {
    failed(
        Code::InvalidArgument,
        Reason::RequestIdReused,
        format!("request id {}/{} was already used for another request", id.client, id.request),
    )
}

fn undecided() -> Status {
    unknown(Code::Internal, Reason::Internal, "the applied entry did not decide the request")
}

/// The outcome decided for `id` by an applied entry, if the response holds one.
fn decided(events: &[Event], id: &RequestId) -> Option<Outcome> {
    events.iter().find_map(|event| match event {
        Event::Decided { id: decided, outcome } if decided == id => Some(outcome.clone()),
        _ => None,
    })
}

/// Forgets a waiter when the call ends, answered or not (a client that hangs up drops the call).
struct WaiterGuard<'a> {
    group: &'a LockGroup,
    id: RequestId,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.group.shared().observer().forget(&self.id);
    }
}

/// The public `Lock` service, served by every member (it forwards proposals to the leader).
pub struct LockService {
    group: Arc<LockGroup>,
}

impl LockService {
    /// The service over this node's member of the group.
    pub fn new(group: Arc<LockGroup>) -> Self {
        LockService { group }
    }

    fn count(&self, op: &str, result: &Result<impl Sized, Status>) {
        let label = match result {
            Ok(_) => "ok",
            Err(status) => geostore_proto::outcome::outcome_of(status).as_str(),
        };
        self.group.metrics.requests.with_label_values(&[op, label]).inc();
    }

    async fn acquire_inner(&self, request: pb::AcquireRequest) -> Result<pb::AcquireResponse, Status> {
        check_name(&request.name)?;
        let id = request_id(request.id)?;
        if !(LEASE_TTL_MS_MIN..=LEASE_TTL_MS_MAX).contains(&request.ttl_ms) {
            let message = format!("ttl must be {LEASE_TTL_MS_MIN} ms to {LEASE_TTL_MS_MAX} ms");
            return Err(failed(Code::InvalidArgument, Reason::invalid("ttl_ms"), message));
        }
        if request.wait_ms > WAIT_MS_MAX {
            let message = format!("wait must be at most {WAIT_MS_MAX} ms");
            return Err(failed(Code::InvalidArgument, Reason::invalid("wait_ms"), message));
        }
        if request.label.len() > LABEL_BYTES_MAX {
            let message = format!("label must be at most {LABEL_BYTES_MAX} bytes");
            return Err(failed(Code::InvalidArgument, Reason::invalid("label"), message));
        }
        let name = request.name.clone();
        // Registered before proposing, so a grant applied at once is not missed.
        let verdict = self.group.shared().observer().await_outcome(id.clone());
        let _guard = WaiterGuard { group: &self.group, id: id.clone() };
        let proposal = Proposal::Acquire {
            id: id.clone(),
            name: request.name,
            ttl_ms: request.ttl_ms,
            wait_ms: if request.no_wait { None } else { Some(request.wait_ms) },
            label: request.label,
        };
        let response = self.group.propose(proposal).await.map_err(propose_status)?;
        let outcome = match decided(&response.events, &id) {
            Some(Outcome::Queued { .. }) => {
                let wait = Duration::from_millis(request.wait_ms) + VERDICT_GRACE;
                match tokio::time::timeout(wait, verdict).await {
                    Ok(Ok(outcome)) => outcome,
                    _ => {
                        return Err(unknown(
                            Code::DeadlineExceeded,
                            Reason::LockGroupUnavailable,
                            format!("no verdict on lock {name:?} by the deadline: the request may still be granted"),
                        ));
                    }
                }
            }
            Some(outcome) => outcome,
            None => return Err(undecided()),
        };
        match outcome {
            // A remembered grant of another lock: the id was used before for a different request. (The
            // table remembers only the verdict, so a reused id whose first use was refused cannot be told
            // from a retry; docs/api.md says never to reuse one.)
            Outcome::Granted(grant) if grant.name != name => Err(reused(&id)),
            Outcome::Granted(grant) => Ok(pb::AcquireResponse { grant: Some(grant_to_pb(&grant)) }),
            Outcome::Busy { holder_token } => Err(failed(
                Code::FailedPrecondition,
                Reason::LockBusy { lock: name.clone(), holder_token },
                match holder_token {
                    Some(token) => format!("lock {name:?} is held (token {token})"),
                    None => format!("lock {name:?} is in its lock-delay after an expired lease"),
                },
            )),
            Outcome::TimedOut => Err(failed(
                Code::DeadlineExceeded,
                Reason::NotGranted { lock: name.clone() },
                format!("lock {name:?} was not granted within the wait"),
            )),
            Outcome::Refused(message) => Err(failed(Code::ResourceExhausted, Reason::LimitReached, message)),
            Outcome::Released | Outcome::NotHolder { .. } | Outcome::Queued { .. } => Err(reused(&id)),
        }
    }

    async fn release_inner(&self, request: pb::ReleaseRequest) -> Result<pb::ReleaseResponse, Status> {
        check_name(&request.name)?;
        let id = request_id(request.id)?;
        let name = request.name.clone();
        if request.note.len() > LABEL_BYTES_MAX {
            let message = format!("note must be at most {LABEL_BYTES_MAX} bytes");
            return Err(failed(Code::InvalidArgument, Reason::invalid("note"), message));
        }
        let note = match (request.note.is_empty(), request.after) {
            (true, None) => None,
            (false, None) => Some(request.note),
            (true, Some(after)) => {
                geostore_proto::token::validate(&after).map_err(|invalid| {
                    failed(Code::InvalidArgument, Reason::invalid("after"), format!("Release: {invalid}"))
                })?;
                Some(geostore_proto::token::format(&after))
            }
            (false, Some(_)) => {
                let message = "Release: set `note` or `after`, not both (`after` is left as the note)";
                return Err(failed(Code::InvalidArgument, Reason::invalid("after"), message));
            }
        };
        let proposal = Proposal::Release { id: id.clone(), name: request.name, token: request.token, note };
        let response = self.group.propose(proposal).await.map_err(propose_status)?;
        match decided(&response.events, &id) {
            Some(Outcome::Released) => Ok(pb::ReleaseResponse {}),
            Some(Outcome::NotHolder { current_token }) => Err(failed(
                Code::FailedPrecondition,
                Reason::NotHolder { lock: name.clone(), token: request.token, current_token },
                format!(
                    "token {} does not hold lock {name:?} (current token: {})",
                    request.token,
                    current_token.map_or("none".to_string(), |t| t.to_string())
                ),
            )),
            Some(_) => Err(reused(&id)),
            None => Err(undecided()),
        }
    }

    fn state(&self, name: &str) -> pb::LockState {
        self.group.shared().read(|applied| pb::LockState {
            name: name.to_string(),
            holder: applied.state.table.holder(name).map(grant_to_pb),
            waiters: applied
                .state
                .table
                .waiters(name)
                .into_iter()
                .map(|id| pb::RequestId { client: id.client, request: id.request })
                .collect(),
            applied_index: applied.applied_index(),
        })
    }
}

/// Keeps `name` alive under `token`: the new expiry, or `None` if the token no longer holds it.
async fn keep_alive(group: &LockGroup, name: String, token: u64) -> Result<Option<u64>, Status> {
    check_name(&name)?;
    let response = group.propose(Proposal::KeepAlive { name, token }).await.map_err(propose_status)?;
    Ok(response.events.iter().find_map(|event| match event {
        Event::KeptAlive { expires_at_ms, .. } => *expires_at_ms,
        _ => None,
    }))
}

type StateStream = Pin<Box<dyn Stream<Item = Result<pb::LockState, Status>> + Send>>;
type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::KeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::lock_server::Lock for LockService {
    async fn acquire(&self, request: Request<pb::AcquireRequest>) -> Result<Response<pb::AcquireResponse>, Status> {
        let started = Instant::now();
        let result = self.acquire_inner(request.into_inner()).await;
        self.group.metrics.acquire_seconds.observe(started.elapsed().as_secs_f64());
        self.count("acquire", &result);
        result.map(Response::new)
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let group = self.group.clone();
        tokio::spawn(async move {
            loop {
                let request = match inbound.message().await {
                    Ok(Some(request)) => request,
                    Ok(None) | Err(_) => return,
                };
                let result = keep_alive(&group, request.name.clone(), request.token).await;
                let reply = match result {
                    Ok(Some(expires_unix_ms)) => {
                        Ok(pb::KeepAliveResponse { name: request.name, token: request.token, expires_unix_ms })
                    }
                    Ok(None) => Err(failed(
                        Code::NotFound,
                        Reason::NotHolder { lock: request.name.clone(), token: request.token, current_token: None },
                        format!(
                            "lease {} no longer holds lock {:?}: it expired or was released",
                            request.token, request.name
                        ),
                    )),
                    Err(status) => Err(status),
                };
                let end = reply.is_err();
                group.metrics.requests.with_label_values(&["keep_alive", if end { "failed" } else { "ok" }]).inc();
                if sender.send(reply).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Result<Response<pb::ReleaseResponse>, Status> {
        let result = self.release_inner(request.into_inner()).await;
        self.count("release", &result);
        result.map(Response::new)
    }

    async fn describe(&self, request: Request<pb::DescribeRequest>) -> Result<Response<pb::LockState>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        Ok(Response::new(self.state(&name)))
    }

    async fn list(&self, _request: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let names: Vec<String> = self.group.shared().read(|applied| applied.state.table.names().cloned().collect());
        let locks = names.iter().map(|name| self.state(name)).collect();
        Ok(Response::new(pb::ListResponse { locks }))
    }

    type WatchStream = StateStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        // Subscribed before reading the first state, so no change falls in between.
        let mut changes = self.group.shared().observer().subscribe_changes();
        let (sender, receiver) = mpsc::channel(16);
        let service = LockService { group: self.group.clone() };
        tokio::spawn(async move {
            let mut last = service.state(&name);
            if sender.send(Ok(last.clone())).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Ok(changed) if changed != name => continue,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = sender.closed() => return,
                }
                let state = service.state(&name);
                if (state.holder.as_ref(), &state.waiters) != (last.holder.as_ref(), &last.waiters) {
                    if sender.send(Ok(state.clone())).await.is_err() {
                        return;
                    }
                    last = state;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
