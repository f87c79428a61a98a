//! Replication between real node processes without a fault proxy: causal reads, catching up by
//! anti-entropy after the log was trimmed, and refusing timestamps from a clock too far ahead.

use std::time::Duration;

use geostore_client::{Client, Value, pb};
use geostore_node::topology::{Topology, direct};
use geostore_proto::v1::pull_message::Message;
use geostore_tests::{NodeProcess, free_port, metric, wait_until};

/// The metric that counts the tombstone collector's passes over every partition.
const GC_PASSES: &str = "geostore_gc_passes_total";

/// Which partitions of `endpoint`'s change log no longer start at their first record, so that a puller
/// at cursor 0 (a peer that has merged nothing) can only catch up there by anti-entropy. Asks as such a
/// puller would, for site `site`: the Pull stream answers each partition with `truncated_partition`, or
/// with a first batch that continues from 0. Reading a Pull stream changes nothing on the node.
async fn trimmed_partitions(endpoint: &str, site: &str, partitions: usize) -> Result<Vec<bool>, String> {
    let mut client = geostore_proto::v1::replication_client::ReplicationClient::connect(endpoint.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let request = pb::PullRequest { site: site.to_string(), cursors: vec![0; partitions], ..Default::default() };
    let mut stream = client.pull(request).await.map_err(|e| e.to_string())?.into_inner();
    let mut trimmed: Vec<Option<bool>> = vec![None; partitions];
    while trimmed.iter().any(Option::is_none) {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
        match next.map_err(|_| format!("no answer for every partition: {trimmed:?}"))? {
            Ok(Some(pb::PullMessage { message: Some(Message::TruncatedPartition(partition)) })) => {
                trimmed[partition as usize] = Some(true);
            }
            Ok(Some(pb::PullMessage { message: Some(Message::Batch(batch)) })) if batch.after == 0 => {
                trimmed[batch.partition as usize] = Some(false);
            }
            // A heartbeat comes only once every partition with records was answered: the rest are empty.
            Ok(Some(pb::PullMessage { message: Some(Message::Heartbeat(_)) })) => break,
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("the stream ended early: {trimmed:?}")),
            Err(status) => return Err(status.to_string()),
        }
    }
    Ok(trimmed.into_iter().map(|answer| answer.unwrap_or(false)).collect())
}

/// Two sites `a` and `b` on fixed ports, peered with each other, plus `extra` flags for each.
fn two_sites(dir: &std::path::Path, extra_a: &[&str], extra_b: &[&str]) -> (NodeProcess, NodeProcess) {
    let ports = [free_port(), free_port()];
    let topology = Topology::one_node_per_site(&["a", "b"], |i| format!("http://127.0.0.1:{}", ports[i]));
    let start = |i: usize, extra: &[&str]| {
        let mut args = topology.replication_flags(i, &direct(&topology));
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let site = &topology.nodes[i].site;
        NodeProcess::start_at(&dir.join(site), &format!("127.0.0.1:{}", ports[i]), &args)
    };
    (start(0, extra_a), start(1, extra_b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_a_causal_token_sees_the_write_from_the_other_site() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_sites(dir.path(), &[], &[]);
    let (client_a, client_b) =
        (Client::connect(&[&a.endpoint]).await.unwrap(), Client::connect(&[&b.endpoint]).await.unwrap());
    for round in 0..20 {
        let ack = client_a.put("session", format!("v{round}"), None).await.unwrap();
        let read = client_b.get_after("session", ack.token.unwrap(), Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(read.unwrap().value, Value::Register(format!("v{round}").into_bytes()), "round {round}");
    }
    // A token from the future is refused after the wait, clearly.
    let token = pb::CausalToken { site: "a".into(), partition: 0, sequence: 1_000_000 };
    let error = client_b.get_after("session", token, Some(Duration::from_millis(200))).await.unwrap_err();
    assert!(error.message.contains("not yet replicated"), "{}", error.message);
    let status = client_b.status().await.unwrap();
    assert_eq!(status.sites, ["a", "b"]);
    assert!(status.peers[0].connected && status.peers[0].records_applied >= 20, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_the_trimmed_log_catches_up_by_anti_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let small_log = ["--partitions", "4", "--log-retention-ops", "5", "--log-trim-interval-ms", "100"];
    let (a, mut b) = two_sites(dir.path(), &small_log, &small_log);
    let client_a = Client::connect(&[&a.endpoint]).await.unwrap();
    b.kill_9();
    for i in 0..200 {
        client_a.put(format!("k{i}"), format!("v{i}"), None).await.unwrap();
        client_a.increment("count", 1).await.unwrap();
    }
    client_a.delete("k0").await.unwrap();
    // b's cursor is 0 everywhere: wait until a's log no longer starts there in any partition, so that b
    // can only catch up by anti-entropy.
    wait_until("a's log trimmed past cursor 0 in all 4 partitions", Duration::from_secs(30), || async {
        let trimmed = trimmed_partitions(&a.endpoint, "b", 4).await?;
        if trimmed.iter().all(|t| *t) { Ok(()) } else { Err(format!("trimmed per partition: {trimmed:?}")) }
    })
    .await;
    b.restart();
    let client_b = Client::connect(&[&b.endpoint]).await.unwrap();
    wait_until("b to read k199 and count = 200", Duration::from_secs(30), || async {
        let last = client_b.get("k199").await.map(|found| found.map(|found| found.value));
        let count = client_b.get("count").await.map(|found| found.map(|found| found.value));
        match (&last, &count) {
            (Ok(Some(_)), Ok(Some(Value::Counter(200)))) => Ok(()),
            _ => Err(format!("k199 {last:?}, count {count:?}")),
        }
    })
    .await;
    for i in 1..200 {
        assert_eq!(
            client_b.get(format!("k{i}")).await.unwrap().unwrap().value,
            Value::Register(format!("v{i}").into_bytes())
        );
    }
    assert_eq!(client_b.get("k0").await.unwrap(), None);
    let status = client_b.status().await.unwrap();
    assert!(status.anti_entropy_repairs >= 190, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_beyond_the_allowed_drift_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // a's clock runs a minute ahead; the allowed drift is 500 ms.
    let (a, b) = two_sites(dir.path(), &["--clock-offset-ms", "60000"], &[]);
    let (client_a, client_b) =
        (Client::connect(&[&a.endpoint]).await.unwrap(), Client::connect(&[&b.endpoint]).await.unwrap());
    client_a.put("from-a", "future", None).await.unwrap();
    let ack = client_b.put("from-b", "present", None).await.unwrap();
    // b's write reaches a (a timestamp behind a's clock is fine)...
    let read = client_a.get_after("from-b", ack.token.unwrap(), Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(read.unwrap().value, Value::Register(b"present".to_vec()));
    // ...but b refuses a's, counts it, and does not adopt the timestamp.
    wait_until("b to count a clock-drift refusal", Duration::from_secs(10), || async {
        let refusals = client_b.status().await.unwrap().clock_drift_refusals;
        if refusals > 0 { Ok(()) } else { Err(refusals) }
    })
    .await;
    assert_eq!(client_b.get("from-a").await.unwrap(), None);
    let status = client_b.status().await.unwrap();
    assert!(status.peers[0].last_error.contains("ahead"), "{status:?}");
    let b_hlc = client_b.put("later", "x", None).await.unwrap().hlc;
    let a_hlc = client_a.get("from-a").await.unwrap().unwrap().last_write_hlc;
    assert!(b_hlc < a_hlc, "b adopted a's clock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_collected_once_every_site_has_acknowledged_them_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let fast_gc = ["--gc-interval-ms", "100", "--http-listen", "127.0.0.1:0"];
    let (a, mut b) = two_sites(dir.path(), &fast_gc, &fast_gc);
    let a_http = a.http.clone().expect("started with --http-listen");
    let client_a = Client::connect(&[&a.endpoint]).await.unwrap();
    client_a.put("deleted", "v", None).await.unwrap();
    client_a.put("expiring", "v", Some(Duration::from_millis(300))).await.unwrap();
    let ack = client_a.increment("kept", 1).await.unwrap();
    let client_b = Client::connect(&[&b.endpoint]).await.unwrap();
    client_b.get_after("kept", ack.token.unwrap(), Some(Duration::from_secs(5))).await.unwrap();

    // With b down, a must keep its tombstones: b has not acknowledged them.
    b.kill_9();
    client_a.delete("deleted").await.unwrap();
    // Both keys are dead once `expiring`'s 300 ms have passed; then a's collector must pass over them
    // twice (the first pass may have begun before the delete) and leave them.
    wait_until("`expiring` to expire on a", Duration::from_secs(10), || async {
        match client_a.get("expiring").await.unwrap() {
            None => Ok(()),
            Some(found) => Err(found),
        }
    })
    .await;
    let passes = metric(&a_http, GC_PASSES).await.unwrap();
    wait_until("two tombstone-collection passes on a", Duration::from_secs(10), || async {
        let now = metric(&a_http, GC_PASSES).await?;
        if now >= passes + 2.0 { Ok(()) } else { Err(format!("{GC_PASSES} {now}, from {passes}")) }
    })
    .await;
    assert_eq!(client_a.status().await.unwrap().tombstones_collected, 0, "collected before every site acknowledged");
    assert_eq!(client_a.get("deleted").await.unwrap(), None);
    assert_eq!(client_a.get("expiring").await.unwrap(), None);

    b.restart();
    let b_http = b.http.clone().expect("started with --http-listen");
    let client_b = Client::connect(&[&b.endpoint]).await.unwrap();
    for client in [&client_a, &client_b] {
        wait_until("both dead keys collected", Duration::from_secs(20), || async {
            let collected = client.status().await.unwrap().tombstones_collected;
            if collected >= 2 { Ok(()) } else { Err(collected) }
        })
        .await;
        assert_eq!(client.get("deleted").await.unwrap(), None);
        assert_eq!(client.get("expiring").await.unwrap(), None);
        assert_eq!(client.get("kept").await.unwrap().unwrap().value, Value::Counter(1));
    }
    // Collection removed only dead keys and nothing comes back: once each site has merged everything
    // the other logged (its peer connected, nothing unmerged) and its collector has passed twice more,
    // the keys are still gone and nothing was collected a second time.
    for (site, client, http) in [("a", &client_a, &a_http), ("b", &client_b, &b_http)] {
        let passes = metric(http, GC_PASSES).await.unwrap();
        wait_until(&format!("{site} caught up and two more collection passes"), Duration::from_secs(20), || async {
            let now = metric(http, GC_PASSES).await?;
            let peer = client.status().await.map_err(|e| e.to_string())?.peers.remove(0);
            if now >= passes + 2.0 && peer.connected && peer.lag_ops == 0 {
                Ok(())
            } else {
                Err(format!("{GC_PASSES} {now} (from {passes}), peer {peer:?}"))
            }
        })
        .await;
    }
    for client in [&client_a, &client_b] {
        assert_eq!(client.get("deleted").await.unwrap(), None);
        assert_eq!(client.get("expiring").await.unwrap(), None);
        assert_eq!(client.status().await.unwrap().tombstones_collected, 2);
    }
}
