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
    /// Site i serves gRPC on 127.0.0.1:(P+i) and HTTP on 127.0.0.1:(P+100+i); with several nodes per
    /// site, its node j on P+i+3j and P+100+i+3j.
    #[arg(long, default_value_t = 7000)]
    port_base: u16,
    /// Nodes in each site (1 to 32); each partition then has min(3, K) replicas per site. Fixed when the
    /// folder is first used.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=32))]
    nodes_per_site: u16,
}

/// The file in the dev folder that records how many nodes per site the cluster there was made with.
const NODES_PER_SITE_FILE: &str = "nodes-per-site";

/// `geostore dev`: a three-site cluster in this process, K nodes per site (one by default), replicating
/// with each other; the first node of each site (ids 1 to 3) votes in the lock group.
pub async fn run(args: DevArgs) -> ExitCode {
    match run_dev(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(crate::EXIT_FAILED)
        }
    }
}

/// Records the node count per site in a new folder, or checks it against the one recorded: a site's
/// placement is fixed when it is created, so a folder cannot be reused with another count.
fn check_nodes_per_site(dir: &std::path::Path, nodes_per_site: u16) -> anyhow::Result<()> {
    let file = dir.join(NODES_PER_SITE_FILE);
    match std::fs::read_to_string(&file) {
        Ok(recorded) => {
            let recorded = recorded.trim();
            if recorded != nodes_per_site.to_string() {
                anyhow::bail!(
                    "{} holds a cluster of {recorded} node(s) per site; run with --nodes-per-site {recorded}, or give another --dir",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A folder made before the count was recorded holds one node per site.
            if nodes_per_site != 1 && SITES.iter().any(|site| dir.join(site).exists()) {
                anyhow::bail!(
                    "{} holds a cluster of 1 node per site; run without --nodes-per-site, or give another --dir",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)?;
            std::fs::write(&file, format!("{nodes_per_site}\n"))?;
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!("cannot read {}: {error}", file.display())),
    }
}

async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let per_site = usize::from(args.nodes_per_site);
    let last_port = usize::from(args.port_base) + usize::from(HTTP_PORT_OFFSET) + SITES.len() * per_site;
    if last_port > usize::from(u16::MAX) {
        anyhow::bail!("--port-base {} leaves no room for {per_site} node(s) per site", args.port_base);
    }
    check_nodes_per_site(&args.dir, args.nodes_per_site)?;
    let port = |i: usize, j: usize| usize::from(args.port_base) + i + SITES.len() * j;
    let endpoint = |i: usize, j: usize| format!("http://127.0.0.1:{}", port(i, j));
    let topology = Topology::nodes_per_site(&SITES, per_site, endpoint);
    let stop = CancellationToken::new();
    let mut nodes = tokio::task::JoinSet::new();
    for (index, node) in topology.nodes.iter().enumerate() {
        let (i, j) = (index % SITES.len(), index / SITES.len());
        let listen = format!("127.0.0.1:{}", port(i, j));
        let http_listen = format!("127.0.0.1:{}", port(i, j) + usize::from(HTTP_PORT_OFFSET));
        // The first node of a site keeps the folder named after the site, as with one node per site.
        let folder = if j == 0 { node.site.clone() } else { format!("{}-n{j}", node.site) };
        let settings = NodeSettings {
            data_dir: Some(args.dir.join(folder)),
            listen: Some(listen.clone()),
            http_listen: Some(http_listen.clone()),
            ..topology.settings(index, &direct(&topology))
        };
        let config = settings.resolve().map_err(anyhow::Error::msg)?;
        let listener = crate::node::bind(&listen).await?;
        let http = crate::node::bind(&http_listen).await?;
        let name =
            if per_site == 1 { format!("site {}", node.site) } else { format!("site {} node {}", node.site, node.id) };
        println!("{name}: grpc {} http http://{http_listen} data {}", node.endpoint, config.data_dir.display());
        nodes.spawn(geostore_node::run(config, listener, Some(http), stop.clone().cancelled_owned()));
    }
    let endpoint = |i: usize| endpoint(i, 0);
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
