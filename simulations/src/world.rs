//! One seeded run: three sites of real geostore nodes (store, replication, lock group, fencing) on
//! turmoil's simulated network and clock, the applications' workload, the fault schedule, healing, the
//! convergence check and the invariants.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use geostore_client::{Client, ConnectOptions};
use geostore_node::topology::{Topology, direct};
use geostore_node::{Environment, Metrics, NodeSettings, SyncPolicy};
use geostore_storage::LossyMemoryStorage;

use crate::check::{self, FinalValues, Violation};
use crate::env::{NODE_PORT, SimClock, dialer, listener};
use crate::history::{Op, Recorder, Shared};
use crate::plan::{Fault, OBSERVER, Plan, Profile, SITES, app_host, node_host, site_name};
use crate::workload::{self, Keys, now_ms};

/// Options that do not change what a seed does, only what is shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Print the trace as the run goes.
    pub trace: bool,
}

/// What one run did and found.
pub struct Report {
    pub seed: u64,
    pub profile: Profile,
    pub trace_hash: u64,
    pub simulated: Duration,
    pub real: Duration,
    pub faults: BTreeMap<&'static str, u64>,
    /// How often each critical path was taken (a run that never takes one checks nothing about it).
    pub sometimes: BTreeMap<&'static str, u64>,
    pub violations: Vec<Violation>,
    /// From the faults healed and the applications' last write answered to every replica agreeing on
    /// every key.
    pub convergence: Option<Duration>,
    pub ops: Vec<Op>,
    pub trace: Vec<String>,
}

/// The simulation's fixed epoch (2026-09-21), so that wall-clock readings repeat from run to run.
const EPOCH_SECS: u64 = 1_790_000_000;
/// Extra time after the workload for calls in flight to end (client deadlines are up to ~35 s).
const DRAIN: Duration = Duration::from_secs(45);

fn node_settings(site: usize, plan: &Plan) -> NodeSettings {
    let sites: Vec<String> = (0..SITES).map(site_name).collect();
    let topology = Topology::one_node_per_site(&sites, |site| format!("http://{}:{NODE_PORT}", node_host(site)));
    NodeSettings {
        data_dir: Some("/simulated".into()),
        listen: Some(format!("0.0.0.0:{NODE_PORT}")),
        sync: Some(if plan.sync_always[site] { SyncPolicy::Always } else { SyncPolicy::None }),
        anti_entropy_interval_ms: Some(Duration::from_secs(5)),
        // Short change logs, so that a site cut off for a few seconds falls behind the log's start and
        // must catch up by anti-entropy (a path the default retention of a million records never takes
        // in a one-minute run).
        partitions: Some(4),
        log_retention_ops: Some(32),
        log_trim_interval_ms: Some(Duration::from_secs(1)),
        ..topology.settings(site, &direct(&topology))
    }
}

/// The nodes' state that outlives a crash: their disks and clocks; and every incarnation's metrics.
struct Nodes {
    disks: Vec<Arc<LossyMemoryStorage>>,
    clocks: Vec<SimClock>,
    metrics: Rc<RefCell<Vec<Vec<Metrics>>>>,
}

impl Nodes {
    /// The site whose node leads the lock group now, by its latest incarnation's gauge.
    fn leader(&self) -> Option<usize> {
        let metrics = self.metrics.borrow();
        (0..SITES).find(|&site| metrics[site].last().is_some_and(|m| gauge(m, "geostore_lock_group_leader") == 1.0))
    }

    /// A counter summed over every node and incarnation.
    fn total(&self, name: &str) -> u64 {
        self.metrics.borrow().iter().flatten().map(|m| gauge(m, name) as u64).sum()
    }

    fn max(&self, name: &str) -> u64 {
        self.metrics.borrow().iter().flatten().map(|m| gauge(m, name) as u64).max().unwrap_or(0)
    }
}

/// The value of a counter or gauge (summed over its labels).
fn gauge(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().value() + m.get_gauge().value())
        .sum()
}

fn site_hosts(site: usize, apps: usize) -> Vec<String> {
    let mut hosts = vec![node_host(site)];
    hosts.extend((0..apps).map(|app| app_host(site, app)));
    if site == 0 {
        hosts.push(OBSERVER.to_string());
    }
    hosts
}

/// How to undo a fault.
enum Heal {
    Repair(Vec<(String, String)>),
    RepairOneWay(Vec<(String, String)>),
    Latency(Vec<(String, String)>),
    Loss(Vec<(String, String)>),
    Restart(usize),
    Release(Vec<(String, String)>),
    Clock(usize),
    Nothing,
}

struct Driver<'a> {
    plan: &'a Plan,
    nodes: &'a Nodes,
    recorder: Shared,
    faults: BTreeMap<&'static str, u64>,
    /// Power losses on nodes that do not fsync: (site, when).
    lossy: Vec<(usize, u64)>,
    lost_batches: u64,
}

impl Driver<'_> {
    fn pairs(&self, a: &[String], b: &[String]) -> Vec<(String, String)> {
        a.iter().flat_map(|x| b.iter().map(move |y| (x.clone(), y.clone()))).collect()
    }

    fn others(&self, site: usize) -> Vec<String> {
        (0..SITES).filter(|&o| o != site).flat_map(|o| site_hosts(o, self.plan.profile.apps_per_site)).collect()
    }

    /// The base latency between two hosts.
    fn latency(&self, a: &str, b: &str) -> Duration {
        let site_of = |host: &str| host[2..3].parse::<usize>().expect("host names start with dcN");
        Duration::from_millis(self.plan.latency_ms[site_of(a)][site_of(b)])
    }

    fn start(&mut self, sim: &mut turmoil::Sim, fault: &Fault) -> Heal {
        *self.faults.entry(fault.class()).or_default() += 1;
        let apps = self.plan.profile.apps_per_site;
        match *fault {
            Fault::IsolateSite { site } => {
                let pairs = self.pairs(&site_hosts(site, apps), &self.others(site));
                pairs.iter().for_each(|(a, b)| sim.partition(a.as_str(), b.as_str()));
                Heal::Repair(pairs)
            }
            Fault::Bridge { middle } => {
                let outer: Vec<usize> = (0..SITES).filter(|&s| s != middle).collect();
                let pairs = self.pairs(&site_hosts(outer[0], apps), &site_hosts(outer[1], apps));
                pairs.iter().for_each(|(a, b)| sim.partition(a.as_str(), b.as_str()));
                Heal::Repair(pairs)
            }
            Fault::OneWay { from, to } => {
                let pairs = vec![(node_host(from), node_host(to))];
                pairs.iter().for_each(|(a, b)| sim.partition_oneway(a.as_str(), b.as_str()));
                Heal::RepairOneWay(pairs)
            }
            Fault::MinorityPartition { site } => {
                let others: Vec<String> = (0..SITES).filter(|&o| o != site).map(node_host).collect();
                let pairs = self.pairs(&[node_host(site)], &others);
                pairs.iter().for_each(|(a, b)| sim.partition(a.as_str(), b.as_str()));
                Heal::Repair(pairs)
            }
            Fault::Delay { a, b, extra_ms } => {
                let pairs = self.pairs(&site_hosts(a, apps), &site_hosts(b, apps));
                for (x, y) in &pairs {
                    sim.set_link_latency(x.as_str(), y.as_str(), self.latency(x, y) + Duration::from_millis(extra_ms));
                }
                Heal::Latency(pairs)
            }
            Fault::Loss { a, b, rate_per_mille } => {
                let pairs = vec![(node_host(a), node_host(b))];
                for (x, y) in &pairs {
                    sim.set_link_fail_rate(x.as_str(), y.as_str(), f64::from(rate_per_mille) / 1_000.0);
                }
                Heal::Loss(pairs)
            }
            Fault::Reorder { site } => {
                let pairs = self.pairs(&site_hosts(site, apps), &self.others(site));
                for (x, y) in &pairs {
                    let base = self.latency(x, y);
                    sim.set_link_max_message_latency(x.as_str(), y.as_str(), base * 4 + Duration::from_millis(50));
                }
                Heal::Latency(pairs)
            }
            Fault::Crash { site, power_loss } => self.crash(sim, site, power_loss),
            Fault::LeaderKill => match self.nodes.leader() {
                Some(site) => self.crash(sim, site, false),
                None => {
                    self.recorder.borrow_mut().note(now_sim(sim), "faults", "no leader to kill");
                    Heal::Nothing
                }
            },
            Fault::Pause { site } => {
                let everyone: Vec<String> =
                    (0..SITES).flat_map(|s| site_hosts(s, apps)).filter(|host| *host != node_host(site)).collect();
                let pairs = self.pairs(&[node_host(site)], &everyone);
                pairs.iter().for_each(|(a, b)| sim.hold(a.as_str(), b.as_str()));
                Heal::Release(pairs)
            }
            Fault::ClockSkew { site, offset_ms } | Fault::ClockJump { site, offset_ms } => {
                self.nodes.clocks[site].set_offset_ms(offset_ms);
                Heal::Clock(site)
            }
        }
    }

    fn crash(&mut self, sim: &mut turmoil::Sim, site: usize, power_loss: bool) -> Heal {
        sim.crash(node_host(site));
        if power_loss {
            let lost = self.nodes.disks[site].lose_unsynced();
            self.lost_batches += lost as u64;
            self.recorder.borrow_mut().note(now_sim(sim), "faults", format!("dc{site} lost {lost} unsynced batches"));
            if !self.plan.sync_always[site] {
                self.lossy.push((site, now_sim(sim)));
            }
        }
        Heal::Restart(site)
    }

    fn heal(&mut self, sim: &mut turmoil::Sim, heal: Heal) {
        match heal {
            Heal::Repair(pairs) => pairs.iter().for_each(|(a, b)| sim.repair(a.as_str(), b.as_str())),
            Heal::RepairOneWay(pairs) => pairs.iter().for_each(|(a, b)| sim.repair_oneway(a.as_str(), b.as_str())),
            Heal::Latency(pairs) => {
                for (a, b) in pairs {
                    sim.set_link_latency(a.as_str(), b.as_str(), self.latency(&a, &b));
                }
            }
            Heal::Loss(pairs) => {
                for (a, b) in pairs {
                    sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            Heal::Restart(site) => sim.bounce(node_host(site)),
            Heal::Release(pairs) => pairs.iter().for_each(|(a, b)| sim.release(a.as_str(), b.as_str())),
            Heal::Clock(site) => self.nodes.clocks[site].set_offset_ms(0),
            Heal::Nothing => {}
        }
    }
}

fn now_sim(sim: &turmoil::Sim) -> u64 {
    sim.elapsed().as_millis() as u64
}

/// What the observer saw after healing.
#[derive(Default)]
struct Observation {
    final_values: Option<FinalValues>,
    diverged: Vec<String>,
    convergence: Option<Duration>,
    /// Each site's placement as its node reports it at the end (`None`: no answer).
    placements: Vec<Option<geostore_proto::v1::PlacementStatus>>,
}

/// Runs the plan `seed` gives under `profile`.
pub fn run(seed: u64, profile: Profile, options: Options) -> Report {
    run_plan(&Plan::new(seed, profile), options)
}

/// Runs a plan: one a seed gave, or a scripted scenario (a plan whose faults were written by hand).
pub fn run_plan(plan: &Plan, options: Options) -> Report {
    let (seed, profile) = (plan.seed, plan.profile);
    let started = Instant::now();
    geostore_raft::runtime::seed_random(plan.raft_seed);
    // Retry jitter (pullers, proposers, the applications' lock retries) has its own generator, so that
    // retries do not shift the elections' draws.
    geostore_runtime::random::seed(plan.raft_seed ^ 0x005e_ed0f_b0ff);
    let recorder: Shared = Rc::new(RefCell::new(Recorder { echo: options.trace, ..Recorder::default() }));
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(profile.workload + DRAIN + profile.settle_max + Duration::from_secs(30))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .tcp_capacity(1 << 16)
        .rng_seed(plan.network_seed)
        .build();

    let nodes = Nodes {
        disks: (0..SITES).map(|_| Arc::new(LossyMemoryStorage::new())).collect(),
        clocks: (0..SITES).map(|_| SimClock::default()).collect(),
        metrics: Rc::new(RefCell::new(vec![Vec::new(); SITES])),
    };
    for site in 0..SITES {
        let mut config = node_settings(site, plan).resolve().expect("the simulation's node settings are valid");
        config.store.inline_writer = true;
        if let Some(group) = config.lock_group.as_mut() {
            group.group.inline_log = true;
        }
        if let Some(placement) = config.placement.as_mut() {
            placement.group.inline_log = true;
        }
        let disk = nodes.disks[site].clone();
        let clock = nodes.clocks[site].clone();
        let metrics = nodes.metrics.clone();
        let replica_id = plan.network_seed.rotate_left(8 * site as u32) | 1;
        sim.host(node_host(site), move || {
            let metrics_now = Metrics::new();
            metrics.borrow_mut()[site].push(metrics_now.clone());
            let environment = Environment {
                storage: disk.clone(),
                wall: Arc::new(clock.clone()),
                dialer: dialer(),
                metrics: metrics_now,
                new_replica_id: Box::new(move || replica_id),
            };
            let config = config.clone();
            async move {
                let listener = listener().await?;
                geostore_node::run_with(environment, config, listener, None, std::future::pending()).await?;
                Ok(())
            }
        });
    }
    let apps = profile.apps_per_site;
    let keys: Keys = Rc::default();
    let done = Rc::new(RefCell::new(0_usize));
    for site in 0..SITES {
        for app in 0..apps {
            let process = site * apps + app;
            let app = workload::App {
                process,
                site,
                seed: plan.app_seeds[process],
                until: profile.workload,
                recorder: recorder.clone(),
                keys: keys.clone(),
                done: done.clone(),
            };
            sim.client(app_host(site, process % apps), workload::run(app));
        }
    }
    let healed_at: Rc<Cell<Option<u64>>> = Rc::default();
    let observation: Rc<RefCell<Observation>> = Rc::default();
    sim.client(OBSERVER, observe(keys, healed_at.clone(), done, SITES * apps, profile.settle_max, observation.clone()));

    // Set the sites' latencies: 1 ms inside a site (the builder's default), the plan's between sites.
    for a in 0..SITES {
        for b in a + 1..SITES {
            for x in site_hosts(a, apps) {
                for y in site_hosts(b, apps) {
                    sim.set_link_latency(x.as_str(), y.as_str(), Duration::from_millis(plan.latency_ms[a][b]));
                }
            }
        }
    }

    let mut driver = Driver {
        plan,
        nodes: &nodes,
        recorder: recorder.clone(),
        faults: BTreeMap::new(),
        lossy: vec![],
        lost_batches: 0,
    };
    let mut pending = plan.faults.clone().into_iter().peekable();
    let mut active: Vec<(Duration, Heal)> = Vec::new();
    let mut violations = Vec::new();
    loop {
        let now = sim.elapsed();
        while pending.peek().is_some_and(|f| f.at <= now) {
            let scheduled = pending.next().expect("peeked");
            recorder.borrow_mut().note(
                now_sim(&sim),
                "faults",
                format!("start {} for {:?}", scheduled.fault, scheduled.lasts),
            );
            let heal = driver.start(&mut sim, &scheduled.fault);
            active.push((scheduled.at + scheduled.lasts, heal));
        }
        let (due, rest): (Vec<_>, Vec<_>) = active.into_iter().partition(|(end, _)| *end <= now);
        active = rest;
        for (_, heal) in due {
            recorder.borrow_mut().note(now_sim(&sim), "faults", "heal");
            driver.heal(&mut sim, heal);
        }
        if now >= profile.workload && healed_at.get().is_none() {
            for (_, heal) in std::mem::take(&mut active) {
                driver.heal(&mut sim, heal);
            }
            recorder.borrow_mut().note(now_sim(&sim), "faults", "all healed");
            healed_at.set(Some(now_sim(&sim)));
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => {
                violations
                    .push(Violation { invariant: "nodes-run", message: format!("the simulation stopped: {error}") });
                break;
            }
        }
    }

    let observation = observation.take();
    let mut sometimes = BTreeMap::new();
    {
        let recorder = recorder.borrow();
        let count = |f: &dyn Fn(&Op) -> bool| recorder.ops.iter().filter(|op| f(op)).count() as u64;
        use crate::history::{Call, Outcome};
        sometimes.insert(
            "stale fenced write refused",
            count(&|op| {
                matches!(op.call, Call::GuardedWrite { .. })
                    && matches!(op.reason, Some(geostore_client::Reason::StaleFence { .. }))
            }),
        );
        sometimes.insert(
            "fenced write accepted",
            count(&|op| matches!(op.call, Call::GuardedWrite { .. }) && op.outcome == Outcome::Ok),
        );
        sometimes.insert("lock granted", count(&|op| matches!(op.call, Call::Acquire { token: Some(_), .. })));
        sometimes.insert(
            "causal read served",
            count(&|op| matches!(op.call, Call::CausalRead { .. }) && op.outcome == Outcome::Ok),
        );
        sometimes.insert(
            "causal read not yet replicated",
            count(&|op| matches!(op.call, Call::CausalRead { .. }) && op.outcome == Outcome::Fail),
        );
        sometimes.insert("unknown outcome", count(&|op| op.outcome == Outcome::Info));
        sometimes
            .insert("holder stalled", recorder.trace.iter().filter(|line| line.contains(" stalls ")).count() as u64);
    }
    sometimes.insert("lease expired", nodes.total("geostore_lock_expiries_total"));
    sometimes.insert("leader elected (highest term)", nodes.max("geostore_lock_group_term"));
    sometimes.insert("anti-entropy repair", nodes.total("geostore_anti_entropy_repairs_total"));
    sometimes.insert("clock drift refusal", nodes.total("geostore_clock_drift_refusals_total"));
    sometimes.insert("unsynced batches lost", driver.lost_batches);
    sometimes.insert("checks relaxed by a sync=none power loss", u64::from(!driver.lossy.is_empty()));

    let recorder = Rc::try_unwrap(recorder).map(RefCell::into_inner).unwrap_or_else(|shared| {
        let mut recorder = shared.borrow_mut();
        Recorder { ops: std::mem::take(&mut recorder.ops), trace: std::mem::take(&mut recorder.trace), echo: false }
    });
    let facts = check::Facts {
        ops: &recorder.ops,
        final_values: observation.final_values.as_ref(),
        diverged: &observation.diverged,
        lossy: &driver.lossy,
        placements: &observation.placements,
        partitions: node_settings(0, plan).partitions.unwrap_or(geostore_model::DEFAULT_PARTITIONS),
    };
    violations.extend(check::check(&facts));
    Report {
        seed,
        profile,
        trace_hash: recorder.trace_hash(),
        simulated: sim.elapsed(),
        real: started.elapsed(),
        faults: driver.faults,
        sometimes,
        violations,
        convergence: observation.convergence,
        ops: recorder.ops,
        trace: recorder.trace,
    }
}

/// After healing, once the applications are done: reads every key at every site until all agree (or the
/// settle time runs out), then keeps the agreed values for the checks.
async fn observe(
    keys: Keys,
    healed_at: Rc<Cell<Option<u64>>>,
    done: Rc<RefCell<usize>>,
    apps: usize,
    settle_max: Duration,
    observation: Rc<RefCell<Observation>>,
) -> turmoil::Result {
    while healed_at.get().is_none() || *done.borrow() < apps {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Converging is timed from here: the faults healed and the last write answered.
    let started = now_ms();
    let mut clients: Vec<Option<Client>> = vec![None; SITES];
    let keys: Vec<String> = keys.borrow().iter().cloned().collect();
    loop {
        let mut values: Vec<Option<FinalValues>> = Vec::new();
        for (site, slot) in clients.iter_mut().enumerate() {
            if slot.is_none() {
                let endpoint = format!("http://{}:{NODE_PORT}", node_host(site));
                let options = ConnectOptions { dialer: dialer(), client_id: Some(format!("observer-dc{site}")) };
                *slot = Client::connect_with(&[endpoint], options).await.ok();
            }
            let Some(client) = slot.clone() else {
                values.push(None);
                continue;
            };
            // Every key at once: one at a time, a poll of a site 150 ms away would take longer than the
            // convergence it measures.
            let mut reads = tokio::task::JoinSet::new();
            for key in &keys {
                let (client, key) = (client.clone(), key.clone());
                reads.spawn(async move { client.get(key.clone()).await.map(|found| (key, found.map(|f| f.value))) });
            }
            let mut read = FinalValues::new();
            let mut failed = false;
            while let Some(result) = reads.join_next().await {
                match result {
                    Ok(Ok((key, value))) => {
                        read.insert(key, value);
                    }
                    _ => failed = true,
                }
            }
            if failed {
                *slot = None;
            }
            values.push(if failed { None } else { Some(read) });
        }
        let agreed = values.iter().all(|v| v.is_some() && *v == values[0]);
        let out_of_time = now_ms().saturating_sub(started) > settle_max.as_millis() as u64;
        if agreed || out_of_time {
            let converged_after = Duration::from_millis(now_ms().saturating_sub(started));
            let placements = observe_placements(&clients, started, settle_max).await;
            let mut observation = observation.borrow_mut();
            observation.placements = placements;
            if agreed {
                observation.convergence = Some(converged_after);
            } else {
                observation.diverged = keys
                    .iter()
                    .filter(|key| {
                        let of = |site: usize| values[site].as_ref().map(|v| v.get(*key).cloned());
                        !(1..SITES).all(|site| of(site) == of(0))
                    })
                    .cloned()
                    .collect();
            }
            observation.final_values = values.into_iter().flatten().next();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every site's placement as its node reports it, asked until every site's map is created or the settle
/// time (from `started`) runs out.
async fn observe_placements(
    clients: &[Option<Client>],
    started: u64,
    settle_max: Duration,
) -> Vec<Option<geostore_proto::v1::PlacementStatus>> {
    loop {
        let mut placements = Vec::new();
        for client in clients {
            let status = match client {
                Some(client) => client.status().await.ok(),
                None => None,
            };
            placements.push(status.and_then(|status| status.placement));
        }
        let created = placements.iter().all(|p| p.as_ref().is_some_and(|p| p.version > 0));
        if created || now_ms().saturating_sub(started) > settle_max.as_millis() as u64 {
            return placements;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
