//! Replication between real node processes without a fault proxy: causal reads, catching up by
//! anti-entropy after the log was trimmed, and refusing timestamps from a clock too far ahead.

use std::time::{Duration, Instant};

use geostore_client::{Client, Value, pb};
use geostore_node::topology::{Topology, direct};
use geostore_tests::{NodeProcess, free_port};

/// Waits until `check` passes, up to `limit`; panics with `what` otherwise.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // Wait until a's logs are trimmed well past b's cursor (0).
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.restart();
    let client_b = Client::connect(&[&b.endpoint]).await.unwrap();
    eventually(Duration::from_secs(30), "b converges", || async {
        matches!(client_b.get("k199").await, Ok(Some(_)))
            && matches!(client_b.get("count").await.ok().flatten().map(|f| f.value), Some(Value::Counter(200)))
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
    eventually(Duration::from_secs(10), "b counts refusals", || async {
        client_b.status().await.unwrap().clock_drift_refusals > 0
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
    let fast_gc = ["--gc-interval-ms", "100"];
    let (a, mut b) = two_sites(dir.path(), &fast_gc, &fast_gc);
    let client_a = Client::connect(&[&a.endpoint]).await.unwrap();
    client_a.put("deleted", "v", None).await.unwrap();
    client_a.put("expiring", "v", Some(Duration::from_millis(300))).await.unwrap();
    let ack = client_a.increment("kept", 1).await.unwrap();
    let client_b = Client::connect(&[&b.endpoint]).await.unwrap();
    client_b.get_after("kept", ack.token.unwrap(), Some(Duration::from_secs(5))).await.unwrap();

    // With b down, a must keep its tombstones: b has not acknowledged them.
    b.kill_9();
    client_a.delete("deleted").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(client_a.status().await.unwrap().tombstones_collected, 0, "collected before every site acknowledged");
    assert_eq!(client_a.get("deleted").await.unwrap(), None);
    assert_eq!(client_a.get("expiring").await.unwrap(), None);

    b.restart();
    let client_b = Client::connect(&[&b.endpoint]).await.unwrap();
    for client in [&client_a, &client_b] {
        eventually(Duration::from_secs(20), "both dead keys collected", || async {
            client.status().await.unwrap().tombstones_collected >= 2
        })
        .await;
        assert_eq!(client.get("deleted").await.unwrap(), None);
        assert_eq!(client.get("expiring").await.unwrap(), None);
        assert_eq!(client.get("kept").await.unwrap().unwrap().value, Value::Counter(1));
    }
    // Collection removed only dead keys and nothing comes back: the sites still agree.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client_b.get("deleted").await.unwrap(), None);
    assert_eq!(client_a.status().await.unwrap().tombstones_collected, 2);
}
