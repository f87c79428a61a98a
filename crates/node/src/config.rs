//! Node settings: from a TOML file, then command-line flags on top (every setting is both).

use std::path::{Path, PathBuf};
use std::str::FromStr;

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
        }
    }

    /// The complete configuration, with defaults for what is unset; an error names what is missing or wrong.
    pub fn resolve(self) -> Result<NodeConfig, String> {
        let defaults = StoreConfig::default();
        let data_dir = self.data_dir.ok_or("no data directory: pass --data-dir or set data_dir in the config file")?;
        let listen =
            self.listen.ok_or("no listen address: pass --listen HOST:PORT or set listen in the config file")?;
        let site = self.site.unwrap_or(defaults.site);
        if site.is_empty() || !site.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("site name {site:?} must be non-empty ASCII letters, digits, '-' or '_'"));
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
        Ok(NodeConfig {
            data_dir,
            listen,
            http_listen: self.http_listen,
            store: StoreConfig {
                site,
                partitions,
                durability,
                limits: geostore_model::Limits { value_bytes_max },
                max_drift_ms,
                write_queue_max,
                group_ops_max,
            },
        })
    }
}

/// A node's complete configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    pub http_listen: Option<String>,
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
}
