//! On-disk cluster state: `$TIMONEL_HOME/profiles/<name>/profile.json`, typed and versioned,
//! written atomically (0600: it holds the cluster token).

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use timonel_driver::{ClusterName, DriverKind, MachineName, NodeRole};

use crate::fsutil;
use crate::home::Home;

/// The version of the state file this build writes. Older files are migrated on load; newer
/// ones are refused (a newer timonel wrote them).
pub const SCHEMA: u32 = 1;
const FILE: &str = "profile.json";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile `{name}` does not exist")]
    NotFound { name: String },
    #[error("cannot read the state of profile `{name}` (`{}`)", path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file `{}` is damaged: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("the state file `{}` was written by a newer timonel (schema {found}, this build knows {SCHEMA})", path.display())]
    TooNew { path: PathBuf, found: u32 },
    #[error("cannot write the state of profile `{name}`")]
    Write {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

impl timonel_driver::Hint for ProfileError {
    fn hint(&self) -> Option<String> {
        match self {
            Self::NotFound { name } => Some(format!(
                "create it with `timonel start -p {name}`; `timonel profile list` shows the profiles that exist"
            )),
            Self::Corrupt { .. } => Some(
                "`timonel delete -p <name>` removes the cluster by its labels even without a readable state file"
                    .to_string(),
            ),
            Self::TooNew { .. } => Some(
                "the file is left as it is: manage this profile with the newer timonel that wrote it, or upgrade this one"
                    .to_string(),
            ),
            _ => None,
        }
    }
}

/// Where a profile is in its life, as timonel last left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `start` began creating it and has not finished.
    Creating,
    Running,
    Stopped,
}

/// One node of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: MachineName,
    pub role: NodeRole,
    pub index: u32,
    /// The node's address on the profile network, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The host port the node's API port (6443) is published on (servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
    /// The host port forwarded to the node's SSH port (VM drivers behind NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// The host-reachable API URL of this server, when it is not `listen_address:api_port`
    /// (VMs reached on their own address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The SSH driver: the machine this node is (`user@host[:port]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<timonel_driver_ssh::SshHost>,
    /// `node add` recorded the node before creating it and has not seen it Ready: a `node add`
    /// that was killed leaves it so, and the next `node add` finishes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// Fields of a later timonel, kept on rewrite (as [`Profile::unknown`]).
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, serde_json::Value>,
}

/// The SSH driver's settings of a profile: how to log in (never a password: that comes from
/// `TIMONEL_SSH_PASSWORD` each time) and the cluster's identity on its machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshSettings {
    /// Identifies the cluster in the record timonel keeps on each machine.
    pub cluster_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    #[serde(default)]
    pub accept_new_host_keys: bool,
    /// Machines that already ran k3s were taken over (`--adopt`).
    #[serde(default)]
    pub adopt: bool,
}

/// Everything timonel knows about a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub schema: u32,
    pub name: ClusterName,
    pub driver: DriverKind,
    pub distribution: String,
    /// The exact distribution version (`v1.31.2+k3s1`).
    pub version: String,
    /// The container image the nodes run (Docker driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_image: Option<String>,
    pub listen_address: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// k3s packaged components turned off (`traefik`, …).
    #[serde(default)]
    pub disable: Vec<String>,
    /// Extra environment of the distribution's service in every node, `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// VM drivers: the verified base image every node's disk is made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_image: Option<PathBuf>,
    /// VM drivers: the disk size of each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<u64>,
    /// VM drivers: the user timonel logs in as over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
    /// hyperv driver: the virtual switch every node connects to (`--hyperv-virtual-switch`);
    /// none: the driver picks. An additive field: the schema stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperv_switch: Option<String>,
    /// Extra CA certificates (PEM) every node trusts (`--ca-cert`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certs: Vec<String>,
    /// docker.io registry mirrors (`--registry-mirror`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_mirrors: Vec<String>,
    /// Extra `k3s server`/`k3s agent` arguments (`--k3s-arg`). Absent in older files: none
    /// (an additive field, so the schema stays 1).
    #[serde(
        default,
        skip_serializing_if = "crate::distro::k3s_args::K3sArgs::is_empty"
    )]
    pub k3s_args: crate::distro::k3s_args::K3sArgs,
    /// Extra ports published from the first server (`--ports`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<timonel_driver::PortMapping>,
    /// Host folders every node sees (`--mount`). Absent in files written before mounts existed,
    /// which read as none: an additive field, so the schema stays 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<timonel_driver::Mount>,
    /// Docker driver: the engine's address the nodes were made on (`DOCKER_HOST`, or the socket
    /// timonel found), so that later commands ask that engine even when another engine's socket
    /// is the one that exists then (Docker stopped, Podman running). Absent in older files:
    /// the address is found again as at `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
    /// Several servers: the host port of the load balancer in front of their API (Docker's
    /// `timonel-<name>-lb` container, or the `timonel-lb` host process of VM and ssh clusters),
    /// where the kubeconfig points. Kept across stop and start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer_port: Option<u16>,
    /// Servers share an embedded etcd (HA): the first was started with `--cluster-init`, and more
    /// servers can join.
    #[serde(default)]
    pub embedded_etcd: bool,
    /// The cluster's join secret (never logged).
    pub token: String,
    /// The kubeconfig file our context was merged into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    pub nodes: Vec<NodeRecord>,
    /// The SSH driver's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSettings>,
    pub phase: Phase,
    /// Unix seconds.
    pub created_at: u64,
    /// Fields a later timonel wrote that this one does not know (additive fields keep the
    /// schema): kept as they were when this timonel writes the profile again.
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, serde_json::Value>,
}

impl Profile {
    /// The first server: the one the others join, whose credentials the kubeconfig carries.
    pub fn server(&self) -> Option<&NodeRecord> {
        self.nodes
            .iter()
            .filter(|n| n.role == NodeRole::Server)
            .min_by_key(|n| n.index)
    }
    /// The URL the kubeconfig uses: the load balancer's when there is one.
    pub fn balancer_url(&self) -> Option<String> {
        self.balancer_port
            .map(|p| server_url(self.listen_address, p))
    }
    /// The host-reachable API URL of a server node.
    pub fn api_url(&self, node: &NodeRecord) -> Option<String> {
        node.api_url
            .clone()
            .or_else(|| node.api_port.map(|p| server_url(self.listen_address, p)))
    }
    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }
}

/// The host-reachable API URL of a port published on `listen`.
pub fn server_url(listen: IpAddr, port: u16) -> String {
    let ip = if listen.is_unspecified() {
        // 0.0.0.0 is not a destination (and not reachable on Windows): talk to loopback.
        IpAddr::from([127, 0, 0, 1])
    } else {
        listen
    };
    timonel_driver::net::https_url(ip, port)
}

/// Reads and writes profiles under a [`Home`].
#[derive(Debug, Clone)]
pub struct Store {
    home: Home,
}

impl Store {
    pub fn new(home: Home) -> Self {
        Self { home }
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn dir(&self, name: &ClusterName) -> PathBuf {
        self.home.profile_dir(name)
    }

    fn file(&self, name: &ClusterName) -> PathBuf {
        self.dir(name).join(FILE)
    }

    pub fn exists(&self, name: &ClusterName) -> bool {
        self.file(name).is_file()
    }

    /// Loads a profile; `Ok(None)` when it does not exist.
    pub fn try_load(&self, name: &ClusterName) -> Result<Option<Profile>, ProfileError> {
        let path = self.file(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ProfileError::Read {
                    name: name.to_string(),
                    path,
                    source,
                })
            }
        };
        parse(&path, &text).map(Some)
    }

    pub fn load(&self, name: &ClusterName) -> Result<Profile, ProfileError> {
        self.try_load(name)?.ok_or_else(|| ProfileError::NotFound {
            name: name.to_string(),
        })
    }

    pub fn save(&self, profile: &Profile) -> Result<(), ProfileError> {
        let write = |source| ProfileError::Write {
            name: profile.name.to_string(),
            source,
        };
        let dir = self.dir(&profile.name);
        fsutil::create_private_dir(&dir).map_err(write)?;
        let mut text =
            serde_json::to_string_pretty(profile).map_err(|e| write(std::io::Error::other(e)))?;
        text.push('\n');
        fsutil::atomic_write(&dir.join(FILE), text.as_bytes(), 0o600).map_err(write)
    }

    /// Removes the profile's folder. Missing is Ok.
    pub fn remove(&self, name: &ClusterName) -> Result<(), ProfileError> {
        match fs::remove_dir_all(self.dir(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ProfileError::Write {
                name: name.to_string(),
                source,
            }),
        }
    }

    /// Every profile folder, valid or not, by name.
    pub fn list(&self) -> Vec<(String, Result<Profile, ProfileError>)> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.home.profiles()) else {
            return out;
        };
        for entry in entries.flatten() {
            let raw = entry.file_name().to_string_lossy().into_owned();
            let Ok(name) = raw.parse::<ClusterName>() else {
                continue;
            };
            match self.try_load(&name) {
                Ok(Some(p)) => out.push((raw, Ok(p))),
                Ok(None) => {}
                Err(e) => out.push((raw, Err(e))),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn parse(path: &Path, text: &str) -> Result<Profile, ProfileError> {
    let corrupt = |message: String| ProfileError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let schema = value
        .get("schema")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("no `schema` field".to_string()))?;
    let schema = u32::try_from(schema).map_err(|e| corrupt(e.to_string()))?;
    if schema > SCHEMA {
        return Err(ProfileError::TooNew {
            path: path.to_path_buf(),
            found: schema,
        });
    }
    // Schema 1 is the first. A format change raises SCHEMA and migrates older files here, on
    // the JSON value, step by step (1 -> 2 -> …), telling the user once (docs/architecture.md,
    // "Where things go"); tests/fixtures/schema-<n>/ keeps each released format to test it.
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn server_urls_are_host_reachable() {
        assert_eq!(
            server_url("127.0.0.1".parse().unwrap(), 1),
            "https://127.0.0.1:1"
        );
        assert_eq!(
            server_url("0.0.0.0".parse().unwrap(), 1),
            "https://127.0.0.1:1"
        );
        assert_eq!(server_url("::".parse().unwrap(), 1), "https://127.0.0.1:1");
        assert_eq!(server_url("::1".parse().unwrap(), 1), "https://[::1]:1");
    }

    pub(crate) fn sample(name: &str) -> Profile {
        let name: ClusterName = name.parse().unwrap();
        Profile {
            schema: SCHEMA,
            docker_host: None,
            nodes: vec![NodeRecord {
                name: name.machine(1),
                role: NodeRole::Server,
                index: 1,
                ip: Some("10.201.0.2".parse().unwrap()),
                api_port: Some(40123),
                ssh_port: None,
                api_url: None,
                machine: None,
                pending: false,
                unknown: Default::default(),
            }],
            ssh: None,
            name,
            driver: DriverKind::Docker,
            distribution: "k3s".into(),
            version: "v1.31.2+k3s1".into(),
            node_image: Some("timonel/k3s:v1.31.2-k3s1".into()),
            listen_address: "127.0.0.1".parse().unwrap(),
            cpus: Some(2.0),
            memory_mib: None,
            disable: vec!["traefik".into()],
            env: vec![],
            ports: vec![],
            mounts: vec![],
            ca_certs: vec![],
            registry_mirrors: vec![],
            k3s_args: Default::default(),
            vm_image: None,
            disk_mib: None,
            ssh_user: None,
            hyperv_switch: None,
            embedded_etcd: false,
            balancer_port: None,
            token: "secret".into(),
            kubeconfig: None,
            phase: Phase::Running,
            created_at: 1,
            unknown: Default::default(),
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Home::at(dir.path().to_path_buf()));
        let p = sample("dev");
        store.save(&p).unwrap();
        assert_eq!(store.load(&p.name).unwrap(), p);
        assert_eq!(store.list().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let f = dir.path().join("profiles/dev/profile.json");
            assert_eq!(fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
        }
        store.remove(&p.name).unwrap();
        assert!(store.try_load(&p.name).unwrap().is_none());
        store.remove(&p.name).unwrap();
    }

    #[test]
    fn refuses_damaged_and_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Home::at(dir.path().to_path_buf()));
        let name: ClusterName = "dev".parse().unwrap();
        let file = dir.path().join("profiles/dev/profile.json");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, "{not json").unwrap();
        assert!(matches!(
            store.load(&name),
            Err(ProfileError::Corrupt { .. })
        ));
        fs::write(&file, r#"{"schema": 99}"#).unwrap();
        assert!(matches!(
            store.load(&name),
            Err(ProfileError::TooNew { found: 99, .. })
        ));
        let mut v = serde_json::to_value(sample("dev")).unwrap();
        v["name"] = serde_json::Value::String("../escape".into());
        fs::write(&file, v.to_string()).unwrap();
        assert!(matches!(
            store.load(&name),
            Err(ProfileError::Corrupt { .. })
        ));
    }

    /// A later timonel adds fields without changing the schema: this one keeps them when it
    /// writes the profile again (a stop, a node add), at the top and in each node.
    #[test]
    fn fields_of_a_later_timonel_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Home::at(dir.path().to_path_buf()));
        let name: ClusterName = "dev".parse().unwrap();
        let mut v = serde_json::to_value(sample("dev")).unwrap();
        v["gpu_sharing"] = serde_json::json!({"mode": "time-slice", "replicas": 4});
        v["nodes"][0]["zone"] = serde_json::json!("rack-2");
        let file = dir.path().join("profiles/dev/profile.json");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, v.to_string()).unwrap();

        let mut p = store.load(&name).unwrap();
        assert_eq!(p.unknown["gpu_sharing"]["replicas"], 4);
        assert_eq!(p.nodes[0].unknown["zone"], "rack-2");
        p.phase = Phase::Stopped;
        store.save(&p).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(written["gpu_sharing"], v["gpu_sharing"]);
        assert_eq!(written["nodes"][0]["zone"], "rack-2");
        assert_eq!(written["phase"], "stopped");
        // Known fields are not duplicated into the map.
        assert!(!p.unknown.contains_key("phase"));
        assert!(!p.nodes[0].unknown.contains_key("name"));
    }
}
