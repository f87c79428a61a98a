//! Node settings: from a TOML file, then command-line flags on top (every setting is both).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use geostore_lockgroup::{GroupConfig, Member, MemberConfig, Timing};
use geostore_storage::Durability;
use serde::Deserialize;

use crate::store::StoreConfig;

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// After the batch holding it is fsynced (group commit shares one fsync among concurrent writes).
    Always,
    /// After the batch is in the operating system's buffers: survives a crash of the process, not of the
    /// machine.
    None,
}

impl FromStr for SyncPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(SyncPolicy::Always),
            "none" => Ok(SyncPolicy::None),
            other => Err(format!("unknown sync policy {other:?}: use \"always\" or \"none\"")),
        }
    }
}

/// Every node setting, each optional: one of these comes from the file and one from the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    pub data_dir: Option<PathBuf>,
    /// gRPC address, `HOST:PORT`.
    pub listen: Option<String>,
    /// Side port for `/metrics`, `/healthz` and `/readyz`, `HOST:PORT`; none if unset.
    pub http_listen: Option<String>,
    pub site: Option<String>,
    pub partitions: Option<u16>,
    pub sync: Option<SyncPolicy>,
    pub value_bytes_max: Option<usize>,
    pub max_drift_ms: Option<u64>,
    pub write_queue_max: Option<usize>,
    pub group_ops_max: Option<usize>,
    /// The nodes of the other sites to replicate with.
    pub peers: Option<Vec<PeerConfig>>,
    /// Change-log records kept per partition.
    pub log_retention_ops: Option<u64>,
    /// Change-log bytes kept per node.
    pub log_retention_bytes: Option<u64>,
    /// Change-log records older than this are trimmed, in milliseconds.
    pub log_retention_ms: Option<u64>,
    /// How often each partition is compared with each peer by Merkle digest, in milliseconds.
    pub anti_entropy_interval_ms: Option<u64>,
    /// The longest a read with a causal token waits for the write to arrive, in milliseconds.
    pub causal_wait_max_ms: Option<u64>,
    /// How often the change log is trimmed to the retention limits, in milliseconds.
    pub log_trim_interval_ms: Option<u64>,
    /// How often acknowledged tombstones and expired keys are collected, in milliseconds.
    pub gc_interval_ms: Option<u64>,
    /// Shifts this node's clock by this many milliseconds. For fault testing only: it is how tests skew
    /// one node's clock through the injected clock.
    pub clock_offset_ms: Option<i64>,
    /// This node's id in the lock group (unique in the cluster, never reused).
    pub node_id: Option<u64>,
    /// The lock group's members, this node included; no lock group if unset.
    pub lock_members: Option<Vec<LockMemberConfig>>,
    /// Raft heartbeat interval of the lock group, in milliseconds.
    pub raft_heartbeat_ms: Option<u64>,
    /// A follower that hears no leader for a random time in [min, max] ms starts an election.
    pub raft_election_timeout_min_ms: Option<u64>,
    pub raft_election_timeout_max_ms: Option<u64>,
    /// The lock group snapshots its state (and purges its log) after this many entries.
    pub raft_snapshot_every: Option<u64>,
    /// A lock whose lease expired is not granted again for this long, in milliseconds (0: at once).
    pub lock_delay_ms: Option<u64>,
}

/// A member of the lock group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockMemberConfig {
    pub id: u64,
    pub site: String,
    /// Its gRPC endpoint, `http://HOST:PORT`.
    pub endpoint: String,
    /// Voters elect the leader; other members are learners. Default: true.
    #[serde(default = "default_true")]
    pub voter: bool,
}

fn default_true() -> bool {
    true
}

impl FromStr for LockMemberConfig {
    type Err = String;
    /// `ID=SITE=http://HOST:PORT`, with `=learner` at the end for a learner, as given to `--lock-member`.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("--lock-member {text:?}: expected ID=SITE=http://HOST:PORT[=learner]");
        let mut parts = text.splitn(3, '=');
        let (Some(id), Some(site), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(usage());
        };
        let id = id.parse().map_err(|_| usage())?;
        let (endpoint, voter) = match rest.strip_suffix("=learner") {
            Some(endpoint) => (endpoint, false),
            None => (rest, true),
        };
        Ok(LockMemberConfig { id, site: site.to_string(), endpoint: endpoint.to_string(), voter })
    }
}

/// A node of another site.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub site: String,
    /// Its gRPC endpoint, `http://HOST:PORT`.
    pub endpoint: String,
}

impl FromStr for PeerConfig {
    type Err = String;
    /// `SITE=http://HOST:PORT`, as given to `--peer`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (site, endpoint) =
            text.split_once('=').ok_or_else(|| format!("--peer {text:?}: expected SITE=http://HOST:PORT"))?;
        Ok(PeerConfig { site: site.to_string(), endpoint: endpoint.to_string() })
    }
}

fn check_site_name(site: &str) -> Result<(), String> {
    if site.is_empty() || site.len() > 64 || !site.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("site name {site:?} must be 1 to 64 ASCII letters, digits, '-' or '_'"));
    }
    Ok(())
}

impl NodeSettings {
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `self` with every setting that `overrides` has replaced.
    pub fn overridden_by(self, overrides: NodeSettings) -> NodeSettings {
        NodeSettings {
            data_dir: overrides.data_dir.or(self.data_dir),
            listen: overrides.listen.or(self.listen),
            http_listen: overrides.http_listen.or(self.http_listen),
            site: overrides.site.or(self.site),
            partitions: overrides.partitions.or(self.partitions),
            sync: overrides.sync.or(self.sync),
            value_bytes_max: overrides.value_bytes_max.or(self.value_bytes_max),
            max_drift_ms: overrides.max_drift_ms.or(self.max_drift_ms),
            write_queue_max: overrides.write_queue_max.or(self.write_queue_max),
            group_ops_max: overrides.group_ops_max.or(self.group_ops_max),
            peers: overrides.peers.or(self.peers),
            log_retention_ops: overrides.log_retention_ops.or(self.log_retention_ops),
            log_retention_bytes: overrides.log_retention_bytes.or(self.log_retention_bytes),
            log_retention_ms: overrides.log_retention_ms.or(self.log_retention_ms),
            anti_entropy_interval_ms: overrides.anti_entropy_interval_ms.or(self.anti_entropy_interval_ms),
            causal_wait_max_ms: overrides.causal_wait_max_ms.or(self.causal_wait_max_ms),
            log_trim_interval_ms: overrides.log_trim_interval_ms.or(self.log_trim_interval_ms),
            clock_offset_ms: overrides.clock_offset_ms.or(self.clock_offset_ms),
            gc_interval_ms: overrides.gc_interval_ms.or(self.gc_interval_ms),
            node_id: overrides.node_id.or(self.node_id),
            lock_members: overrides.lock_members.or(self.lock_members),
            raft_heartbeat_ms: overrides.raft_heartbeat_ms.or(self.raft_heartbeat_ms),
            raft_election_timeout_min_ms: overrides.raft_election_timeout_min_ms.or(self.raft_election_timeout_min_ms),
            raft_election_timeout_max_ms: overrides.raft_election_timeout_max_ms.or(self.raft_election_timeout_max_ms),
            raft_snapshot_every: overrides.raft_snapshot_every.or(self.raft_snapshot_every),
            lock_delay_ms: overrides.lock_delay_ms.or(self.lock_delay_ms),
        }
    }

    /// The lock group's configuration, if this node is in one.
    fn lock_group(&self, site: &str) -> Result<Option<GroupConfig>, String> {
        let Some(members) = &self.lock_members else {
            if self.node_id.is_some() {
                return Err("node_id is set but lock_members is not: list the lock group's members".into());
            }
            return Ok(None);
        };
        let id = self.node_id.ok_or("lock_members is set but node_id is not: give this node its id")?;
        for member in members {
            check_site_name(&member.site)?;
            if !(member.endpoint.starts_with("http://") || member.endpoint.starts_with("https://")) {
                return Err(format!("lock member endpoint {:?} must start with http:// or https://", member.endpoint));
            }
            if member.id == id && member.site != site {
                return Err(format!("lock member {id} is this node, but in site {:?}, not {site:?}", member.site));
            }
            if member.id == 0 {
                return Err("lock member ids start at 1".into());
            }
        }
        let defaults = Timing::default();
        let config = GroupConfig {
            id,
            members: members
                .iter()
                .map(|m| MemberConfig {
                    id: m.id,
                    member: Member { site: m.site.clone(), endpoint: m.endpoint.clone() },
                    voter: m.voter,
                })
                .collect(),
            timing: Timing {
                heartbeat_ms: self.raft_heartbeat_ms.unwrap_or(defaults.heartbeat_ms),
                election_timeout_min_ms: self.raft_election_timeout_min_ms.unwrap_or(defaults.election_timeout_min_ms),
                election_timeout_max_ms: self.raft_election_timeout_max_ms.unwrap_or(defaults.election_timeout_max_ms),
            },
            snapshot_every: self.raft_snapshot_every.unwrap_or(10_000),
            lock_delay_ms: self.lock_delay_ms.unwrap_or(0),
            inline_log: false,
            dialer: Default::default(),
        };
        config.check()?;
        Ok(Some(config))
    }

    /// The complete configuration, with defaults for what is unset; an error names what is missing or wrong.
    pub fn resolve(self) -> Result<NodeConfig, String> {
        let defaults = StoreConfig::default();
        let lock_group = self.lock_group(self.site.as_deref().unwrap_or(&defaults.site))?;
        let data_dir = self.data_dir.ok_or("no data directory: pass --data-dir or set data_dir in the config file")?;
        let listen =
            self.listen.ok_or("no listen address: pass --listen HOST:PORT or set listen in the config file")?;
        let site = self.site.clone().unwrap_or(defaults.site);
        check_site_name(&site)?;
        let peers = self.peers.unwrap_or_default();
        for (index, peer) in peers.iter().enumerate() {
            check_site_name(&peer.site)?;
            if peer.site == site {
                return Err(format!(
                    "peer {:?} is in this node's own site; peers are nodes of other sites",
                    peer.endpoint
                ));
            }
            if peers[..index].iter().any(|other| other.site == peer.site) {
                return Err(format!("two peers for site {:?}: one node per site for now", peer.site));
            }
            if !(peer.endpoint.starts_with("http://") || peer.endpoint.starts_with("https://")) {
                return Err(format!("peer endpoint {:?} must start with http:// or https://", peer.endpoint));
            }
        }
        let partitions = self.partitions.unwrap_or(defaults.partitions);
        if partitions == 0 {
            return Err("partitions must be at least 1".into());
        }
        let value_bytes_max = self.value_bytes_max.unwrap_or(defaults.limits.value_bytes_max);
        if value_bytes_max == 0 || value_bytes_max > 64 * 1024 * 1024 {
            return Err(format!("value_bytes_max {value_bytes_max} must be between 1 and 64 MiB"));
        }
        let max_drift_ms = self.max_drift_ms.unwrap_or(defaults.max_drift_ms);
        if max_drift_ms == 0 {
            return Err("max_drift_ms must be positive".into());
        }
        let write_queue_max = self.write_queue_max.unwrap_or(defaults.write_queue_max);
        let group_ops_max = self.group_ops_max.unwrap_or(defaults.group_ops_max);
        if write_queue_max == 0 || group_ops_max == 0 {
            return Err("write_queue_max and group_ops_max must be at least 1".into());
        }
        let durability = match self.sync.unwrap_or(SyncPolicy::Always) {
            SyncPolicy::Always => Durability::Sync,
            SyncPolicy::None => Durability::Buffered,
        };
        let log_retention_ops = self.log_retention_ops.unwrap_or(defaults.log_retention_ops);
        let log_retention_bytes = self.log_retention_bytes.unwrap_or(defaults.log_retention_bytes);
        let log_retention_ms = self.log_retention_ms.unwrap_or(defaults.log_retention_ms);
        if log_retention_ops == 0 || log_retention_bytes == 0 || log_retention_ms == 0 {
            return Err("log_retention_ops, log_retention_bytes and log_retention_ms must be positive".into());
        }
        let anti_entropy_interval_ms = self.anti_entropy_interval_ms.unwrap_or(60_000);
        if anti_entropy_interval_ms < 100 {
            return Err("anti_entropy_interval_ms must be at least 100".into());
        }
        Ok(NodeConfig {
            lock_group,
            data_dir,
            listen,
            http_listen: self.http_listen,
            peers,
            anti_entropy_interval: std::time::Duration::from_millis(anti_entropy_interval_ms),
            causal_wait_max: std::time::Duration::from_millis(self.causal_wait_max_ms.unwrap_or(5_000)),
            log_trim_interval: std::time::Duration::from_millis(self.log_trim_interval_ms.unwrap_or(10_000).max(10)),
            clock_offset_ms: self.clock_offset_ms.unwrap_or(0),
            gc_interval: std::time::Duration::from_millis(self.gc_interval_ms.unwrap_or(10_000).max(10)),
            store: StoreConfig {
                log_retention_ops,
                log_retention_bytes,
                log_retention_ms,
                site,
                partitions,
                durability,
                limits: geostore_model::Limits { value_bytes_max },
                max_drift_ms,
                write_queue_max,
                group_ops_max,
                // A node process always runs the writer thread (group commit); the simulation runs inline.
                inline_writer: false,
            },
        })
    }
}

/// A node's complete configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `None`: this node is not in a lock group and does not serve locks.
    pub lock_group: Option<GroupConfig>,
    pub data_dir: PathBuf,
    pub listen: String,
    pub http_listen: Option<String>,
    pub peers: Vec<PeerConfig>,
    pub anti_entropy_interval: std::time::Duration,
    pub causal_wait_max: std::time::Duration,
    pub log_trim_interval: std::time::Duration,
    pub clock_offset_ms: i64,
    pub gc_interval: std::time::Duration,
    pub store: StoreConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: NodeSettings = toml::from_str(
            r#"
            data_dir = "/var/lib/geostore"
            listen = "0.0.0.0:7000"
            site = "eu"
            sync = "none"
            "#,
        )
        .unwrap();
        let flags = NodeSettings { listen: Some("127.0.0.1:7001".into()), ..NodeSettings::default() };
        let config = file.overridden_by(flags).resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7001");
        assert_eq!(config.store.site, "eu");
        assert_eq!(config.store.durability, Durability::Buffered);
        assert_eq!(config.store.partitions, 64);
        assert_eq!(config.store.limits.value_bytes_max, 1024 * 1024);
    }

    #[test]
    fn unknown_settings_and_missing_ones_are_reported() {
        let error = toml::from_str::<NodeSettings>("data_dri = \"x\"").unwrap_err().to_string();
        assert!(error.contains("unknown field `data_dri`"), "{error}");
        let error = NodeSettings::default().resolve().unwrap_err();
        assert!(error.contains("--data-dir"), "{error}");
    }

    #[test]
    fn a_bad_site_name_is_refused() {
        let settings = NodeSettings {
            data_dir: Some("d".into()),
            listen: Some("127.0.0.1:0".into()),
            site: Some("eu west".into()),
            ..NodeSettings::default()
        };
        assert!(settings.resolve().unwrap_err().contains("site name"));
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let example: NodeSettings = toml::from_str(include_str!("../../../deploy/node.example.toml")).unwrap();
        let config = example.resolve().unwrap();
        assert_eq!((config.store.site.as_str(), config.peers.len()), ("eu-west", 2));
        let group = config.lock_group.expect("the example configures the lock group");
        assert_eq!((group.id, group.members.len()), (1, 3));
    }

    #[test]
    fn peers_come_from_the_file_or_flags_and_are_checked() {
        let file: NodeSettings = toml::from_str(
            r#"
            data_dir = "d"
            listen = "127.0.0.1:0"
            site = "a"
            [[peers]]
            site = "b"
            endpoint = "http://127.0.0.1:7001"
            "#,
        )
        .unwrap();
        assert_eq!(file.clone().resolve().unwrap().peers.len(), 1);
        let flags = NodeSettings { peers: Some(vec!["a=http://x:1".parse().unwrap()]), ..NodeSettings::default() };
        assert!(file.clone().overridden_by(flags).resolve().unwrap_err().contains("own site"));
        assert!("nonsense".parse::<PeerConfig>().unwrap_err().contains("SITE=http://HOST:PORT"));
    }

    #[test]
    fn lock_members_come_from_flags_with_defaults_for_timing() {
        let member: LockMemberConfig = "2=b=http://127.0.0.1:7001".parse().unwrap();
        assert_eq!((member.id, member.site.as_str(), member.voter), (2, "b", true));
        let learner: LockMemberConfig = "4=a=http://127.0.0.1:7003=learner".parse().unwrap();
        assert_eq!((learner.endpoint.as_str(), learner.voter), ("http://127.0.0.1:7003", false));
        assert!("x=a=http://h:1".parse::<LockMemberConfig>().unwrap_err().contains("ID=SITE"));
        let settings = NodeSettings {
            data_dir: Some("d".into()),
            listen: Some("127.0.0.1:0".into()),
            site: Some("a".into()),
            node_id: Some(1),
            lock_members: Some(vec!["1=a=http://127.0.0.1:7000".parse().unwrap(), member, learner]),
            ..NodeSettings::default()
        };
        let group = settings.clone().resolve().unwrap().lock_group.unwrap();
        assert_eq!(group.members.len(), 3);
        assert_eq!(group.timing, Timing::default());
        let wrong_site = NodeSettings { site: Some("b".into()), ..settings.clone() };
        assert!(wrong_site.resolve().unwrap_err().contains("not \"b\""));
        let not_member = NodeSettings { node_id: Some(9), ..settings.clone() };
        assert!(not_member.resolve().unwrap_err().contains("not among the members"));
        let bad_timing = NodeSettings { raft_election_timeout_min_ms: Some(150), ..settings };
        assert!(bad_timing.resolve().unwrap_err().contains("twice the heartbeat"));
    }
}
