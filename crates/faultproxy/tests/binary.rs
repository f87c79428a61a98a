//! The `geostore-faultproxy` binary: it prints its addresses, forwards, obeys its control API and stops
//! cleanly on SIGTERM.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

/// How long any step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {PATIENCE:?}"),
    }
}

#[tokio::test]
async fn binary_runs_links_and_control() {
    // A one-connection echo upstream, enough for one round trip.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let mut buffer = [0; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(length) => stream.write_all(&buffer[..length]).await.unwrap(),
            }
        }
    });

    let mut child = Command::new(env!("CARGO_BIN_EXE_geostore-faultproxy"))
        .args(["--link", &format!("wan=127.0.0.1:0={upstream_addr}"), "--control", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let link_line = within("link line", lines.next_line()).await.unwrap().expect("a link line");
    let control_line = within("control line", lines.next_line()).await.unwrap().expect("a control line");

    let link = link_line.strip_prefix("link wan listening on ").unwrap_or_else(|| panic!("{link_line:?}"));
    let (listen, to) = link.split_once(" -> ").unwrap_or_else(|| panic!("{link_line:?}"));
    assert_eq!(to, upstream_addr.to_string());
    let listen: SocketAddr = listen.parse().unwrap();
    let control: SocketAddr =
        control_line.strip_prefix("control on ").unwrap_or_else(|| panic!("{control_line:?}")).parse().unwrap();

    let body = r#"{"delay_ms": 30}"#;
    let mut http = within("connect to control", TcpStream::connect(control)).await.unwrap();
    let request = format!(
        "PUT /links/wan/faults HTTP/1.1\r\nHost: {control}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    within("control response", http.read_to_string(&mut response)).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""delay_ms":30"#), "{response}");

    let mut stream = within("connect to the link", TcpStream::connect(listen)).await.unwrap();
    let start = std::time::Instant::now();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0; 4];
    within("round trip", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"ping");
    assert!(start.elapsed() >= Duration::from_millis(60), "round trip took {:?}", start.elapsed());

    let pid = child.id().expect("the child is running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    let status = within("exit on SIGTERM", child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    let mut rest = [0; 1];
    let after = within("link closed", stream.read(&mut rest)).await;
    assert!(matches!(after, Ok(0) | Err(_)), "the link still forwards after exit: {after:?}");
    echo.abort();
}

#[tokio::test]
async fn binary_rejects_malformed_links() {
    for link in
        ["wan=127.0.0.1:0", "=127.0.0.1:0=127.0.0.1:1", "w/n=127.0.0.1:0=127.0.0.1:1", "wan=nowhere=127.0.0.1:1"]
    {
        let output = within(
            "rejected invocation",
            Command::new(env!("CARGO_BIN_EXE_geostore-faultproxy"))
                .args(["--link", link, "--control", "127.0.0.1:0"])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap();
        assert!(!output.status.success(), "--link {link} was accepted");
        assert!(output.stdout.is_empty(), "--link {link} printed {:?}", String::from_utf8_lossy(&output.stdout));
    }
}
