//! A cluster's description: which node runs in which site, how to reach it, and who votes in the lock
//! group. One builder for every place that starts a cluster (`geostore dev`, the simulation harness, the
//! process tests), so that they cannot disagree on how a mesh is wired.
//!
//! A site has one node or several ([`Topology::nodes_per_site`]); every node pulls from every node of
//! every other site (each serves the partitions it leads), the first node of each site votes in the
//! cross-site lock group and the others are learners, with lock-group id = position + 1. A node is told its
//! place by the member list ([`Topology::members`], `--member`); the older flags `--peer` and
//! `--lock-member` are still built here for the tests that start nodes without a lock group.
//!
//! How node `from` reaches node `to` is a [`Route`]: [`direct`] uses `to`'s own endpoint; a test puts a
//! fault proxy on each link by routing through it.

use crate::config::{LockMemberConfig, MemberConfig, NodeSettings, PeerConfig};

/// One node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyNode {
    /// The node's id in the lock group (unique in the cluster, from 1).
    pub id: u64,
    /// The site (datacenter) it runs in.
    pub site: String,
    /// Its own gRPC endpoint, `http://HOST:PORT`.
    pub endpoint: String,
    /// Whether it votes in the lock group (otherwise a learner).
    pub voter: bool,
}

/// Every node of a cluster, in order: `nodes[i]` is "node i" for [`Topology::settings`] and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The nodes, in the order their indexes refer to.
    pub nodes: Vec<TopologyNode>,
}

/// How node `from` reaches node `to` (indexes into [`Topology::nodes`]): the endpoint `from` dials.
pub type Route<'a> = &'a dyn Fn(usize, usize) -> String;

/// The route that dials every node at its own endpoint.
pub fn direct(topology: &Topology) -> impl Fn(usize, usize) -> String + '_ {
    move |_from, to| topology.nodes[to].endpoint.clone()
}

impl Topology {
    /// One node per site: site `sites[i]` runs node i (lock-group id i + 1, a voter) at `endpoint(i)`.
    pub fn one_node_per_site(sites: &[impl AsRef<str>], endpoint: impl Fn(usize) -> String) -> Topology {
        let nodes = sites
            .iter()
            .enumerate()
            .map(|(i, site)| TopologyNode {
                id: i as u64 + 1,
                site: site.as_ref().to_string(),
                endpoint: endpoint(i),
                voter: true,
            })
            .collect();
        Topology { nodes }
    }

    /// `nodes_per_site` nodes in each site: node j of site `sites[i]` is node index (and position)
    /// `i + S * j` for S sites, with lock-group id `i + 1 + S * j`, at `endpoint(i, j)`; the first node of
    /// each site (the lowest id) votes in the lock group, the others are learners. One node per site
    /// gives [`Topology::one_node_per_site`].
    pub fn nodes_per_site(
        sites: &[impl AsRef<str>],
        nodes_per_site: usize,
        endpoint: impl Fn(usize, usize) -> String,
    ) -> Topology {
        let count = sites.len();
        let nodes = (0..nodes_per_site)
            .flat_map(|j| (0..count).map(move |i| (i, j)))
            .map(|(i, j)| TopologyNode {
                id: (i + 1 + count * j) as u64,
                site: sites[i].as_ref().to_string(),
                endpoint: endpoint(i, j),
                voter: j == 0,
            })
            .collect();
        Topology { nodes }
    }

    /// What node `i` pulls from: every node of every other site, as `route` reaches it.
    pub fn peers(&self, i: usize, route: Route) -> Vec<PeerConfig> {
        let own_site = &self.nodes[i].site;
        (0..self.nodes.len())
            .filter(|&j| self.nodes[j].site != *own_site)
            .map(|j| PeerConfig { site: self.nodes[j].site.clone(), endpoint: route(i, j) })
            .collect()
    }

    /// The lock group as node `i` knows it: every member, itself included (at its own endpoint), the
    /// others as `route` reaches them.
    pub fn lock_members(&self, i: usize, route: Route) -> Vec<LockMemberConfig> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(j, node)| LockMemberConfig {
                id: node.id,
                site: node.site.clone(),
                endpoint: if j == i { node.endpoint.clone() } else { route(i, j) },
                voter: node.voter,
            })
            .collect()
    }

    /// The member list as node `i` knows it: every node, itself included (at its own endpoint), the others
    /// as `route` reaches them, each marked voter or learner as the topology says.
    pub fn members(&self, i: usize, route: Route) -> Vec<MemberConfig> {
        self.lock_members(i, route)
            .into_iter()
            .map(|member| MemberConfig {
                id: member.id,
                site: member.site,
                endpoint: member.endpoint,
                voter: Some(member.voter),
            })
            .collect()
    }

    /// Node `i`'s place in the cluster as settings: its site, its id and the member list (from which it
    /// takes its peers and lock group). Everything else (addresses to bind, data directory, tuning) is left
    /// for the caller to fill in.
    pub fn settings(&self, i: usize, route: Route) -> NodeSettings {
        NodeSettings {
            site: Some(self.nodes[i].site.clone()),
            node_id: Some(self.nodes[i].id),
            members: Some(self.members(i, route)),
            ..NodeSettings::default()
        }
    }

    /// [`Topology::settings`] as `geostore node` flags: `--node-id` and one `--member` per node.
    pub fn flags(&self, i: usize, route: Route) -> Vec<String> {
        let mut flags = vec!["--node-id".to_string(), self.nodes[i].id.to_string()];
        for member in self.members(i, route) {
            let role = if member.voter == Some(false) { "learner" } else { "voter" };
            flags.push("--member".into());
            flags.push(format!("{}={}={}={role}", member.id, member.site, member.endpoint));
        }
        flags
    }

    /// Node `i`'s site and peers as flags: `--site` and one `--peer` per other site.
    pub fn replication_flags(&self, i: usize, route: Route) -> Vec<String> {
        let mut flags = vec!["--site".to_string(), self.nodes[i].site.clone()];
        for peer in self.peers(i, route) {
            flags.push("--peer".into());
            flags.push(format!("{}={}", peer.site, peer.endpoint));
        }
        flags
    }

    /// Node `i`'s lock-group membership as flags: `--node-id` and one `--lock-member` per member.
    pub fn lock_group_flags(&self, i: usize, route: Route) -> Vec<String> {
        let mut flags = vec!["--node-id".to_string(), self.nodes[i].id.to_string()];
        for member in self.lock_members(i, route) {
            flags.push("--lock-member".into());
            let learner = if member.voter { "" } else { "=learner" };
            flags.push(format!("{}={}={}{learner}", member.id, member.site, member.endpoint));
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Topology {
        Topology::one_node_per_site(&["a", "b", "c"], |i| format!("http://127.0.0.1:{}", 7000 + i))
    }

    #[test]
    fn each_node_pulls_from_every_other_site_and_knows_every_member() {
        let topology = three();
        let peers = topology.peers(1, &direct(&topology));
        let peers: Vec<(&str, &str)> = peers.iter().map(|p| (p.site.as_str(), p.endpoint.as_str())).collect();
        assert_eq!(peers, [("a", "http://127.0.0.1:7000"), ("c", "http://127.0.0.1:7002")]);
        let members = topology.lock_members(1, &direct(&topology));
        let ids: Vec<(u64, &str, bool)> = members.iter().map(|m| (m.id, m.site.as_str(), m.voter)).collect();
        assert_eq!(ids, [(1, "a", true), (2, "b", true), (3, "c", true)]);
    }

    #[test]
    fn a_route_decides_how_others_are_reached_but_a_node_is_itself_at_its_own_endpoint() {
        let topology = three();
        let via_proxy = |from: usize, to: usize| format!("http://proxy-{from}-{to}");
        let members = topology.lock_members(0, &via_proxy);
        let endpoints: Vec<&str> = members.iter().map(|m| m.endpoint.as_str()).collect();
        assert_eq!(endpoints, ["http://127.0.0.1:7000", "http://proxy-0-1", "http://proxy-0-2"]);
        let settings = topology.settings(0, &via_proxy);
        assert_eq!(settings.site.as_deref(), Some("a"));
        assert_eq!(settings.node_id, Some(1));
        assert_eq!(settings.members.unwrap()[2].endpoint, "http://proxy-0-2");
    }

    #[test]
    fn several_nodes_per_site_keep_the_first_nodes_ids_and_vote_once_per_site() {
        let topology =
            Topology::nodes_per_site(&["a", "b", "c"], 2, |i, j| format!("http://127.0.0.1:{}", 7000 + i + 3 * j));
        let nodes: Vec<(u64, &str, bool)> = topology.nodes.iter().map(|n| (n.id, n.site.as_str(), n.voter)).collect();
        assert_eq!(
            nodes,
            [(1, "a", true), (2, "b", true), (3, "c", true), (4, "a", false), (5, "b", false), (6, "c", false)]
        );
        assert_eq!(topology.nodes[4].endpoint, "http://127.0.0.1:7004");
        let one = Topology::nodes_per_site(&["a", "b", "c"], 1, |i, _| format!("http://127.0.0.1:{}", 7000 + i));
        assert_eq!(one, three());
        // Node 4 (site a) pulls from both nodes of b and of c, and is in a's placement group with node 1.
        let peers: Vec<String> = topology.peers(3, &direct(&topology)).into_iter().map(|p| p.endpoint).collect();
        assert_eq!(
            peers,
            ["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7004", "http://127.0.0.1:7005"]
        );
        let config = NodeSettings {
            data_dir: Some("d".into()),
            listen: Some("127.0.0.1:0".into()),
            ..topology.settings(3, &direct(&topology))
        }
        .resolve()
        .unwrap();
        let placement: Vec<u64> = config.placement.unwrap().group.members.iter().map(|m| m.id).collect();
        assert_eq!(placement, [1, 4]);
    }

    /// The values of every `flag` in `flags`.
    fn values(flags: &[String], flag: &str) -> Vec<String> {
        flags.iter().zip(flags.iter().skip(1)).filter(|(f, _)| *f == flag).map(|(_, v)| v.clone()).collect()
    }

    #[test]
    fn the_older_flags_parse_back_into_the_same_peers_and_lock_members() {
        let mut topology = three();
        topology.nodes[2].voter = false;
        let mut flags = topology.replication_flags(0, &direct(&topology));
        flags.extend(topology.lock_group_flags(0, &direct(&topology)));
        assert_eq!(values(&flags, "--site"), ["a"]);
        assert_eq!(values(&flags, "--node-id"), ["1"]);
        let peers: Vec<PeerConfig> = values(&flags, "--peer").iter().map(|p| p.parse().unwrap()).collect();
        assert_eq!(peers, topology.peers(0, &direct(&topology)));
        let members: Vec<LockMemberConfig> =
            values(&flags, "--lock-member").iter().map(|m| m.parse().unwrap()).collect();
        assert_eq!(members, topology.lock_members(0, &direct(&topology)));
    }

    #[test]
    fn the_member_flags_resolve_to_what_the_older_flags_say() {
        let mut topology = three();
        topology.nodes[2].voter = false;
        let flags = topology.flags(1, &direct(&topology));
        assert_eq!(values(&flags, "--node-id"), ["2"]);
        let members: Vec<MemberConfig> = values(&flags, "--member").iter().map(|m| m.parse().unwrap()).collect();
        assert_eq!(members, topology.members(1, &direct(&topology)));
        let place = |settings: NodeSettings| {
            let config = NodeSettings { data_dir: Some("d".into()), listen: Some("127.0.0.1:0".into()), ..settings }
                .resolve()
                .unwrap();
            (config.store.site, config.peers, config.lock_group.unwrap().group.members)
        };
        let older = NodeSettings {
            site: Some("b".into()),
            node_id: Some(2),
            peers: Some(topology.peers(1, &direct(&topology))),
            lock_members: Some(topology.lock_members(1, &direct(&topology))),
            ..NodeSettings::default()
        };
        assert_eq!(place(topology.settings(1, &direct(&topology))), place(older));
    }
}
