//! Replication benchmark: three real `geostore node` processes whose links all go through the fault
//! proxy with an added round trip (default 80 ms).
//!
//! 1. Lag: site a takes puts at a steady rate; the lag of each change (origin timestamp to the moment it
//!    becomes visible at b and c, measured by the nodes on one machine clock) is read from their
//!    `geostore_replication_lag_seconds` histograms: p50 and p99, interpolated within buckets.
//! 2. Convergence: site c is cut off from a and b for a while, both sides write distinct keys, then the
//!    links heal; the time until every puller has merged its peer's whole log is reported.
//!
//! Also the nodes' CPU time (user + system, from /proc): idle for `--idle-seconds` before the writes
//! (what the background tasks cost: anti-entropy, trimming, collection, which grow with the partition
//! count), and per write of the steady phase, summed over the three nodes (the origin's write and the two
//! merges).
//!
//! Usage: bench-replication [--rtt-ms 80] [--rate 10000] [--seconds 10] [--partition-seconds 60]
//!        [--partition-keys 100000] [--partitions 64] [--idle-seconds 10]   (run through
//!        scripts/bench-replication, which builds first; --partitions is the nodes' partition count, to
//!        measure what more partitions cost)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use geostore_client::{Client, pb};
use geostore_faultproxy::Faults;
use geostore_tests::SiteMesh;

const SITES: [&str; 3] = ["a", "b", "c"];
/// Puts per Batch call from the load generator.
const BATCH_OPS: usize = 100;

struct Options {
    rtt_ms: u64,
    rate: u64,
    seconds: u64,
    partition_seconds: u64,
    partition_keys: u64,
    partitions: u64,
    idle_seconds: u64,
}

fn options() -> Options {
    let mut options = Options {
        rtt_ms: 80,
        rate: 10_000,
        seconds: 10,
        partition_seconds: 60,
        partition_keys: 100_000,
        partitions: 64,
        idle_seconds: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--rtt-ms" => options.rtt_ms = value,
            "--rate" => options.rate = value,
            "--seconds" => options.seconds = value,
            "--partition-seconds" => options.partition_seconds = value,
            "--partition-keys" => options.partition_keys = value,
            "--partitions" => options.partitions = value,
            "--idle-seconds" => options.idle_seconds = value,
            other => panic!("unknown option {other}"),
        }
    }
    options
}

fn put(key: String) -> pb::WriteOp {
    pb::WriteOp {
        op: Some(pb::write_op::Op::Put(pb::PutRequest {
            key: key.into_bytes(),
            value: vec![b'v'; 100],
            ttl_ms: None,
            fence: None,
        })),
    }
}

/// Writes `count` distinct keys named `prefix:N` at about `rate` per second. Returns the causal token of
/// the last write to each partition.
async fn write_at_rate(client: &Client, prefix: &str, count: u64, rate: u64) -> BTreeMap<u32, pb::CausalToken> {
    let started = Instant::now();
    let mut written = 0;
    let mut last_tokens = BTreeMap::new();
    while written < count {
        let n = (count - written).min(BATCH_OPS as u64);
        let ops = (written..written + n).map(|i| put(format!("{prefix}:{i}"))).collect();
        let results = client.batch(ops).await.expect("batch");
        for result in results {
            let token = result.expect("a put failed").token.expect("a write has a token");
            last_tokens.insert(token.partition, token);
        }
        written += n;
        let due = Duration::from_secs_f64(written as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    last_tokens
}

/// The lag histogram of a node: (upper bound in seconds, cumulative count).
fn lag_histogram(http: &str) -> Vec<(f64, f64)> {
    use std::io::{Read, Write};
    let address = http.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("metrics port");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("geostore_replication_lag_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            Some((bound, count.parse().ok()?))
        })
        .collect()
}

/// The difference of two cumulative histograms (what happened between two readings).
fn since(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let before: BTreeMap<String, f64> = before.iter().map(|(b, c)| (b.to_string(), *c)).collect();
    after.iter().map(|(b, c)| (*b, c - before.get(&b.to_string()).copied().unwrap_or(0.0))).collect()
}

/// The quantile of a cumulative histogram, interpolated linearly within its bucket.
fn quantile(histogram: &[(f64, f64)], q: f64) -> f64 {
    let total = histogram.last().map(|(_, c)| *c).unwrap_or(0.0);
    let target = q * total;
    let mut previous = (0.0, 0.0);
    for &(bound, count) in histogram {
        if count >= target {
            if bound.is_infinite() {
                return previous.0;
            }
            let within = if count > previous.1 { (target - previous.1) / (count - previous.1) } else { 0.0 };
            return previous.0 + within * (bound - previous.0);
        }
        previous = (bound, count);
    }
    previous.0
}

/// CPU seconds (user + system) process `pid` has used so far, on a system of `ticks_per_second` clock
/// ticks (`CLK_TCK`).
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the node's /proc stat");
    // Fields after the command name (which is in parentheses and may hold spaces): utime and stime are
    // the 14th and 15th fields of the line, the 12th and 13th after the name.
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / ticks_per_second
}

fn clock_ticks_per_second() -> f64 {
    let output = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf runs");
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("CLK_TCK is a number")
}

/// Waits until `client`'s site has seen every write named by `tokens`.
async fn wait_for_tokens(client: &Client, tokens: &BTreeMap<u32, pb::CausalToken>) {
    for token in tokens.values() {
        loop {
            match client.get_after("probe", token.clone(), Some(Duration::from_secs(5))).await {
                Ok(_) => break,
                Err(error) if matches!(error.reason, Some(geostore_client::Reason::NotYetReplicated { .. })) => {
                    continue;
                }
                Err(error) => panic!("{}", error.message),
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    let dir = tempfile::tempdir().unwrap();
    let delayed = Faults { delay_ms: options.rtt_ms / 2, jitter_ms: 0, ..Faults::default() };
    let partitions = options.partitions.to_string();
    let node_args = ["--http-listen", "127.0.0.1:0", "--partitions", partitions.as_str()];
    let mesh = SiteMesh::start(dir.path(), &SITES, delayed, &node_args).await;
    let nodes = &mesh.nodes;
    let mut clients = Vec::new();
    for node in nodes {
        clients.push(Client::connect(&[&node.endpoint]).await.unwrap());
    }
    println!(
        "bench-replication: 3 sites, {} ms emulated round trips, one node per site, {} partitions",
        options.rtt_ms, options.partitions
    );

    let ticks_per_second = clock_ticks_per_second();
    let cpu = || nodes.iter().map(|node| cpu_seconds(node.pid(), ticks_per_second)).collect::<Vec<f64>>();
    let spent = |before: &[f64], after: &[f64]| after.iter().zip(before).map(|(a, b)| a - b).collect::<Vec<f64>>();

    // 0. Idle: what the background tasks cost.
    let before_idle = cpu();
    tokio::time::sleep(Duration::from_secs(options.idle_seconds)).await;
    let idle = spent(&before_idle, &cpu());
    println!(
        "idle: node CPU over {} s: {} (percent of one core: {:.2})",
        options.idle_seconds,
        idle.iter().map(|s| format!("{s:.2} s")).collect::<Vec<_>>().join(", "),
        idle.iter().sum::<f64>() / options.idle_seconds.max(1) as f64 * 100.0 / 3.0
    );

    // 1. Lag at a steady rate.
    let before: Vec<_> = nodes[1..].iter().map(|n| lag_histogram(n.http.as_deref().unwrap())).collect();
    let before_cpu = cpu();
    let started = Instant::now();
    write_at_rate(&clients[0], "steady", options.rate * options.seconds, options.rate).await;
    let achieved = (options.rate * options.seconds) as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady = spent(&before_cpu, &cpu());
    println!(
        "steady: node CPU per write, summed over the three nodes: {:.1} us (a {:.2} s, b {:.2} s, c {:.2} s for {} writes; includes 2 s of settling)",
        steady.iter().sum::<f64>() * 1e6 / (options.rate * options.seconds) as f64,
        steady[0],
        steady[1],
        steady[2],
        options.rate * options.seconds
    );
    for (node, before) in nodes[1..].iter().zip(&before) {
        let histogram = since(&lag_histogram(node.http.as_deref().unwrap()), before);
        println!(
            "lag a->{}: {:.0} writes/s for {} s: p50 {:.1} ms, p99 {:.1} ms over {:.0} changes (goal p99 <= RTT/2 + 20 = {} ms)",
            &node.data_dir.file_name().unwrap().to_string_lossy(),
            achieved,
            options.seconds,
            quantile(&histogram, 0.5) * 1000.0,
            quantile(&histogram, 0.99) * 1000.0,
            histogram.last().map(|(_, c)| *c).unwrap_or(0.0),
            options.rtt_ms / 2 + 20
        );
    }

    // 2. Convergence after a partition with writes on both sides.
    mesh.isolate(2);
    let partition_started = Instant::now();
    let half = options.partition_keys / 2;
    let per_second = (options.partition_keys / options.partition_seconds.max(1)).max(1);
    let (majority, minority) = tokio::join!(
        write_at_rate(&clients[0], "majority", half, per_second / 2 + 1),
        write_at_rate(&clients[2], "minority", options.partition_keys - half, per_second / 2 + 1),
    );
    if let Some(rest) = Duration::from_secs(options.partition_seconds).checked_sub(partition_started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    mesh.heal_all();
    let healed = Instant::now();
    tokio::join!(
        wait_for_tokens(&clients[0], &minority),
        wait_for_tokens(&clients[1], &minority),
        wait_for_tokens(&clients[2], &majority),
    );
    println!(
        "convergence: {} keys written during a {} s partition (c cut off from a and b): every site had every write of the other side {:.2} s after healing (goal <= 5 s)",
        options.partition_keys,
        options.partition_seconds,
        healed.elapsed().as_secs_f64()
    );
}
