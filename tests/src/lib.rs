//! Helpers for tests that run real `geostore` processes.
//!
//! Every process started here is killed when its handle is dropped, so a failing test leaves nothing
//! behind. Nodes listen on port 0 and report the port they got on stdout.
//!
//! Tests wait for state, not for time: [`wait_until`] polls what a node exposes (its status, its
//! metrics through [`metric`], a lock's queue) until a condition holds. A check that something did *not*
//! happen first waits for a sign that it had its chance (a collector pass counted, a cursor past the
//! point), then asserts. Sleeps remain only where a test models time passing (a lease running out,
//! a fault lasting a while, a holder keeping a lock for a moment), each with a comment saying so.

use std::fmt::Debug;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use geostore_node::topology::{Topology, direct};

/// How long a node may take to open its store and start listening.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `geostore` binary built alongside these tests (`cargo build --workspace --bins` builds it; the
/// project's test script does that first).
pub fn geostore_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GEOSTORE_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("a test runs from target/<profile>/deps");
    let bin = profile_dir.join("geostore");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (or set GEOSTORE_BIN)",
        bin.display()
    );
    bin
}

/// How often [`wait_until`] checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` every 50 ms until it returns `Ok`, and returns what it returned. While the condition
/// does not hold, `check` returns `Err` with what it observed instead. If `timeout` passes first, panics
/// with a message naming `what` was awaited and the last observed value. `check` runs at least once; a
/// slow check (a call that itself times out) counts against `timeout`.
pub async fn wait_until<T, Observed, Check, Checking>(what: &str, timeout: Duration, mut check: Check) -> T
where
    Check: FnMut() -> Checking,
    Checking: Future<Output = Result<T, Observed>>,
    Observed: Debug,
{
    let deadline = Instant::now() + timeout;
    loop {
        let observed = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}; last observed: {observed:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of one sample in the Prometheus text that a node serves at `/metrics` on its HTTP side port
/// `http` (`http://HOST:PORT`, as in [`NodeProcess::http`]). `series` is the sample's name with its labels
/// exactly as the node prints them, e.g. `geostore_gc_passes_total` or
/// `geostore_replicated_records_total{peer="a"}`. Errors (as text, for [`wait_until`]) if the port does
/// not answer or the sample is not there (a labelled counter appears once it is first counted).
pub async fn metric(http: &str, series: &str) -> Result<f64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = http.strip_prefix("http://").unwrap_or(http);
    let mut stream = tokio::net::TcpStream::connect(address).await.map_err(|e| format!("metrics at {address}: {e}"))?;
    // HTTP/1.0, so that the reply is not chunked and ends when the server closes the connection.
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("metrics at {address}: {e}"))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.map_err(|e| format!("metrics at {address}: {e}"))?;
    let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(|| format!("metrics at {address}: {reply:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("metrics at {address}: {head}"));
    }
    let line = body
        .lines()
        .find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
        .ok_or_else(|| format!("no sample {series} in the metrics of {address}"))?;
    let value = line[series.len()..].trim();
    value.parse().map_err(|_| format!("sample {series} at {address} is {value:?}, not a number"))
}

/// A running `geostore node` process.
pub struct NodeProcess {
    child: Child,
    /// The gRPC endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The HTTP side port (metrics, health), `http://127.0.0.1:PORT`, if the node was started with
    /// `--http-listen`. A restart gives it a new one if it was asked for port 0.
    pub http: Option<String>,
    pub data_dir: PathBuf,
    listen: String,
    extra_args: Vec<String>,
}

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768 and up by default), so that
/// while a node is down for a restart its port cannot be taken as the local port of some outgoing
/// connection (that happened: a restarted node found its port in use).
const FIXED_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that was free a moment ago (for nodes that must keep their port across restarts).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(FIXED_PORTS.end - FIXED_PORTS.start);
    // Spread by process id, so that test binaries running side by side start in different places.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = FIXED_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIXED_PORTS:?}");
}

impl NodeProcess {
    /// The node's process id (for its CPU time in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a node on 127.0.0.1 port 0 with its data in `data_dir`, plus `extra_args`.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> NodeProcess {
        Self::start_at(data_dir, "127.0.0.1:0", extra_args)
    }

    /// Starts a node listening on `listen` (which it keeps across [`NodeProcess::restart`]).
    pub fn start_at(data_dir: &Path, listen: &str, extra_args: &[&str]) -> NodeProcess {
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        Self::spawn(data_dir.to_path_buf(), listen.to_string(), extra_args)
    }

    fn spawn(data_dir: PathBuf, listen: String, extra_args: Vec<String>) -> NodeProcess {
        let mut child = Command::new(geostore_bin())
            .arg("node")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", &listen])
            .args(&extra_args)
            // GEOSTORE_TEST_LOG (a GEOSTORE_LOG filter) shows more of what the nodes do while debugging a test.
            .env("GEOSTORE_LOG", std::env::var("GEOSTORE_TEST_LOG").unwrap_or_else(|_| "warn,openraft=off".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start geostore");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        // Read the announced addresses, then keep draining stdout so the node never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        let mut endpoint = None;
        let mut http = None;
        let wants_http = extra_args.iter().any(|a| a == "--http-listen");
        while endpoint.is_none() || (wants_http && http.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match receiver.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!("geostore node did not announce its address within {NODE_START_TIMEOUT:?}");
                }
            };
            if let Some(address) = line.strip_prefix("geostore node listening on ") {
                endpoint = Some(format!("http://{address}"));
            } else if let Some(address) = line.strip_prefix("geostore node http on ") {
                http = Some(format!("http://{address}"));
            }
        }
        NodeProcess { child, endpoint: endpoint.expect("checked above"), http, data_dir, listen, extra_args }
    }

    /// Sends SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn pause(&self, paused: bool) {
        let signal = if paused { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill").args([signal, &self.child.id().to_string()]).status();
    }

    /// Kills the node with SIGKILL: no shutdown, no flush.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().map(|status| status.success()).unwrap_or(false)
    }

    /// Starts the node again on the same data directory and flags (it gets a new port).
    pub fn restart(&mut self) {
        self.kill_9();
        let restarted = Self::spawn(self.data_dir.clone(), self.listen.clone(), self.extra_args.clone());
        let old = std::mem::replace(self, restarted);
        drop(old);
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `geostore` binary with `args` and returns (exit code, stdout, stderr).
pub fn geostore(args: &[&str]) -> (i32, String, String) {
    let output =
        Command::new(geostore_bin()).args(args).env_remove("GEOSTORE_ENDPOINTS").output().expect("cannot run geostore");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Several sites, one `geostore node` each, where every node pulls from every other through its own
/// fault proxy: `link(i, j)` is the proxy through which site i pulls from site j.
pub struct SiteMesh {
    pub nodes: Vec<NodeProcess>,
    links: Vec<Vec<Option<geostore_faultproxy::Proxy>>>,
    /// The faults every link has when healed.
    pub healthy: geostore_faultproxy::Faults,
}

impl SiteMesh {
    /// Starts the proxies (with `healthy` faults) and the nodes, in `dir`, with `extra_args` for every node.
    pub async fn start(
        dir: &Path,
        sites: &[&str],
        healthy: geostore_faultproxy::Faults,
        extra_args: &[&str],
    ) -> SiteMesh {
        Self::start_with(dir, sites, healthy, extra_args, false, &[]).await
    }

    /// [`SiteMesh::start`], and with `lock_group` the nodes also form a lock group (node i has id i + 1;
    /// all voters), its Raft traffic through the same proxies as replication. `site_args[i]`, if given,
    /// are more flags for site i's node only.
    pub async fn start_with(
        dir: &Path,
        sites: &[&str],
        healthy: geostore_faultproxy::Faults,
        extra_args: &[&str],
        lock_group: bool,
        site_args: &[&[&str]],
    ) -> SiteMesh {
        let ports: Vec<u16> = sites.iter().map(|_| free_port()).collect();
        let mut links = Vec::new();
        for from in 0..sites.len() {
            let mut row = Vec::new();
            for (to, port) in ports.iter().enumerate() {
                if from == to {
                    row.push(None);
                    continue;
                }
                let upstream = format!("127.0.0.1:{port}").parse().expect("a socket address");
                let proxy =
                    geostore_faultproxy::Proxy::start("127.0.0.1:0".parse().expect("a socket address"), upstream)
                        .await
                        .expect("cannot start a proxy");
                proxy.set_faults(healthy.clone());
                row.push(Some(proxy));
            }
            links.push(row);
        }
        let topology = Topology::one_node_per_site(sites, |i| format!("http://127.0.0.1:{}", ports[i]));
        let through_proxy = |from: usize, to: usize| {
            format!("http://{}", links[from][to].as_ref().expect("a link between two sites").local_addr())
        };
        let mut nodes = Vec::new();
        for (i, site) in sites.iter().enumerate() {
            // With a lock group the node is told the member list; without, only its site and peers.
            let mut args = if lock_group {
                topology.flags(i, &through_proxy)
            } else {
                topology.replication_flags(i, &through_proxy)
            };
            args.extend(extra_args.iter().map(|a| a.to_string()));
            args.extend(site_args.get(i).into_iter().flat_map(|more| more.iter().map(|a| a.to_string())));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(NodeProcess::start_at(&dir.join(site), &format!("127.0.0.1:{}", ports[i]), &args));
        }
        SiteMesh { nodes, links, healthy }
    }

    pub fn link(&self, from: usize, to: usize) -> &geostore_faultproxy::Proxy {
        self.links[from][to].as_ref().expect("a link between two sites")
    }

    /// Cuts both links between sites `x` and `y`, both directions.
    pub fn cut_both_ways(&self, x: usize, y: usize) {
        let cut = geostore_faultproxy::Faults { cut_forward: true, cut_backward: true, ..self.healthy.clone() };
        self.link(x, y).set_faults(cut.clone());
        self.link(y, x).set_faults(cut);
    }

    /// Cuts site `x` off from every other site.
    pub fn isolate(&self, x: usize) {
        for other in (0..self.nodes.len()).filter(|other| *other != x) {
            self.cut_both_ways(x, other);
        }
    }

    /// Gives every link its healthy faults again.
    pub fn heal_all(&self) {
        for proxy in self.links.iter().flatten().flatten() {
            proxy.set_faults(self.healthy.clone());
        }
    }
}

/// Raft timing for tests on loopback: elections within about a second.
pub const FAST_RAFT: [&str; 6] =
    ["--raft-heartbeat-ms", "100", "--raft-election-timeout-min-ms", "500", "--raft-election-timeout-max-ms", "1000"];

/// Three nodes in sites a, b and c on loopback, replicating with each other and forming a lock group
/// (ids 1 to 3, all voters), each on a fixed port so it can be restarted at the same address.
pub fn lock_cluster(dir: &Path, extra_args: &[&str]) -> Vec<NodeProcess> {
    let sites = ["a", "b", "c"];
    let ports: Vec<u16> = sites.iter().map(|_| free_port()).collect();
    let topology = Topology::one_node_per_site(&sites, |i| format!("http://127.0.0.1:{}", ports[i]));
    let mut nodes = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let mut args = topology.flags(i, &direct(&topology));
        args.extend(FAST_RAFT.iter().map(|a| a.to_string()));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(NodeProcess::start_at(&dir.join(site), &format!("127.0.0.1:{}", ports[i]), &args));
    }
    nodes
}

/// The lock group as `endpoint` sees it.
pub async fn group_status(endpoint: &str) -> Option<geostore_proto::v1::LockGroupStatus> {
    let mut client = geostore_proto::v1::raft_client::RaftClient::connect(endpoint.to_string()).await.ok()?;
    let request = tonic::Request::new(geostore_proto::v1::GroupStatusRequest::default());
    Some(client.group_status(request).await.ok()?.into_inner())
}

/// Waits until the nodes among `endpoints` that answer agree on a leader (at least a majority of them,
/// in the same term), and returns the leader's id (1-based).
pub async fn wait_for_leader(endpoints: &[String], within: Duration) -> u64 {
    wait_until("a lock group leader that a majority agrees on, as (leader, term) per node", within, || async {
        let mut views = Vec::new();
        for endpoint in endpoints {
            if let Some(status) = group_status(endpoint).await {
                views.push((status.leader, status.term));
            }
        }
        let majority = endpoints.len() / 2 + 1;
        if views.len() >= majority && views[0].0 != 0 && views.iter().all(|view| *view == views[0]) {
            Ok(views[0].0)
        } else {
            Err(views)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_returns_the_value_once_the_condition_holds() {
        let mut polls = 0;
        let value = wait_until("the third poll", Duration::from_secs(10), || {
            polls += 1;
            let seen = polls;
            async move { if seen >= 3 { Ok(seen * 10) } else { Err(seen) } }
        })
        .await;
        assert_eq!(value, 30);
    }

    #[tokio::test]
    #[should_panic(expected = "for a condition that never holds; last observed: \"still no\"")]
    async fn wait_until_names_what_it_waited_for_and_the_last_value_when_time_runs_out() {
        wait_until("a condition that never holds", Duration::from_millis(200), || async { Err::<(), _>("still no") })
            .await;
    }
}
