//! Lock latency across sites: three real `geostore node` processes forming the lock group with the
//! default wide-area Raft timing, every link through the fault proxy with an added round trip (default
//! 80 ms). One client at a time does acquire+release cycles, first from the leader's site, then from a
//! follower's site (whose requests are forwarded to the leader), each with a pause before every request
//! and back to back. Prints acquire p50/p99 in ms and as a multiple of the round trip.
//!
//! Usage: bench-locks-wan [--rtt-ms 80] [--cycles 200]   (run through scripts/bench-locks-wan)

use std::time::{Duration, Instant};

use geostore_client::{Client, Wait};
use geostore_faultproxy::Faults;
use geostore_tests::{SiteMesh, wait_for_leader};

const SITES: [&str; 3] = ["a", "b", "c"];

fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * quantile).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut rtt_ms, mut cycles) = (80_u64, 200_usize);
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--rtt-ms" => rtt_ms = value,
            "--cycles" => cycles = value as usize,
            other => panic!("unknown option {other}"),
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let healthy = Faults { delay_ms: rtt_ms / 2, ..Faults::default() };
    let mesh = SiteMesh::start_with(dir.path(), &SITES, healthy, &[], true, &[]).await;
    let endpoints: Vec<String> = mesh.nodes.iter().map(|n| n.endpoint.clone()).collect();
    let leader = wait_for_leader(&endpoints, Duration::from_secs(30)).await as usize - 1;
    println!("lock group over {rtt_ms} ms round trips; leader in site {}", SITES[leader]);
    for endpoint in &endpoints {
        if let Some(status) = geostore_tests::group_status(endpoint).await {
            println!("  member {} is {} (leader {}, term {})", status.id, status.state, status.leader, status.term);
        }
    }
    for (site, label) in [(leader, "leader's site"), ((leader + 1) % 3, "a follower's site")] {
        let client = Client::connect(&[&endpoints[site]]).await.expect("connects");
        // Warm the connections (client to node, node to leader).
        for _ in 0..5 {
            let grant = client.acquire("wan", Duration::from_secs(10), Wait::Try, "").await.expect("acquire");
            client.release("wan", grant.token).await.expect("release");
        }
        // Back to back, and with a pause before each acquire: openraft 0.9 keeps one AppendEntries in
        // flight per follower, and after each commit one goes out to carry the new commit index, so an
        // entry proposed right after another commit waits for that round trip.
        for (mode, gap) in [("after 300 ms idle", Duration::from_millis(300)), ("back to back", Duration::ZERO)] {
            let mut acquire_ms = Vec::with_capacity(cycles);
            let mut release_ms = Vec::with_capacity(cycles);
            for _ in 0..cycles {
                tokio::time::sleep(gap).await;
                let started = Instant::now();
                let grant = client.acquire("wan", Duration::from_secs(10), Wait::Try, "").await.expect("acquire");
                acquire_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(gap).await;
                let started = Instant::now();
                client.release("wan", grant.token).await.expect("release");
                release_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            acquire_ms.sort_by(f64::total_cmp);
            release_ms.sort_by(f64::total_cmp);
            let rtt = rtt_ms as f64;
            println!(
                "from the {label:<17} (site {}), {mode:<17}: acquire p50 {:.1} ms ({:.2} RTT) p99 {:.1} ms; release p50 {:.1} ms ({:.2} RTT)",
                SITES[site],
                percentile(&acquire_ms, 0.5),
                percentile(&acquire_ms, 0.5) / rtt,
                percentile(&acquire_ms, 0.99),
                percentile(&release_ms, 0.5),
                percentile(&release_ms, 0.5) / rtt,
            );
        }
    }
}
