//! `geostore bench kv`: closed-loop load from N concurrent clients, one phase per operation, printing
//! throughput and latency percentiles. Each client has its own connection and waits for each reply before
//! sending the next request, so latency includes the durable write.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use geostore_client::{Client, pb};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::kv::ClientArgs;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Key-value operations: durable puts, gets, increments.
    Kv(KvBenchArgs),
    /// Lock acquire+release cycles, against geostore or etcd.
    Lock(crate::bench_lock::LockBenchArgs),
}

#[derive(Args)]
pub struct KvBenchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long each operation's phase measures.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured load before each phase.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Distinct keys the load spreads over.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per put value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Writes per request: above 1, puts and increments go as one Batch call of this many operations
    /// (latency is then per call, throughput per operation).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Phases to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "put,get,incr")]
    ops: Vec<BenchOp>,
    /// Spread the clients over the endpoints given (client i tries endpoint i mod n first), instead of
    /// all connecting to the first that answers: for a site of several nodes.
    #[arg(long)]
    spread: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BenchOp {
    Put,
    Get,
    Incr,
}

impl BenchOp {
    fn name(self) -> &'static str {
        match self {
            BenchOp::Put => "put",
            BenchOp::Get => "get",
            BenchOp::Incr => "incr",
        }
    }
}

pub async fn run(command: BenchCommand) -> ExitCode {
    let args = match command {
        BenchCommand::Kv(args) => args,
        BenchCommand::Lock(args) => return crate::bench_lock::run(args).await,
    };
    if args.clients == 0 || args.keys == 0 || args.batch == 0 || args.batch > 10_000 {
        eprintln!("error: --clients and --keys must be at least 1, --batch between 1 and 10000");
        return ExitCode::from(crate::EXIT_FAILED);
    }
    let mut clients = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let mut endpoints = args.client.endpoints.clone();
        if args.spread && !endpoints.is_empty() {
            let first = index % endpoints.len();
            endpoints.rotate_left(first);
        }
        match Client::connect(&endpoints).await {
            Ok(client) => clients.push(client),
            Err(error) => return crate::kv::report_error(&error, args.client.json),
        }
    }
    if !args.client.json {
        println!(
            "geostore bench kv: {} clients, {} writes per request, {:?} per phase after {:?} warm-up, {} keys, {}-byte values, endpoint {}",
            args.clients,
            args.batch,
            args.duration,
            args.warmup,
            args.keys,
            args.value_bytes,
            clients[0].endpoint()
        );
    }
    let mut phases = Vec::new();
    for op in &args.ops {
        let result = phase(&clients, *op, &args).await;
        if args.client.json {
            phases.push(result.to_json(*op, args.clients));
        } else {
            println!("{}", result.to_text(*op, args.clients));
        }
    }
    if args.client.json {
        println!("{}", json!({"clients": args.clients, "duration_s": args.duration.as_secs_f64(), "phases": phases}));
    }
    ExitCode::SUCCESS
}

struct PhaseResult {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    /// Latency in microseconds.
    latency_us: Histogram<u64>,
}

impl PhaseResult {
    fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn to_text(&self, op: BenchOp, clients: usize) -> String {
        format!(
            "{:<5} clients={clients:<4} ops/s={:>9.0}  p50={:.3}ms  p99={:.3}ms  max={:.3}ms  errors={}",
            op.name(),
            self.ops_per_second(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.99),
            self.latency_us.max() as f64 / 1000.0,
            self.errors
        )
    }

    fn to_json(&self, op: BenchOp, clients: usize) -> serde_json::Value {
        json!({
            "op": op.name(),
            "clients": clients,
            "ops": self.ops,
            "ops_per_s": self.ops_per_second(),
            "p50_ms": self.percentile_ms(0.5),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": self.latency_us.max() as f64 / 1000.0,
            "errors": self.errors,
        })
    }
}

fn write_op(op: BenchOp, key: String, value: &[u8]) -> pb::WriteOp {
    let op = match op {
        BenchOp::Put => pb::write_op::Op::Put(pb::PutRequest {
            key: key.into_bytes(),
            value: value.to_vec(),
            ttl_ms: None,
            fence: None,
        }),
        BenchOp::Incr | BenchOp::Get => pb::write_op::Op::Increment(pb::IncrementRequest {
            key: format!("{key}:n").into_bytes(),
            delta: 1,
            fence: None,
        }),
    };
    pb::WriteOp { op: Some(op) }
}

async fn phase(clients: &[Client], op: BenchOp, args: &KvBenchArgs) -> PhaseResult {
    let warmup_until = Instant::now() + args.warmup;
    let measure_until = warmup_until + args.duration;
    let mut tasks = Vec::with_capacity(clients.len());
    for (index, client) in clients.iter().enumerate() {
        let client = client.clone();
        let keys = args.keys;
        let value = vec![b'v'; args.value_bytes];
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
            let (mut ops, mut errors) = (0_u64, 0_u64);
            // A per-client xorshift sequence: no shared random state between clients.
            let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            loop {
                let started = Instant::now();
                if started >= measure_until {
                    break;
                }
                let mut next_key = || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    format!("bench:{}", state % keys)
                };
                let (done, failed) = match op {
                    BenchOp::Get => {
                        if client.get(next_key()).await.is_ok() {
                            (1, 0)
                        } else {
                            (0, 1)
                        }
                    }
                    BenchOp::Put | BenchOp::Incr if batch > 1 => {
                        let ops = (0..batch).map(|_| write_op(op, next_key(), &value)).collect();
                        match client.batch(ops).await {
                            Ok(results) => {
                                let ok = results.iter().filter(|result| result.is_ok()).count() as u64;
                                (ok, batch as u64 - ok)
                            }
                            Err(_) => (0, batch as u64),
                        }
                    }
                    BenchOp::Put => {
                        if client.put(next_key(), value.clone(), None).await.is_ok() {
                            (1, 0)
                        } else {
                            (0, 1)
                        }
                    }
                    BenchOp::Incr => {
                        if client.increment(format!("{}:n", next_key()), 1).await.is_ok() {
                            (1, 0)
                        } else {
                            (0, 1)
                        }
                    }
                };
                if started >= warmup_until {
                    let finished = Instant::now();
                    if finished <= measure_until {
                        latency_us.saturating_record(finished.duration_since(started).as_micros() as u64);
                        ops += done;
                        errors += failed;
                    }
                }
            }
            (ops, errors, latency_us)
        }));
    }
    let mut total = PhaseResult {
        ops: 0,
        errors: 0,
        elapsed: args.duration,
        latency_us: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
    };
    for task in tasks {
        let (ops, errors, latency_us) = task.await.expect("a bench client panicked");
        total.ops += ops;
        total.errors += errors;
        total.latency_us.add(latency_us).expect("histograms with equal bounds add");
    }
    total
}
