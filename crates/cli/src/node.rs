use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args};
use geostore_node::NodeSettings;

#[derive(Args)]
#[command(
    after_help = "DURATION: a bare number is milliseconds (250); a number with a unit works too (250ms, 2s, 1m 30s, 1day).\n\
    Every flag is also a key of the --config file: data_dir for --data-dir, members for --member, peers and lock_members for --peer and --lock-member (see deploy/node.example.toml)."
)]
pub struct NodeArgs {
    /// TOML file with settings; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The flags given. With a config file they are read from the matches instead, which tell the flags
    /// given from those left out.
    #[command(flatten)]
    flags: NodeSettings,
}

/// Runs a node; `matches` are the `node` subcommand's, from which the flags are laid over the config file.
pub async fn run(args: NodeArgs, matches: &ArgMatches) -> ExitCode {
    match run_node(args, matches).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(crate::EXIT_FAILED)
        }
    }
}

async fn run_node(args: NodeArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let settings = match &args.config {
        Some(path) => NodeSettings::from_file(path)
            .and_then(|from_file| from_file.overridden_by_flags(matches))
            .map_err(anyhow::Error::msg)?,
        None => args.flags,
    };
    let config = settings.resolve().map_err(anyhow::Error::msg)?;
    let listener = bind(&config.listen).await?;
    let http_listener = match &config.http_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    // Scripts and tests read these lines to learn the ports chosen for port 0.
    println!("geostore node listening on {}", listener.local_addr()?);
    if let Some(http) = &http_listener {
        println!("geostore node http on {}", http.local_addr()?);
    }
    std::io::stdout().flush()?;
    geostore_node::run(config, listener, http_listener, shutdown_signal()).await
}

/// Binds a TCP listener, with an error that names the address.
pub async fn bind(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
