//! Each site's placement group with real processes: three nodes (one per site, ids 1 to 3) whose site
//! placement groups create their maps, keep them across SIGKILL, and refuse an impossible
//! `--replicas-per-site`.

use std::time::Duration;

use geostore_client::Client;
use geostore_proto::v1::PlacementStatus;
use geostore_tests::{NodeProcess, geostore, lock_cluster, metric, wait_until};

/// The node's placement once its map exists.
async fn created_placement(node: &NodeProcess) -> PlacementStatus {
    wait_until("the site's placement map", Duration::from_secs(30), || async {
        let client = Client::connect(&[node.endpoint.as_str()]).await.map_err(|e| e.message)?;
        match client.status().await.map_err(|e| e.message)?.placement {
            Some(placement) if placement.version > 0 => Ok(placement),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// One node holds every partition of its site: replica and primary, at epoch 1.
fn assert_one_node_map(placement: &PlacementStatus, id: u64) {
    assert_eq!(placement.replicas_per_site, 1);
    assert_eq!(placement.partitions.len(), 64);
    for (index, partition) in placement.partitions.iter().enumerate() {
        assert_eq!(partition.partition as usize, index);
        assert_eq!((partition.primary, partition.replicas.as_slice(), partition.epoch), (id, &[id][..], 1));
    }
    assert_eq!(placement.nodes.len(), 1);
    let node = &placement.nodes[0];
    assert_eq!((node.id, node.partitions.len(), node.primaries.len()), (id, 64, 64));
    let group = placement.group.as_ref().expect("the group's status");
    assert_eq!((group.group.as_str(), group.leader, group.members.len()), ("placement", id, 1));
}

#[tokio::test]
async fn every_site_creates_its_placement_map_and_keeps_it_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = lock_cluster(dir.path(), &["--http-listen", "127.0.0.1:0"]);
    let mut versions = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let placement = created_placement(node).await;
        assert_one_node_map(&placement, index as u64 + 1);
        let http = node.http.as_deref().unwrap();
        assert_eq!(metric(http, "geostore_placement_version").await.unwrap(), placement.version as f64);
        assert_eq!(metric(http, "geostore_placement_leader").await.unwrap(), 1.0);
        versions.push(placement.version);
    }

    nodes[0].kill_9();
    // The CLI lists the killed member as down, its holdings unknown; the others as they say.
    let (code, stdout, stderr) = geostore(&["status", "--endpoint", &nodes[1].endpoint, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let listed = status["nodes"].as_array().unwrap();
    assert_eq!((listed[0]["id"].as_u64(), listed[0]["up"].as_bool()), (Some(1), Some(false)), "{status}");
    assert!(listed[0]["partitions"].is_null() && listed[0]["primaries"].is_null(), "{status}");
    assert!(listed[1..].iter().all(|node| node["up"] == true && node["partitions"].as_array().unwrap().len() == 64));
    let (_, human, _) = geostore(&["status", "--endpoint", &nodes[1].endpoint]);
    assert!(human.contains("nodes: a 0 of 1 up, b 1 of 1 up, c 1 of 1 up"), "{human}");
    nodes[0].restart();
    let placement = created_placement(&nodes[0]).await;
    assert_eq!(placement.version, versions[0], "the map is the one created before the crash");
    assert_one_node_map(&placement, 1);
    // The lock group still works beside it on the same Raft service.
    let client = Client::connect(&[nodes[0].endpoint.as_str()]).await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.lock_group.map(|group| group.group), Some("locks".to_string()));
}

#[test]
fn replicas_per_site_beyond_the_sites_nodes_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, _, stderr) = geostore(&[
        "node",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "1",
        "--member",
        "1=a=http://127.0.0.1:1",
        "--member",
        "2=b=http://127.0.0.1:2",
        "--replicas-per-site",
        "2",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("replicas_per_site 2 needs at least that many nodes in the site; it has 1"), "{stderr}");
    let (code, _, stderr) =
        geostore(&["node", "--data-dir", data, "--listen", "127.0.0.1:0", "--replicas-per-site", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("replicas_per_site is set but this node has no member id"), "{stderr}");
}
