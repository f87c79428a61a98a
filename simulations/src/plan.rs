//! Everything a seed decides before a run starts: the sites' latencies, each node's sync policy, the
//! workload's seeds and the fault schedule. The same seed and profile always give the same plan.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const SITES: usize = 3;

pub fn site_name(site: usize) -> String {
    format!("dc{site}")
}

pub fn node_host(site: usize) -> String {
    format!("dc{site}-node")
}

pub fn app_host(site: usize, app: usize) -> String {
    format!("dc{site}-app{app}")
}

/// The host that checks convergence after the faults heal (in site 0).
pub const OBSERVER: &str = "dc0-observer";

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// How long the workload and the faults run.
    pub workload: Duration,
    /// How long, after healing, the replicas have to converge.
    pub settle_max: Duration,
    pub apps_per_site: usize,
    /// Faults over the workload (one network or node fault at a time), besides the clock faults.
    pub faults: usize,
}

pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "quick",
        workload: Duration::from_secs(20),
        settle_max: Duration::from_secs(60),
        apps_per_site: 1,
        faults: 4,
    },
    Profile {
        name: "default",
        workload: Duration::from_secs(60),
        settle_max: Duration::from_secs(60),
        apps_per_site: 2,
        faults: 10,
    },
    Profile {
        name: "long",
        workload: Duration::from_secs(300),
        settle_max: Duration::from_secs(90),
        apps_per_site: 2,
        faults: 40,
    },
];

pub fn profile(name: &str) -> Result<Profile, String> {
    PROFILES.iter().copied().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
        format!("unknown profile {name:?}: choose one of {}", names.join(", "))
    })
}

/// The lock group's allowed clock drift in the simulation (the node default, `max_drift_ms`).
pub const MAX_DRIFT_MS: i64 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every link between one site's hosts and the other sites is cut.
    IsolateSite { site: usize },
    /// The two outer sites cannot reach each other; both reach the middle one.
    Bridge { middle: usize },
    /// Messages from one site's node to another's are dropped; the other way works.
    OneWay { from: usize, to: usize },
    /// One node is cut off from the other nodes (its applications still reach every node).
    MinorityPartition { site: usize },
    /// The link between two sites gets slow.
    Delay { a: usize, b: usize, extra_ms: u64 },
    /// The link between the two sites' nodes fails and recovers at random, dropping what is in flight:
    /// each message sent on it breaks it with a chance of `rate_per_mille` thousandths (turmoil's link
    /// fail rate), and the next message after a break repairs it.
    Loss { a: usize, b: usize, rate_per_mille: u32 },
    /// Message latencies on one site's links vary widely, so messages on different connections overtake
    /// each other (turmoil keeps each TCP stream in order, as TCP does).
    Reorder { site: usize },
    /// The node process dies and restarts after the fault's duration; with `power_loss`, unsynced
    /// writes are lost too.
    Crash { site: usize, power_loss: bool },
    /// The lock group's leader, whichever node it is then, dies and restarts.
    LeaderKill,
    /// Nothing reaches the node or leaves it for the fault's duration, then everything held arrives at
    /// once (what its peers see of a stopped process).
    Pause { site: usize },
    /// A node's clock is set off by `offset_ms`: within the allowed drift, or beyond it.
    ClockSkew { site: usize, offset_ms: i64 },
    /// A node's clock jumps by `offset_ms` (forward or back) at once.
    ClockJump { site: usize, offset_ms: i64 },
}

impl Fault {
    /// The fault's class, for the per-run counts.
    pub fn class(&self) -> &'static str {
        match self {
            Fault::IsolateSite { .. } => "isolate-site",
            Fault::Bridge { .. } => "bridge",
            Fault::OneWay { .. } => "one-way-cut",
            Fault::MinorityPartition { .. } => "minority-partition",
            Fault::Delay { .. } => "delay",
            Fault::Loss { .. } => "loss",
            Fault::Reorder { .. } => "reorder",
            Fault::Crash { power_loss: false, .. } => "crash-restart",
            Fault::Crash { power_loss: true, .. } => "power-loss",
            Fault::LeaderKill => "leader-kill",
            Fault::Pause { .. } => "pause",
            Fault::ClockSkew { offset_ms, .. } if offset_ms.abs() <= MAX_DRIFT_MS => "clock-skew-within-drift",
            Fault::ClockSkew { .. } => "clock-skew-beyond-drift",
            Fault::ClockJump { .. } => "clock-jump",
        }
    }

    pub const CLASSES: [&'static str; 14] = [
        "isolate-site",
        "bridge",
        "one-way-cut",
        "minority-partition",
        "delay",
        "loss",
        "reorder",
        "crash-restart",
        "power-loss",
        "leader-kill",
        "pause",
        "clock-skew-within-drift",
        "clock-skew-beyond-drift",
        "clock-jump",
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

impl Scheduled {
    /// `fault` from `at_ms` for `lasts_ms`, both in simulated milliseconds from the start of the run.
    pub fn new(at_ms: u64, lasts_ms: u64, fault: Fault) -> Scheduled {
        Scheduled { at: Duration::from_millis(at_ms), lasts: Duration::from_millis(lasts_ms), fault }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub profile: Profile,
    /// One-way latency between sites, ms (symmetric; the diagonal is the intra-site 1 ms).
    pub latency_ms: [[u64; SITES]; SITES],
    /// Whether each node fsyncs every write (`sync = "always"`, the default) or not (`"none"`).
    pub sync_always: [bool; SITES],
    pub faults: Vec<Scheduled>,
    /// Seeds for the turmoil network, openraft's election timeouts and each application.
    pub network_seed: u64,
    pub raft_seed: u64,
    pub app_seeds: Vec<u64>,
}

impl Plan {
    pub fn new(seed: u64, profile: Profile) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut latency_ms = [[1; SITES]; SITES];
        let pairs: Vec<(usize, usize)> = (0..SITES).flat_map(|a| (a + 1..SITES).map(move |b| (a, b))).collect();
        for (a, b) in pairs {
            // Round trips of 20-150 ms between sites.
            let one_way = rng.random_range(10..=75);
            latency_ms[a][b] = one_way;
            latency_ms[b][a] = one_way;
        }
        // One node in four runs without fsync, where a power loss may lose acknowledged writes.
        let sync_always = [(); SITES].map(|_| rng.random_range(0..4) != 0);
        let network_seed = rng.random();
        let raft_seed = rng.random();
        let app_seeds = (0..SITES * profile.apps_per_site).map(|_| rng.random()).collect();
        let faults = schedule(&mut rng, profile);
        Plan { seed, profile, latency_ms, sync_always, faults, network_seed, raft_seed, app_seeds }
    }

    /// A plan written by hand (a scripted scenario): the faults with their times, each node's sync policy
    /// and the one-way latencies between sites in ms (`one_way_ms[0]` dc0–dc1, `[1]` dc0–dc2, `[2]`
    /// dc1–dc2). None of it comes from the random plan generator, so changing [`Plan::new`] cannot change
    /// the scenario. The seeds of the network, of openraft's elections and of each application come from
    /// `seed` through a fixed mix of its own (not the generator's), so the same arguments always give the
    /// same plan; the workload itself is still drawn from those application seeds.
    pub fn scripted(
        seed: u64,
        profile: Profile,
        one_way_ms: [u64; 3],
        sync_always: [bool; SITES],
        mut faults: Vec<Scheduled>,
    ) -> Plan {
        let mut latency_ms = [[1; SITES]; SITES];
        for (&(a, b), &ms) in [(0, 1), (0, 2), (1, 2)].iter().zip(&one_way_ms) {
            latency_ms[a][b] = ms;
            latency_ms[b][a] = ms;
        }
        let mut state = seed;
        let mut next = || splitmix64(&mut state);
        let network_seed = next();
        let raft_seed = next();
        let app_seeds = (0..SITES * profile.apps_per_site).map(|_| next()).collect();
        faults.sort_by_key(|f| f.at);
        Plan { seed, profile, latency_ms, sync_always, faults, network_seed, raft_seed, app_seeds }
    }

    /// The same plan with the seeds of the network, of openraft's elections and of each application (one
    /// per application, site by site) given explicitly: a scripted scenario that replays a run a seed once
    /// gave pins them to the values that seed's plan had.
    pub fn with_seeds(self, network_seed: u64, raft_seed: u64, app_seeds: Vec<u64>) -> Plan {
        assert_eq!(app_seeds.len(), SITES * self.profile.apps_per_site, "one seed per application");
        Plan { network_seed, raft_seed, app_seeds, ..self }
    }
}

/// One step of splitmix64: a fixed, well-mixed sequence of 64-bit values from any starting state.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Network and node faults one at a time, each in its own window of the workload; clock faults on a
/// second track. Every fault ends (heals) before the workload does.
fn schedule(rng: &mut StdRng, profile: Profile) -> Vec<Scheduled> {
    let mut faults = Vec::new();
    let start_ms = 3_000_u64; // the lock group elects its first leader
    let end_ms = u64::try_from(profile.workload.as_millis()).unwrap_or(u64::MAX).saturating_sub(2_000);
    if profile.faults > 0 && end_ms > start_ms {
        let window = (end_ms - start_ms) / profile.faults as u64;
        for slot in 0..profile.faults as u64 {
            let window_start = start_ms + slot * window;
            let lasts = rng.random_range(window / 4..=window * 3 / 4).max(200);
            let at = window_start + rng.random_range(0..=window.saturating_sub(lasts));
            let fault = pick_fault(rng);
            faults.push(Scheduled { at: Duration::from_millis(at), lasts: Duration::from_millis(lasts), fault });
        }
        for _ in 0..(profile.faults / 4).max(1) {
            let site = rng.random_range(0..SITES);
            let fault = match rng.random_range(0..3) {
                0 => {
                    Fault::ClockSkew { site, offset_ms: rng.random_range(-MAX_DRIFT_MS * 4 / 5..=MAX_DRIFT_MS * 4 / 5) }
                }
                1 => Fault::ClockSkew {
                    site,
                    offset_ms: rng.random_range(MAX_DRIFT_MS * 2..=MAX_DRIFT_MS * 6)
                        * if rng.random() { 1 } else { -1 },
                },
                _ => Fault::ClockJump {
                    site,
                    offset_ms: rng.random_range(1_000..=30_000) * if rng.random() { 1 } else { -1 },
                },
            };
            let lasts = rng.random_range(2_000..=10_000_u64).min(end_ms - start_ms);
            let at = rng.random_range(start_ms..=end_ms - lasts);
            faults.push(Scheduled { at: Duration::from_millis(at), lasts: Duration::from_millis(lasts), fault });
        }
    }
    faults.sort_by_key(|f| f.at);
    faults
}

fn pick_fault(rng: &mut StdRng) -> Fault {
    let site = rng.random_range(0..SITES);
    let other = (site + rng.random_range(1..SITES)) % SITES;
    match rng.random_range(0..11) {
        0 => Fault::IsolateSite { site },
        1 => Fault::Bridge { middle: site },
        2 => Fault::OneWay { from: site, to: other },
        3 => Fault::MinorityPartition { site },
        4 => Fault::Delay { a: site, b: other, extra_ms: rng.random_range(100..=1_000) },
        5 => Fault::Loss { a: site, b: other, rate_per_mille: rng.random_range(1..=5) },
        6 => Fault::Reorder { site },
        7 => Fault::Crash { site, power_loss: false },
        8 => Fault::Crash { site, power_loss: true },
        9 => Fault::LeaderKill,
        _ => Fault::Pause { site },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_plan() {
        let profile = profile("default").unwrap();
        let a = Plan::new(42, profile);
        let b = Plan::new(42, profile);
        assert_eq!(a.faults, b.faults);
        assert_eq!(a.latency_ms, b.latency_ms);
        assert_ne!(Plan::new(43, profile).faults, a.faults);
    }

    #[test]
    fn faults_heal_inside_the_workload_and_network_faults_do_not_overlap() {
        let profile = profile("default").unwrap();
        for seed in 0..200 {
            let plan = Plan::new(seed, profile);
            let mut last_end = Duration::ZERO;
            for scheduled in &plan.faults {
                assert!(scheduled.at + scheduled.lasts <= profile.workload, "seed {seed}: {scheduled:?}");
                if !matches!(scheduled.fault, Fault::ClockSkew { .. } | Fault::ClockJump { .. }) {
                    assert!(scheduled.at >= last_end, "seed {seed}: {scheduled:?} overlaps the previous fault");
                    last_end = scheduled.at + scheduled.lasts;
                }
            }
            for latency in plan.latency_ms.iter().flatten() {
                assert!((1..=75).contains(latency));
            }
        }
    }

    #[test]
    fn unknown_profiles_are_refused_by_name() {
        assert!(profile("huge").unwrap_err().contains("quick, default, long"));
    }
}
