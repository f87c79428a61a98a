//! Global locks and leader election on top of them.
//!
//! A [`LockGuard`] holds a lock: it keeps the lease alive in the background and says when it is lost. Its
//! fencing token is what the lock's writes must carry, so that the store refuses the writes of a holder
//! that lost the lock without noticing (a long pause, a partition).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
// tokio's clock: the same as the system's monotonic clock, and the one a simulation drives.
use tokio::time::Instant;
use tonic::Code;

use crate::{Client, Error, Outcome, Result, pb};

/// How long past its own wait a lock call may take before the client gives up on it (outcome unknown):
/// covers a leader election and the server's own grace for a verdict, and bounds a call stuck on a
/// connection that a partition stalls without closing.
const CALL_GRACE: Duration = Duration::from_secs(15);

/// A request with a deadline: the call fails (outcome unknown) if no answer comes by then.
fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

/// Retries of a request whose outcome was unknown, with the same request id (applied at most once).
const UNKNOWN_RETRIES: usize = 3;
/// Lock names used by elections: `election/NAME`.
pub const ELECTION_PREFIX: &str = "election/";

/// The first and the longest pause before retrying a lock call whose outcome was unknown: an election
/// takes about one election timeout (1.25-2.5 s by default), so the retries spread over a few seconds.
const UNKNOWN_RETRY_FIRST: Duration = Duration::from_millis(100);
const UNKNOWN_RETRY_MAX: Duration = Duration::from_secs(1);

/// Makes `call` until it succeeds, fails certainly, or has been unavailable with an unknown outcome
/// [`UNKNOWN_RETRIES`] more times, pausing before each retry (with jitter, so clients that failed
/// together do not retry together). The request (and so its id) is the same each time: applied at most
/// once.
async fn retry_unknown<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
{
    let mut backoff = geostore_runtime::Backoff::new(UNKNOWN_RETRY_FIRST, UNKNOWN_RETRY_MAX);
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(reply) => return Ok(reply),
            Err(status) => {
                let error = Error::from_status(status);
                attempt += 1;
                if error.outcome == Outcome::Failed || error.code != Code::Unavailable || attempt > UNKNOWN_RETRIES {
                    return Err(error);
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// A random id for this client, so its request ids never collide with another client's.
pub(crate) fn new_client_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness; mixing in the pid and time makes ids from two
    // processes distinct even if that were not so.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{:016x}", hasher.finish())
}

/// The request ids of one client.
#[derive(Debug)]
pub(crate) struct RequestIds {
    client: String,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new(client: Option<String>) -> Arc<Self> {
        Arc::new(RequestIds { client: client.unwrap_or_else(new_client_id), next: AtomicU64::new(1) })
    }

    fn next(&self) -> pb::RequestId {
        pb::RequestId { client: self.client.clone(), request: self.next.fetch_add(1, Ordering::Relaxed) }
    }
}

/// A lock as granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The lock's name.
    pub name: String,
    /// The fencing token: strictly increasing per lock (and across locks).
    pub token: u64,
    /// The lease to keep alive (the same number as the token).
    pub lease: u64,
    /// The lease length that each keep-alive restarts.
    pub ttl: Duration,
    /// When the lease runs out by the leader's clock if not kept alive, ms since the Unix epoch.
    pub expires_unix_ms: u64,
    /// The free text the acquire carried (who holds the lock, or an election's proposal).
    pub label: String,
    /// The note the last releasing holder left (see [`Client::release_with_note`]).
    pub previous_note: Option<String>,
    /// That note read as a causal token, when it is one (see [`Client::release_after`]): read after it
    /// to see the last holder's writes.
    pub previous_after: Option<pb::CausalToken>,
}

impl From<pb::Grant> for Grant {
    fn from(grant: pb::Grant) -> Self {
        Grant {
            name: grant.name,
            token: grant.token,
            lease: grant.lease,
            ttl: Duration::from_millis(grant.ttl_ms),
            expires_unix_ms: grant.expires_unix_ms,
            label: grant.label,
            previous_note: if grant.previous_note.is_empty() { None } else { Some(grant.previous_note) },
            previous_after: grant.previous_after,
        }
    }
}

/// How long an acquire waits for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once (FAILED_PRECONDITION) if the lock is held.
    Try,
    /// Wait in line up to this long.
    Up(Duration),
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// Takes `name` with a lease of `ttl`. A request whose outcome is unknown (a leader change) is retried
    /// with the same request id, so it is granted at most once.
    pub async fn acquire(&self, name: &str, ttl: Duration, wait: Wait, label: &str) -> Result<Grant> {
        let id = self.request_ids.next();
        let request = pb::AcquireRequest {
            name: name.to_string(),
            id: Some(id),
            ttl_ms: millis(ttl),
            wait_ms: match wait {
                Wait::Try => 0,
                Wait::Up(wait) => millis(wait),
            },
            no_wait: wait == Wait::Try,
            label: label.to_string(),
        };
        let deadline = Duration::from_millis(request.wait_ms) + CALL_GRACE;
        let reply = retry_unknown(|| {
            let (mut lock, request) = (self.lock.clone(), with_deadline(request.clone(), deadline));
            async move { lock.acquire(request).await }
        })
        .await?;
        let grant = reply
            .into_inner()
            .grant
            .ok_or_else(|| Error::local(Code::Internal, Outcome::Unknown, "the server sent no grant"))?;
        Ok(grant.into())
    }

    /// Releases `name` held under `token`. FAILED_PRECONDITION if that token does not hold it.
    pub async fn release(&self, name: &str, token: u64) -> Result<()> {
        self.release_with_note(name, token, None).await
    }

    /// Releases `name` and leaves `note` for the next holder, who finds it in its grant
    /// ([`Grant::previous_note`]): typically the causal token of the last write made under the lock, so
    /// that the next holder, in whatever site, reads after it.
    pub async fn release_with_note(&self, name: &str, token: u64, note: Option<&str>) -> Result<()> {
        let request = pb::ReleaseRequest {
            name: name.to_string(),
            token,
            id: Some(self.request_ids.next()),
            note: note.unwrap_or_default().to_string(),
            after: None,
        };
        self.release_request(request).await
    }

    /// Releases `name` and leaves `after`, the causal token of the last write made under the lock, for the
    /// next holder: it finds it as [`Grant::previous_after`] (and as the note, in its text form). The
    /// server checks the token's form (INVALID_ARGUMENT if it is malformed).
    pub async fn release_after(&self, name: &str, token: u64, after: pb::CausalToken) -> Result<()> {
        let request = pb::ReleaseRequest {
            name: name.to_string(),
            token,
            id: Some(self.request_ids.next()),
            note: String::new(),
            after: Some(after),
        };
        self.release_request(request).await
    }

    async fn release_request(&self, request: pb::ReleaseRequest) -> Result<()> {
        retry_unknown(|| {
            let (mut lock, request) = (self.lock.clone(), with_deadline(request.clone(), CALL_GRACE));
            async move { lock.release(request).await }
        })
        .await?;
        Ok(())
    }

    /// Renews the lease of `name` under `token` once: the new expiry (ms since the Unix epoch).
    pub async fn keep_alive_once(&self, name: &str, token: u64) -> Result<u64> {
        let request = pb::KeepAliveRequest { name: name.to_string(), token };
        let request = with_deadline(tokio_stream::once(request), CALL_GRACE);
        let mut replies = self.lock.clone().keep_alive(request).await.map_err(Error::from_status)?.into_inner();
        match replies.message().await.map_err(Error::from_status)? {
            Some(reply) => Ok(reply.expires_unix_ms),
            None => Err(Error::local(Code::Unavailable, Outcome::Unknown, "keep-alive stream ended")),
        }
    }

    /// One lock's holder and waiters (as of the node's last applied entry).
    pub async fn describe(&self, name: &str) -> Result<pb::LockState> {
        let request = pb::DescribeRequest { name: name.to_string() };
        Ok(self
            .lock
            .clone()
            .describe(with_deadline(request, CALL_GRACE))
            .await
            .map_err(Error::from_status)?
            .into_inner())
    }

    /// Every held or awaited lock.
    pub async fn list_locks(&self) -> Result<Vec<pb::LockState>> {
        Ok(self
            .lock
            .clone()
            .list(with_deadline(pb::ListRequest {}, CALL_GRACE))
            .await
            .map_err(Error::from_status)?
            .into_inner()
            .locks)
    }

    /// One lock's state now, then each change.
    pub async fn watch(&self, name: &str) -> Result<tonic::Streaming<pb::LockState>> {
        let request = pb::WatchRequest { name: name.to_string() };
        Ok(self.lock.clone().watch(request).await.map_err(Error::from_status)?.into_inner())
    }

    /// Takes `name` and keeps it alive until the guard is released or dropped.
    pub async fn hold(&self, name: &str, ttl: Duration, wait: Wait, label: &str) -> Result<LockGuard> {
        let sent = Instant::now();
        let grant = self.acquire(name, ttl, wait, label).await?;
        Ok(LockGuard::start(self.clone(), grant, sent))
    }

    /// Campaigns to lead election `name` with `value`: returns once elected (waiting up to `wait`).
    /// Leadership lasts while the guard keeps its lease alive; resign by releasing it.
    pub async fn campaign(&self, name: &str, value: &str, ttl: Duration, wait: Duration) -> Result<LockGuard> {
        self.hold(&format!("{ELECTION_PREFIX}{name}"), ttl, Wait::Up(wait), value).await
    }

    /// Gives up leadership of election `name` held under `token`.
    pub async fn resign(&self, name: &str, token: u64) -> Result<()> {
        self.release(&format!("{ELECTION_PREFIX}{name}"), token).await
    }

    /// The leader of election `name` now, then at each change: `None` while nobody leads.
    pub async fn observe(&self, name: &str) -> Result<mpsc::Receiver<Result<Option<Grant>>>> {
        let mut states = self.watch(&format!("{ELECTION_PREFIX}{name}")).await?;
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut last: Option<Option<u64>> = None;
            loop {
                let item = match states.message().await {
                    Ok(Some(state)) => {
                        let leader = state.holder.map(Grant::from);
                        let token = leader.as_ref().map(|g| g.token);
                        if last == Some(token) {
                            continue;
                        }
                        last = Some(token);
                        Ok(leader)
                    }
                    Ok(None) => return,
                    Err(status) => Err(Error::from_status(status)),
                };
                let end = item.is_err();
                if sender.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(receiver)
    }
}

/// Why a held lock ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The group says the lease is gone (expired: keep-alives did not arrive in time).
    Expired,
    /// No keep-alive succeeded within the TTL: the lease may have run out.
    Unconfirmed(String),
}

/// A held lock, kept alive in the background (a keep-alive every third of the TTL).
pub struct LockGuard {
    client: Client,
    grant: Grant,
    state: watch::Receiver<Option<Lost>>,
    task: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    fn start(client: Client, grant: Grant, sent: Instant) -> Self {
        let (sender, state) = watch::channel(None);
        let task = tokio::spawn(keep_alive_loop(client.clone(), grant.clone(), sent, sender));
        LockGuard { client, grant, state, task }
    }

    /// The grant this guard holds (its expiry as first granted, not as kept alive since).
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The fencing token to send with the writes made under this lock.
    pub fn token(&self) -> u64 {
        self.grant.token
    }

    /// A client whose writes are fenced with this lock's token.
    pub fn client(&self) -> Client {
        self.client.with_fence(&self.grant.name, self.grant.token)
    }

    /// Whether the lock is known or feared lost.
    pub fn lost(&self) -> Option<Lost> {
        self.state.borrow().clone()
    }

    /// Completes when the lock is lost.
    pub async fn wait_lost(&mut self) -> Lost {
        match self.state.wait_for(Option::is_some).await {
            Ok(lost) => lost.clone().expect("waited for Some"),
            Err(_) => Lost::Unconfirmed("keep-alive task ended".into()),
        }
    }

    /// Stops keeping the lease alive and releases the lock.
    pub async fn release(self) -> Result<()> {
        self.release_with_note(None).await
    }

    /// Releases the lock, leaving `note` for the next holder.
    pub async fn release_with_note(self, note: Option<&str>) -> Result<()> {
        self.task.abort();
        self.client.release_with_note(&self.grant.name, self.grant.token, note).await
    }

    /// Releases the lock, leaving the causal token of its last write for the next holder
    /// ([`Client::release_after`]).
    pub async fn release_after(self, after: pb::CausalToken) -> Result<()> {
        self.task.abort();
        self.client.release_after(&self.grant.name, self.grant.token, after).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_alive_loop(client: Client, grant: Grant, sent: Instant, lost: watch::Sender<Option<Lost>>) {
    let period = grant.ttl / 3;
    // The lease is safe until the TTL after the request that last renewed it was sent: counted from the
    // send, not the reply, so a slow reply never stretches it.
    let mut valid_until = sent + grant.ttl;
    let mut last_error = String::new();
    let mut pause = period;
    loop {
        tokio::time::sleep(pause).await;
        let attempt = Instant::now();
        if attempt >= valid_until {
            let _ = lost.send(Some(Lost::Unconfirmed(format!("no keep-alive succeeded within the TTL: {last_error}"))));
            return;
        }
        let remaining = valid_until - attempt;
        match tokio::time::timeout(remaining, client.keep_alive_once(&grant.name, grant.token)).await {
            Ok(Ok(_)) => {
                valid_until = attempt + grant.ttl;
                pause = period;
                continue;
            }
            Ok(Err(error)) if error.code == Code::NotFound => {
                let _ = lost.send(Some(Lost::Expired));
                return;
            }
            Ok(Err(error)) => last_error = error.message,
            Err(_) => last_error = "keep-alive timed out".into(),
        }
        // Failed: try again soon, while the lease still holds.
        pause = period.min(Duration::from_millis(200));
    }
}
