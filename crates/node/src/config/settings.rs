//! Every node setting, declared once. [`NodeSettings`] is at the same time the flags of `geostore node`
//! (clap) and the keys of its TOML file (serde): a flag is the key with `-` for `_` (`--data-dir` is
//! `data_dir`), except the repeated `--member`, `--peer` and `--lock-member`, which are the arrays
//! `members`, `peers` and `lock_members`. Every field is optional, so that a flag given overrides the file
//! and a key in the file overrides the default. The defaults are the `*_DEFAULT` constants below: `--help` shows them and
//! [`NodeSettings::resolve`] applies them.
//!
//! Adding a setting: a field here (its doc comment is its `--help` text and its documentation), a
//! default constant if it has one, and its line in `resolve`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::FromArgMatches;
use serde::Deserialize;

use super::duration;
use geostore_lockgroup::Timing;

/// The site a node is in when none is given.
pub const SITE_DEFAULT: &str = "local";
/// The default of [`NodeSettings::partitions`].
pub const PARTITIONS_DEFAULT: u16 = geostore_model::DEFAULT_PARTITIONS;
/// The default of [`NodeSettings::sync`].
pub const SYNC_DEFAULT: SyncPolicy = SyncPolicy::Always;
/// The default of [`NodeSettings::value_bytes_max`].
pub const VALUE_BYTES_MAX_DEFAULT: usize = geostore_model::limits::DEFAULT_VALUE_BYTES_MAX;
/// The default of [`NodeSettings::max_drift_ms`].
pub const MAX_DRIFT_DEFAULT: Duration = Duration::from_millis(500);
/// The default of [`NodeSettings::write_queue_max`].
pub const WRITE_QUEUE_MAX_DEFAULT: usize = 4096;
/// The default of [`NodeSettings::group_ops_max`].
pub const GROUP_OPS_MAX_DEFAULT: usize = 2048;
/// The default of [`NodeSettings::log_retention_ops`].
pub const LOG_RETENTION_OPS_DEFAULT: u64 = 1_000_000;
/// The default of [`NodeSettings::log_retention_bytes`]. 4 GiB.
pub const LOG_RETENTION_BYTES_DEFAULT: u64 = 4 * 1024 * 1024 * 1024;
/// The default of [`NodeSettings::log_retention_ms`].
pub const LOG_RETENTION_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// The default of [`NodeSettings::anti_entropy_interval_ms`].
pub const ANTI_ENTROPY_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// The default of [`NodeSettings::causal_wait_max_ms`].
pub const CAUSAL_WAIT_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// The default of [`NodeSettings::log_trim_interval_ms`].
pub const LOG_TRIM_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// The default of [`NodeSettings::gc_interval_ms`].
pub const GC_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// The default of [`NodeSettings::clock_offset_ms`].
pub const CLOCK_OFFSET_MS_DEFAULT: i64 = 0;
/// The Raft timing defaults suit sites about 80 ms apart: a heartbeat well inside the election timeout,
/// and an election timeout of several round trips, so that a slow link does not cause needless elections.
pub const RAFT_HEARTBEAT_DEFAULT: Duration = Duration::from_millis(Timing::DEFAULT.heartbeat_ms);
/// The default of [`NodeSettings::raft_election_timeout_min_ms`].
pub const RAFT_ELECTION_TIMEOUT_MIN_DEFAULT: Duration = Duration::from_millis(Timing::DEFAULT.election_timeout_min_ms);
/// The default of [`NodeSettings::raft_election_timeout_max_ms`].
pub const RAFT_ELECTION_TIMEOUT_MAX_DEFAULT: Duration = Duration::from_millis(Timing::DEFAULT.election_timeout_max_ms);
/// The default of [`NodeSettings::raft_snapshot_every`].
pub const RAFT_SNAPSHOT_EVERY_ENTRIES_DEFAULT: u64 = 10_000;
/// The default of [`NodeSettings::lock_delay_ms`].
pub const LOCK_DELAY_DEFAULT: Duration = Duration::ZERO;

/// Every node setting, each optional: one of these comes from the file and one from the flags, and
/// [`NodeSettings::resolve`] turns their combination into a [`NodeConfig`](super::NodeConfig).
///
/// Durations (the settings ending in `_ms`) take a bare number of milliseconds or a number with a unit,
/// `250ms`, `2s`, `1m 30s` (see [`duration`](super::duration)); in the file, an integer or a string.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Directory for the node's data (created if missing).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC address, HOST:PORT (port 0 picks a free one; the chosen address is printed).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// HTTP side port for /metrics, /healthz and /readyz, HOST:PORT; none if unset.
    #[arg(long, value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
    /// The site (datacenter) this node is in, fixed when the data directory is created.
    #[arg(long, default_in_help = SITE_DEFAULT)]
    pub site: Option<String>,
    /// Partitions, fixed when the data directory is created.
    #[arg(long, default_in_help = PARTITIONS_DEFAULT)]
    pub partitions: Option<u16>,
    /// Replicas of every partition in this node's site (N), fixed when the site's placement map is
    /// created; default min(3, nodes in the site). Every node of a site should give the same value: the
    /// site's first placement leader decides.
    #[arg(long)]
    pub replicas_per_site: Option<usize>,
    /// When writes are acknowledged.
    #[arg(long, default_in_help = SYNC_DEFAULT)]
    pub sync: Option<SyncPolicy>,
    /// Largest value (or set member), in bytes.
    #[arg(long, default_in_help = VALUE_BYTES_MAX_DEFAULT)]
    pub value_bytes_max: Option<usize>,
    /// Largest clock drift accepted from another node: a timestamp further ahead of this node's clock is
    /// refused.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_in_help = MAX_DRIFT_DEFAULT)]
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_drift_ms: Option<Duration>,
    /// Write requests that may queue for the writer; callers wait for room beyond this.
    #[arg(long, default_in_help = WRITE_QUEUE_MAX_DEFAULT)]
    pub write_queue_max: Option<usize>,
    /// Operations per group commit (one storage batch, one fsync).
    #[arg(long, default_in_help = GROUP_OPS_MAX_DEFAULT)]
    pub group_ops_max: Option<usize>,
    /// The node of another site to replicate with, SITE=http://HOST:PORT (repeat for each site).
    #[arg(long = "peer", value_name = "SITE=URL")]
    pub peers: Option<Vec<PeerConfig>>,
    /// Change-log records kept per partition (a peer further behind catches up by anti-entropy).
    #[arg(long, default_in_help = LOG_RETENTION_OPS_DEFAULT)]
    pub log_retention_ops: Option<u64>,
    /// Change-log bytes kept per node.
    #[arg(long, default_in_help = LOG_RETENTION_BYTES_DEFAULT)]
    pub log_retention_bytes: Option<u64>,
    /// Change-log records older than this are trimmed.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_in_help = LOG_RETENTION_DEFAULT)]
    #[serde(deserialize_with = "duration::deserialize")]
    pub log_retention_ms: Option<Duration>,
    /// How often each partition is compared with each peer by its bucket digests (at least 100ms).
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = duration::parse,
        default_in_help = ANTI_ENTROPY_INTERVAL_DEFAULT
    )]
    #[serde(deserialize_with = "duration::deserialize")]
    pub anti_entropy_interval_ms: Option<Duration>,
    /// The longest a read with a causal token waits for the write to arrive.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_in_help = CAUSAL_WAIT_MAX_DEFAULT)]
    #[serde(deserialize_with = "duration::deserialize")]
    pub causal_wait_max_ms: Option<Duration>,
    /// How often the change log is trimmed to the retention limits (at least 10ms; shorter is raised).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_in_help = LOG_TRIM_INTERVAL_DEFAULT)]
    #[serde(deserialize_with = "duration::deserialize")]
    pub log_trim_interval_ms: Option<Duration>,
    /// How often acknowledged tombstones and expired keys are collected (at least 10ms; shorter is raised).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_in_help = GC_INTERVAL_DEFAULT)]
    #[serde(deserialize_with = "duration::deserialize")]
    pub gc_interval_ms: Option<Duration>,
    /// Shifts this node's clock by this much, in milliseconds, negative for backwards (a leading `-` works
    /// with units too: `-2s`). For fault testing only: it is how tests skew one node's clock through the
    /// injected clock.
    #[arg(
        long,
        value_name = "DURATION",
        allow_negative_numbers = true,
        value_parser = duration::parse_signed_millis,
        default_in_help = CLOCK_OFFSET_MS_DEFAULT
    )]
    #[serde(deserialize_with = "duration::deserialize_signed_millis")]
    pub clock_offset_ms: Option<i64>,
    /// This node's id (unique in the cluster, never reused): which of the members it is, and its id in the
    /// lock group.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// A member of the cluster, this node included, ID=SITE=http://HOST:PORT (repeat for each; the same
    /// list on every node). It replaces --peer and --lock-member: the peers are the members of the other
    /// sites, and the lock group's voters are the lowest id of each site, or those marked =voter (then the
    /// others are learners; =learner marks one learner).
    #[arg(long = "member", value_name = "ID=SITE=URL[=voter|=learner]")]
    pub members: Option<Vec<MemberConfig>>,
    /// A member of the lock group, this node included: ID=SITE=http://HOST:PORT, with =learner at the end
    /// for a non-voting member (repeat for each). No lock group if none is given.
    #[arg(long = "lock-member", value_name = "ID=SITE=URL[=learner]")]
    pub lock_members: Option<Vec<LockMemberConfig>>,
    /// Raft heartbeat interval of the lock group.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_in_help = RAFT_HEARTBEAT_DEFAULT)]
    #[serde(deserialize_with = "duration::deserialize")]
    pub raft_heartbeat_ms: Option<Duration>,
    /// Shortest election timeout: a follower that hears no leader for a random time between the shortest
    /// and the longest starts an election.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = duration::parse,
        default_in_help = RAFT_ELECTION_TIMEOUT_MIN_DEFAULT
    )]
    #[serde(deserialize_with = "duration::deserialize")]
    pub raft_election_timeout_min_ms: Option<Duration>,
    /// Longest election timeout.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = duration::parse,
        default_in_help = RAFT_ELECTION_TIMEOUT_MAX_DEFAULT
    )]
    #[serde(deserialize_with = "duration::deserialize")]
    pub raft_election_timeout_max_ms: Option<Duration>,
    /// Entries between lock-group snapshots (the log before a snapshot is purged).
    #[arg(long, value_name = "ENTRIES", default_in_help = RAFT_SNAPSHOT_EVERY_ENTRIES_DEFAULT)]
    pub raft_snapshot_every: Option<u64>,
    /// A lock whose lease expired (was not released) is not granted again for this long (0: at once).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_in_help = LOCK_DELAY_DEFAULT)]
    #[serde(deserialize_with = "duration::deserialize")]
    pub lock_delay_ms: Option<Duration>,
}

impl NodeSettings {
    /// The settings in a TOML file; an unknown key or a bad value is an error naming it.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `self` with every setting that was given as a flag in `flags` replaced by the flag's value.
    /// `flags` are the matches of a command that `NodeSettings` is flattened into
    /// (`#[command(flatten)]`); settings whose flag was not given keep their value in `self`.
    pub fn overridden_by_flags(mut self, flags: &clap::ArgMatches) -> Result<Self, String> {
        self.update_from_arg_matches(flags).map_err(|e| e.to_string())?;
        Ok(self)
    }
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// After the batch holding it is fsynced (group commit shares one fsync among concurrent writes).
    Always,
    /// After the batch is in the operating system's buffers: survives a crash of the process, not of the
    /// machine.
    None,
}

/// A member of the cluster (`--member`, `[[members]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's id (unique in the cluster, not 0, never reused).
    pub id: u64,
    /// Its site.
    pub site: String,
    /// Its gRPC endpoint, `http://HOST:PORT`: how this node reaches it.
    pub endpoint: String,
    /// Whether it votes in the lock group; `None`: decided by the rule of [`NodeSettings::members`].
    #[serde(default)]
    pub voter: Option<bool>,
}

impl std::str::FromStr for MemberConfig {
    type Err = String;
    /// `ID=SITE=http://HOST:PORT`, with `=voter` or `=learner` at the end to choose its lock-group role, as
    /// given to `--member`.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("--member {text:?}: expected ID=SITE=http://HOST:PORT[=voter|=learner]");
        let (id, site, endpoint, voter) =
            split_member(text, &[("=learner", false), ("=voter", true)]).ok_or_else(usage)?;
        Ok(MemberConfig { id, site: site.to_string(), endpoint: endpoint.to_string(), voter })
    }
}

/// `ID=SITE=ENDPOINT`, with at most one of `roles`' suffixes at the end: the id, the site, the endpoint
/// and the role the suffix names (`None` without one). `None` if the text has not that shape. The shape
/// of `--member` and `--lock-member`.
fn split_member<'a>(text: &'a str, roles: &[(&str, bool)]) -> Option<(u64, &'a str, &'a str, Option<bool>)> {
    let mut parts = text.splitn(3, '=');
    let (id, site, rest) = (parts.next()?.parse().ok()?, parts.next()?, parts.next()?);
    let role = roles.iter().find_map(|(suffix, voter)| Some((rest.strip_suffix(suffix)?, Some(*voter))));
    let (endpoint, voter) = role.unwrap_or((rest, None));
    Some((id, site, endpoint, voter))
}

/// A member of the lock group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockMemberConfig {
    /// The member's id in the group (unique, not 0).
    pub id: u64,
    /// Its site.
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

impl std::str::FromStr for LockMemberConfig {
    type Err = String;
    /// `ID=SITE=http://HOST:PORT`, with `=learner` at the end for a learner, as given to `--lock-member`.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("--lock-member {text:?}: expected ID=SITE=http://HOST:PORT[=learner]");
        let (id, site, endpoint, voter) = split_member(text, &[("=learner", false)]).ok_or_else(usage)?;
        Ok(LockMemberConfig {
            id,
            site: site.to_string(),
            endpoint: endpoint.to_string(),
            voter: voter.unwrap_or(true),
        })
    }
}

/// A node of another site.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's site.
    pub site: String,
    /// Its gRPC endpoint, `http://HOST:PORT`.
    pub endpoint: String,
}

impl std::str::FromStr for PeerConfig {
    type Err = String;
    /// `SITE=http://HOST:PORT`, as given to `--peer`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (site, endpoint) =
            text.split_once('=').ok_or_else(|| format!("--peer {text:?}: expected SITE=http://HOST:PORT"))?;
        Ok(PeerConfig { site: site.to_string(), endpoint: endpoint.to_string() })
    }
}

/// `#[arg(default_in_help = CONSTANT)]`: appends `[default: VALUE]` to a flag's help. clap's own
/// `default_value` would print the same, but it also makes the flag count as given, and a flag given
/// overrides the file: a setting's default must apply only when neither the flag nor the file sets it,
/// which is [`NodeSettings::resolve`]'s job. (clap's derive turns the attribute into a call of this method
/// after the doc comment has set the help.)
trait DefaultInHelp {
    fn default_in_help(self, default: impl ShownDefault) -> Self;
}

impl DefaultInHelp for clap::Arg {
    fn default_in_help(self, default: impl ShownDefault) -> Self {
        let suffix = format!("[default: {}]", default.shown());
        let help = self.get_help().map(|help| format!("{help} {suffix}")).unwrap_or(suffix.clone());
        let long_help = self.get_long_help().map(|help| format!("{help}\n\n{suffix}"));
        let arg = self.help(help);
        match long_help {
            Some(long_help) => arg.long_help(long_help),
            None => arg,
        }
    }
}

/// A default as `--help` shows it, in the form the flag takes.
trait ShownDefault {
    fn shown(&self) -> String;
}

impl ShownDefault for Duration {
    fn shown(&self) -> String {
        humantime::format_duration(*self).to_string()
    }
}

impl ShownDefault for SyncPolicy {
    fn shown(&self) -> String {
        use clap::ValueEnum;
        self.to_possible_value().expect("no variant is skipped").get_name().to_string()
    }
}

/// The integers and strings, shown as they are written.
macro_rules! shown_by_display {
    ($($type:ty),*) => {
        $(impl ShownDefault for $type {
            fn shown(&self) -> String {
                self.to_string()
            }
        })*
    };
}

shown_by_display!(&str, u16, u64, i64, usize);
