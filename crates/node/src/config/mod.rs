//! Node settings: [`NodeSettings`] (in `settings.rs`, every setting declared once, both a flag and a TOML
//! key), how duration settings are written (`duration.rs`), and [`NodeSettings::resolve`], which checks
//! them and fills in the defaults to give the [`NodeConfig`] a node runs with.

pub mod duration;
mod settings;

use std::path::PathBuf;
use std::time::Duration;

use geostore_lockgroup::{GroupConfig, Member, MemberConfig, Timing};
use geostore_storage::Durability;

pub use self::settings::*;
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

impl NodeSettings {
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
                heartbeat_ms: whole_millis(self.raft_heartbeat_ms.unwrap_or(RAFT_HEARTBEAT_DEFAULT)),
                election_timeout_min_ms: whole_millis(
                    self.raft_election_timeout_min_ms.unwrap_or(RAFT_ELECTION_TIMEOUT_MIN_DEFAULT),
                ),
                election_timeout_max_ms: whole_millis(
                    self.raft_election_timeout_max_ms.unwrap_or(RAFT_ELECTION_TIMEOUT_MAX_DEFAULT),
                ),
            },
            snapshot_every: self.raft_snapshot_every.unwrap_or(RAFT_SNAPSHOT_EVERY_ENTRIES_DEFAULT),
            lock_delay_ms: whole_millis(self.lock_delay_ms.unwrap_or(LOCK_DELAY_DEFAULT)),
            inline_log: false,
            dialer: Default::default(),
        };
        config.check()?;
        Ok(Some(config))
    }

    /// The complete configuration, with defaults for what is unset; an error names what is missing or wrong.
    pub fn resolve(self) -> Result<NodeConfig, String> {
        let lock_group = self.lock_group(self.site.as_deref().unwrap_or(SITE_DEFAULT))?;
        let data_dir = self.data_dir.ok_or("no data directory: pass --data-dir or set data_dir in the config file")?;
        let listen =
            self.listen.ok_or("no listen address: pass --listen HOST:PORT or set listen in the config file")?;
        let site = self.site.unwrap_or_else(|| SITE_DEFAULT.to_string());
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
        let partitions = self.partitions.unwrap_or(PARTITIONS_DEFAULT);
        if partitions == 0 {
            return Err("partitions must be at least 1".into());
        }
        let value_bytes_max = self.value_bytes_max.unwrap_or(VALUE_BYTES_MAX_DEFAULT);
        if value_bytes_max == 0 || value_bytes_max > 64 * 1024 * 1024 {
            return Err(format!("value_bytes_max {value_bytes_max} must be between 1 and 64 MiB"));
        }
        let max_drift_ms = whole_millis(self.max_drift_ms.unwrap_or(MAX_DRIFT_DEFAULT));
        if max_drift_ms == 0 {
            return Err("max_drift_ms must be positive".into());
        }
        let write_queue_max = self.write_queue_max.unwrap_or(WRITE_QUEUE_MAX_DEFAULT);
        let group_ops_max = self.group_ops_max.unwrap_or(GROUP_OPS_MAX_DEFAULT);
        if write_queue_max == 0 || group_ops_max == 0 {
            return Err("write_queue_max and group_ops_max must be at least 1".into());
        }
        let durability = match self.sync.unwrap_or(SYNC_DEFAULT) {
            SyncPolicy::Always => Durability::Sync,
            SyncPolicy::None => Durability::Buffered,
        };
        let log_retention_ops = self.log_retention_ops.unwrap_or(LOG_RETENTION_OPS_DEFAULT);
        let log_retention_bytes = self.log_retention_bytes.unwrap_or(LOG_RETENTION_BYTES_DEFAULT);
        let log_retention_ms = whole_millis(self.log_retention_ms.unwrap_or(LOG_RETENTION_DEFAULT));
        if log_retention_ops == 0 || log_retention_bytes == 0 || log_retention_ms == 0 {
            return Err("log_retention_ops, log_retention_bytes and log_retention_ms must be positive".into());
        }
        let anti_entropy_interval = self.anti_entropy_interval_ms.unwrap_or(ANTI_ENTROPY_INTERVAL_DEFAULT);
        if anti_entropy_interval < ANTI_ENTROPY_INTERVAL_MIN {
            return Err(format!(
                "anti_entropy_interval_ms must be at least {}",
                humantime::format_duration(ANTI_ENTROPY_INTERVAL_MIN)
            ));
        }
        Ok(NodeConfig {
            lock_group,
            data_dir,
            listen,
            http_listen: self.http_listen,
            peers,
            anti_entropy_interval,
            causal_wait_max: self.causal_wait_max_ms.unwrap_or(CAUSAL_WAIT_MAX_DEFAULT),
            log_trim_interval: self
                .log_trim_interval_ms
                .unwrap_or(LOG_TRIM_INTERVAL_DEFAULT)
                .max(BACKGROUND_INTERVAL_MIN),
            clock_offset_ms: self.clock_offset_ms.unwrap_or(CLOCK_OFFSET_MS_DEFAULT),
            gc_interval: self.gc_interval_ms.unwrap_or(GC_INTERVAL_DEFAULT).max(BACKGROUND_INTERVAL_MIN),
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
    /// gRPC address, `HOST:PORT`.
    pub listen: String,
    /// The HTTP side port's address, `HOST:PORT`; `None`: no side port.
    pub http_listen: Option<String>,
    /// One node of every other site.
    pub peers: Vec<PeerConfig>,
    pub anti_entropy_interval: Duration,
    pub causal_wait_max: Duration,
    pub log_trim_interval: Duration,
    /// Added to the system clock's readings, in milliseconds (fault tests only).
    pub clock_offset_ms: i64,
    pub gc_interval: Duration,
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
    #[test]
    fn the_example_configuration_sets_every_setting_and_is_valid() {
        let text = include_str!("../../../../deploy/node.example.toml");
        let keys: BTreeSet<String> = toml::from_str::<toml::Table>(text).unwrap().keys().cloned().collect();
        let command = NodeSettings::augment_args(clap::Command::new("node"));
        let settings: BTreeSet<String> = command.get_arguments().map(|arg| arg.get_id().to_string()).collect();
        assert_eq!(keys, settings, "the keys of deploy/node.example.toml against the settings");
        let example: NodeSettings = toml::from_str(text).unwrap();
        let config = example.resolve().unwrap();
        assert_eq!((config.store.site.as_str(), config.peers.len()), ("eu-west", 2));
        assert_eq!(config.store.log_retention_ms, 24 * 3600 * 1000);
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
        let group = settings.clone().resolve().unwrap().lock_group.unwrap();
        assert_eq!(group.members.len(), 3);
        assert_eq!(group.timing, Timing::default());
        let wrong_site = NodeSettings { site: Some("b".into()), ..settings.clone() };
        assert!(wrong_site.resolve().unwrap_err().contains("not \"b\""));
        let not_member = NodeSettings { node_id: Some(9), ..settings.clone() };
        assert!(not_member.resolve().unwrap_err().contains("not among the members"));
        let bad_timing = NodeSettings { raft_election_timeout_min_ms: Some(Duration::from_millis(150)), ..settings };
        assert!(bad_timing.resolve().unwrap_err().contains("twice the heartbeat"));
    }
}
