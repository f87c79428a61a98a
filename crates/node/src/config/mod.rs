//! Node settings: [`NodeSettings`] (in `settings.rs`, every setting declared once, both a flag and a TOML
//! key), how duration settings are written (`duration.rs`), and [`NodeSettings::resolve`], which checks
//! them and fills in the defaults to give the [`NodeConfig`] a node runs with.

pub mod duration;
mod settings;

use std::path::PathBuf;
use std::time::Duration;

use geostore_lockgroup::{GroupConfig, LockGroupConfig, Member, MemberConfig as GroupMemberConfig, Timing};
use geostore_storage::Durability;

pub use self::settings::*;
use crate::placement::PlacementConfig;
use crate::store::StoreConfig;
use duration::whole_millis;

/// Trim and collection intervals shorter than this are raised to it, so that a typo cannot make a
/// background task spin.
const BACKGROUND_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// The shortest anti-entropy interval accepted: each round compares digests of every partition with
/// every peer.
const ANTI_ENTROPY_INTERVAL_MIN: Duration = Duration::from_millis(100);

fn check_site_name(site: &str) -> Result<(), String> {
    if site.is_empty() || site.len() > 64 || !site.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("site name {site:?} must be 1 to 64 ASCII letters, digits, '-' or '_'"));
    }
    Ok(())
}

fn check_endpoint(what: &str, endpoint: &str) -> Result<(), String> {
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!("{what} endpoint {endpoint:?} must start with http:// or https://"));
    }
    Ok(())
}

impl NodeSettings {
    /// `members` turned into what they replace: this node's site, its peers (the members of the other
    /// sites) and the lock group's members (voters: those marked `=voter` if any is, else the lowest id of
    /// each site unless marked `=learner`). Settings without `members` are returned as they are.
    fn members_resolved(mut self) -> Result<Self, String> {
        let Some(members) = self.members.take() else {
            return Ok(self);
        };
        if self.peers.is_some() || self.lock_members.is_some() {
            return Err("members replaces peers and lock_members: give the member list alone".into());
        }
        let id = self.node_id.ok_or("members is set but node_id is not: give this node its id")?;
        for (index, member) in members.iter().enumerate() {
            check_site_name(&member.site)?;
            check_endpoint("member", &member.endpoint)?;
            if member.id == 0 {
                return Err("member ids start at 1".into());
            }
            if members[..index].iter().any(|other| other.id == member.id) {
                return Err(format!("two members have id {}", member.id));
            }
        }
        let own = members.iter().find(|member| member.id == id).ok_or_else(|| {
            format!("node_id {id} is not among the members: the list names every member, this node included")
        })?;
        match &self.site {
            Some(site) if *site != own.site => {
                return Err(format!("member {id} is this node, but in site {:?}, not {site:?}", own.site));
            }
            _ => self.site = Some(own.site.clone()),
        }
        let marked = members.iter().any(|member| member.voter == Some(true));
        let lowest_of_its_site =
            |member: &MemberConfig| members.iter().filter(|other| other.site == member.site).all(|o| o.id >= member.id);
        self.lock_members = Some(
            members
                .iter()
                .map(|member| LockMemberConfig {
                    id: member.id,
                    site: member.site.clone(),
                    endpoint: member.endpoint.clone(),
                    voter: if marked {
                        member.voter == Some(true)
                    } else {
                        member.voter.unwrap_or(lowest_of_its_site(member))
                    },
                })
                .collect(),
        );
        self.peers = Some(
            members
                .iter()
                .filter(|member| member.site != own.site)
                .map(|member| PeerConfig { site: member.site.clone(), endpoint: member.endpoint.clone() })
                .collect(),
        );
        Ok(self)
    }

    /// The lock group's configuration, if this node is in one.
    fn lock_group(&self, site: &str) -> Result<Option<LockGroupConfig>, String> {
        let Some(members) = &self.lock_members else {
            if self.node_id.is_some() {
                return Err("node_id is set but lock_members is not: list the lock group's members".into());
            }
            return Ok(None);
        };
        let id = self.node_id.ok_or("lock_members is set but node_id is not: give this node its id")?;
        for member in members {
            check_site_name(&member.site)?;
            check_endpoint("lock member", &member.endpoint)?;
            if member.id == id && member.site != site {
                return Err(format!("lock member {id} is this node, but in site {:?}, not {site:?}", member.site));
            }
            if member.id == 0 {
                return Err("lock member ids start at 1".into());
            }
        }
        let group = GroupConfig {
            id,
            members: members
                .iter()
                .map(|m| GroupMemberConfig {
                    id: m.id,
                    member: Member { site: m.site.clone(), endpoint: m.endpoint.clone() },
                    voter: m.voter,
                })
                .collect(),
            timing: Timing {
                heartbeat_ms: whole_millis(self.raft_heartbeat_ms.unwrap_or(RAFT_HEARTBEAT_DEFAULT)),
                election_timeout_min_ms: whole_millis(
                    self.raft_election_timeout_min_ms.unwrap_or(RAFT_ELECTION_TIMEOUT_MIN_DEFAULT),
                ),
                election_timeout_max_ms: whole_millis(
                    self.raft_election_timeout_max_ms.unwrap_or(RAFT_ELECTION_TIMEOUT_MAX_DEFAULT),
                ),
            },
            snapshot_every: self.raft_snapshot_every.unwrap_or(RAFT_SNAPSHOT_EVERY_ENTRIES_DEFAULT),
            inline_log: false,
            dialer: Default::default(),
        };
        let config =
            LockGroupConfig { group, lock_delay_ms: whole_millis(self.lock_delay_ms.unwrap_or(LOCK_DELAY_DEFAULT)) };
        config.check()?;
        Ok(Some(config))
    }

    /// This node's site's placement group, if this node has an id (it is the lock group's members of this
    /// site, every one a voter).
    fn placement_group(
        replicas_per_site: Option<usize>,
        site: &str,
        partitions: u16,
        lock_group: Option<&LockGroupConfig>,
    ) -> Result<Option<PlacementConfig>, String> {
        let Some(lock_group) = lock_group else {
            if replicas_per_site.is_some() {
                let message =
                    "replicas_per_site is set but this node has no member id: give it --node-id and the members";
                return Err(message.into());
            }
            return Ok(None);
        };
        let members: Vec<GroupMemberConfig> = lock_group
            .group
            .members
            .iter()
            .filter(|member| member.member.site == site)
            .map(|member| GroupMemberConfig { voter: true, ..member.clone() })
            .collect();
        let replicas_per_site =
            replicas_per_site.unwrap_or_else(|| geostore_placement::default_replicas_per_site(members.len()));
        let config = PlacementConfig {
            group: GroupConfig { members, ..lock_group.group.clone() },
            partitions,
            replicas_per_site,
        };
        config.check()?;
        Ok(Some(config))
    }

    /// The complete configuration, with defaults for what is unset; an error names what is missing or wrong.
    pub fn resolve(self) -> Result<NodeConfig, String> {
        // A member list may name several nodes per site; `--peer` alone describes one node per site.
        let from_members = self.members.is_some();
        let settings = self.members_resolved()?;
        let lock_group = settings.lock_group(settings.site.as_deref().unwrap_or(SITE_DEFAULT))?;
        let data_dir =
            settings.data_dir.ok_or("no data directory: pass --data-dir or set data_dir in the config file")?;
        let listen =
            settings.listen.ok_or("no listen address: pass --listen HOST:PORT or set listen in the config file")?;
        let site = settings.site.unwrap_or_else(|| SITE_DEFAULT.to_string());
        check_site_name(&site)?;
        let partitions = settings.partitions.unwrap_or(PARTITIONS_DEFAULT);
        if partitions == 0 {
            return Err("partitions must be at least 1".into());
        }
        let placement = Self::placement_group(settings.replicas_per_site, &site, partitions, lock_group.as_ref())?;
        let peers = settings.peers.unwrap_or_default();
        for (index, peer) in peers.iter().enumerate() {
            check_site_name(&peer.site)?;
            if peer.site == site {
                return Err(format!(
                    "peer {:?} is in this node's own site; peers are nodes of other sites",
                    peer.endpoint
                ));
            }
            if !from_members && peers[..index].iter().any(|other| other.site == peer.site) {
                let message = "two peers for site {:?}: --peer names one node per site; describe sites of several nodes with --member";
                return Err(message.replace("{:?}", &format!("{:?}", peer.site)));
            }
            check_endpoint("peer", &peer.endpoint)?;
        }
        let value_bytes_max = settings.value_bytes_max.unwrap_or(VALUE_BYTES_MAX_DEFAULT);
        if value_bytes_max == 0 || value_bytes_max > 64 * 1024 * 1024 {
            return Err(format!("value_bytes_max {value_bytes_max} must be between 1 and 64 MiB"));
        }
        let max_drift_ms = whole_millis(settings.max_drift_ms.unwrap_or(MAX_DRIFT_DEFAULT));
        if max_drift_ms == 0 {
            return Err("max_drift_ms must be positive".into());
        }
        let write_queue_max = settings.write_queue_max.unwrap_or(WRITE_QUEUE_MAX_DEFAULT);
        let group_ops_max = settings.group_ops_max.unwrap_or(GROUP_OPS_MAX_DEFAULT);
        if write_queue_max == 0 || group_ops_max == 0 {
            return Err("write_queue_max and group_ops_max must be at least 1".into());
        }
        let durability = match settings.sync.unwrap_or(SYNC_DEFAULT) {
            SyncPolicy::Always => Durability::Sync,
            SyncPolicy::None => Durability::Buffered,
        };
        let log_retention_ops = settings.log_retention_ops.unwrap_or(LOG_RETENTION_OPS_DEFAULT);
        let log_retention_bytes = settings.log_retention_bytes.unwrap_or(LOG_RETENTION_BYTES_DEFAULT);
        let log_retention_ms = whole_millis(settings.log_retention_ms.unwrap_or(LOG_RETENTION_DEFAULT));
        if log_retention_ops == 0 || log_retention_bytes == 0 || log_retention_ms == 0 {
            return Err("log_retention_ops, log_retention_bytes and log_retention_ms must be positive".into());
        }
        let anti_entropy_interval = settings.anti_entropy_interval_ms.unwrap_or(ANTI_ENTROPY_INTERVAL_DEFAULT);
        if anti_entropy_interval < ANTI_ENTROPY_INTERVAL_MIN {
            return Err(format!(
                "anti_entropy_interval_ms must be at least {}",
                humantime::format_duration(ANTI_ENTROPY_INTERVAL_MIN)
            ));
        }
        Ok(NodeConfig {
            lock_group,
            placement,
            data_dir,
            listen,
            http_listen: settings.http_listen,
            peers,
            anti_entropy_interval,
            causal_wait_max: settings.causal_wait_max_ms.unwrap_or(CAUSAL_WAIT_MAX_DEFAULT),
            log_trim_interval: settings
                .log_trim_interval_ms
                .unwrap_or(LOG_TRIM_INTERVAL_DEFAULT)
                .max(BACKGROUND_INTERVAL_MIN),
            clock_offset_ms: settings.clock_offset_ms.unwrap_or(CLOCK_OFFSET_MS_DEFAULT),
            gc_interval: settings.gc_interval_ms.unwrap_or(GC_INTERVAL_DEFAULT).max(BACKGROUND_INTERVAL_MIN),
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
    pub lock_group: Option<LockGroupConfig>,
    /// `None`: this node has no member id, runs no placement group and holds every partition of its site.
    pub placement: Option<PlacementConfig>,
    /// Where the node keeps its data (RocksDB).
    pub data_dir: PathBuf,
    /// gRPC address, `HOST:PORT`.
    pub listen: String,
    /// The HTTP side port's address, `HOST:PORT`; `None`: no side port.
    pub http_listen: Option<String>,
    /// One node of every other site.
    pub peers: Vec<PeerConfig>,
    /// How often each partition is compared with each peer's.
    pub anti_entropy_interval: Duration,
    /// The longest a read waits for a causal token.
    pub causal_wait_max: Duration,
    /// How often the change logs are trimmed.
    pub log_trim_interval: Duration,
    /// Added to the system clock's readings, in milliseconds (fault tests only).
    pub clock_offset_ms: i64,
    /// How often acknowledged tombstones are collected.
    pub gc_interval: Duration,
    /// The store's own settings.
    pub store: StoreConfig,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::Args;

    use super::*;

    /// The command `geostore node` flattens the settings into, parsing `flags`.
    fn flags(flags: &[&str]) -> Result<clap::ArgMatches, clap::Error> {
        NodeSettings::augment_args(clap::Command::new("node"))
            .try_get_matches_from(std::iter::once("node").chain(flags.iter().copied()))
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: NodeSettings = toml::from_str(
            r#"
            data_dir = "/var/lib/geostore"
            listen = "0.0.0.0:7000"
            site = "eu"
            sync = "none"
            causal_wait_max_ms = 1500
            "#,
        )
        .unwrap();
        let given =
            flags(&["--listen", "127.0.0.1:7001", "--gc-interval-ms", "2s", "--peer", "us=http://u:1"]).unwrap();
        let config = file.overridden_by_flags(&given).unwrap().resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7001");
        assert_eq!(config.store.site, "eu");
        assert_eq!(config.store.durability, Durability::Buffered);
        assert_eq!(config.causal_wait_max, Duration::from_millis(1500));
        assert_eq!(config.gc_interval, Duration::from_secs(2));
        assert_eq!(config.peers, vec![PeerConfig { site: "us".into(), endpoint: "http://u:1".into() }]);
        assert_eq!(config.store.partitions, 64);
        assert_eq!(config.store.limits.value_bytes_max, 1024 * 1024);
        assert_eq!(config.anti_entropy_interval, Duration::from_secs(60));
    }

    #[test]
    fn the_defaults_are_the_engines_own() {
        let settings =
            NodeSettings { data_dir: Some("d".into()), listen: Some("127.0.0.1:0".into()), ..Default::default() };
        let store = settings.resolve().unwrap().store;
        let engine = StoreConfig::default();
        assert_eq!(store.site, engine.site);
        assert_eq!(store.partitions, engine.partitions);
        assert_eq!(store.durability, engine.durability);
        assert_eq!(store.limits.value_bytes_max, engine.limits.value_bytes_max);
        assert_eq!(store.max_drift_ms, engine.max_drift_ms);
        assert_eq!(store.write_queue_max, engine.write_queue_max);
        assert_eq!(store.group_ops_max, engine.group_ops_max);
        assert_eq!(store.log_retention_ops, engine.log_retention_ops);
        assert_eq!(store.log_retention_bytes, engine.log_retention_bytes);
        assert_eq!(store.log_retention_ms, engine.log_retention_ms);
        let timing = Timing {
            heartbeat_ms: whole_millis(RAFT_HEARTBEAT_DEFAULT),
            election_timeout_min_ms: whole_millis(RAFT_ELECTION_TIMEOUT_MIN_DEFAULT),
            election_timeout_max_ms: whole_millis(RAFT_ELECTION_TIMEOUT_MAX_DEFAULT),
        };
        assert_eq!(timing, Timing::default());
    }

    #[test]
    fn every_flag_is_its_toml_key_with_dashes_and_shows_its_default_once() {
        let command = NodeSettings::augment_args(clap::Command::new("node"));
        for arg in command.get_arguments() {
            let key = arg.get_id().as_str();
            let expected = match key {
                "members" => "member".to_string(),
                "peers" => "peer".to_string(),
                "lock_members" => "lock-member".to_string(),
                key => key.replace('_', "-"),
            };
            assert_eq!(arg.get_long(), Some(expected.as_str()), "the flag of {key}");
            let help = arg.get_help().expect("every flag has help").to_string();
            assert!(help.matches("default").count() <= 1, "{key}: {help}");
        }
        let help = command.clone().render_help().to_string();
        assert!(help.contains("[default: 1m]"), "{help}");
        assert!(help.contains("[default: always]"), "{help}");
    }

    #[test]
    fn durations_take_milliseconds_or_units_and_bad_values_name_the_setting() {
        let given =
            flags(&["--raft-heartbeat-ms", "100", "--lock-delay-ms", "1s", "--clock-offset-ms", "-400"]).unwrap();
        let settings = NodeSettings::default().overridden_by_flags(&given).unwrap();
        assert_eq!(settings.raft_heartbeat_ms, Some(Duration::from_millis(100)));
        assert_eq!(settings.lock_delay_ms, Some(Duration::from_secs(1)));
        assert_eq!(settings.clock_offset_ms, Some(-400));
        let error = flags(&["--anti-entropy-interval-ms", "often"]).unwrap_err().to_string();
        assert!(error.contains("--anti-entropy-interval-ms"), "{error}");
        let error = toml::from_str::<NodeSettings>("max_drift_ms = \"soon\"").unwrap_err().to_string();
        assert!(error.contains("max_drift_ms") && error.contains("not a number of milliseconds"), "{error}");
        let error = toml::from_str::<NodeSettings>("sync = \"sometimes\"").unwrap_err().to_string();
        assert!(error.contains("sync") && error.contains("always"), "{error}");
        let short = NodeSettings {
            data_dir: Some("d".into()),
            listen: Some("127.0.0.1:0".into()),
            anti_entropy_interval_ms: Some(Duration::from_millis(99)),
            ..Default::default()
        };
        assert!(short.resolve().unwrap_err().contains("anti_entropy_interval_ms must be at least 100ms"));
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

    /// The example file sets every setting (so that it documents them all) and nothing else, and resolves.
    /// It describes the cluster by `members`, so `peers` and `lock_members`, which that replaces, are only
    /// in its comments.
    #[test]
    fn the_example_configuration_sets_every_setting_and_is_valid() {
        let text = include_str!("../../../../deploy/node.example.toml");
        let keys: BTreeSet<String> = toml::from_str::<toml::Table>(text).unwrap().keys().cloned().collect();
        let command = NodeSettings::augment_args(clap::Command::new("node"));
        let settings: BTreeSet<String> = command
            .get_arguments()
            .map(|arg| arg.get_id().to_string())
            .filter(|id| id != "peers" && id != "lock_members")
            .collect();
        assert_eq!(keys, settings, "the keys of deploy/node.example.toml against the settings");
        let example: NodeSettings = toml::from_str(text).unwrap();
        let config = example.resolve().unwrap();
        assert_eq!((config.store.site.as_str(), config.peers.len()), ("eu-west", 2));
        assert_eq!(config.store.log_retention_ms, 24 * 3600 * 1000);
        let group = config.lock_group.expect("the example configures the lock group").group;
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
        let given = flags(&["--peer", "a=http://x:1"]).unwrap();
        assert!(file.clone().overridden_by_flags(&given).unwrap().resolve().unwrap_err().contains("own site"));
        let error = flags(&["--peer", "nonsense"]).unwrap_err().to_string();
        assert!(error.contains("SITE=http://HOST:PORT"), "{error}");
    }

    #[test]
    fn lock_members_come_from_flags_with_defaults_for_timing() {
        let member: LockMemberConfig = "2=b=http://127.0.0.1:7001".parse().unwrap();
        assert_eq!((member.id, member.site.as_str(), member.voter), (2, "b", true));
        let learner: LockMemberConfig = "4=a=http://127.0.0.1:7003=learner".parse().unwrap();
        assert_eq!((learner.endpoint.as_str(), learner.voter), ("http://127.0.0.1:7003", false));
        assert!("x=a=http://h:1".parse::<LockMemberConfig>().unwrap_err().contains("ID=SITE"));
        let given = flags(&[
            "--data-dir",
            "d",
            "--listen",
            "127.0.0.1:0",
            "--site",
            "a",
            "--node-id",
            "1",
            "--lock-member",
            "1=a=http://127.0.0.1:7000",
            "--lock-member",
            "2=b=http://127.0.0.1:7001",
            "--lock-member",
            "4=a=http://127.0.0.1:7003=learner",
        ])
        .unwrap();
        let settings = NodeSettings::default().overridden_by_flags(&given).unwrap();
        assert_eq!(
            settings.lock_members.as_deref(),
            Some(&["1=a=http://127.0.0.1:7000".parse().unwrap(), member, learner][..])
        );
        let group = settings.clone().resolve().unwrap().lock_group.unwrap().group;
        assert_eq!(group.members.len(), 3);
        assert_eq!(group.timing, Timing::default());
        let wrong_site = NodeSettings { site: Some("b".into()), ..settings.clone() };
        assert!(wrong_site.resolve().unwrap_err().contains("not \"b\""));
        let not_member = NodeSettings { node_id: Some(9), ..settings.clone() };
        assert!(not_member.resolve().unwrap_err().contains("not among the members"));
        let bad_timing = NodeSettings { raft_election_timeout_min_ms: Some(Duration::from_millis(150)), ..settings };
        assert!(bad_timing.resolve().unwrap_err().contains("twice the heartbeat"));
    }

    /// The flags of node `id` of a three-site cluster described by its member list, with `extra` after.
    fn member_flags(id: &str, extra: &[&str]) -> NodeSettings {
        let mut given = vec!["--data-dir", "d", "--listen", "127.0.0.1:0", "--node-id", id];
        for member in ["1=a=http://127.0.0.1:7000", "2=b=http://127.0.0.1:7001", "3=c=http://127.0.0.1:7002"] {
            given.extend(["--member", member]);
        }
        given.extend(extra);
        NodeSettings::default().overridden_by_flags(&flags(&given).unwrap()).unwrap()
    }

    #[test]
    fn the_member_list_gives_the_site_the_peers_and_the_lock_group() {
        let config = member_flags("2", &[]).resolve().unwrap();
        assert_eq!(config.store.site, "b");
        let peers: Vec<(&str, &str)> = config.peers.iter().map(|p| (p.site.as_str(), p.endpoint.as_str())).collect();
        assert_eq!(peers, [("a", "http://127.0.0.1:7000"), ("c", "http://127.0.0.1:7002")]);
        let group = config.lock_group.unwrap().group;
        assert_eq!(group.id, 2);
        let members: Vec<(u64, &str, bool)> =
            group.members.iter().map(|m| (m.id, m.member.site.as_str(), m.voter)).collect();
        assert_eq!(members, [(1, "a", true), (2, "b", true), (3, "c", true)]);
        assert_eq!(group.members[2].member.endpoint, "http://127.0.0.1:7002");
    }

    #[test]
    fn members_marked_voter_or_learner_choose_the_lock_groups_voters() {
        let voters = |settings: NodeSettings| -> Vec<bool> {
            settings.resolve().unwrap().lock_group.unwrap().group.members.iter().map(|m| m.voter).collect()
        };
        let learner = member_flags("1", &["--member", "4=d=http://127.0.0.1:7003=learner"]);
        assert_eq!(voters(learner), [true, true, true, false]);
        let file: NodeSettings = toml::from_str(
            r#"
            data_dir = "d"
            listen = "127.0.0.1:0"
            node_id = 2
            [[members]]
            id = 1
            site = "a"
            endpoint = "http://127.0.0.1:7000"
            voter = true
            [[members]]
            id = 2
            site = "b"
            endpoint = "http://127.0.0.1:7001"
            "#,
        )
        .unwrap();
        // One member is marked a voter: the others are learners.
        assert_eq!(voters(file), [true, false]);
        let parsed: MemberConfig = "7=eu=https://h:1=voter".parse().unwrap();
        assert_eq!(
            parsed,
            MemberConfig { id: 7, site: "eu".into(), endpoint: "https://h:1".into(), voter: Some(true) }
        );
        let error = flags(&["--member", "eu=http://h:1"]).unwrap_err().to_string();
        assert!(error.contains("ID=SITE=http://HOST:PORT"), "{error}");
    }

    #[test]
    fn a_member_list_that_does_not_describe_this_cluster_is_refused() {
        let refused = |id: &str, extra: &[&str]| member_flags(id, extra).resolve().unwrap_err();
        assert!(refused("9", &[]).contains("node_id 9 is not among the members"));
        assert!(refused("1", &["--member", "2=d=http://h:1"]).contains("two members have id 2"));
        // Sites may have several nodes: a second member of site a is its peer of nothing, but in its
        // placement group.
        let two_in_a = member_flags("1", &["--member", "4=a=http://h:4"]).resolve().unwrap();
        assert_eq!(two_in_a.placement.as_ref().unwrap().group.members.len(), 2);
        assert_eq!(two_in_a.placement.unwrap().replicas_per_site, 2);
        assert!(two_in_a.peers.iter().all(|peer| peer.site != "a"));
        assert!(refused("1", &["--member", "0=d=http://h:1"]).contains("start at 1"));
        assert!(refused("1", &["--member", "4=d=h:1"]).contains("must start with http://"));
        assert!(refused("1", &["--member", "4=d e=http://h:1"]).contains("site name"));
        assert!(refused("1", &["--site", "b"]).contains("not \"b\""));
        assert!(refused("1", &["--peer", "b=http://h:1"]).contains("members replaces peers"));
        assert!(refused("1", &["--lock-member", "1=a=http://h:1"]).contains("members replaces peers"));
        let no_id = NodeSettings { node_id: None, ..member_flags("1", &[]) };
        assert!(no_id.resolve().unwrap_err().contains("node_id is not"));
    }
}
