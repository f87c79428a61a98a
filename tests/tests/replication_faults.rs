//! Three sites as real processes, every link between them through the fault-injecting proxy (80 ms round
//! trips), with concurrent writers in every site on overlapping keys of every type while the links are cut
//! (a bridge, a one-way cut, an isolated site) and one node is SIGKILLed and restarted. After healing,
//! every site must return the same value for every key, and every acknowledged operation must be reflected.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use geostore_client::{Client, Outcome, Value};
use geostore_faultproxy::Faults;
use geostore_tests::{SiteMesh, wait_until};
use tokio::sync::Mutex;

const SITES: [&str; 3] = ["a", "b", "c"];
const WRITERS_PER_SITE: usize = 2;
const REGISTERS: u64 = 30;
const COUNTERS: u64 = 10;
const SETS: u64 = 5;
/// One-way delay on every link: 80 ms round trips.
const LINK_DELAY_MS: u64 = 40;

/// What the writers know happened.
#[derive(Default)]
struct Ledger {
    /// Counter key -> (sum of acknowledged deltas, sum of deltas with unknown outcome, lowest unknown
    /// delta sum that could be negative: deltas are positive here, so 0).
    counters: BTreeMap<String, (i64, i64)>,
    /// Set key -> members whose add was acknowledged.
    added: BTreeMap<String, BTreeSet<String>>,
    /// Set key -> members whose removal was acknowledged (each member is removed only by its writer, after
    /// its add was acknowledged, and never added again).
    removed: BTreeMap<String, BTreeSet<String>>,
    /// Set key -> members whose add or removal has an unknown outcome.
    uncertain: BTreeMap<String, BTreeSet<String>>,
    /// Register key -> every value written with an acknowledged or unknown outcome.
    register_values: BTreeMap<String, BTreeSet<String>>,
    acknowledged: u64,
}

/// A small deterministic generator per writer.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn writer(site: usize, number: usize, endpoint: String, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let client = Client::connect(&[&endpoint]).await.expect("connect");
    let mut random = Xorshift(0x9E37_79B9_7F4A_7C15 ^ ((site * 16 + number + 1) as u64).wrapping_mul(0xBF58_476D));
    let mut own_members: Vec<(String, String)> = Vec::new();
    let mut sequence = 0;
    while !stop.load(Ordering::SeqCst) {
        sequence += 1;
        let choice = random.next();
        match choice % 4 {
            0 => {
                let key = format!("reg:{}", random.next() % REGISTERS);
                let value = format!("{}-{number}-{sequence}", SITES[site]);
                let result = client.put(key.as_str(), value.as_str(), None).await;
                let mut ledger = ledger.lock().await;
                if result.is_ok() || result.as_ref().is_err_and(|e| e.outcome == Outcome::Unknown) {
                    ledger.register_values.entry(key).or_default().insert(value);
                }
                ledger.acknowledged += u64::from(result.is_ok());
            }
            1 => {
                let key = format!("ctr:{}", random.next() % COUNTERS);
                let delta = (random.next() % 5 + 1) as i64;
                let result = client.increment(key.as_str(), delta).await;
                let mut ledger = ledger.lock().await;
                let slot = ledger.counters.entry(key).or_default();
                match &result {
                    Ok(_) => slot.0 += delta,
                    Err(error) if error.outcome == Outcome::Unknown => slot.1 += delta,
                    Err(_) => {}
                }
                ledger.acknowledged += u64::from(result.is_ok());
            }
            2 => {
                let key = format!("set:{}", random.next() % SETS);
                let member = format!("{}-{number}-{sequence}", SITES[site]);
                let result = client.set_add(key.as_str(), vec![member.clone().into_bytes()]).await;
                let mut ledger = ledger.lock().await;
                match &result {
                    Ok(_) => {
                        ledger.added.entry(key.clone()).or_default().insert(member.clone());
                        own_members.push((key, member));
                    }
                    Err(error) if error.outcome == Outcome::Unknown => {
                        ledger.uncertain.entry(key).or_default().insert(member);
                    }
                    Err(_) => {}
                }
                ledger.acknowledged += u64::from(result.is_ok());
            }
            _ => {
                if own_members.is_empty() {
                    continue;
                }
                let (key, member) = own_members.swap_remove((random.next() % own_members.len() as u64) as usize);
                let result = client.set_remove(key.as_str(), vec![member.clone().into_bytes()]).await;
                let mut ledger = ledger.lock().await;
                match &result {
                    Ok(_) => {
                        ledger.removed.entry(key).or_default().insert(member);
                    }
                    Err(error) if error.outcome == Outcome::Unknown => {
                        ledger.uncertain.entry(key).or_default().insert(member);
                    }
                    // Not applied: the member stays, and this writer may try again later.
                    Err(_) => own_members.push((key, member)),
                }
                ledger.acknowledged += u64::from(result.is_ok());
            }
        }
        // A short pause between operations, as a client would make: the writers spread over each fault
        // phase instead of flooding the links.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// The keys whose values differ between the sites' snapshots, with each site's value (or that a site
/// could not be read).
fn differences(snapshots: &[Option<BTreeMap<String, Option<Value>>>; 3]) -> Vec<String> {
    let [Some(a), Some(b), Some(c)] = snapshots else {
        return vec![format!("a site did not answer: read {:?}", snapshots.each_ref().map(Option::is_some))];
    };
    a.iter()
        .filter(|(key, value)| b.get(*key) != Some(value) || c.get(*key) != Some(value))
        .map(|(key, value)| format!("{key}: a {value:?}, b {:?}, c {:?}", b.get(key), c.get(key)))
        .collect()
}

/// Everything every key reads as at one site.
async fn snapshot(client: &Client) -> Option<BTreeMap<String, Option<Value>>> {
    let mut values = BTreeMap::new();
    let keys = (0..REGISTERS)
        .map(|i| format!("reg:{i}"))
        .chain((0..COUNTERS).map(|i| format!("ctr:{i}")))
        .chain((0..SETS).map(|i| format!("set:{i}")));
    for key in keys {
        let value = client.get(key.as_str()).await.ok()?.map(|found| found.value);
        values.insert(key, value);
    }
    Some(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_sites_converge_through_cuts_isolation_and_a_crash_losing_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = Faults { delay_ms: LINK_DELAY_MS, jitter_ms: 5, ..Faults::default() };
    let mut mesh = SiteMesh::start(dir.path(), &SITES, healthy.clone(), &["--anti-entropy-interval-ms", "2000"]).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (site, node) in mesh.nodes.iter().enumerate() {
        for number in 0..WRITERS_PER_SITE {
            writers.push(tokio::spawn(writer(site, number, node.endpoint.clone(), ledger.clone(), stop.clone())));
        }
    }
    // Each fault lasts a while as the writers go on: time passing under the fault is the point.
    let phase = |seconds: u64| tokio::time::sleep(Duration::from_secs(seconds));

    phase(2).await;
    // Bridge: a and b cannot reach each other; both still reach c.
    mesh.cut_both_ways(0, 1);
    phase(3).await;
    mesh.heal_all();
    // One-way: a hears nothing from b; b still hears a.
    mesh.link(0, 1).set_faults(Faults { cut_forward: true, cut_backward: true, ..healthy });
    phase(2).await;
    mesh.heal_all();
    // c is isolated from both.
    mesh.isolate(2);
    phase(3).await;
    mesh.heal_all();
    // b crashes while everyone writes, and comes back.
    mesh.nodes[1].kill_9();
    phase(2).await;
    mesh.nodes[1].restart();
    phase(2).await;

    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    mesh.heal_all();

    let clients = [
        Client::connect(&[&mesh.nodes[0].endpoint]).await.unwrap(),
        Client::connect(&[&mesh.nodes[1].endpoint]).await.unwrap(),
        Client::connect(&[&mesh.nodes[2].endpoint]).await.unwrap(),
    ];
    let healed = Instant::now();
    let converged = wait_until("every site to read the same values after healing", Duration::from_secs(60), || async {
        let snapshots = [snapshot(&clients[0]).await, snapshot(&clients[1]).await, snapshot(&clients[2]).await];
        match &snapshots {
            [Some(a), Some(b), Some(c)] if a == b && b == c => Ok(a.clone()),
            // Only the keys on which the sites differ: a whole snapshot would bury them.
            _ => Err(differences(&snapshots)),
        }
    })
    .await;
    eprintln!("converged {:?} after healing", healed.elapsed());
    eprintln!("acknowledged operations: {}", ledger.lock().await.acknowledged);

    let ledger = ledger.lock().await;
    assert!(ledger.acknowledged > 500, "too little work to mean anything: {}", ledger.acknowledged);
    for (key, (acknowledged, unknown)) in &ledger.counters {
        let value = match converged[key] {
            Some(Value::Counter(value)) => value,
            None => 0,
            ref other => panic!("{key} is {other:?}"),
        };
        assert!(
            (*acknowledged..=acknowledged + unknown).contains(&value),
            "{key} is {value}; acknowledged increments add up to {acknowledged} (+{unknown} unknown)"
        );
    }
    for i in 0..SETS {
        let key = format!("set:{i}");
        let members: BTreeSet<String> = match &converged[&key] {
            Some(Value::Set(members)) => members.iter().map(|m| String::from_utf8(m.clone()).unwrap()).collect(),
            None => BTreeSet::new(),
            other => panic!("{key} is {other:?}"),
        };
        let empty = BTreeSet::new();
        let added = ledger.added.get(&key).unwrap_or(&empty);
        let removed = ledger.removed.get(&key).unwrap_or(&empty);
        let uncertain = ledger.uncertain.get(&key).unwrap_or(&empty);
        for member in added.difference(removed).filter(|m| !uncertain.contains(*m)) {
            assert!(members.contains(member), "{key} lost acknowledged member {member}");
        }
        for member in removed.iter().filter(|m| !uncertain.contains(*m)) {
            assert!(!members.contains(member), "{key} still has acknowledged-removed member {member}");
        }
    }
    for (key, written) in &ledger.register_values {
        match &converged[key] {
            Some(Value::Register(value)) => {
                let value = String::from_utf8(value.clone()).unwrap();
                assert!(written.contains(&value), "{key} holds {value}, which nobody wrote");
            }
            other => panic!("{key} is {other:?} after acknowledged puts"),
        }
    }
}
