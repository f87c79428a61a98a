//! Several nodes in a site, with real processes: site a has four nodes (each partition on N = 3 of them,
//! W = 2), sites b and c one each. Concurrent writers of every type go through random nodes of site a
//! (which forward to each partition's primary); a node of a is SIGKILLed during the writes and
//! restarted; afterwards every acknowledged write is in every replica of a (read from the stopped
//! nodes' RocksDB directories) and in sites b and c, and the counters are exact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use geostore_client::{Client, Reason, Value};
use geostore_model::{Value as StoredValue, partition_of};
use geostore_node::store::{Store, StoreConfig};
use geostore_node::topology::{Topology, TopologyNode, direct};
use geostore_proto::v1::PlacementStatus;
use geostore_tests::{FAST_RAFT, NodeProcess, free_port, geostore, wait_until};

/// Site a's four nodes and b's and c's one, with fixed ports (a node restarts at the same address).
fn topology() -> Topology {
    let nodes = [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (7, "a"), (10, "a")]
        .into_iter()
        .map(|(id, site)| TopologyNode {
            id,
            site: site.to_string(),
            endpoint: format!("http://127.0.0.1:{}", free_port()),
            voter: id <= 3,
        })
        .collect();
    Topology { nodes }
}

fn start(topology: &Topology, dir: &std::path::Path) -> Vec<NodeProcess> {
    (0..topology.nodes.len())
        .map(|i| {
            let mut args = topology.flags(i, &direct(topology));
            args.extend(FAST_RAFT.iter().map(|a| a.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let node = &topology.nodes[i];
            let listen = node.endpoint.trim_start_matches("http://").to_string();
            NodeProcess::start_at(&dir.join(format!("node-{}", node.id)), &listen, &args)
        })
        .collect()
}

async fn placement(endpoint: &str) -> PlacementStatus {
    wait_until("site a's placement map", Duration::from_secs(30), || async {
        let client = Client::connect(&[endpoint]).await.map_err(|e| e.message)?;
        match client.status().await.map_err(|e| e.message)?.placement {
            Some(placement) if placement.version > 0 => Ok(placement),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// What one writer had acknowledged.
#[derive(Default)]
struct Acked {
    registers: BTreeMap<String, String>,
    counter: (String, i64),
    members: (String, Vec<String>),
}

/// Writes registers, one counter and one set through random nodes of site a until `stop`, retrying
/// nothing: only what was acknowledged is recorded. Unknown outcomes are left out of the registers and
/// counted for the counter (an increment in doubt may have been applied).
async fn writer(id: usize, endpoints: Vec<String>, stop: Arc<std::sync::atomic::AtomicBool>) -> (Acked, i64) {
    let mut acked =
        Acked { counter: (format!("w{id}/count"), 0), members: (format!("w{id}/set"), Vec::new()), ..Acked::default() };
    let mut in_doubt = 0;
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(Client::connect(&[endpoint.as_str()]).await.unwrap());
    }
    // Stopped between rounds only: a write cut off in flight would be neither acknowledged nor in doubt.
    for round in 0.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let client = &clients[(round * 7 + id) % clients.len()];
        let key = format!("w{id}/r{round}");
        let value = format!("v{round}");
        {
            if client.put(key.clone(), value.clone(), None).await.is_ok() {
                acked.registers.insert(key, value);
            }
            match client.increment(acked.counter.0.clone(), 1).await {
                Ok(_) => acked.counter.1 += 1,
                Err(error) if error.outcome == geostore_client::Outcome::Unknown => in_doubt += 1,
                Err(_) => {}
            }
            let member = format!("m{round}");
            if client.set_add(acked.members.0.clone(), vec![member.clone().into_bytes()]).await.is_ok() {
                acked.members.1.push(member);
            }
        }
    }
    (acked, in_doubt)
}

#[tokio::test]
async fn a_site_of_four_nodes_keeps_every_acknowledged_write_through_a_node_kill() {
    let dir = tempfile::tempdir().unwrap();
    let topology = topology();
    let mut nodes = start(&topology, dir.path());
    let site_a: Vec<usize> = (0..topology.nodes.len()).filter(|i| topology.nodes[*i].site == "a").collect();

    // Site a's map: 64 partitions, each on 3 of the 4 nodes, primaries spread evenly.
    let map = placement(&nodes[0].endpoint).await;
    assert_eq!((map.replicas_per_site, map.partitions.len()), (3, 64));
    for node in &map.nodes {
        assert_eq!(node.primaries.len(), 16, "{map:?}");
        assert_eq!(node.partitions.len(), 48, "{map:?}");
    }
    // A first write through every node of a, once its followers are connected.
    let a_endpoints: Vec<String> = site_a.iter().map(|i| nodes[*i].endpoint.clone()).collect();
    for endpoint in &a_endpoints {
        let client = Client::connect(&[endpoint.as_str()]).await.unwrap();
        wait_until("a first write through site a", Duration::from_secs(30), || async {
            client.put("warm-up", endpoint.as_str(), None).await.map_err(|e| e.message)
        })
        .await;
    }

    // Writers through random nodes of a; node 10 is killed meanwhile and comes back.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|id| tokio::spawn(writer(id, a_endpoints.clone(), stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = *site_a.last().unwrap();
    nodes[victim].kill_9();
    // With node 10 down, a write to a partition it leads is refused with nothing applied (no failover
    // yet), and one it only follows still reaches W = 2.
    let client = Client::connect(&[nodes[0].endpoint.as_str()]).await.unwrap();
    let led_by_victim = map.partitions.iter().find(|p| p.primary == 10).unwrap().partition as u16;
    let followed_only =
        map.partitions.iter().find(|p| p.primary != 10 && p.replicas.contains(&10)).unwrap().partition as u16;
    let key_in = |partition: u16| {
        (0..).map(|i| format!("probe{i}")).find(|k| partition_of(k.as_bytes(), 64).0 == partition).unwrap()
    };
    let refused = client.put(key_in(led_by_victim), "x", None).await.unwrap_err();
    assert_eq!(refused.code, tonic::Code::Unavailable, "{refused:?}");
    assert!(matches!(refused.reason, Some(Reason::WriteInDoubt | Reason::NotApplied)), "{refused:?}");
    let refused_for_sure = refused.outcome == geostore_client::Outcome::Failed;
    client.put(key_in(followed_only), "x", None).await.unwrap();
    // Status shows the loss: node 10 down, its 16 partitions without their primary, and the partitions
    // it only followed under-replicated at their primaries.
    let (listed, human) = wait_until("status to show node 10's loss", Duration::from_secs(10), || async {
        let (_, stdout, stderr) = geostore(&["status", "--endpoint", &nodes[0].endpoint, "--json"]);
        let status: serde_json::Value = serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stderr}"))?;
        let listed = status["nodes"].as_array().cloned().unwrap_or_default();
        let short: usize = listed.iter().map(|node| node["under_replicated"].as_array().map_or(0, Vec::len)).sum();
        let (_, human, _) = geostore(&["status", "--endpoint", &nodes[0].endpoint]);
        if short == 32 { Ok((listed, human)) } else { Err(format!("{short} under-replicated: {human}")) }
    })
    .await;
    let victim_json = listed.iter().find(|node| node["id"] == 10).unwrap();
    assert_eq!(victim_json["up"], false);
    assert!(
        human.contains("a 3 of 4 up (32 partitions under-replicated) (16 partitions without their primary"),
        "{human}"
    );
    let led = listed[0]["led"].as_array().unwrap();
    assert_eq!(led.len(), 16);
    assert!(
        led.iter()
            .all(|p| p["replicas"] == 3 && p["write_quorum"] == 2 && p["committed"].as_u64() <= p["head"].as_u64())
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[victim].restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut results = Vec::new();
    for writer in writers {
        results.push(writer.await.unwrap());
    }
    let acked_registers: usize = results.iter().map(|(acked, _)| acked.registers.len()).sum();
    assert!(acked_registers > 50, "only {acked_registers} register writes were acknowledged");

    // Every site has every acknowledged write (b and c by causal reads of the counters' last state).
    for site in ["b", "c"] {
        let index = topology.nodes.iter().position(|node| node.site == site).unwrap();
        let reader = Client::connect(&[nodes[index].endpoint.as_str()]).await.unwrap();
        for (acked, in_doubt) in &results {
            for (key, value) in &acked.registers {
                let found = wait_until("a register in another site", Duration::from_secs(30), || async {
                    reader.get(key.clone()).await.map_err(|e| e.message)?.ok_or_else(|| "absent".to_string())
                })
                .await;
                assert_eq!(found.value, Value::Register(value.clone().into_bytes()), "{key} in {site}");
            }
            let (key, count) = &acked.counter;
            wait_until("the counter in another site", Duration::from_secs(30), || async {
                let found =
                    reader.get(key.clone()).await.map_err(|e| e.message)?.ok_or_else(|| "absent".to_string())?;
                match found.value {
                    Value::Counter(value) if (*count..=*count + in_doubt).contains(&value) => Ok(()),
                    other => Err(format!("{key}: {other:?}, acknowledged {count} (+{in_doubt} in doubt)")),
                }
            })
            .await;
        }
    }
    // The restarted node catches up and leads its partitions again; the write it could not take while
    // down was not applied if it said so.
    let after_restart = wait_until("a read of the dead node's partition", Duration::from_secs(30), || async {
        client.get(key_in(led_by_victim)).await.map_err(|e| e.message)
    })
    .await;
    if refused_for_sure {
        assert_eq!(after_restart, None, "a write refused with outcome failed was applied");
    }
    wait_until("the restarted node to lead its partitions again", Duration::from_secs(30), || async {
        client.put(key_in(led_by_victim), "y", None).await.map_err(|e| e.message)
    })
    .await;
    // Let the followers settle, stop every node, and read each replica of a from its own data directory.
    // (The client goes first: this test's runtime is blocked while it waits for a node to exit, so its
    // connection could not answer the node's goodbye.)
    drop(client);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (index, node) in nodes.iter_mut().enumerate() {
        assert!(node.terminate(), "node {} did not stop cleanly", topology.nodes[index].id);
    }
    for &index in &site_a {
        let id = topology.nodes[index].id;
        let storage = geostore_storage::RocksStorage::open(&dir.path().join(format!("node-{id}"))).unwrap();
        let config = StoreConfig { site: "a".into(), ..StoreConfig::default() };
        let store = Store::open(
            Arc::new(storage),
            Arc::new(geostore_model::SystemWallClock),
            config,
            geostore_node::Metrics::new(),
            || unreachable!("the directory exists"),
        )
        .unwrap();
        let held = |key: &str| {
            let partition = partition_of(key.as_bytes(), 64).0;
            map.partitions[usize::from(partition)].replicas.contains(&id)
        };
        for (acked, in_doubt) in &results {
            for (key, value) in acked.registers.iter().filter(|(key, _)| held(key)) {
                let read = store.get(key.as_bytes()).unwrap().unwrap_or_else(|| panic!("{key} missing at node {id}"));
                assert_eq!(read.value, StoredValue::Register(value.clone().into_bytes()), "{key} at node {id}");
            }
            let (key, count) = &acked.counter;
            if held(key) {
                let value = store.get(key.as_bytes()).unwrap().map(|read| read.value);
                assert!(
                    matches!(value, Some(StoredValue::Counter(v)) if (*count..=*count + in_doubt).contains(&v)),
                    "counter {key} at node {id}: {value:?}, acknowledged {count} (+{in_doubt} in doubt)"
                );
            }
            let (key, members) = &acked.members;
            if held(key) {
                let Some(StoredValue::Set(stored)) = store.get(key.as_bytes()).unwrap().map(|read| read.value) else {
                    panic!("set {key} missing at node {id}");
                };
                for member in members {
                    assert!(stored.contains(member.as_bytes()), "{member} of {key} missing at node {id}");
                }
            }
        }
        store.close().unwrap();
    }
}
