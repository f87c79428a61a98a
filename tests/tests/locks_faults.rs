//! The lock group across three sites 80 ms apart (every link through the fault proxy), with the default
//! wide-area Raft timing: a whole site is isolated, and the other two keep granting.

use std::time::{Duration, Instant};

use geostore_client::{Client, Wait};
use geostore_faultproxy::Faults;
use geostore_tests::{SiteMesh, group_status, wait_for_leader};

const SITES: [&str; 3] = ["a", "b", "c"];

/// Acquires and releases `name` through `client` `rounds` times; returns the tokens.
async fn cycles(client: &Client, name: &str, rounds: usize) -> Vec<u64> {
    let mut tokens = Vec::new();
    for _ in 0..rounds {
        let grant = client.acquire(name, Duration::from_secs(5), Wait::Up(Duration::from_secs(10)), "").await;
        let grant = grant.unwrap_or_else(|e| panic!("acquire {name}: {e:?}"));
        tokens.push(grant.token);
        client.release(name, grant.token).await.unwrap();
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_site_stops_granting_while_the_other_two_keep_granting() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = Faults { delay_ms: 40, ..Faults::default() };
    let mesh = SiteMesh::start_with(dir.path(), &SITES, healthy, &[], true, &[]).await;
    let endpoints: Vec<String> = mesh.nodes.iter().map(|n| n.endpoint.clone()).collect();
    let leader = wait_for_leader(&endpoints, Duration::from_secs(30)).await as usize - 1;
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(Client::connect(&[endpoint]).await.unwrap());
    }
    let before = cycles(&clients[(leader + 1) % 3], "orders", 3).await;

    // Cut off the leader's site: the other two elect a new leader and keep granting.
    mesh.isolate(leader);
    let isolated_at = Instant::now();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let during_a = cycles(&clients[others[0]], "orders", 5).await;
    let service_back = isolated_at.elapsed();
    let during_b = cycles(&clients[others[1]], "orders", 5).await;
    let new_leader = group_status(&endpoints[others[0]]).await.unwrap().leader as usize - 1;
    assert_ne!(new_leader, leader, "a majority without the isolated site elected a new leader");

    // The isolated site cannot grant: its requests fail (or are unknown), never succeed.
    let error = clients[leader].acquire("orders", Duration::from_secs(5), Wait::Try, "").await.unwrap_err();
    eprintln!("isolated site's acquire: {:?} {}", error.outcome, error.message);

    mesh.heal_all();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match clients[leader].acquire("orders", Duration::from_secs(5), Wait::Up(Duration::from_secs(5)), "").await {
            Ok(grant) => {
                clients[leader].release("orders", grant.token).await.unwrap();
                break grant.token;
            }
            Err(error) => assert!(Instant::now() < deadline, "the healed site never granted again: {error:?}"),
        }
    };
    let mut all: Vec<u64> = before.iter().chain(&during_a).chain(&during_b).copied().collect();
    all.push(after);
    assert!(all.windows(2).all(|pair| pair[0] < pair[1]), "tokens not increasing: {all:?}");
    eprintln!("site {} isolated: the others granted again after {service_back:?}", SITES[leader]);
}
