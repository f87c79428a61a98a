//! A Jepsen-style lock-set test with real processes: three sites (every link through the fault proxy),
//! two `lockset-worker` processes per site. Each worker repeatedly takes one global lock, reads a register
//! holding a set of elements (after the previous holder's causal token), adds its own unique element,
//! writes the register back fenced with its token, and releases.
//!
//! Meanwhile: workers are paused with SIGSTOP past their lease (right between their read and their
//! write, and at random), a whole site is isolated, the lock group's leader is killed and restarted, and
//! one node's clock runs 400 ms ahead (through the injected clock).
//!
//! Checks: every element whose worker saw its write and release succeed is in the final value in every
//! site; per site, accepted fenced writes have non-decreasing tokens (in the site's log order); stale
//! writes were refused at least once. The same workload without fences loses elements: the control.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use geostore_client::{Client, Value};
use geostore_faultproxy::Faults;
use geostore_tests::{FAST_RAFT, SiteMesh, group_status, wait_for_leader, wait_until};

const SITES: [&str; 3] = ["a", "b", "c"];
const KEY: &str = "lockset:elements";
const TTL_MS: u64 = 1000;

fn worker_bin() -> std::path::PathBuf {
    geostore_tests::geostore_bin().with_file_name("lockset-worker")
}

/// A worker process; killed when dropped.
struct Worker {
    child: Child,
}

impl Worker {
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill").args([signal, &self.child.id().to_string()]).status();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line a worker printed, with the worker's index.
type Line = (usize, serde_json::Value);

fn start_workers(mesh: &SiteMesh, fenced: bool, lines: &mpsc::Sender<Line>) -> Vec<Worker> {
    let mut workers = Vec::new();
    for index in 0..6 {
        let site = index % 3;
        let mut command = Command::new(worker_bin());
        command
            .args(["--endpoint", &mesh.nodes[site].endpoint, "--name", &format!("w{index}")])
            .args(["--ttl-ms", &TTL_MS.to_string()])
            .stdout(Stdio::piped());
        if !fenced {
            command.arg("--no-fence");
        }
        let mut child = command.spawn().expect("cannot start lockset-worker");
        let stdout = child.stdout.take().expect("piped");
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = lines.send((index, value));
                }
            }
        });
        workers.push(Worker { child });
    }
    workers
}

/// What the workers reported.
#[derive(Default)]
struct History {
    /// Element -> (outcome, token, site, sequence in that site's log).
    done: BTreeMap<String, (String, u64, String, u64)>,
    stale_fence_refusals: usize,
}

impl History {
    fn record(&mut self, line: &serde_json::Value) {
        if line["event"] != "done" {
            return;
        }
        let text = |field: &str| line[field].as_str().unwrap_or_default().to_string();
        let number = |field: &str| line[field].as_u64().unwrap_or_default();
        if line["stale_fence"] == true {
            self.stale_fence_refusals += 1;
        }
        self.done.insert(text("element"), (text("outcome"), number("token"), text("site"), number("sequence")));
    }

    fn acknowledged(&self) -> BTreeSet<String> {
        self.done.iter().filter(|(_, (outcome, ..))| outcome == "ok").map(|(element, _)| element.clone()).collect()
    }
}

/// Stops worker `index` with SIGSTOP right after its next read (before it writes); false if it did not
/// read within 10 s.
fn stop_after_next_read(workers: &[Worker], lines: &mpsc::Receiver<Line>, history: &mut History, index: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok((from, line)) = lines.recv_timeout(Duration::from_millis(100)) else { continue };
        history.record(&line);
        if from == index && line["event"] == "read" {
            workers[index].signal("-STOP");
            return true;
        }
    }
    false
}

/// Pauses worker `index` right after its next read (before it writes) for longer than its lease.
fn pause_between_read_and_write(
    workers: &[Worker],
    lines: &mpsc::Receiver<Line>,
    history: &mut History,
    index: usize,
    pause: Duration,
) -> bool {
    if !stop_after_next_read(workers, lines, history, index) {
        return false;
    }
    drain_for(lines, history, pause);
    workers[index].signal("-CONT");
    true
}

/// The last word goes to a stale holder: worker `index` is paused between its read and its write past its
/// lease while the others go on; then every other worker stops, and the paused one resumes and writes
/// what it read before the others' work. Consumes the workers.
fn last_write_by_a_stale_holder(
    mut workers: Vec<Worker>,
    lines: &mpsc::Receiver<Line>,
    history: &mut History,
    index: usize,
) {
    assert!(stop_after_next_read(&workers, lines, history, index), "worker {index} never read");
    let acknowledged_before = history.acknowledged().len();
    drain_for(lines, history, Duration::from_millis(2500));
    assert!(history.acknowledged().len() > acknowledged_before, "nobody made progress while the holder was paused");
    let stale = workers.remove(index);
    drop(workers);
    drain_for(lines, history, Duration::from_millis(200));
    stale.signal("-CONT");
    // Its write and failed release take well under this.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok((from, line)) = lines.recv_timeout(Duration::from_millis(50)) {
            history.record(&line);
            if from == index && line["event"] == "done" {
                break;
            }
        }
    }
    drop(stale);
}

/// Records what the workers report for `duration`: the workload runs for that long under whatever fault
/// is in force (time passing is the point here, not a state to wait for).
fn drain_for(lines: &mpsc::Receiver<Line>, history: &mut History, duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if let Ok((_, line)) = lines.recv_timeout(Duration::from_millis(50)) {
            history.record(&line);
        }
    }
}

/// The register's elements in every site, once all sites agree (or panics after a while).
async fn converged_value(mesh: &SiteMesh) -> BTreeSet<String> {
    wait_until("every site to hold the same elements", Duration::from_secs(60), || async {
        let mut values = Vec::new();
        for node in &mesh.nodes {
            let client = Client::connect(&[&node.endpoint]).await.expect("connects");
            let value = match client.get(KEY).await.expect("reads") {
                Some(found) => match found.value {
                    Value::Register(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    other => panic!("the register holds {other:?}"),
                },
                None => String::new(),
            };
            values.push(value);
        }
        if values.windows(2).all(|pair| pair[0] == pair[1]) {
            Ok(values[0].split(',').filter(|e| !e.is_empty()).map(str::to_string).collect())
        } else {
            Err(values)
        }
    })
    .await
}

async fn start_mesh(dir: &std::path::Path) -> SiteMesh {
    let healthy = Faults { delay_ms: 5, ..Faults::default() };
    // Site c's clock runs 400 ms ahead (within the 500 ms drift replication accepts).
    let site_args: [&[&str]; 3] = [&[], &[], &["--clock-offset-ms", "400"]];
    let mesh = SiteMesh::start_with(dir, &SITES, healthy, &FAST_RAFT, true, &site_args).await;
    let endpoints: Vec<String> = mesh.nodes.iter().map(|n| n.endpoint.clone()).collect();
    wait_for_leader(&endpoints, Duration::from_secs(30)).await;
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fenced_lock_set_loses_no_acknowledged_element_under_pauses_partitions_and_leader_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut mesh = start_mesh(dir.path()).await;
    let (sender, lines) = mpsc::channel();
    let workers = start_workers(&mesh, true, &sender);
    let mut history = History::default();
    drain_for(&lines, &mut history, Duration::from_secs(3));

    // Holders paused between read and write, past their lease: their writes must be refused.
    for index in [0, 4, 2] {
        assert!(pause_between_read_and_write(&workers, &lines, &mut history, index, Duration::from_millis(2500)));
        drain_for(&lines, &mut history, Duration::from_millis(500));
    }
    // Site b isolated for a while, with a random pause in the middle.
    mesh.isolate(1);
    drain_for(&lines, &mut history, Duration::from_secs(2));
    workers[3].signal("-STOP");
    drain_for(&lines, &mut history, Duration::from_secs(2));
    workers[3].signal("-CONT");
    drain_for(&lines, &mut history, Duration::from_secs(2));
    mesh.heal_all();
    drain_for(&lines, &mut history, Duration::from_secs(3));
    // The lock group's leader killed, and restarted a little later.
    let leader = group_status(&mesh.nodes[0].endpoint).await.map(|s| s.leader).unwrap_or(0);
    if leader > 0 {
        mesh.nodes[leader as usize - 1].kill_9();
        drain_for(&lines, &mut history, Duration::from_secs(3));
        mesh.nodes[leader as usize - 1].restart();
    }
    drain_for(&lines, &mut history, Duration::from_secs(4));
    // One more holder paused past its lease, in the site whose clock is ahead.
    assert!(pause_between_read_and_write(&workers, &lines, &mut history, 5, Duration::from_millis(2500)));
    drain_for(&lines, &mut history, Duration::from_secs(2));
    let refusals_before = history.stale_fence_refusals;
    last_write_by_a_stale_holder(workers, &lines, &mut history, 1);
    assert!(history.stale_fence_refusals > refusals_before, "the stale holder's last write was not refused");

    let final_value = converged_value(&mesh).await;
    let acknowledged = history.acknowledged();
    let missing: Vec<&String> = acknowledged.difference(&final_value).collect();
    eprintln!(
        "fenced: {} elements acknowledged, {} in the final value, {} stale writes refused, {} attempts",
        acknowledged.len(),
        final_value.len(),
        history.stale_fence_refusals,
        history.done.len()
    );
    assert!(acknowledged.len() >= 10, "too little progress: {} acknowledged", acknowledged.len());
    assert!(missing.is_empty(), "acknowledged elements lost: {missing:?}");
    assert!(history.stale_fence_refusals >= 1, "no stale write was refused: the fence was never exercised");
    // Per site, accepted fenced writes are in non-decreasing token order (the site's log order).
    let mut by_site: BTreeMap<&str, Vec<(u64, u64, &String)>> = BTreeMap::new();
    for (element, (outcome, token, site, sequence)) in &history.done {
        if (outcome == "ok" || outcome == "unknown") && !site.is_empty() {
            by_site.entry(site.as_str()).or_default().push((*sequence, *token, element));
        }
    }
    for (site, mut writes) in by_site {
        writes.sort();
        for pair in writes.windows(2) {
            assert!(
                pair[0].1 <= pair[1].1,
                "site {site} accepted token {} after token {}: {pair:?}",
                pair[1].1,
                pair[0].1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_fences_the_same_workload_loses_acknowledged_elements() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = start_mesh(dir.path()).await;
    let (sender, lines) = mpsc::channel();
    let workers = start_workers(&mesh, false, &sender);
    let mut history = History::default();
    drain_for(&lines, &mut history, Duration::from_secs(3));
    for index in [0, 4] {
        assert!(pause_between_read_and_write(&workers, &lines, &mut history, index, Duration::from_millis(2500)));
        drain_for(&lines, &mut history, Duration::from_millis(500));
    }
    last_write_by_a_stale_holder(workers, &lines, &mut history, 1);
    let final_value = converged_value(&mesh).await;
    let acknowledged = history.acknowledged();
    let missing: Vec<&String> = acknowledged.difference(&final_value).collect();
    eprintln!("unfenced: {} acknowledged, {} lost: {missing:?}", acknowledged.len(), missing.len());
    assert!(!missing.is_empty(), "the unfenced control lost nothing: the workload does not exercise the fence");
}
