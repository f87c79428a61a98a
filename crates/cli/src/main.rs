//! `geostore`: run a node, read and write keys, load-test a cluster.
//!
//! Exit codes: 0 success; 1 the command failed and changed nothing; 2 bad usage; 3 the outcome of a write
//! is unknown (it may have been applied); 4 a lock held by `lock run` or `election campaign` was lost.

mod bench;
mod bench_lock;
mod dev;
mod kv;
mod lock;
mod node;
mod status;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "geostore", version, about = "A geo-replicated CRDT store with fenced global locks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Node(Box<node::NodeArgs>),
    /// Run a three-site cluster on this machine (one node per site, or --nodes-per-site K), data kept
    /// between runs. A flag given twice takes the last value (scripts/run passes --dir first).
    #[command(args_override_self = true)]
    Dev(dev::DevArgs),
    /// Read and write keys.
    Kv(kv::KvArgs),
    /// Global locks with fencing tokens.
    Lock(lock::LockArgs),
    /// Leader election (on top of locks).
    Election(lock::ElectionArgs),
    /// Sites, partitions and replication lag, as one node sees them.
    Status(status::StatusArgs),
    /// Load generators that print throughput and latency.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

/// Exit codes a script can rely on.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_UNKNOWN: u8 = 3;

fn main() -> ExitCode {
    // The matches are kept beside the parsed commands: `node` lays the flags given over its config file,
    // and only the matches tell a flag given from one left out.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start the tokio runtime");
    match cli.command {
        Command::Node(args) => {
            init_logging(NODE_LOG_FILTER);
            let node_matches = matches.subcommand_matches("node").expect("the node subcommand was given");
            runtime.block_on(node::run(*args, node_matches))
        }
        Command::Dev(args) => {
            init_logging(NODE_LOG_FILTER);
            runtime.block_on(dev::run(args))
        }
        Command::Status(args) => {
            init_logging("warn");
            runtime.block_on(status::run(args))
        }
        Command::Kv(args) => {
            init_logging("warn");
            runtime.block_on(kv::run(args))
        }
        Command::Lock(args) => {
            init_logging("warn");
            runtime.block_on(lock::run(args))
        }
        Command::Election(args) => {
            init_logging("warn");
            runtime.block_on(lock::run_election(args))
        }
        Command::Bench { which } => {
            init_logging("warn");
            runtime.block_on(bench::run(which))
        }
    }
}

/// A node's default log filter. openraft's info lines are start-up detail, and three of its modules warn
/// about what is routine in a group of several sites: messages of an earlier term arriving after an
/// election ("A message will be ignored because vote changed"), a follower answering with a higher vote
/// ("update progress error ... seen a higher vote"), and each failed send to a member that is starting or
/// down ("error replication to target"). Those are kept at error; the lock group's own code warns about
/// what an operator should act on (a member unreachable for longer than a few seconds, see
/// `geostore_raft::network`). `GEOSTORE_LOG=info,openraft=debug` shows everything.
const NODE_LOG_FILTER: &str =
    "info,openraft=warn,openraft::core::raft_core=error,openraft::engine::handler=error,openraft::replication=error";

/// Logs to stderr at `default_level` (an `EnvFilter` directive), or as GEOSTORE_LOG says.
fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GEOSTORE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
