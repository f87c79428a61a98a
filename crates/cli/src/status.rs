use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use geostore_client::{Client, pb};
use serde_json::{Value, json};

use crate::kv::ClientArgs;

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// How long `status` waits for another member's own status before it reports the member as down.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What one node says of itself in its site's placement: its partitions and primaries.
fn own_placement(status: &pb::StatusResponse, id: u64) -> Option<&pb::NodePlacement> {
    status.placement.as_ref()?.nodes.iter().find(|node| node.id == id)
}

/// One member as `status --json` lists it: `up` is whether it answered its own status (this node is up),
/// and its partitions and primaries are those its site's placement map gives it (`null` if unknown).
fn node_json(member: &pb::GroupMember, answered: Option<&pb::StatusResponse>) -> Value {
    let placed = answered.and_then(|status| own_placement(status, member.id));
    // Of the partitions it leads: those with fewer than N replicas up, and each one's followers.
    let led = answered.map(|status| &status.led);
    let under_replicated = led.map(|led| {
        led.iter()
            .filter(|p| 1 + p.followers.iter().filter(|f| f.up).count() < p.replicas as usize)
            .map(|p| p.partition)
            .collect::<Vec<_>>()
    });
    let led_json = led.map(|led| {
        led.iter()
            .map(|p| {
                json!({
                    "partition": p.partition,
                    "epoch": p.epoch,
                    "head": p.head,
                    "committed": p.committed,
                    "replicas": p.replicas,
                    "write_quorum": p.write_quorum,
                    "in_sync": p.followers.iter().filter(|f| f.up && f.head >= p.head).map(|f| f.node).collect::<Vec<_>>(),
                    "followers": p.followers.iter().map(|f| json!({"node": f.node, "head": f.head, "up": f.up})).collect::<Vec<_>>(),
                })
            })
            .collect::<Vec<_>>()
    });
    json!({
        "id": member.id,
        "site": member.site,
        "endpoint": member.endpoint,
        "up": answered.is_some(),
        "partitions": placed.map(|node| node.partitions.clone()),
        "primaries": placed.map(|node| node.primaries.clone()),
        "under_replicated": under_replicated,
        "led": led_json,
    })
}

/// Every member of the cluster (the lock group's membership names them all), the others asked for their
/// own status all at once; without a lock group, this node alone.
async fn nodes_json(status: &pb::StatusResponse, endpoint: Option<&str>) -> Vec<Value> {
    let Some(group) = &status.lock_group else {
        return vec![json!({"site": status.site, "endpoint": endpoint})];
    };
    let mut asks = tokio::task::JoinSet::new();
    let mut nodes = Vec::new();
    for member in &group.members {
        if member.id == group.id {
            nodes.push(node_json(member, Some(status)));
            continue;
        }
        let member = member.clone();
        asks.spawn(async move {
            let ask = async {
                let client = Client::connect(&[member.endpoint.as_str()]).await.ok()?;
                client.status().await.ok()
            };
            let answered = tokio::time::timeout(MEMBER_STATUS_TIMEOUT, ask).await.ok().flatten();
            node_json(&member, answered.as_ref())
        });
    }
    while let Some(node) = asks.join_next().await {
        nodes.extend(node.ok());
    }
    nodes.sort_by_key(|node| node["id"].as_u64());
    nodes
}

/// `geostore status`: the cluster as the node at the endpoint sees it.
pub async fn run(args: StatusArgs) -> ExitCode {
    let json = args.client.json;
    let client = match Client::connect(&args.client.endpoints).await {
        Ok(client) => client,
        Err(error) => return crate::kv::report_error(&error, json),
    };
    let status = match client.status().await {
        Ok(status) => status,
        Err(error) => return crate::kv::report_error(&error, json),
    };
    // `None` if the node is not in a lock group.
    let group = status.lock_group.as_ref();
    let group_json = group.map(|group| {
        json!({
            "id": group.id,
            "state": group.state,
            "leader": group.leader,
            "leader_site": group.leader_site,
            "leader_endpoint": group.leader_endpoint,
            "term": group.term,
            "last_log_index": group.last_log_index,
            "applied_index": group.applied_index,
            "members": group.members.iter().map(|m| json!({
                "id": m.id, "site": m.site, "endpoint": m.endpoint, "voter": m.voter,
            })).collect::<Vec<_>>(),
        })
    });
    // `None` if the node runs no placement group (configured without member ids).
    let placement = status.placement.as_ref();
    let placement_json = placement.map(|placement| {
        let group = placement.group.as_ref();
        json!({
            "version": placement.version,
            "replicas_per_site": placement.replicas_per_site,
            "leader": group.map_or(0, |group| group.leader),
            "term": group.map_or(0, |group| group.term),
            "state": group.map_or("", |group| group.state.as_str()),
            "partitions": placement.partitions.iter().map(|p| json!({
                "partition": p.partition, "primary": p.primary, "replicas": p.replicas, "epoch": p.epoch,
            })).collect::<Vec<_>>(),
        })
    });
    let nodes = nodes_json(&status, args.client.endpoints.first().map(String::as_str)).await;
    if json {
        let peers: Vec<_> = status
            .peers
            .iter()
            .map(|peer| {
                json!({
                    "site": peer.site,
                    "endpoint": peer.endpoint,
                    "connected": peer.connected,
                    "lag_ops": peer.lag_ops,
                    "lag_seconds": peer.lag_seconds,
                    "records_applied": peer.records_applied,
                    "last_error": peer.last_error,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "site": status.site,
                "replica_id": status.replica_id,
                "sites": status.sites,
                "nodes": nodes,
                "partitions": status.partitions,
                "log_head_total": status.log_head_total,
                "anti_entropy_repairs": status.anti_entropy_repairs,
                "clock_drift_refusals": status.clock_drift_refusals,
                "tombstones_collected": status.tombstones_collected,
                "peers": peers,
                "lock_group": group_json,
                "placement": placement_json,
            })
        );
    } else {
        println!(
            "site {} (replica {:016x}), {} partitions, {} changes logged; sites: {}",
            status.site,
            status.replica_id,
            status.partitions,
            status.log_head_total,
            status.sites.join(", ")
        );
        println!(
            "anti-entropy repairs {}, clock drift refusals {}",
            status.anti_entropy_repairs, status.clock_drift_refusals
        );
        println!(
            "{:<12} {:<28} {:<10} {:>10} {:>10} {:>12}  last error",
            "peer", "endpoint", "stream", "lag ops", "lag s", "applied"
        );
        for peer in &status.peers {
            println!(
                "{:<12} {:<28} {:<10} {:>10} {:>10.3} {:>12}  {}",
                peer.site,
                peer.endpoint,
                if peer.connected { "up" } else { "down" },
                peer.lag_ops,
                peer.lag_seconds,
                peer.records_applied,
                peer.last_error
            );
        }
        if status.lock_group.is_some() {
            // Per site: how many of its members answered their own status, how many partitions their
            // primaries say are under-replicated, and how many have a primary that did not answer.
            let mut sites: std::collections::BTreeMap<&str, (usize, usize, usize, usize)> =
                std::collections::BTreeMap::new();
            for node in &nodes {
                let counts = sites.entry(node["site"].as_str().unwrap_or("?")).or_default();
                counts.1 += 1;
                counts.0 += usize::from(node["up"].as_bool().unwrap_or(false));
                counts.2 += node["under_replicated"].as_array().map_or(0, Vec::len);
            }
            for site in sites.iter_mut() {
                let (site, counts) = site;
                // The placement this node knows is its own site's: the partitions led by members that are down.
                if let Some(placement) = status.placement.as_ref().filter(|_| *site == status.site.as_str()) {
                    let down: Vec<u64> = nodes
                        .iter()
                        .filter(|node| node["up"] == false && node["site"] == *site)
                        .filter_map(|node| node["id"].as_u64())
                        .collect();
                    counts.3 = placement.partitions.iter().filter(|p| down.contains(&p.primary)).count();
                }
            }
            let summary: Vec<String> = sites
                .iter()
                .map(|(site, (up, all, short, headless))| {
                    let mut line = format!("{site} {up} of {all} up");
                    if *short > 0 {
                        line.push_str(&format!(" ({short} partitions under-replicated)"));
                    }
                    if *headless > 0 {
                        line.push_str(&format!(" ({headless} partitions without their primary: no writes)"));
                    }
                    line
                })
                .collect();
            println!("nodes: {}", summary.join(", "));
        }
        match group {
            Some(group) => {
                println!(
                    "lock group: member {} is {}, leader {}, term {}, log {} (applied {})",
                    group.id,
                    group.state,
                    if group.leader == 0 {
                        "unknown".to_string()
                    } else {
                        format!("{} (site {}, {})", group.leader, group.leader_site, group.leader_endpoint)
                    },
                    group.term,
                    group.last_log_index,
                    group.applied_index
                );
                for member in &group.members {
                    println!(
                        "  member {:<4} {:<12} {:<28} {}",
                        member.id,
                        member.site,
                        member.endpoint,
                        if member.voter { "voter" } else { "learner" }
                    );
                }
            }
            None => println!("lock group: none (this node is not a member)"),
        }
        match placement {
            Some(placement) if placement.version == 0 => {
                println!("placement: not created yet (the site's placement group has no map)");
            }
            Some(placement) => {
                println!(
                    "placement: version {}, {} replica(s) per partition over {} node(s) of site {}",
                    placement.version,
                    placement.replicas_per_site,
                    placement.nodes.len(),
                    status.site
                );
                for node in &placement.nodes {
                    println!(
                        "  node {:<4} {:<28} {} replicas, primary for {}",
                        node.id,
                        node.endpoint,
                        node.partitions.len(),
                        node.primaries.len()
                    );
                }
            }
            None => println!("placement: none (this node has no member id: it holds every partition of its site)"),
        }
    }
    ExitCode::SUCCESS
}
