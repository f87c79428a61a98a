use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use geostore_node::NodeSettings;
use geostore_node::topology::{Topology, direct};
use geostore_runtime::shutdown::CancellationToken;

/// The sites of the development cluster.
const SITES: [&str; 3] = ["dc0", "dc1", "dc2"];
/// HTTP side ports are the gRPC port plus this.
const HTTP_PORT_OFFSET: u16 = 100;

#[derive(Args)]
pub struct DevArgs {
    /// Where the three nodes keep their data (one folder per site); reused on the next run.
    #[arg(long, default_value = "./geostore-dev")]
    dir: PathBuf,
    /// Site i serves gRPC on 127.0.0.1:(P+i) and HTTP on 127.0.0.1:(P+100+i).
    #[arg(long, default_value_t = 7000)]
    port_base: u16,
}

/// `geostore dev`: a three-site cluster in this process, one node per site, replicating with each other;
/// the three nodes are the voters of the lock group (ids 1 to 3).
pub async fn run(args: DevArgs) -> ExitCode {
    match run_dev(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(crate::EXIT_FAILED)
        }
    }
}

async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let endpoint = |i: usize| format!("http://127.0.0.1:{}", usize::from(args.port_base) + i);
    let topology = Topology::one_node_per_site(&SITES, endpoint);
    let stop = CancellationToken::new();
    let mut nodes = tokio::task::JoinSet::new();
    for (i, site) in SITES.iter().enumerate() {
        let listen = format!("127.0.0.1:{}", usize::from(args.port_base) + i);
        let http_listen = format!("127.0.0.1:{}", usize::from(args.port_base) + usize::from(HTTP_PORT_OFFSET) + i);
        let settings = NodeSettings {
            data_dir: Some(args.dir.join(site)),
            listen: Some(listen.clone()),
            http_listen: Some(http_listen.clone()),
            ..topology.settings(i, &direct(&topology))
        };
        let config = settings.resolve().map_err(anyhow::Error::msg)?;
        let listener = crate::node::bind(&listen).await?;
        let http = crate::node::bind(&http_listen).await?;
        println!("site {site}: grpc {} http http://{http_listen} data {}", endpoint(i), config.data_dir.display());
        nodes.spawn(geostore_node::run(config, listener, Some(http), stop.clone().cancelled_owned()));
    }
    println!(
        "geostore dev: three sites running; try `geostore kv put k v --endpoint {}` then `geostore kv get k --endpoint {}`; Ctrl-C stops",
        endpoint(0),
        endpoint(2)
    );
    // Nodes only stop on their own after an error: then the whole cluster stops.
    let mut failure = None;
    tokio::select! {
        _ = crate::node::shutdown_signal() => {}
        Some(result) = nodes.join_next() => failure = Some(node_result(result)),
    }
    stop.cancel();
    while let Some(result) = nodes.join_next().await {
        if let Err(error) = node_result(result) {
            failure.get_or_insert(Err(error));
        }
    }
    match failure {
        Some(Err(error)) => Err(error),
        _ => Ok(()),
    }
}

fn node_result(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.unwrap_or_else(|e| Err(anyhow::anyhow!("a node task failed: {e}")))
}
