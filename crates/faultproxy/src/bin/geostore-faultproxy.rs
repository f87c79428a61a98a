//! Runs fault-injecting links and their HTTP control API until Ctrl-C or SIGTERM.
//!
//! ```text
//! geostore-faultproxy --link us-eu=127.0.0.1:7001=127.0.0.1:6001 --link eu-us=127.0.0.1:7002=127.0.0.1:6002 \
//!     --control 127.0.0.1:7000
//! curl -X PUT -d '{"delay_ms": 40}' -H 'content-type: application/json' 127.0.0.1:7000/links/us-eu/faults
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use geostore_faultproxy::{Proxy, serve_control};
use tokio::net::TcpListener;

/// How long the control API may take to finish its requests when the process stops.
const CONTROL_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A fault-injecting TCP proxy emulating wide-area links (delay, jitter, partitions, resets).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A link as NAME=LISTEN_ADDR=UPSTREAM_ADDR, e.g. us-eu=127.0.0.1:7001=127.0.0.1:6001 (port 0 picks a
    /// free port). NAME may hold letters, digits, '-', '_' and '.'. Repeat for more links.
    #[arg(long = "link", value_name = "NAME=LISTEN=UPSTREAM", value_parser = parse_link, required = true)]
    links: Vec<LinkArg>,

    /// Address of the HTTP control API (GET /links, PUT /links/{name}/faults, POST /links/{name}/reset).
    #[arg(long, value_name = "ADDR")]
    control: SocketAddr,
}

#[derive(Clone, Debug)]
struct LinkArg {
    name: String,
    listen: SocketAddr,
    upstream: SocketAddr,
}

fn parse_link(text: &str) -> Result<LinkArg, String> {
    let parts: Vec<&str> = text.split('=').collect();
    let [name, listen, upstream] = parts[..] else {
        return Err(format!("expected NAME=LISTEN_ADDR=UPSTREAM_ADDR, got {text:?}"));
    };
    // The name is a path segment of the control API, so it is kept to characters that need no escaping.
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!("link name {name:?} must be non-empty letters, digits, '-', '_' or '.'"));
    }
    let listen = listen.parse().map_err(|error| format!("listen address {listen:?}: {error}"))?;
    let upstream = upstream.parse().map_err(|error| format!("upstream address {upstream:?}: {error}"))?;
    Ok(LinkArg { name: name.to_owned(), listen, upstream })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut links = Vec::with_capacity(args.links.len());
    for link in &args.links {
        if links.iter().any(|(name, _)| name == &link.name) {
            bail!("two links are named {:?}", link.name);
        }
        let proxy = Proxy::start(link.listen, link.upstream)
            .await
            .with_context(|| format!("link {}: cannot listen on {}", link.name, link.listen))?;
        links.push((link.name.clone(), proxy));
    }
    let control = TcpListener::bind(args.control)
        .await
        .with_context(|| format!("cannot listen for the control API on {}", args.control))?;

    // Scripts wait for these lines to learn the ports, so they are flushed rather than left in a buffer.
    let mut stdout = std::io::stdout().lock();
    for (name, proxy) in &links {
        writeln!(stdout, "link {name} listening on {} -> {}", proxy.local_addr(), proxy.upstream())?;
    }
    writeln!(stdout, "control on {}", control.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);

    let (stop_control, control_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut control_task = tokio::spawn(serve_control(control, links.clone(), async {
        let _ = control_stopped.await;
    }));
    let outcome = tokio::select! {
        signal = terminated() => signal.context("cannot wait for signals"),
        served = &mut control_task => Err(match served {
            Ok(Ok(())) => anyhow::anyhow!("control API stopped by itself"),
            Ok(Err(error)) => anyhow::Error::new(error).context("control API failed"),
            Err(error) => anyhow::Error::new(error).context("control API task failed"),
        }),
    };
    if !control_task.is_finished() {
        // Letting the control API finish its requests keeps a client that changed faults from seeing an
        // error on the way out, but a client that holds its connection must not keep the process alive.
        let _ = stop_control.send(());
        if tokio::time::timeout(CONTROL_SHUTDOWN_GRACE, &mut control_task).await.is_err() {
            control_task.abort();
        }
    }
    for (_, proxy) in links {
        proxy.shutdown().await;
    }
    outcome
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM, the signals a test harness or script stops us with.
async fn terminated() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
