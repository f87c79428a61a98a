//! Helpers for tests that run real `geostore` processes.
//!
//! Every process started here is killed when its handle is dropped, so a failing test leaves nothing
//! behind. Nodes listen on port 0 and report the port they got on stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A running `geostore node` process.
pub struct NodeProcess {
    child: Child,
    pub endpoint: String,
    pub http: Option<String>,
    pub data_dir: PathBuf,
    listen: String,
    extra_args: Vec<String>,
}

/// A port on 127.0.0.1 that was free a moment ago (for nodes that must keep their port across restarts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl NodeProcess {
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
            .env("GEOSTORE_LOG", "warn")
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
