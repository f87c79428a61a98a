//! `geostore bench lock`: acquire+release cycles from N closed-loop clients, against geostore or, for a
//! side-by-side figure, against etcd's v3lock API (one lease per client, as etcd's own `etcdctl lock` does).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use geostore_client::{Client, Wait};
use geostore_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use geostore_proto::etcd::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use geostore_proto::etcd::v3lockpb::lock_client::LockClient;
use geostore_proto::etcd::v3lockpb::{LockRequest, UnlockRequest};
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use crate::kv::ClientArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    Geostore,
    Etcd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Locks {
    /// Every client contends for one lock.
    One,
    /// Each client has its own lock.
    Distinct,
}

#[derive(Args)]
pub struct LockBenchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Which system to load: geostore (at --endpoint) or etcd (at --etcd-endpoint).
    #[arg(long, value_enum, default_value = "geostore")]
    system: System,
    /// etcd client URLs, comma-separated; client i uses URL i modulo their number.
    #[arg(long = "etcd-endpoint", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, value_enum, default_value = "one")]
    locks: Locks,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
}

/// One client's connection to the system under test.
enum Locker {
    Geostore(Box<Client>),
    Etcd { locks: LockClient<Channel>, lease: i64 },
}

impl Locker {
    async fn connect(args: &LockBenchArgs, index: usize) -> Result<Locker, String> {
        match args.system {
            System::Geostore => {
                // Spread clients over the endpoints given, like the etcd clients.
                let endpoints = &args.client.endpoints;
                let rotated: Vec<&String> =
                    endpoints.iter().cycle().skip(index % endpoints.len()).take(endpoints.len()).collect();
                Client::connect(&rotated).await.map(|c| Locker::Geostore(Box::new(c))).map_err(|e| e.message)
            }
            System::Etcd => {
                let url = &args.etcd_endpoints[index % args.etcd_endpoints.len()];
                let channel = Endpoint::from_shared(url.clone())
                    .map_err(|e| format!("{url}: {e}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let lease = LeaseClient::new(channel.clone())
                    .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
                    .await
                    .map_err(|e| format!("etcd lease grant: {e}"))?
                    .into_inner()
                    .id;
                Ok(Locker::Etcd { locks: LockClient::new(channel), lease })
            }
        }
    }

    /// One acquire and release of `name`.
    async fn cycle(&mut self, name: &str) -> Result<(), String> {
        match self {
            Locker::Geostore(client) => {
                let grant = client
                    .acquire(name, Duration::from_secs(10), Wait::Up(Duration::from_secs(60)), "")
                    .await
                    .map_err(|e| e.message)?;
                client.release(name, grant.token).await.map_err(|e| e.message)
            }
            Locker::Etcd { locks, lease } => {
                let key = locks
                    .lock(LockRequest { name: name.as_bytes().to_vec(), lease: *lease })
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner()
                    .key;
                locks.unlock(UnlockRequest { key }).await.map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }

    async fn close(self, args: &LockBenchArgs, index: usize) {
        if let Locker::Etcd { lease, .. } = self {
            let url = &args.etcd_endpoints[index % args.etcd_endpoints.len()];
            if let Ok(endpoint) = Endpoint::from_shared(url.clone())
                && let Ok(channel) = endpoint.connect().await
            {
                let _ = LeaseClient::new(channel).lease_revoke(LeaseRevokeRequest { id: lease }).await;
            }
        }
    }
}

pub async fn run(args: LockBenchArgs) -> ExitCode {
    if args.clients == 0 {
        eprintln!("error: --clients must be at least 1");
        return ExitCode::from(crate::EXIT_FAILED);
    }
    let mut lockers = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        match Locker::connect(&args, index).await {
            Ok(locker) => lockers.push(locker),
            Err(error) => {
                eprintln!("error: cannot connect client {index}: {error}");
                return ExitCode::from(crate::EXIT_FAILED);
            }
        }
    }
    let warmup_until = Instant::now() + args.warmup;
    let measure_until = warmup_until + args.duration;
    let mut tasks = Vec::new();
    for (index, mut locker) in lockers.into_iter().enumerate() {
        let name = match args.locks {
            Locks::One => "bench-lock".to_string(),
            Locks::Distinct => format!("bench-lock-{index}"),
        };
        tasks.push(tokio::spawn(async move {
            let mut latency_us = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
            let (mut cycles, mut errors) = (0_u64, 0_u64);
            let mut last_error = None;
            loop {
                let started = Instant::now();
                if started >= measure_until {
                    break;
                }
                let result = locker.cycle(&name).await;
                let finished = Instant::now();
                if started >= warmup_until && finished <= measure_until {
                    match result {
                        Ok(()) => {
                            cycles += 1;
                            latency_us.saturating_record(finished.duration_since(started).as_micros() as u64);
                        }
                        Err(error) => {
                            errors += 1;
                            last_error = Some(error);
                        }
                    }
                }
            }
            (locker, cycles, errors, last_error, latency_us)
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    let (mut cycles, mut errors, mut last_error) = (0, 0, None);
    for (index, task) in tasks.into_iter().enumerate() {
        let (locker, c, e, error, histogram) = task.await.expect("a bench client panicked");
        cycles += c;
        errors += e;
        last_error = last_error.or(error);
        latency_us.add(histogram).expect("equal bounds");
        locker.close(&args, index).await;
    }
    let per_second = cycles as f64 / args.duration.as_secs_f64();
    let p50 = latency_us.value_at_quantile(0.5) as f64 / 1000.0;
    let p99 = latency_us.value_at_quantile(0.99) as f64 / 1000.0;
    let system = match args.system {
        System::Geostore => "geostore",
        System::Etcd => "etcd",
    };
    let locks = match args.locks {
        Locks::One => "one",
        Locks::Distinct => "distinct",
    };
    if args.client.json {
        println!(
            "{}",
            json!({
                "system": system, "clients": args.clients, "locks": locks, "cycles": cycles,
                "cycles_per_s": per_second, "p50_ms": p50, "p99_ms": p99, "errors": errors,
                "last_error": last_error,
            })
        );
    } else {
        println!(
            "{system:<8} locks={locks:<8} clients={:<3} cycles/s={per_second:>8.0}  p50={p50:.2}ms  p99={p99:.2}ms  errors={errors}",
            args.clients
        );
        if let Some(error) = last_error {
            eprintln!("last error: {error}");
        }
    }
    ExitCode::SUCCESS
}
