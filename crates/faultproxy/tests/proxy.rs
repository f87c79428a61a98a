//! The proxy over real sockets on 127.0.0.1. Timing is only ever checked as a generous lower bound (a delay
//! at least happened) or as a bound far from the expected value (pipelining is not one chunk per delay), and
//! a stall is checked as "nothing within 300 ms"; everything else waits for a condition, with a timeout
//! that turns a hang into a failure.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geostore_faultproxy::{Faults, LinkState, Proxy, serve_control};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long any step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long "nothing happens" is watched for when a cut must stall a connection.
const STALL_WINDOW: Duration = Duration::from_millis(300);

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {PATIENCE:?}"),
    }
}

/// Polls `condition` until it holds, failing the test after `PATIENCE`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not true within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Sends back everything it receives, and closes its side after the client's end of stream.
    Echo,
    /// Only records what it receives.
    Sink,
}

/// An upstream server that records every byte it receives (over all its connections) and the number of
/// connections it accepted. Dropping it stops it and closes its connections.
struct Upstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind(localhost()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let task = tokio::spawn({
            let received = received.clone();
            let connections = connections.clone();
            async move {
                // The connection tasks live in this set, so aborting the accept task aborts them too.
                let mut tasks = JoinSet::new();
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else { continue };
                    *connections.lock().unwrap() += 1;
                    let received = received.clone();
                    tasks.spawn(async move {
                        let mut buffer = vec![0; 64 * 1024];
                        loop {
                            let length = match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(length) => length,
                            };
                            received.lock().unwrap().extend_from_slice(&buffer[..length]);
                            if mode == Mode::Echo && stream.write_all(&buffer[..length]).await.is_err() {
                                return;
                            }
                        }
                        let _ = stream.shutdown().await;
                    });
                }
            }
        });
        Upstream { addr, received, connections, task }
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    fn received_len(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(proxy: &Proxy) -> TcpStream {
    let stream = within("connect", TcpStream::connect(proxy.local_addr())).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `message` and reads back as many bytes, which an echo upstream returns unchanged.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    within("round trip", async {
        stream.write_all(message).await.unwrap();
        let mut back = vec![0; message.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message);
    })
    .await;
}

/// Checks that nothing can be read from `stream` for `STALL_WINDOW`: no data, no end of stream, no error.
async fn assert_stalled(stream: &mut TcpStream) {
    let mut byte = [0; 1];
    if let Ok(read) = tokio::time::timeout(STALL_WINDOW, stream.read(&mut byte)).await {
        panic!("the connection should stall, but read returned {read:?}");
    }
}

/// Waits until the connection is reset or closed: a read returns an error or the end of stream.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buffer = [0; 1024];
    within("connection closed", async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn data_passes_unchanged() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let mut payload = vec![0; 1024 * 1024];
    rand::rng().fill_bytes(&mut payload);

    let (mut read, mut write) = connect(&proxy).await.into_split();
    let writer = tokio::spawn({
        let payload = payload.clone();
        async move {
            write.write_all(&payload).await.unwrap();
            // The end of stream must pass through too: the echo closes its side only once it sees it.
            write.shutdown().await.unwrap();
        }
    });
    let mut back = Vec::new();
    within("echo of 1 MiB", read.read_to_end(&mut back)).await.unwrap();
    within("writer", writer).await.unwrap();
    assert!(back == payload, "the echo differs from what was sent ({} bytes back)", back.len());
    assert_eq!(upstream.received(), payload);

    eventually("the connection is closed and counted", || {
        let stats = proxy.stats();
        stats.connections_open == 0 && stats.bytes_backward == payload.len() as u64
    })
    .await;
    let stats = proxy.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.bytes_forward, payload.len() as u64);
    assert_eq!(stats.resets, 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn delay_adds_to_each_direction() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    proxy.set_faults(Faults::delay(40));
    assert_eq!(proxy.faults(), Faults::delay(40));
    let mut stream = connect(&proxy).await;

    for _ in 0..3 {
        let start = Instant::now();
        round_trip(&mut stream, b"ping").await;
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(80), "a round trip with 40 ms each way took {elapsed:?}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn delay_keeps_many_chunks_in_flight() {
    const REQUESTS: u64 = 200;
    const DELAY_MS: u64 = 50;
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    proxy.set_faults(Faults::delay(DELAY_MS));
    let (mut read, mut write) = connect(&proxy).await.into_split();

    let start = Instant::now();
    // Spacing the requests makes each its own chunk, so they are in flight at once only if the proxy keeps
    // many chunks queued rather than delaying one at a time.
    let writer = tokio::spawn(async move {
        for request in 0..REQUESTS {
            write.write_all(&request.to_be_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        write
    });
    within("pipelined responses", async {
        for expected in 0..REQUESTS {
            let mut response = [0; 8];
            read.read_exact(&mut response).await.unwrap();
            assert_eq!(u64::from_be_bytes(response), expected);
        }
    })
    .await;
    let elapsed = start.elapsed();
    let write = within("writer", writer).await.unwrap();

    let serial = Duration::from_millis(REQUESTS * 2 * DELAY_MS);
    assert!(elapsed >= Duration::from_millis(2 * DELAY_MS), "{REQUESTS} requests took only {elapsed:?}");
    assert!(elapsed < serial / 2, "{REQUESTS} pipelined requests took {elapsed:?}, one round trip each is {serial:?}");
    drop((read, write));
    proxy.shutdown().await;
}

#[tokio::test]
async fn jitter_never_reorders_bytes() {
    const MESSAGES: u32 = 300;
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    proxy.set_faults(Faults { delay_ms: 5, jitter_ms: 30, ..Faults::default() });
    let (mut read, mut write) = connect(&proxy).await.into_split();

    let writer = tokio::spawn(async move {
        for message in 0..MESSAGES {
            write.write_all(&message.to_be_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        write
    });
    within("jittered echo", async {
        for expected in 0..MESSAGES {
            let mut message = [0; 4];
            read.read_exact(&mut message).await.unwrap();
            assert_eq!(u32::from_be_bytes(message), expected);
        }
    })
    .await;
    let write = within("writer", writer).await.unwrap();
    drop((read, write));
    proxy.shutdown().await;
}

#[tokio::test]
async fn cut_forward_stalls_until_healed() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let mut stream = connect(&proxy).await;
    round_trip(&mut stream, b"before the cut;").await;

    proxy.set_faults(Faults { cut_forward: true, ..Faults::default() });
    let held: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_be_bytes()).collect();
    within("write during the cut", stream.write_all(&held)).await.unwrap();
    assert_stalled(&mut stream).await;
    assert_eq!(upstream.received(), b"before the cut;", "data crossed a cut link");
    assert_eq!(proxy.stats().connections_open, 1, "a cut must not close the connection");

    proxy.set_faults(Faults::default());
    let mut back = vec![0; held.len()];
    within("echo after healing", stream.read_exact(&mut back)).await.unwrap();
    assert!(back == held, "the held data came back changed");
    assert_eq!(upstream.received(), [b"before the cut;".as_slice(), &held].concat());
    drop(stream);
    proxy.shutdown().await;
}

#[tokio::test]
async fn cut_forward_builds_back_pressure() {
    const WRITE_BYTES: usize = 64 * 1024;
    const CAP_BYTES: usize = 256 * 1024 * 1024;
    let upstream = Upstream::start(Mode::Sink).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let pattern: Vec<u8> = (0..WRITE_BYTES + 251).map(|i| (i % 251) as u8).collect();
    let mut stream = connect(&proxy).await;
    within("first byte", stream.write_all(&pattern[..1])).await.unwrap();
    eventually("the upstream has the first byte", || upstream.received_len() == 1).await;

    proxy.set_faults(Faults { cut_forward: true, ..Faults::default() });
    // Writes fill the socket buffers and must then block, because the proxy stops reading; a proxy that
    // read into memory instead would take all CAP_BYTES. A single `write` is cancel-safe, so a timed-out
    // one has written nothing and `total` stays exact.
    let mut total = 1;
    let mut stalled = false;
    while total < CAP_BYTES {
        let chunk = &pattern[total % 251..][..WRITE_BYTES];
        match tokio::time::timeout(Duration::from_millis(500), stream.write(chunk)).await {
            Ok(written) => total += written.unwrap(),
            Err(_) => {
                stalled = true;
                break;
            }
        }
    }
    assert!(stalled, "wrote {total} bytes into a cut link without blocking");
    assert_eq!(upstream.received_len(), 1, "data crossed a cut link");
    let stats = proxy.stats();
    assert_eq!(stats.bytes_forward, 1);
    assert_eq!(stats.bytes_in_flight, 0, "the proxy read from a cut direction instead of leaving the data unread");

    proxy.set_faults(Faults::default());
    eventually("the held data reaches the upstream", || upstream.received_len() >= total).await;
    let received = upstream.received();
    assert_eq!(received.len(), total);
    assert!(received.iter().enumerate().all(|(i, byte)| *byte == (i % 251) as u8), "the held data changed");
    drop(stream);
    proxy.shutdown().await;
}

#[tokio::test]
async fn cut_holds_data_already_in_flight() {
    const DELAY: Duration = Duration::from_millis(1500);
    let upstream = Upstream::start(Mode::Sink).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let mut stream = connect(&proxy).await;
    within("first byte", stream.write_all(b"<")).await.unwrap();
    eventually("the upstream has the first byte", || upstream.received_len() == 1).await;

    proxy.set_faults(Faults::delay(DELAY.as_millis() as u64));
    let sent_at = Instant::now();
    within("write", stream.write_all(b"in flight")).await.unwrap();
    // The data is read at once and then waits out its delay, which leaves ample time to cut the link.
    eventually("the proxy has read the data", || proxy.stats().bytes_in_flight == 9).await;
    proxy.set_faults(Faults { cut_forward: true, ..Faults::delay(DELAY.as_millis() as u64) });
    assert!(sent_at.elapsed() < DELAY, "the test was too slow to cut the link before the data was due");

    // Past the data's due time, the cut must still hold it.
    tokio::time::sleep_until((sent_at + DELAY + STALL_WINDOW).into()).await;
    assert_eq!(upstream.received(), b"<", "data in flight crossed the cut");
    assert_eq!(proxy.stats().bytes_in_flight, 9);

    proxy.set_faults(Faults::default());
    eventually("the held data reaches the upstream", || upstream.received_len() == 10).await;
    assert_eq!(upstream.received(), b"<in flight");
    assert_eq!(proxy.stats().bytes_in_flight, 0);
    drop(stream);
    proxy.shutdown().await;
}

#[tokio::test]
async fn cut_backward_is_one_way() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let mut stream = connect(&proxy).await;
    round_trip(&mut stream, b"hello;").await;

    proxy.set_faults(Faults { cut_backward: true, ..Faults::default() });
    within("write during the cut", stream.write_all(b"one way")).await.unwrap();
    eventually("forward data reaches the upstream", || upstream.received() == b"hello;one way").await;
    assert_stalled(&mut stream).await;
    assert_eq!(proxy.stats().bytes_backward, 6, "data crossed the cut direction");

    proxy.set_faults(Faults::default());
    let mut back = [0; 7];
    within("echo after healing", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"one way");
    drop(stream);
    proxy.shutdown().await;
}

#[tokio::test]
async fn black_hole_holds_new_connections_until_healed() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    proxy.set_faults(Faults::black_hole());

    let mut stream = connect(&proxy).await;
    within("write into the black hole", stream.write_all(b"anyone there?")).await.unwrap();
    assert_stalled(&mut stream).await;
    assert_eq!(upstream.connections(), 0, "a handshake crossed a black-holed link");

    proxy.set_faults(Faults::default());
    let mut back = [0; 13];
    within("echo after healing", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"anyone there?");
    assert_eq!(upstream.connections(), 1);
    drop(stream);
    proxy.shutdown().await;
}

#[tokio::test]
async fn refuse_new_resets_only_new_connections() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let mut old = connect(&proxy).await;
    round_trip(&mut old, b"old").await;

    proxy.set_faults(Faults { refuse_new: true, ..Faults::default() });
    // The kernel completes the handshake before the proxy accepts, so the connect itself may succeed; the
    // refusal shows as a reset right after.
    if let Ok(mut refused) = TcpStream::connect(proxy.local_addr()).await {
        assert_closed(&mut refused).await;
    }
    round_trip(&mut old, b"old still works").await;
    let stats = proxy.stats();
    assert_eq!((stats.connections_accepted, stats.connections_refused), (2, 1));

    proxy.set_faults(Faults::default());
    let mut new = connect(&proxy).await;
    round_trip(&mut new, b"new").await;
    drop((old, new));
    proxy.shutdown().await;
}

#[tokio::test]
async fn reset_connections_closes_open_connections() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let mut first = connect(&proxy).await;
    let mut second = connect(&proxy).await;
    round_trip(&mut first, b"one").await;
    round_trip(&mut second, b"two").await;

    proxy.reset_connections();
    assert_closed(&mut first).await;
    assert_closed(&mut second).await;
    assert_eq!(proxy.stats().resets, 2);
    eventually("no connection open", || proxy.stats().connections_open == 0).await;

    let mut after = connect(&proxy).await;
    round_trip(&mut after, b"after the reset").await;
    drop(after);
    proxy.shutdown().await;
}

#[tokio::test]
async fn reset_reaches_a_cut_connection_with_data_in_flight() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let mut stream = connect(&proxy).await;
    round_trip(&mut stream, b"hello").await;
    proxy.set_faults(Faults::delay(60_000));
    within("write with a long delay", stream.write_all(b"queued")).await.unwrap();
    eventually("the proxy has read the data", || proxy.stats().bytes_in_flight == 6).await;
    proxy.set_faults(Faults { delay_ms: 60_000, ..Faults::black_hole() });
    within("write during the cut", stream.write_all(b"held")).await.unwrap();

    proxy.reset_connections();
    assert_closed(&mut stream).await;
    eventually("the connection is gone and its queue forgotten", || {
        let stats = proxy.stats();
        stats.connections_open == 0 && stats.bytes_in_flight == 0
    })
    .await;
    assert_eq!(upstream.received(), b"hello");
    proxy.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_resets_the_client() {
    // A port that was just free is, for this test's short life, a port nobody listens on.
    let unused = TcpListener::bind(localhost()).await.unwrap();
    let upstream = unused.local_addr().unwrap();
    drop(unused);
    let proxy = Proxy::start(localhost(), upstream).await.unwrap();

    let mut stream = connect(&proxy).await;
    assert_closed(&mut stream).await;
    eventually("no connection open", || proxy.stats().connections_open == 0).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_connections() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let addr = proxy.local_addr();
    let mut stream = connect(&proxy).await;
    round_trip(&mut stream, b"hello").await;

    within("shutdown", proxy.shutdown()).await;
    assert_closed(&mut stream).await;
    let refused = within("connect after shutdown", TcpStream::connect(addr)).await;
    assert!(refused.is_err(), "the proxy still accepts connections after shutdown");
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_link() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let mut stream = connect(&proxy).await;
    round_trip(&mut stream, b"hello").await;

    let clone = proxy.clone();
    drop(proxy);
    round_trip(&mut stream, b"a clone keeps the link").await;
    drop(clone);
    assert_closed(&mut stream).await;
}

/// Sends one HTTP/1.1 request on its own connection and returns the status code and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    within("HTTP request", async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response has a blank line");
        let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("an HTTP status line");
        (status, body.to_owned())
    })
    .await
}

#[tokio::test]
async fn control_api_over_http() {
    let upstream = Upstream::start(Mode::Echo).await;
    let wan = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let lan = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let control = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let links = vec![("wan".to_owned(), wan.clone()), ("lan".to_owned(), lan.clone())];
    let server = tokio::spawn(serve_control(listener, links, async {
        let _ = stopped.await;
    }));

    let (status, body) = http(control, "GET", "/links", "").await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<LinkState> = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = listed.iter().map(|link| link.name.as_str()).collect();
    assert_eq!(names, ["lan", "wan"]);
    assert_eq!(listed[1].listen, wan.local_addr());
    assert_eq!(listed[1].upstream, upstream.addr);
    assert_eq!(listed[1].faults, Faults::default());

    let (status, body) = http(control, "PUT", "/links/wan/faults", r#"{"delay_ms": 25, "cut_backward": true}"#).await;
    assert_eq!(status, 200, "{body}");
    let expected = Faults { delay_ms: 25, cut_backward: true, ..Faults::default() };
    assert_eq!(serde_json::from_str::<LinkState>(&body).unwrap().faults, expected);
    assert_eq!(wan.faults(), expected);
    assert_eq!(lan.faults(), Faults::default(), "the other link changed");

    // A misspelt fault must not silently clear the faults.
    let (status, body) = http(control, "PUT", "/links/wan/faults", r#"{"delay": 5}"#).await;
    assert!((400..500).contains(&status), "a misspelt fault answered {status}: {body}");
    assert_eq!(wan.faults(), expected);
    let (status, _) = http(control, "PUT", "/links/nowhere/faults", "{}").await;
    assert_eq!(status, 404);

    let (status, body) = http(control, "PUT", "/links/wan/faults", "{}").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(wan.faults(), Faults::default());
    let mut stream = connect(&wan).await;
    round_trip(&mut stream, b"hello").await;
    let (status, body) = http(control, "POST", "/links/wan/reset", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<LinkState>(&body).unwrap().stats.resets, 1);
    assert_closed(&mut stream).await;
    let (status, _) = http(control, "POST", "/links/nowhere/reset", "").await;
    assert_eq!(status, 404);

    stop.send(()).unwrap();
    within("control server stops", server).await.unwrap().unwrap();
    wan.shutdown().await;
    lan.shutdown().await;
}

#[tokio::test]
async fn control_rejects_duplicate_link_names() {
    let upstream = Upstream::start(Mode::Echo).await;
    let proxy = Proxy::start(localhost(), upstream.addr).await.unwrap();
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let links = vec![("a".to_owned(), proxy.clone()), ("a".to_owned(), proxy.clone())];
    let served = within("serve_control", serve_control(listener, links, std::future::pending())).await;
    assert_eq!(served.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    proxy.shutdown().await;
}
