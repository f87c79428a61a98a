//! Global locks with real processes: three nodes forming the lock group on loopback, clients in this
//! process and the `geostore` CLI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use geostore_client::{Client, ELECTION_PREFIX, Outcome, Wait};
use geostore_tests::{NodeProcess, geostore, lock_cluster, wait_for_leader, wait_until};
use tokio::sync::Mutex;

fn endpoints(nodes: &[NodeProcess]) -> Vec<String> {
    nodes.iter().map(|n| n.endpoint.clone()).collect()
}

async fn connect(endpoint: &str) -> Client {
    Client::connect(&[endpoint]).await.expect("connects")
}

/// One holding of a lock as a client saw it, in this process's clock.
#[derive(Debug, Clone)]
struct Holding {
    token: u64,
    /// When the grant arrived.
    granted: Instant,
    /// When the release was sent (or, if it never succeeded, when the lease surely ran out).
    ended: Instant,
}

/// Checks that holdings never overlapped in real time and that tokens increase in grant order.
fn check_exclusive(holdings: &mut [Holding]) {
    holdings.sort_by_key(|h| h.granted);
    for pair in holdings.windows(2) {
        assert!(pair[0].token < pair[1].token, "tokens not increasing in grant order: {pair:?}");
        assert!(pair[1].granted >= pair[0].ended, "two holders at once: {pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contended_lock_is_mutually_exclusive_and_first_come_first_served() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = lock_cluster(dir.path(), &[]);
    let endpoints = endpoints(&nodes);
    wait_for_leader(&endpoints, Duration::from_secs(20)).await;

    // Mutual exclusion: 6 clients spread over the three nodes, 10 rounds each on one lock.
    let holdings = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let endpoint = endpoints[worker % 3].clone();
        let holdings = holdings.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&endpoint).await;
            for _ in 0..10 {
                let grant = client
                    .acquire("shared", Duration::from_secs(30), Wait::Up(Duration::from_secs(60)), "")
                    .await
                    .expect("acquire");
                let granted = Instant::now();
                // Hold the lock for a moment, so that a second holder, if there were one, would overlap.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let ended = Instant::now();
                client.release("shared", grant.token).await.expect("release");
                holdings.lock().await.push(Holding { token: grant.token, granted, ended });
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut holdings = holdings.lock().await.clone();
    assert_eq!(holdings.len(), 60);
    check_exclusive(&mut holdings);

    // First come, first served: while A holds the lock, B, C and D queue in that order (each seen
    // queued before the next asks), and are granted in that order when A releases.
    let a = connect(&endpoints[0]).await;
    let held = a.acquire("fifo", Duration::from_secs(30), Wait::Try, "a").await.unwrap();
    let mut waiters = Vec::new();
    for (index, name) in ["b", "c", "d"].into_iter().enumerate() {
        let client = connect(&endpoints[(index + 1) % 3]).await;
        waiters.push(tokio::spawn(async move {
            let grant = client.acquire("fifo", Duration::from_secs(30), Wait::Up(Duration::from_secs(30)), name).await;
            let grant = grant.expect("granted in turn");
            let at = Instant::now();
            client.release("fifo", grant.token).await.expect("release");
            (name, grant.token, at)
        }));
        wait_until(&format!("{name} to queue as waiter {}", index + 1), Duration::from_secs(10), || async {
            let waiters = a.describe("fifo").await.unwrap().waiters;
            if waiters.len() > index { Ok(()) } else { Err(waiters) }
        })
        .await;
    }
    let state = a.describe("fifo").await.unwrap();
    assert_eq!(state.holder.unwrap().label, "a");
    a.release("fifo", held.token).await.unwrap();
    let mut order = Vec::new();
    for waiter in waiters {
        order.push(waiter.await.unwrap());
    }
    order.sort_by_key(|(_, token, _)| *token);
    assert_eq!(order.iter().map(|(name, _, _)| *name).collect::<Vec<_>>(), ["b", "c", "d"]);
    assert!(order[0].1 > held.token);

    // A busy lock with --try fails at once and certainly; releasing with a stale token is refused.
    let b = connect(&endpoints[1]).await;
    let first = b.acquire("busy", Duration::from_secs(30), Wait::Try, "").await.unwrap();
    let error = a.acquire("busy", Duration::from_secs(30), Wait::Try, "").await.unwrap_err();
    assert_eq!((error.code, error.outcome), (tonic::Code::FailedPrecondition, Outcome::Failed), "{error:?}");
    assert!(error.message.contains(&format!("token {}", first.token)), "{}", error.message);
    let error = a.release("busy", first.token + 1000).await.unwrap_err();
    assert_eq!(error.code, tonic::Code::FailedPrecondition);
    assert!(error.message.contains("does not hold"), "{}", error.message);
    // And a wait that runs out is a certain failure too.
    let started = Instant::now();
    let error = a.acquire("busy", Duration::from_secs(30), Wait::Up(Duration::from_millis(300)), "").await.unwrap_err();
    assert_eq!((error.code, error.outcome), (tonic::Code::DeadlineExceeded, Outcome::Failed), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_during_contention_keeps_tokens_increasing_and_holders_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = lock_cluster(dir.path(), &[]);
    let endpoints = endpoints(&nodes);
    let leader = wait_for_leader(&endpoints, Duration::from_secs(20)).await as usize - 1;
    let survivors: Vec<String> = (0..3).filter(|i| *i != leader).map(|i| endpoints[i].clone()).collect();

    const TTL: Duration = Duration::from_secs(2);
    let holdings = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let endpoint = survivors[worker % 2].clone();
        let (holdings, stop) = (holdings.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = connect(&endpoint).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                let grant = match client.acquire("job", TTL, Wait::Up(Duration::from_secs(5)), "").await {
                    Ok(grant) => grant,
                    Err(_) => continue,
                };
                let granted = Instant::now();
                // Hold the lock for a moment, so that a second holder, if there were one, would overlap.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let release_sent = Instant::now();
                let ended = match client.release("job", grant.token).await {
                    Ok(()) => release_sent,
                    // Not released: the lock is only free once the lease ran out, counted from the send.
                    Err(_) => sent + TTL,
                };
                holdings.lock().await.push(Holding { token: grant.token, granted, ended });
            }
        }));
    }
    // The leader is killed while the workers contend: once grants are flowing.
    const GRANTS_BEFORE_KILL: usize = 10;
    wait_until(&format!("{GRANTS_BEFORE_KILL} grants before the kill"), Duration::from_secs(20), || async {
        let grants = holdings.lock().await.len();
        if grants >= GRANTS_BEFORE_KILL { Ok(()) } else { Err(grants) }
    })
    .await;
    let before_kill = holdings.lock().await.len();
    let killed_at = Instant::now();
    nodes[leader].kill_9();
    // Service is back once a grant arrives after the kill; contention goes on under the new leader until
    // it has made some more.
    const GRANTS_AFTER_KILL: usize = 10;
    let back_after = wait_until("a grant after killing the leader", Duration::from_secs(20), || async {
        let holdings = holdings.lock().await;
        let first = holdings.iter().filter(|h| h.granted > killed_at).map(|h| h.granted).min();
        first.map(|first| first - killed_at).ok_or(holdings.len())
    })
    .await;
    wait_until(&format!("{GRANTS_AFTER_KILL} grants after the kill"), Duration::from_secs(20), || async {
        let grants = holdings.lock().await.iter().filter(|h| h.granted > killed_at).count();
        if grants >= GRANTS_AFTER_KILL { Ok(()) } else { Err(grants) }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let mut holdings = holdings.lock().await.clone();
    assert!(holdings.len() > before_kill + 5, "too few grants after the kill: {}", holdings.len());
    check_exclusive(&mut holdings);
    eprintln!("leader killed: service back after {back_after:?}; {} grants in all", holdings.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_that_stops_keeping_alive_loses_the_lock_after_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = lock_cluster(dir.path(), &[]);
    let endpoints = endpoints(&nodes);
    wait_for_leader(&endpoints, Duration::from_secs(20)).await;

    // From the CLI: a grant that nobody keeps alive.
    let (code, stdout, stderr) =
        geostore(&["lock", "acquire", "cache-fill", "--ttl", "1s", "--try", "--json", "--endpoint", &endpoints[0]]);
    assert_eq!(code, 0, "{stderr}");
    let grant: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let first = grant["token"].as_u64().unwrap();
    assert_eq!(grant["lease"].as_u64(), Some(first));
    assert!(grant["expires"].as_u64().unwrap() > 0);

    let other = connect(&endpoints[1]).await;
    let asked = Instant::now();
    let second = other.acquire("cache-fill", Duration::from_secs(10), Wait::Up(Duration::from_secs(10)), "").await;
    let second = second.unwrap();
    assert!(second.token > first);
    assert!(asked.elapsed() >= Duration::from_millis(500), "granted before the first lease could expire");
    let (code, _, stderr) =
        geostore(&["lock", "release", "cache-fill", "--token", &first.to_string(), "--endpoint", &endpoints[2]]);
    assert_eq!(code, 1, "the expired holder cannot release: {stderr}");
    assert!(stderr.contains("does not hold"), "{stderr}");
    other.release("cache-fill", second.token).await.unwrap();

    // `lock run` while its keep-alives stop (the process is paused past the TTL): the lock goes to
    // another client, and on resuming `lock run` notices, stops its command and exits 4.
    let mut run = std::process::Command::new(geostore_tests::geostore_bin())
        .args(["lock", "run", "batch", "--ttl", "1s", "--endpoint", &endpoints[0], "--", "sleep", "60"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("`lock run` to take the lock", Duration::from_secs(10), || async {
        let state = other.describe("batch").await.unwrap();
        if state.holder.is_some() { Ok(()) } else { Err(state) }
    })
    .await;
    let pid = run.id().to_string();
    std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let taken = other.acquire("batch", Duration::from_secs(10), Wait::Up(Duration::from_secs(10)), "").await;
    std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let taken = taken.expect("the paused holder's lease expired");
    let status = tokio::task::spawn_blocking(move || run.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(4), "lock run must exit 4 when the lock is lost");
    assert_eq!(other.describe("batch").await.unwrap().holder.unwrap().token, taken.token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_run_exports_the_token_and_releases_and_elections_hand_over() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = lock_cluster(dir.path(), &[]);
    let endpoints = endpoints(&nodes);
    wait_for_leader(&endpoints, Duration::from_secs(20)).await;

    let (code, stdout, stderr) = geostore(&[
        "lock",
        "run",
        "deploy",
        "--endpoint",
        &endpoints[1],
        "--",
        "sh",
        "-c",
        "echo token=$GEOSTORE_FENCE_TOKEN fence=$GEOSTORE_FENCE; exit 7",
    ]);
    assert_eq!(code, 7, "the command's exit code: {stderr}");
    let token: u64 = stdout.trim().strip_prefix("token=").unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(stdout.contains(&format!("fence=deploy:{token}")), "{stdout}");
    let client = connect(&endpoints[0]).await;
    assert!(client.describe("deploy").await.unwrap().holder.is_none(), "released at exit");
    let (code, stdout, _) = geostore(&["lock", "list", "--json", "--endpoint", &endpoints[0]]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["locks"], serde_json::json!([]));

    // Election: observe, campaign (a process that leads until terminated), resign on SIGTERM, and a
    // second candidate waiting in line takes over.
    let mut leaders = client.observe("primary").await.unwrap();
    assert_eq!(leaders.recv().await.unwrap().unwrap(), None);
    let mut first = std::process::Command::new(geostore_tests::geostore_bin())
        .args(["election", "campaign", "primary", "node-a", "--ttl", "2s", "--json", "--endpoint", &endpoints[0]])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let leader = tokio::time::timeout(Duration::from_secs(10), leaders.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(leader.unwrap().label, "node-a");
    let second_client = connect(&endpoints[2]).await;
    let second = tokio::spawn(async move {
        second_client.campaign("primary", "node-b", Duration::from_secs(2), Duration::from_secs(30)).await
    });
    // The first candidate resigns only once the second waits in line for the election's lock.
    wait_until("the second candidate to queue", Duration::from_secs(10), || async {
        let state = client.describe(&format!("{ELECTION_PREFIX}primary")).await.unwrap();
        if state.waiters.len() == 1 { Ok(()) } else { Err(state) }
    })
    .await;
    std::process::Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap();
    assert!(first.wait().unwrap().success(), "campaign resigns and exits 0 on SIGTERM");
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(grant) = leaders.recv().await.unwrap().unwrap() {
                return grant;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(next.label, "node-b");
    let guard = second.await.unwrap().unwrap();
    assert_eq!(guard.token(), next.token);
    let (code, _, stderr) =
        geostore(&["election", "resign", "primary", "--token", &next.token.to_string(), "--endpoint", &endpoints[1]]);
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_keep_increasing_across_snapshots_and_a_restart_of_every_node() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every 20 entries, so the log is purged several times.
    let mut nodes = lock_cluster(dir.path(), &["--raft-snapshot-every", "20"]);
    let endpoints = endpoints(&nodes);
    wait_for_leader(&endpoints, Duration::from_secs(20)).await;
    let client = connect(&endpoints[0]).await;
    let mut last = 0;
    for _ in 0..60 {
        let grant = client.acquire("rolling", Duration::from_secs(30), Wait::Try, "").await.unwrap();
        assert!(grant.token > last);
        last = grant.token;
        client.release("rolling", grant.token).await.unwrap();
    }
    let held = client.acquire("kept", Duration::from_secs(60), Wait::Try, "before restart").await.unwrap();
    for node in &mut nodes {
        node.restart();
    }
    wait_for_leader(&endpoints, Duration::from_secs(30)).await;
    let client = connect(&endpoints[1]).await;
    // The held lock survived (from snapshot plus log), and new tokens are above every earlier one.
    let holder = wait_until("the held lock to be read back after the restart", Duration::from_secs(10), || async {
        let state = client.describe("kept").await.unwrap();
        state.holder.clone().ok_or(state)
    })
    .await;
    assert_eq!(holder.token, held.token);
    let grant = client.acquire("rolling", Duration::from_secs(30), Wait::Try, "").await.unwrap();
    assert!(grant.token > held.token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_fenced_from_the_cli_are_refused_once_a_newer_token_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = lock_cluster(dir.path(), &[]);
    let endpoints = endpoints(&nodes);
    wait_for_leader(&endpoints, Duration::from_secs(20)).await;
    let bin = geostore_tests::geostore_bin();
    let bin = bin.to_str().unwrap();

    // Inside `lock run`, GEOSTORE_FENCE fences every write the script makes.
    let script = format!("{bin} kv put report v1 --endpoint {} --json", endpoints[0]);
    let (code, stdout, stderr) =
        geostore(&["lock", "run", "report", "--endpoint", &endpoints[0], "--", "sh", "-c", &script]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"ok\":true"), "{stdout}");

    // A newer holder writes; the old token is now refused in its own site and, once replicated, in every
    // other, with the lock and both tokens named; nothing changes.
    let (code, stdout, _) = geostore(&["lock", "acquire", "report", "--json", "--endpoint", &endpoints[1]]);
    assert_eq!(code, 0);
    let token = serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["token"].as_u64().unwrap();
    let fence = format!("report:{token}");
    let (code, _, stderr) = geostore(&["kv", "put", "report", "v2", "--fence", &fence, "--endpoint", &endpoints[1]]);
    assert_eq!(code, 0, "{stderr}");
    let stale = format!("report:{}", token - 1);
    for endpoint in &endpoints {
        let stderr =
            wait_until(&format!("{endpoint} to refuse token {}", token - 1), Duration::from_secs(10), || async {
                let (code, _, stderr) =
                    geostore(&["kv", "put", "report", "stale", "--fence", &stale, "--endpoint", endpoint]);
                // Success is only possible before this site learned of the newer token: then the write under
                // the higher token still wins the merge.
                assert!(code == 0 || code == 1, "exit code {code}: {stderr}");
                if code == 1 { Ok(stderr) } else { Err(stderr) }
            })
            .await;
        assert!(stderr.contains("stale fence") && stderr.contains("\"report\""), "{stderr}");
        assert!(stderr.contains(&format!("token {}", token - 1)) && stderr.contains(&token.to_string()), "{stderr}");
    }
    let client = connect(&endpoints[2]).await;
    wait_until("the write under the newest token to win", Duration::from_secs(10), || async {
        // Absent until it has replicated here (the refusal above may come from the lock group alone).
        let value = client.get("report").await.unwrap().map(|found| found.value);
        if value == Some(geostore_client::Value::Register(b"v2".to_vec())) { Ok(()) } else { Err(value) }
    })
    .await;
    // In a Batch, each write's fence is checked on its own.
    let put = |fence: Option<u64>, value: &str| geostore_client::pb::WriteOp {
        op: Some(geostore_client::pb::write_op::Op::Put(geostore_client::pb::PutRequest {
            key: b"report".to_vec(),
            value: value.as_bytes().to_vec(),
            ttl_ms: None,
            fence: fence.map(|token| geostore_client::pb::Fence { lock: "report".into(), token }),
        })),
    };
    let results = client.batch(vec![put(Some(token - 1), "stale"), put(Some(token), "v3")]).await.unwrap();
    let refused = results[0].as_ref().unwrap_err();
    assert_eq!(refused.code, tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message.contains("stale fence"), "{}", refused.message);
    assert!(results[1].is_ok(), "{:?}", results[1]);
    let (code, _, stderr) = geostore(&["kv", "put", "report", "x", "--fence", "no-token", "--endpoint", &endpoints[0]]);
    assert_eq!(code, 2, "a malformed fence is a usage error: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_voters_over_three_sites_survive_a_site_and_a_learner_serves_requests() {
    // Sites a and b have two voters each, c one (2+2+1), and a sixth node in c is a learner. These nodes
    // only form the lock group (no key-value peers): two nodes per site is a lock-group layout.
    let dir = tempfile::tempdir().unwrap();
    let layout = [("a", true), ("a", true), ("b", true), ("b", true), ("c", true), ("c", false)];
    let ports: Vec<u16> = layout.iter().map(|_| geostore_tests::free_port()).collect();
    let members: Vec<String> = layout
        .iter()
        .enumerate()
        .map(|(i, (site, voter))| {
            format!("{}={site}=http://127.0.0.1:{}{}", i + 1, ports[i], if *voter { "" } else { "=learner" })
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, (site, _)) in layout.iter().enumerate() {
        let mut args: Vec<String> = vec!["--site".into(), site.to_string(), "--node-id".into(), (i + 1).to_string()];
        for member in &members {
            args.push("--lock-member".into());
            args.push(member.clone());
        }
        args.extend(geostore_tests::FAST_RAFT.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let listen = format!("127.0.0.1:{}", ports[i]);
        nodes.push(NodeProcess::start_at(&dir.path().join(format!("n{i}")), &listen, &args));
    }
    let endpoints = endpoints(&nodes);
    wait_for_leader(&endpoints[..5], Duration::from_secs(30)).await;
    // The learner joins (added by the leader) and takes requests, forwarding them.
    let learner = connect(&endpoints[5]).await;
    wait_until("the learner to join", Duration::from_secs(20), || async {
        let status = learner.group_status().await.unwrap();
        let voters = status.members.iter().filter(|m| m.voter).count();
        if status.members.len() == 6 && voters == 5 && status.state == "learner" { Ok(()) } else { Err(status) }
    })
    .await;
    let first = learner.acquire("five", Duration::from_secs(30), Wait::Try, "").await.unwrap();
    learner.release("five", first.token).await.unwrap();

    // Losing site a (two voters, possibly the leader) leaves three of five: locks are still granted.
    nodes[0].kill_9();
    nodes[1].kill_9();
    let client = connect(&endpoints[4]).await;
    let grant = client.acquire("five", Duration::from_secs(30), Wait::Up(Duration::from_secs(20)), "").await.unwrap();
    assert!(grant.token > first.token);
    client.release("five", grant.token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_lock_delay_an_expired_lock_is_not_granted_again_until_the_delay_passes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = lock_cluster(dir.path(), &["--lock-delay-ms", "1500"]);
    let endpoints = endpoints(&nodes);
    wait_for_leader(&endpoints, Duration::from_secs(20)).await;
    let client = connect(&endpoints[0]).await;
    // Released locks are free at once.
    let grant = client.acquire("delayed", Duration::from_millis(300), Wait::Try, "").await.unwrap();
    client.release("delayed", grant.token).await.unwrap();
    // An expired one (never kept alive) is not granted for the lock-delay after its 300 ms lease.
    let sent = Instant::now();
    client.acquire("delayed", Duration::from_millis(300), Wait::Try, "").await.unwrap();
    let busy = client.acquire("delayed", Duration::from_secs(5), Wait::Try, "").await.unwrap_err();
    assert_eq!(busy.code, tonic::Code::FailedPrecondition);
    let other = connect(&endpoints[1]).await;
    other.acquire("delayed", Duration::from_secs(5), Wait::Up(Duration::from_secs(10)), "").await.unwrap();
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(1800), "granted {waited:?} after the expiring grant was asked for");
}
