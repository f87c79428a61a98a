//! What the API tells a caller, with real processes: which write a value came from (its site and fence),
//! why an absent key is absent and since when, the lock group in `Cluster.Status`, the structured
//! stale-fence refusal with the known token, and the causal token a lock holder leaves for the next.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use geostore_client::{Absence, Client, Lookup, Outcome, Reason, Wait, format_token, pb};
use geostore_tests::{lock_cluster, wait_for_leader, wait_until};

fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_say_which_write_won_and_why_a_key_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = lock_cluster(dir.path(), &[]);
    let endpoints: Vec<String> = nodes.iter().map(|node| node.endpoint.clone()).collect();
    let leader = wait_for_leader(&endpoints, Duration::from_secs(20)).await;
    let a = Client::connect(&[&endpoints[0]]).await.unwrap();
    let b = Client::connect(&[&endpoints[1]]).await.unwrap();

    // Cluster.Status shows the lock group without the internal Raft service.
    let group = b.status().await.unwrap().lock_group.expect("b is in a lock group");
    assert_eq!(group.leader, leader);
    let leader_member = group.members.iter().find(|member| member.id == leader).unwrap();
    assert_eq!(
        (group.leader_site.as_str(), group.leader_endpoint.as_str()),
        (leader_member.site.as_str(), leader_member.endpoint.as_str())
    );
    assert_eq!(group.members.len(), 3);
    assert!(group.term >= 1 && group.applied_index >= 1, "{group:?}");

    // A put in a, read in b: the value says it was written in a, and when.
    let before = now_unix_ms();
    let ack = a.put("k", "v", None).await.unwrap();
    let token = ack.token.clone().unwrap();
    // The site record is in k's partition, ahead of the write: the causal read that waits for the write
    // names the site too.
    let found = b.get_after("k", token.clone(), None).await.unwrap().unwrap();
    assert_eq!(found.last_write_site.as_deref(), Some("a"), "{found:?}");
    assert!((before - 1000..=now_unix_ms() + 1000).contains(&found.last_write_unix_ms), "{found:?}");
    assert_eq!(found.last_write_hlc, ack.hlc);
    assert_eq!(found.last_write_fence, None);

    // Absent keys say why.
    assert_eq!(b.lookup("never-written").await.unwrap(), Lookup::Absent(Absence::NoRecord));
    let deleted = a.delete("k").await.unwrap();
    match b.lookup_after("k", deleted.token.unwrap(), None).await.unwrap() {
        Lookup::Absent(Absence::Deleted { since_unix_ms }) => {
            assert!(since_unix_ms >= found.last_write_unix_ms && since_unix_ms <= now_unix_ms() + 1000)
        }
        other => panic!("expected a deleted key, got {other:?}"),
    }
    let put_at = now_unix_ms();
    a.put("cached", "v", Some(Duration::from_millis(300))).await.unwrap();
    let absence = wait_until("the cached key to expire", Duration::from_secs(10), || async {
        match a.lookup("cached").await.unwrap() {
            Lookup::Absent(absence) => Ok(absence),
            found => Err(found),
        }
    })
    .await;
    let Absence::Expired { since_unix_ms } = absence else { panic!("expected an expired key, got {absence:?}") };
    assert!((put_at + 300..=now_unix_ms()).contains(&since_unix_ms), "expired at {since_unix_ms}, put at {put_at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_name_their_lock_and_a_stale_one_is_refused_with_the_known_token() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = lock_cluster(dir.path(), &[]);
    let endpoints: Vec<String> = nodes.iter().map(|node| node.endpoint.clone()).collect();
    wait_for_leader(&endpoints, Duration::from_secs(20)).await;
    let a = Client::connect(&[&endpoints[0]]).await.unwrap();
    let b = Client::connect(&[&endpoints[1]]).await.unwrap();
    let ttl = Duration::from_secs(30);

    let first = a.acquire("job", ttl, Wait::Up(Duration::from_secs(10)), "first").await.unwrap();
    let ack = a.with_fence("job", first.token).put("report", "v1", None).await.unwrap();
    let after = ack.token.clone().unwrap();
    let expected_fence = pb::Fence { lock: "job".into(), token: first.token };
    wait_until("b to show the write's lock and token", Duration::from_secs(10), || async {
        let found = b.get_after("report", after.clone(), None).await.unwrap().unwrap();
        if found.last_write_fence.as_ref() == Some(&expected_fence) { Ok(()) } else { Err(found) }
    })
    .await;

    // A malformed handoff token is refused and the lock stays held.
    let malformed = pb::CausalToken { site: String::new(), partition: 0, sequence: 1 };
    let error = a.release_after("job", first.token, malformed).await.unwrap_err();
    assert_eq!((error.code, error.outcome), (tonic::Code::InvalidArgument, Outcome::Failed), "{error:?}");
    assert_eq!(error.reason, Some(Reason::InvalidRequest { field: "after".into() }));
    assert_eq!(a.describe("job").await.unwrap().holder.map(|grant| grant.token), Some(first.token));

    // The holder leaves its last write's token; the next holder, in another site, gets it back.
    a.release_after("job", first.token, after.clone()).await.unwrap();
    let second = b.acquire("job", ttl, Wait::Up(Duration::from_secs(10)), "second").await.unwrap();
    assert_eq!(second.previous_after, Some(after.clone()));
    assert_eq!(second.previous_note, Some(format_token(&after)));
    let found = b.get_after("report", second.previous_after.unwrap(), None).await.unwrap().unwrap();
    assert_eq!(found.value, geostore_client::Value::Register(b"v1".to_vec()));
    b.with_fence("job", second.token).put("report", "v2", None).await.unwrap();

    // The first holder's token is now stale: refused with the lock, its token and the known one (once site
    // a has applied the new grant; before, the write is accepted and loses to v2 by its lower token).
    let stale = a.with_fence("job", first.token);
    let error = wait_until("site a to refuse the first token", Duration::from_secs(10), || async {
        match stale.put("report", "stale", None).await {
            Err(error) => Ok(error),
            Ok(ack) => Err(ack),
        }
    })
    .await;
    assert_eq!((error.code, error.outcome), (tonic::Code::FailedPrecondition, Outcome::Failed), "{error:?}");
    assert_eq!(
        error.reason,
        Some(Reason::StaleFence { lock: "job".into(), token: first.token, known_token: second.token })
    );
}
