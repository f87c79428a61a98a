//! A node killed with SIGKILL loses no acknowledged write.
//!
//! Sixteen concurrent clients write 10,000 registers, 10,000 counters and 10,000 sets. The node is
//! SIGKILLed mid-stream, restarted, the rest is written (retrying what was cut off), and it is SIGKILLed
//! and restarted once more. After each restart every acknowledged write must be there. Increments are not
//! idempotent, so each counter is checked against a range: at least its acknowledged increments, at most
//! those plus the attempts whose outcome is unknown.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use geostore_client::{Client, Value};
use geostore_tests::{NodeProcess, wait_until};
use tokio::sync::Mutex;

const KEYS_PER_TYPE: usize = 10_000;
const WRITERS: usize = 16;

/// What the clients know about each key.
#[derive(Default, Clone)]
struct Ledger {
    register_acked: Vec<bool>,
    set_acked: Vec<bool>,
    counter_acked: Vec<u32>,
    counter_unknown: Vec<u32>,
}

fn delta(i: usize) -> i64 {
    (i % 7) as i64 + 1
}

/// Writes every key not yet acknowledged, from `WRITERS` clients; stops early if the node goes away.
async fn write_pending(endpoint: &str, ledger: &Arc<Mutex<Ledger>>, acked: &Arc<AtomicUsize>) {
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let client = Client::connect(&[endpoint]).await.expect("connect");
        let ledger = ledger.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in (writer..KEYS_PER_TYPE).step_by(WRITERS) {
                let snapshot = ledger.lock().await.clone();
                if !snapshot.register_acked[i] {
                    if client.put(format!("reg:{i}"), format!("value-{i}"), None).await.is_err() {
                        return;
                    }
                    ledger.lock().await.register_acked[i] = true;
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                if snapshot.counter_acked[i] == 0 {
                    match client.increment(format!("ctr:{i}"), delta(i)).await {
                        Ok(_) => ledger.lock().await.counter_acked[i] += 1,
                        Err(_) => {
                            ledger.lock().await.counter_unknown[i] += 1;
                            return;
                        }
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                if !snapshot.set_acked[i] {
                    if client.set_add(format!("set:{i}"), vec![format!("member-{i}").into_bytes()]).await.is_err() {
                        return;
                    }
                    ledger.lock().await.set_acked[i] = true;
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
}

/// Checks every key against the ledger; returns how many acknowledged writes were found.
async fn verify(endpoint: &str, ledger: &Ledger) -> usize {
    let client = Client::connect(&[endpoint]).await.expect("connect");
    let mut found = 0;
    for i in 0..KEYS_PER_TYPE {
        if ledger.register_acked[i] {
            let read = client.get(format!("reg:{i}")).await.unwrap();
            assert_eq!(read.map(|r| r.value), Some(Value::Register(format!("value-{i}").into_bytes())), "reg:{i}");
            found += 1;
        }
        let value = match client.get(format!("ctr:{i}")).await.unwrap().map(|r| r.value) {
            Some(Value::Counter(value)) => value,
            None => 0,
            Some(other) => panic!("ctr:{i} holds {other:?}"),
        };
        let low = i64::from(ledger.counter_acked[i]) * delta(i);
        let high = i64::from(ledger.counter_acked[i] + ledger.counter_unknown[i]) * delta(i);
        assert!((low..=high).contains(&value), "ctr:{i} is {value}, expected {low}..={high}");
        if ledger.counter_acked[i] > 0 {
            found += 1;
        }
        if ledger.set_acked[i] {
            let members = client.set_members(format!("set:{i}")).await.unwrap().unwrap_or_default();
            let expected: BTreeSet<Vec<u8>> = [format!("member-{i}").into_bytes()].into();
            assert_eq!(members.into_iter().collect::<BTreeSet<_>>(), expected, "set:{i}");
            found += 1;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), &[]);
    let ledger = Arc::new(Mutex::new(Ledger {
        register_acked: vec![false; KEYS_PER_TYPE],
        set_acked: vec![false; KEYS_PER_TYPE],
        counter_acked: vec![0; KEYS_PER_TYPE],
        counter_unknown: vec![0; KEYS_PER_TYPE],
    }));
    let acked = Arc::new(AtomicUsize::new(0));

    // Kill the node while the clients are writing, once about a third of the writes are acknowledged.
    let writing = {
        let (endpoint, ledger, acked) = (node.endpoint.clone(), ledger.clone(), acked.clone());
        tokio::spawn(async move { write_pending(&endpoint, &ledger, &acked).await })
    };
    wait_until("a third of the writes acknowledged", std::time::Duration::from_secs(120), || async {
        let count = acked.load(Ordering::SeqCst);
        if count >= KEYS_PER_TYPE { Ok(()) } else { Err(count) }
    })
    .await;
    node.kill_9();
    writing.await.unwrap();
    let acked_before_kill = acked.load(Ordering::SeqCst);
    assert!(acked_before_kill < 3 * KEYS_PER_TYPE, "the kill came after every write had finished");

    node.restart();
    let snapshot = ledger.lock().await.clone();
    assert_eq!(verify(&node.endpoint, &snapshot).await, acked_before_kill);

    // Write the rest, then kill again with everything acknowledged.
    write_pending(&node.endpoint, &ledger, &acked).await;
    assert_eq!(acked.load(Ordering::SeqCst), 3 * KEYS_PER_TYPE, "every write is acknowledged after the restart");
    node.kill_9();
    node.restart();
    let snapshot = ledger.lock().await.clone();
    assert_eq!(verify(&node.endpoint, &snapshot).await, 3 * KEYS_PER_TYPE);
}
