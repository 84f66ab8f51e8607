//! Persistent defaults for `start`: `$TIMONEL_HOME/config.json`, set with `timonel config set`.
//! Flags win over these; these win over the built-in defaults.
//!
//! The file keeps each value as the user wrote it (`"memory": "2g"`), checked on `set` with the
//! same parsers `start` uses, and parsed again into typed [`Defaults`] on load.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use timonel_driver::DriverKind;

use crate::error::UserError;
use crate::home::Home;

/// The file under timonel's home.
pub const FILE: &str = "config.json";

/// The settings `config` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Driver,
    Cpus,
    Memory,
    KubernetesVersion,
    Nodes,
    WaitTimeout,
}

impl Key {
    pub const ALL: [Key; 6] = [
        Key::Driver,
        Key::Cpus,
        Key::Memory,
        Key::KubernetesVersion,
        Key::Nodes,
        Key::WaitTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Cpus => "cpus",
            Self::Memory => "memory",
            Self::KubernetesVersion => "kubernetes-version",
            Self::Nodes => "nodes",
            Self::WaitTimeout => "wait-timeout",
        }
    }

    /// What the key sets, with an example value.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Driver => "the driver `start` uses (docker, kvm, hyperv, virtualbox)",
            Self::Cpus => "CPUs per node (e.g. 2 or 0.5)",
            Self::Memory => "memory per node (e.g. 2g, 2048m)",
            Self::KubernetesVersion => "the k3s version (v1.31.2+k3s1, v1.31, stable, latest)",
            Self::Nodes => "number of nodes (1-32)",
            Self::WaitTimeout => "how long `start` waits for the cluster (e.g. 90s, 5m)",
        }
    }

    /// Checks a value with the parser `start` uses for the same flag.
    pub fn validate(self, value: &str) -> Result<(), String> {
        match self {
            Self::Driver => crate::drivers::parse_kind(value).map(drop),
            Self::Cpus => parse_cpus(value).map(drop),
            Self::Memory => crate::units::parse_memory(value).map(drop),
            Self::KubernetesVersion => value
                .parse::<crate::artifact::VersionSpec>()
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Nodes => parse_nodes(value).map(drop),
            Self::WaitTimeout => humantime::parse_duration(value)
                .map(drop)
                .map_err(|e| format!("`{value}` is not a duration (e.g. 90s, 5m): {e}")),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn valid_keys() -> String {
    Key::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Key {
    type Err = UserError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        let wanted = match wanted.as_str() {
            "k8s-version" => "kubernetes-version",
            other => other,
        };
        Key::ALL
            .into_iter()
            .find(|k| k.as_str() == wanted)
            .ok_or_else(|| {
                UserError::new(
                    format!("`{s}` is not a setting timonel knows"),
                    format!("the settings are: {}", valid_keys()),
                )
            })
    }
}

/// `--cpus`: a positive CPU count, at most 1024.
pub fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(c) if c > 0.0 && c <= 1024.0 => Ok(c),
        _ => Err(format!(
            "`{s}` is not a CPU count (give a positive number such as 2 or 0.5)"
        )),
    }
}

/// `--nodes`: 1 to 32.
pub fn parse_nodes(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=32).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a node count from 1 to 32")),
    }
}

/// The defaults in `config.json`, typed. Every field is `None` when not set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    pub driver: Option<DriverKind>,
    pub cpus: Option<f64>,
    pub memory_mib: Option<u64>,
    pub kubernetes_version: Option<String>,
    pub nodes: Option<u32>,
    pub wait_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read timonel's settings `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timonel's settings file `{}` is damaged: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write timonel's settings `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl timonel_driver::Hint for ConfigError {
    fn hint(&self) -> Option<String> {
        match self {
            Self::Corrupt { path, .. } => Some(format!(
                "fix it by hand, or remove `{}` and set the values again with `timonel config set`",
                path.display()
            )),
            _ => None,
        }
    }
}

/// The settings file: key → value as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    pub fn path(home: &Home) -> PathBuf {
        home.root().join(FILE)
    }

    /// Reads the file; a missing file is empty settings.
    pub fn load(home: &Home) -> Result<Self, ConfigError> {
        let path = Self::path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let corrupt = |message: String| ConfigError::Corrupt {
            path: path.clone(),
            message,
        };
        let raw: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        let mut values = BTreeMap::new();
        for (k, v) in raw {
            let key: Key = k.parse().map_err(|e: UserError| corrupt(e.message))?;
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                other => return Err(corrupt(format!("`{k}` is {other}, not a value"))),
            };
            key.validate(&text)
                .map_err(|e| corrupt(format!("{key}: {e}")))?;
            values.insert(key.as_str().to_string(), text);
        }
        Ok(Self { values })
    }

    /// Writes the file atomically (temp file, fsync, rename).
    pub fn save(&self, home: &Home) -> Result<(), ConfigError> {
        let path = Self::path(home);
        let write = |source| ConfigError::Write {
            path: path.clone(),
            source,
        };
        let mut text = serde_json::to_string_pretty(&self.values)
            .map_err(|e| write(std::io::Error::other(e)))?;
        text.push('\n');
        crate::fsutil::atomic_write(&path, text.as_bytes(), 0o644).map_err(write)
    }

    pub fn get(&self, key: Key) -> Option<&str> {
        self.values.get(key.as_str()).map(String::as_str)
    }

    /// Sets a value after checking it.
    pub fn set(&mut self, key: Key, value: &str) -> Result<(), UserError> {
        let value = value.trim();
        key.validate(value).map_err(|e| {
            UserError::new(
                format!("cannot set `{key}`: {e}"),
                format!("`{key}` is {}", key.describe()),
            )
        })?;
        self.values
            .insert(key.as_str().to_string(), value.to_string());
        Ok(())
    }

    /// Removes a value; returns whether it was set.
    pub fn unset(&mut self, key: Key) -> bool {
        self.values.remove(key.as_str()).is_some()
    }

    /// Every set value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The typed defaults (values were checked on load and set).
    pub fn defaults(&self) -> Result<Defaults, UserError> {
        let bad = |key: Key, e: String| {
            UserError::new(
                format!("the setting `{key}` is invalid: {e}"),
                format!("fix it with `timonel config set {key} <value>` or `timonel config unset {key}`"),
            )
        };
        let mut d = Defaults::default();
        if let Some(v) = self.get(Key::Driver) {
            d.driver = Some(crate::drivers::parse_kind(v).map_err(|e| bad(Key::Driver, e))?);
        }
        if let Some(v) = self.get(Key::Cpus) {
            d.cpus = Some(parse_cpus(v).map_err(|e| bad(Key::Cpus, e))?);
        }
        if let Some(v) = self.get(Key::Memory) {
            d.memory_mib = Some(crate::units::parse_memory(v).map_err(|e| bad(Key::Memory, e))?);
        }
        if let Some(v) = self.get(Key::KubernetesVersion) {
            d.kubernetes_version = Some(v.to_string());
        }
        if let Some(v) = self.get(Key::Nodes) {
            d.nodes = Some(parse_nodes(v).map_err(|e| bad(Key::Nodes, e))?);
        }
        if let Some(v) = self.get(Key::WaitTimeout) {
            d.wait_timeout = Some(
                humantime::parse_duration(v).map_err(|e| bad(Key::WaitTimeout, e.to_string()))?,
            );
        }
        Ok(d)
    }
}

/// The defaults `start` applies where no flag was given: `$TIMONEL_HOME/config.json`, typed.
/// A missing file gives empty defaults; a damaged one is an error that says how to fix it.
pub fn load_defaults(home: &Home) -> anyhow::Result<Defaults> {
    Ok(Settings::load(home)?.defaults()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("timonel"));
        (dir, home)
    }

    #[test]
    fn keys_parse_and_unknown_ones_list_the_valid_ones() {
        assert_eq!("memory".parse::<Key>().unwrap(), Key::Memory);
        assert_eq!(
            "k8s-version".parse::<Key>().unwrap(),
            Key::KubernetesVersion
        );
        assert_eq!("wait_timeout".parse::<Key>().unwrap(), Key::WaitTimeout);
        let err = "colour".parse::<Key>().unwrap_err();
        assert!(err.message.contains("`colour`"), "{}", err.message);
        assert!(err.hint.unwrap().contains("kubernetes-version"));
    }

    #[test]
    fn values_are_checked_like_start_checks_them() {
        let mut s = Settings::default();
        s.set(Key::Memory, "2g").unwrap();
        s.set(Key::Driver, "docker").unwrap();
        s.set(Key::Cpus, "1.5").unwrap();
        s.set(Key::Nodes, "3").unwrap();
        s.set(Key::WaitTimeout, "90s").unwrap();
        s.set(Key::KubernetesVersion, "v1.31").unwrap();
        for (key, bad) in [
            (Key::Memory, "lots"),
            (Key::Memory, "100m"),
            (Key::Driver, "floppy"),
            (Key::Cpus, "0"),
            (Key::Cpus, "-1"),
            (Key::Nodes, "0"),
            (Key::Nodes, "33"),
            (Key::WaitTimeout, "soon"),
            (Key::KubernetesVersion, "Banana!"),
        ] {
            let err = s.set(key, bad).unwrap_err();
            assert!(err.message.contains(key.as_str()), "{}", err.message);
        }
        let d = s.defaults().unwrap();
        assert_eq!(d.memory_mib, Some(2048));
        assert_eq!(d.driver, Some(DriverKind::Docker));
        assert_eq!(d.cpus, Some(1.5));
        assert_eq!(d.nodes, Some(3));
        assert_eq!(d.wait_timeout, Some(Duration::from_secs(90)));
        assert_eq!(d.kubernetes_version.as_deref(), Some("v1.31"));
    }

    #[test]
    fn round_trips_through_the_file_and_refuses_damage() {
        let (_dir, home) = home();
        assert_eq!(load_defaults(&home).unwrap(), Defaults::default());
        let mut s = Settings::load(&home).unwrap();
        s.set(Key::Memory, "4g").unwrap();
        s.save(&home).unwrap();
        let loaded = Settings::load(&home).unwrap();
        assert_eq!(loaded.get(Key::Memory), Some("4g"));
        assert_eq!(load_defaults(&home).unwrap().memory_mib, Some(4096));
        let mut loaded = loaded;
        assert!(loaded.unset(Key::Memory));
        assert!(!loaded.unset(Key::Memory));

        std::fs::write(Settings::path(&home), r#"{"memory": "lots"}"#).unwrap();
        assert!(matches!(
            Settings::load(&home),
            Err(ConfigError::Corrupt { .. })
        ));
        std::fs::write(Settings::path(&home), r#"{"colour": "blue"}"#).unwrap();
        assert!(matches!(
            Settings::load(&home),
            Err(ConfigError::Corrupt { .. })
        ));
        std::fs::write(Settings::path(&home), r#"{"nodes": 2}"#).unwrap();
        assert_eq!(load_defaults(&home).unwrap().nodes, Some(2));
    }
}
