//! `sim`: runs geostore's chaos simulation from seeds, replays one, checks that a seed replays the same,
//! and exports a run's history for Jepsen's checkers (Elle) or Porcupine.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use geostore_sim::plan::{self, Profile};
use geostore_sim::world::{self, Options, Report};

#[derive(Parser)]
#[command(name = "sim", about = "geostore's chaos simulation harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Plant a bug to see the harness find it: fence-check-off, new-leader-expires-leases or
    /// anti-entropy-skips-range (needs a build with --features planted-bugs).
    #[arg(long, global = true)]
    plant: Option<String>,
    /// Print the nodes' own logs at this filter (e.g. `geostore_node=debug`), with simulated times.
    #[arg(long, global = true)]
    log: Option<String>,
}

fn plant(name: Option<&str>) -> Result<(), String> {
    use geostore_model::planted::{self, Bug};
    let Some(name) = name else { return Ok(()) };
    let bug = match name {
        "fence-check-off" => Bug::FenceCheckOff,
        "new-leader-expires-leases" => Bug::NewLeaderExpiresLeases,
        "anti-entropy-skips-range" => Bug::AntiEntropySkipsRange,
        other => {
            return Err(format!(
                "unknown bug {other:?}: fence-check-off, new-leader-expires-leases or anti-entropy-skips-range"
            ));
        }
    };
    if !planted::plant(Some(bug)) {
        return Err("this build cannot plant bugs: build with --features planted-bugs".into());
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Runs seeds S, S+1, ... S+N-1 and prints what each did and a summary.
    Run {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1)]
        iterations: u64,
        /// quick (20 s of workload), default (60 s) or long (300 s).
        #[arg(long, default_value = "default")]
        profile: String,
        /// Stop at the first seed that fails.
        #[arg(long)]
        fail_fast: bool,
        /// Seeds run at once, each on its own thread (a run is single-threaded); default: one per core.
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Runs one seed again, printing its trace with --trace.
    Replay {
        seed: u64,
        #[arg(long, default_value = "default")]
        profile: String,
        #[arg(long)]
        trace: bool,
    },
    /// Runs a seed twice and compares the trace hashes.
    CheckDeterminism {
        seed: u64,
        #[arg(long, default_value = "default")]
        profile: String,
    },
    /// Prints a seed's history as JSON.
    ExportHistory {
        seed: u64,
        #[arg(long, default_value = "default")]
        profile: String,
        /// json: Jepsen-style operations (Elle reads them; see simulations/README.md).
        #[arg(long, default_value = "json")]
        format: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(filter) = &cli.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimTime)
            .with_writer(std::io::stdout)
            .init();
    }
    if let Err(message) = plant(cli.plant.as_deref()) {
        eprintln!("sim: {message}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run { seed, iterations, profile, fail_fast, jobs } => plan::profile(&profile).map(|profile| {
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
            run(seed, iterations, profile, fail_fast, jobs)
        }),
        Command::Replay { seed, profile, trace } => plan::profile(&profile).map(|profile| {
            let report = world::run(seed, profile, Options { trace });
            print_report(&report);
            u8::from(!report.violations.is_empty())
        }),
        Command::CheckDeterminism { seed, profile } => plan::profile(&profile).map(|profile| {
            let first = world::run(seed, profile, Options::default());
            let second = world::run(seed, profile, Options::default());
            println!(
                "seed {seed}: trace hashes {:016x} and {:016x} ({} and {} trace lines)",
                first.trace_hash,
                second.trace_hash,
                first.trace.len(),
                second.trace.len()
            );
            if first.trace_hash == second.trace_hash {
                println!("deterministic");
                0
            } else {
                let at = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b);
                if let Some(at) = at {
                    println!("first difference at line {at}:\n  {}\n  {}", first.trace[at], second.trace[at]);
                }
                println!("NOT deterministic");
                1
            }
        }),
        Command::ExportHistory { seed, profile, format } => {
            if format != "json" {
                Err(format!("unknown format {format:?}: only json"))
            } else {
                plan::profile(&profile).map(|profile| {
                    let report = world::run(seed, profile, Options::default());
                    let history = geostore_sim::history::to_jepsen_json(&report.ops);
                    println!("{}", serde_json::to_string_pretty(&history).expect("JSON"));
                    0
                })
            }
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("sim: {message}");
            ExitCode::from(2)
        }
    }
}

/// Log lines stamped with the simulated time of the host that wrote them.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis();
        write!(w, "{:>7}.{:03}", elapsed / 1000, elapsed % 1000)
    }
}

fn replay_command(report: &Report) -> String {
    let plant = std::env::args().skip_while(|arg| arg != "--plant").nth(1);
    format!(
        "git checkout {} && cargo run -p geostore-sim{} -- replay {} --profile {} --trace{}",
        geostore_sim::COMMIT.trim_end_matches("+changes"),
        if cfg!(feature = "planted-bugs") { " --features planted-bugs" } else { "" },
        report.seed,
        report.profile.name,
        plant.map(|bug| format!(" --plant {bug}")).unwrap_or_default()
    )
}

fn print_report(report: &Report) {
    let ratio = report.simulated.as_secs_f64() / report.real.as_secs_f64().max(1e-9);
    let convergence = match report.convergence {
        Some(time) => format!("in {:.2}s", time.as_secs_f64()),
        None => "never".into(),
    };
    println!(
        "seed {}: {} ops {} simulated {:.1}s real {:.2}s ({ratio:.1}x) converged {convergence} after heal and last write trace {:016x}",
        report.seed,
        if report.violations.is_empty() { "ok  " } else { "FAIL" },
        report.ops.len(),
        report.simulated.as_secs_f64(),
        report.real.as_secs_f64(),
        report.trace_hash,
    );
    if !report.violations.is_empty() {
        for violation in &report.violations {
            println!("  violation [{}] {}", violation.invariant, violation.message);
        }
        println!("  seed {} failed at commit {}; replay with:", report.seed, geostore_sim::COMMIT);
        println!("    {}", replay_command(report));
    }
}

/// Runs the seeds on `jobs` threads and hands the reports over in seed order.
fn reports(first: u64, iterations: u64, profile: Profile, jobs: usize) -> std::sync::mpsc::Receiver<Report> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, mpsc};
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done, finished) = mpsc::channel::<Report>();
    for _ in 0..jobs {
        let (next, done, stop) = (next.clone(), done.clone(), stop.clone());
        std::thread::spawn(move || {
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= iterations || stop.load(Ordering::SeqCst) {
                    return;
                }
                let report = world::run(first + index, profile, Options::default());
                if done.send(report).is_err() {
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
        });
    }
    drop(done);
    let (ordered, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut waiting = BTreeMap::new();
        let mut expected = first;
        for report in finished {
            waiting.insert(report.seed, report);
            while let Some(report) = waiting.remove(&expected) {
                if ordered.send(report).is_err() {
                    return;
                }
                expected += 1;
            }
        }
    });
    receiver
}

fn run(seed: u64, iterations: u64, profile: Profile, fail_fast: bool, jobs: usize) -> u8 {
    let started = Instant::now();
    let mut simulated = Duration::ZERO;
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut sometimes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut violations: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut convergence: Vec<Duration> = Vec::new();
    let mut failed: Vec<u64> = Vec::new();
    let mut ran = 0;
    for report in reports(seed, iterations, profile, jobs) {
        let seed = report.seed;
        print_report(&report);
        ran += 1;
        simulated += report.simulated;
        for (class, count) in &report.faults {
            *faults.entry(class).or_default() += count;
        }
        for (path, count) in &report.sometimes {
            *sometimes.entry(path).or_default() += count;
        }
        for violation in &report.violations {
            *violations.entry(violation.invariant).or_default() += 1;
        }
        convergence.extend(report.convergence);
        if !report.violations.is_empty() {
            failed.push(seed);
            if fail_fast {
                break;
            }
        }
    }
    let real = started.elapsed();
    convergence.sort();
    println!();
    println!(
        "{ran} seeds (profile {}, {jobs} at a time) in {:.1}s: {:.2} seeds/s, {:.1} seeds/min, simulated:real {:.1}x",
        profile.name,
        real.as_secs_f64(),
        ran as f64 / real.as_secs_f64(),
        ran as f64 * 60.0 / real.as_secs_f64(),
        simulated.as_secs_f64() / real.as_secs_f64()
    );
    if !convergence.is_empty() {
        let at = |q: f64| convergence[((convergence.len() - 1) as f64 * q) as usize].as_secs_f64();
        println!(
            "convergence after heal and last write: median {:.2}s, max {:.2}s ({} of {ran} runs converged)",
            at(0.5),
            at(1.0),
            convergence.len()
        );
    }
    let classes: Vec<String> = plan::Fault::CLASSES
        .iter()
        .map(|class| format!("{class} {}", faults.get(class).copied().unwrap_or(0)))
        .collect();
    println!("faults: {}", classes.join(", "));
    let never: Vec<&str> = plan::Fault::CLASSES.iter().copied().filter(|c| !faults.contains_key(c)).collect();
    if !never.is_empty() {
        println!("  fault classes never injected: {}", never.join(", "));
    }
    let paths: Vec<String> = sometimes.iter().map(|(path, count)| format!("{path} {count}")).collect();
    println!("sometimes: {}", paths.join(", "));
    let missed: Vec<&str> = sometimes.iter().filter(|(_, count)| **count == 0).map(|(path, _)| *path).collect();
    if !missed.is_empty() {
        println!("  critical paths never taken: {}", missed.join(", "));
    }
    let by_invariant: Vec<String> = geostore_sim::check::INVARIANTS
        .iter()
        .chain(["nodes-run"].iter())
        .map(|name| format!("{name} {}", violations.get(name).copied().unwrap_or(0)))
        .collect();
    println!("violations: {}", by_invariant.join(", "));
    if failed.is_empty() {
        println!("all {ran} seeds passed");
        0
    } else {
        println!("FAILED seeds: {failed:?} (commit {})", geostore_sim::COMMIT);
        1
    }
}
