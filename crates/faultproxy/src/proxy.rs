//! The proxy: one listening socket, its accept loop, and the registry of open connections.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connection;
use crate::faults::{Faults, ProxyStats};

/// Most connections one proxy keeps open at once; further ones are refused (reset) so that a runaway
/// client cannot exhaust the process's file descriptors.
pub const CONNECTIONS_MAX: usize = 1024;

/// How long the accept loop pauses after a failed accept (for example when out of file descriptors), so that
/// a persistent error does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// One proxied link: accepts TCP connections on `listen` and forwards each to `upstream`.
///
/// Cloning is cheap and every clone controls the same link, so a clone can be handed to the control API.
/// The link stops when `shutdown` is called on any clone, or when the last clone is dropped.
#[derive(Clone)]
pub struct Proxy {
    handle: Arc<Handle>,
}

/// The part of a proxy owned by its `Proxy` clones only. Its `Drop` stops the link, which is why the
/// tasks hold the `Shared` part instead: holding this would keep the link alive forever.
struct Handle {
    shared: Arc<Shared>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

/// The state the accept loop and connection tasks share with the `Proxy` handles.
pub(crate) struct Shared {
    pub(crate) local_addr: SocketAddr,
    pub(crate) upstream: SocketAddr,
    /// The current faults; connection tasks watch it so that a change applies to them at once.
    pub(crate) faults: watch::Sender<Faults>,
    /// Cancelled once the link shuts down; every task watches it.
    pub(crate) shutdown: CancellationToken,
    /// One permit per connection that may still be opened; `shutdown` waits for all to come back.
    connection_permits: Arc<Semaphore>,
    /// Open connections by id, each with the notification that resets it.
    connections: Mutex<HashMap<u64, Arc<Notify>>>,
    next_connection_id: AtomicU64,
    pub(crate) counters: Counters,
}

#[derive(Default)]
pub(crate) struct Counters {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    pub(crate) bytes_forward: AtomicU64,
    pub(crate) bytes_backward: AtomicU64,
    pub(crate) bytes_in_flight: AtomicU64,
    resets: AtomicU64,
}

impl Proxy {
    /// Binds `listen` (port 0 allowed) and starts forwarding in the current tokio runtime.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let shared = Arc::new(Shared {
            local_addr: listener.local_addr()?,
            upstream,
            faults: watch::Sender::new(Faults::default()),
            shutdown: CancellationToken::new(),
            connection_permits: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
            connections: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy { handle: Arc::new(Handle { shared, accept_task: Mutex::new(Some(accept_task)) }) })
    }

    /// The address the proxy listens on (with the actual port when it was started with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local_addr
    }

    /// The address every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.handle.shared.upstream
    }

    /// Replaces the fault settings; applies at once to existing and new connections.
    ///
    /// Data already read and waiting out its delay keeps the due time it was given when read; a cut
    /// holds it back as well, since a partition must stop everything still in flight.
    pub fn set_faults(&self, faults: Faults) {
        // `send_replace` stores the value even when no connection watches it yet.
        self.handle.shared.faults.send_replace(faults);
    }

    /// The fault settings in force now.
    pub fn faults(&self) -> Faults {
        self.handle.shared.faults.borrow().clone()
    }

    /// Resets (RST, via SO_LINGER 0) every open connection now, on both its client and upstream sides.
    ///
    /// The sockets are closed by the connection tasks right after this returns, not before.
    pub fn reset_connections(&self) {
        let shared = &self.handle.shared;
        let connections = shared.lock_connections();
        for reset in connections.values() {
            // `notify_one` keeps a permit when the task is not waiting yet, so no reset is lost.
            reset.notify_one();
        }
        shared.counters.resets.fetch_add(connections.len() as u64, Ordering::Relaxed);
    }

    /// Counters: connections accepted, bytes forwarded each way, resets done.
    pub fn stats(&self) -> ProxyStats {
        let shared = &self.handle.shared;
        let counters = &shared.counters;
        ProxyStats {
            connections_accepted: counters.connections_accepted.load(Ordering::Relaxed),
            connections_refused: counters.connections_refused.load(Ordering::Relaxed),
            connections_open: shared.lock_connections().len() as u64,
            bytes_forward: counters.bytes_forward.load(Ordering::Relaxed),
            bytes_backward: counters.bytes_backward.load(Ordering::Relaxed),
            bytes_in_flight: counters.bytes_in_flight.load(Ordering::Relaxed),
            resets: counters.resets.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting and closes every connection (with a reset, so that no peer is left half-open), then
    /// waits until the listening socket and every connection socket are closed.
    pub async fn shutdown(self) {
        let shared = self.handle.shared.clone();
        shared.shutdown.cancel();
        let accept_task = self.handle.accept_task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(accept_task) = accept_task {
            // The accept loop only ends by seeing the cancellation, and it never panics on purpose.
            let _ = accept_task.await;
        }
        // With the accept loop gone no connection can start, so once all permits are back every connection
        // task has ended and closed its sockets. The semaphore is never closed, so this cannot fail.
        let _ = shared.connection_permits.acquire_many(CONNECTIONS_MAX as u32).await;
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The last clone is gone, so nobody can stop the link any more: stop it now rather than leak it.
        self.shared.shutdown.cancel();
    }
}

impl Shared {
    fn lock_connections(&self) -> MutexGuard<'_, HashMap<u64, Arc<Notify>>> {
        // The map stays consistent even if a holder panicked, as every update is a single insert or remove.
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    id: u64,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock_connections().remove(&self.id);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => accept_one(&shared, client, peer),
            Err(error) => {
                tracing::warn!(listen = %shared.local_addr, %error, "fault proxy: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

fn accept_one(shared: &Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    shared.counters.connections_accepted.fetch_add(1, Ordering::Relaxed);
    if shared.faults.borrow().refuse_new {
        refuse(shared, client);
        return;
    }
    let Ok(permit) = shared.connection_permits.clone().try_acquire_owned() else {
        tracing::warn!(listen = %shared.local_addr, %peer, "fault proxy: {CONNECTIONS_MAX} connections open, refusing");
        refuse(shared, client);
        return;
    };
    // The proxy must not add Nagle's delay on top of the one it injects, or small messages would wait for
    // an acknowledgement and latency measurements would be off.
    let _ = client.set_nodelay(true);
    let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let reset = Arc::new(Notify::new());
    shared.lock_connections().insert(id, reset.clone());
    let registration = Registration { shared: shared.clone(), id, _permit: permit };
    tokio::spawn(connection::run(shared.clone(), client, reset, registration));
}

fn refuse(shared: &Shared, client: TcpStream) {
    shared.counters.connections_refused.fetch_add(1, Ordering::Relaxed);
    connection::reset_stream(&client);
}
