//! One proxied connection: the upstream connect and the two directions, each a reader and a writer joined by
//! a delay queue bounded in bytes.

use std::cmp;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::faults::{Direction, Faults};
use crate::proxy::{Registration, Shared};

/// Most bytes one direction of one connection holds while they wait out their delay (or a cut). When it is
/// full the reader stops reading, so the sender meets TCP back-pressure instead of the proxy buffering
/// without limit. Like a TCP window it caps a connection's throughput at this size per delay: 4 MiB per
/// 50 ms is 80 MiB/s, more than a benchmark's wide-area link needs.
pub const QUEUE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most bytes read from a socket in one go; a chunk is the unit that is delayed and written.
pub const CHUNK_BYTES_MAX: usize = 64 * 1024;

/// What a queued chunk costs against `QUEUE_BYTES_MAX` on top of its data, so that a flood of tiny chunks is
/// bounded by the memory it really takes (the queue slot and the allocation), not by its payload alone.
const CHUNK_OVERHEAD_BYTES: usize = 64;

// A chunk's cost must fit the budget's permit count, and the budget must hold the largest chunk, or the reader
// would wait for it forever.
const _: () =
    assert!(CHUNK_BYTES_MAX + CHUNK_OVERHEAD_BYTES <= QUEUE_BYTES_MAX && QUEUE_BYTES_MAX <= u32::MAX as usize);

/// The queue's length in chunks never binds before its size in bytes does; it only has to be bounded.
const QUEUE_CHUNKS_MAX: usize = QUEUE_BYTES_MAX / CHUNK_OVERHEAD_BYTES;

/// How long the proxy waits for the upstream to accept a connection before resetting the client's.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from one side, to be written to the other once `due`. No data means end of stream.
struct Chunk {
    due: Instant,
    data: Option<Vec<u8>>,
    /// What the chunk holds of its direction's byte budget, given back once it is written.
    cost: u32,
}

/// Runs one accepted connection until both directions have ended, an error occurs, or it is reset.
pub(crate) async fn run(shared: Arc<Shared>, client: TcpStream, reset: Arc<Notify>, registration: Registration) {
    let shutdown = shared.shutdown.clone();
    let upstream = tokio::select! {
        _ = reset.notified() => None,
        _ = shutdown.cancelled() => None,
        upstream = connect_upstream(&shared) => match upstream {
            Ok(upstream) => Some(upstream),
            Err(error) => {
                tracing::debug!(upstream = %shared.upstream, %error, "fault proxy: cannot connect upstream");
                None
            }
        },
    };
    let Some(upstream) = upstream else {
        // The client must learn that its connection failed, as it would from a refused connect.
        reset_stream(&client);
        drop(client);
        drop(registration);
        return;
    };

    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let outcome = tokio::select! {
        _ = reset.notified() => Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset by the fault proxy")),
        _ = shutdown.cancelled() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "fault proxy shut down")),
        outcome = async {
            tokio::try_join!(
                pump(&shared, Direction::Forward, &mut client_read, &mut upstream_write),
                pump(&shared, Direction::Backward, &mut upstream_read, &mut client_write),
            )
        } => outcome.map(|_| ()),
    };
    match outcome {
        Ok(()) => drop((client_write, upstream_write)),
        Err(error) => {
            tracing::debug!(upstream = %shared.upstream, %error, "fault proxy: connection ends with a reset");
            // Both peers see a reset: for a reset or shutdown that is the point, and for an error on one side
            // (say the upstream reset its connection) this passes the failure on as the network would.
            reset_stream(client_read.as_ref());
            reset_stream(upstream_read.as_ref());
            // Forgetting the write halves skips the FIN their drop would send ahead of the reset.
            client_write.forget();
            upstream_write.forget();
        }
    }
    // Closing the sockets (the read halves are the last owners) before giving the connection's permit back
    // lets `Proxy::shutdown` promise that every socket is closed when it returns.
    drop((client_read, upstream_read));
    drop(registration);
}

/// Makes the socket's close send a reset (SO_LINGER with a zero timeout) instead of a FIN.
pub(crate) fn reset_stream(stream: &TcpStream) {
    // A zero linger never blocks on close, unlike the non-zero ones tokio warns about. Failing to set it only
    // turns the reset into an orderly close, which is not worth more than a log line.
    if let Err(error) = stream.set_zero_linger() {
        tracing::debug!(%error, "fault proxy: cannot set SO_LINGER to 0");
    }
}

/// Waits until `direction` is not cut.
async fn wait_uncut(faults: &mut watch::Receiver<Faults>, direction: Direction) -> io::Result<()> {
    match faults.wait_for(|faults| !faults.is_cut(direction)).await {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "fault proxy shut down")),
    }
}

/// Connects to the upstream once the link lets a handshake through: a SYN or its SYN-ACK would be lost in
/// either cut direction, so a connection started during a partition waits for it to heal, as its
/// retransmitted SYNs would.
async fn connect_upstream(shared: &Shared) -> io::Result<TcpStream> {
    let mut faults = shared.faults.subscribe();
    wait_uncut(&mut faults, Direction::Forward).await?;
    wait_uncut(&mut faults, Direction::Backward).await?;
    let upstream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(shared.upstream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out"))??;
    // As for the client side, the proxy's own Nagle delay would distort the latency it emulates.
    upstream.set_nodelay(true)?;
    Ok(upstream)
}

/// Keeps the link's `bytes_in_flight` gauge for one direction of one connection, and takes back what is
/// still counted when the connection ends with data in its queue.
struct InFlight<'a> {
    link: &'a AtomicU64,
    here: AtomicU64,
}

impl InFlight<'_> {
    fn add(&self, bytes: usize) {
        self.here.fetch_add(bytes as u64, Ordering::Relaxed);
        self.link.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.here.fetch_sub(bytes as u64, Ordering::Relaxed);
        self.link.fetch_sub(bytes as u64, Ordering::Relaxed);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.link.fetch_sub(*self.here.get_mut(), Ordering::Relaxed);
    }
}

/// Forwards one direction until end of stream: a reader that stamps each chunk with its due time and a
/// writer that sends it then, joined by a queue so that many chunks are in flight at once.
async fn pump(
    shared: &Shared,
    direction: Direction,
    source: &mut OwnedReadHalf,
    sink: &mut OwnedWriteHalf,
) -> io::Result<()> {
    let budget = Semaphore::new(QUEUE_BYTES_MAX);
    let in_flight = InFlight { link: &shared.counters.bytes_in_flight, here: AtomicU64::new(0) };
    let (sender, receiver) = mpsc::channel(QUEUE_CHUNKS_MAX);
    tokio::try_join!(
        read_side(shared, direction, source, &budget, &in_flight, sender),
        write_side(shared, direction, sink, &budget, &in_flight, receiver)
    )?;
    Ok(())
}

async fn read_side(
    shared: &Shared,
    direction: Direction,
    source: &mut OwnedReadHalf,
    budget: &Semaphore,
    in_flight: &InFlight<'_>,
    queue: mpsc::Sender<Chunk>,
) -> io::Result<()> {
    let mut faults = shared.faults.subscribe();
    let mut buffer = vec![0; CHUNK_BYTES_MAX];
    let mut last_due = Instant::now();
    loop {
        wait_uncut(&mut faults, direction).await?;
        source.readable().await?;
        // The cut may have started while waiting for data. Checking it right before reading, with no await
        // in between, guarantees that nothing is read once `set_faults` has returned with a cut.
        let current = faults.borrow().clone();
        if current.is_cut(direction) {
            continue;
        }
        let length = match source.try_read(&mut buffer) {
            Ok(length) => length,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        };
        let read_at = Instant::now();
        in_flight.add(length);
        let jitter_ms = if current.jitter_ms == 0 { 0 } else { rand::rng().random_range(0..=current.jitter_ms) };
        // A chunk is never due before the one ahead of it, so jitter cannot reorder bytes; it only bunches
        // them, as a real queue behind a slow packet does.
        let due = cmp::max(last_due, read_at + Duration::from_millis(current.delay_ms.saturating_add(jitter_ms)));
        last_due = due;
        // The assertion next to `CHUNK_OVERHEAD_BYTES` makes this conversion lossless.
        let cost = (length + CHUNK_OVERHEAD_BYTES) as u32;
        // Waiting for budget stops the reading, and so makes the sender feel a full queue as back-pressure.
        budget.acquire_many(cost).await.map_err(|_| io::Error::other("queue budget closed"))?.forget();
        let data = if length == 0 { None } else { Some(buffer[..length].to_vec()) };
        if queue.send(Chunk { due, data, cost }).await.is_err() {
            // The writer only stops early with an error, which ends the whole connection anyway.
            return Ok(());
        }
        if length == 0 {
            return Ok(());
        }
    }
}

async fn write_side(
    shared: &Shared,
    direction: Direction,
    sink: &mut OwnedWriteHalf,
    budget: &Semaphore,
    in_flight: &InFlight<'_>,
    mut queue: mpsc::Receiver<Chunk>,
) -> io::Result<()> {
    let mut faults = shared.faults.subscribe();
    let bytes_written = match direction {
        Direction::Forward => &shared.counters.bytes_forward,
        Direction::Backward => &shared.counters.bytes_backward,
    };
    while let Some(chunk) = queue.recv().await {
        if chunk.due > Instant::now() {
            tokio::time::sleep_until(chunk.due).await;
        }
        let Some(data) = chunk.data else {
            // The end of stream is passed on as a FIN, which a cut holds back like data. `shutdown` completes
            // without waiting, so the cut cannot start between the check and the FIN.
            wait_uncut(&mut faults, direction).await?;
            sink.shutdown().await?;
            return Ok(());
        };
        let mut written = 0;
        while written < data.len() {
            wait_uncut(&mut faults, direction).await?;
            sink.writable().await?;
            // As in the reader, the cut is checked right before writing so that nothing passes once it is set.
            if faults.borrow().is_cut(direction) {
                continue;
            }
            match sink.try_write(&data[written..]) {
                Ok(length) => {
                    written += length;
                    bytes_written.fetch_add(length as u64, Ordering::Relaxed);
                    in_flight.sub(length);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
        budget.add_permits(chunk.cost as usize);
    }
    Ok(())
}
