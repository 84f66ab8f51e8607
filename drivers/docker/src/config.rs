//! A [`MachineSpec`] turned into a container configuration: a pure function, unit-tested.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use bollard::models::HostConfig;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings,
    HostConfigCgroupnsModeEnum, Mount, MountType, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use sha2::{Digest, Sha256};

use timonel_driver::{DriverError, MachineSpec};

use crate::{
    network_name, LABEL_CLUSTER, LABEL_NODE, LABEL_ROLE, LABEL_SECURITY, LABEL_SPEC, NAME_PREFIX,
    OPTION_SECURITY,
};

/// Capabilities k3s needs when the container cannot be privileged, on top of Docker's defaults
/// (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP): mounts and cgroups (SYS_ADMIN), iptables and
/// routes (NET_ADMIN, NET_RAW), containerd and the kubelet (SYS_PTRACE, DAC_READ_SEARCH,
/// SYS_NICE, IPC_LOCK, SYS_RAWIO), kernel modules when allowed (SYS_MODULE), `/dev/kmsg` (SYSLOG).
pub const CAPABILITIES: &[&str] = &[
    "SYS_ADMIN",
    "NET_ADMIN",
    "NET_RAW",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_RAWIO",
    "IPC_LOCK",
    "SYSLOG",
];

/// Capabilities added when the daemon accepts them (the kubelet's oom_score_adj and raised
/// rlimits); some sandboxes keep them out of the daemon's own bounding set.
pub const OPTIONAL_CAPABILITIES: &[&str] = &["SYS_RESOURCE"];

/// How much privilege a node container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProfile {
    /// `--privileged`, as k3s wants (what rancher/k3s, k3d and kind do).
    Privileged,
    /// No `--privileged`: [`CAPABILITIES`] plus [`OPTIONAL_CAPABILITIES`], unconfined seccomp,
    /// AppArmor and system paths, a private cgroup namespace and `/dev/kmsg`.
    Capabilities,
    /// [`SecurityProfile::Capabilities`] without [`OPTIONAL_CAPABILITIES`].
    ReducedCapabilities,
}

impl SecurityProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Capabilities => "capabilities",
            Self::ReducedCapabilities => "capabilities-reduced",
        }
    }

    /// The profile named `s` (as [`Self::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Privileged,
            Self::Capabilities,
            Self::ReducedCapabilities,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// The capabilities added to Docker's defaults (empty when privileged).
    pub fn cap_add(self) -> Vec<String> {
        let optional: &[&str] = match self {
            Self::Privileged => return Vec::new(),
            Self::Capabilities => OPTIONAL_CAPABILITIES,
            Self::ReducedCapabilities => &[],
        };
        CAPABILITIES
            .iter()
            .chain(optional)
            .map(|c| c.to_string())
            .collect()
    }

    /// The profile forced by `docker.security` in the spec's options, if any.
    pub fn forced(spec: &MachineSpec) -> Result<Option<Self>, DriverError> {
        match spec.options.get(OPTION_SECURITY).map(|s| s.trim()) {
            None | Some("") => Ok(None),
            Some("privileged") => Ok(Some(Self::Privileged)),
            Some("capabilities") => Ok(Some(Self::Capabilities)),
            Some(other) => Err(DriverError::Parse {
                what: format!("option `{OPTION_SECURITY}`"),
                message: format!("`{other}` is neither `privileged` nor `capabilities`"),
            }),
        }
    }
}

impl fmt::Display for SecurityProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where each per-node volume is mounted: (name suffix, path in the node).
pub const NODE_VOLUMES: &[(&str, &str)] = &[
    ("k3s", "/var/lib/rancher/k3s"),
    ("node", "/etc/rancher/node"),
    ("kubelet", "/var/lib/kubelet"),
    ("cni", "/var/lib/cni"),
    ("log", "/var/log"),
];

/// The named volumes of a machine: (volume name, path in the node).
pub fn node_volumes(machine: &str) -> Vec<(String, &'static str)> {
    NODE_VOLUMES
        .iter()
        .map(|(suffix, path)| (format!("{NAME_PREFIX}{machine}-{suffix}"), *path))
        .collect()
}

/// A digest of everything in `spec` that shapes the container (not the files placed at
/// creation, not the security profile, which the driver may pick), for the `dev.timonel.spec`
/// label.
pub fn spec_digest(spec: &MachineSpec) -> String {
    let canonical = format!(
        "v1|{}|{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        spec.name,
        spec.cluster,
        spec.role,
        spec.index,
        spec.hostname,
        spec.cpus,
        spec.memory_mib,
        spec.image,
        spec.ports,
        spec.service,
        spec.options,
    );
    // Appended only when there are some, so nodes made before mounts existed keep their digest.
    let canonical = if spec.mounts.is_empty() {
        canonical
    } else {
        format!("{canonical}|{:?}", spec.mounts)
    };
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The labels of a machine's container.
pub fn container_labels(spec: &MachineSpec, security: SecurityProfile) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), spec.cluster.to_string()),
        (LABEL_NODE.to_string(), spec.name.to_string()),
        (LABEL_ROLE.to_string(), spec.role.to_string()),
        (LABEL_SPEC.to_string(), spec_digest(spec)),
        (LABEL_SECURITY.to_string(), security.as_str().to_string()),
    ]);
    if let Some(owner) = &spec.owner {
        labels.insert(crate::LABEL_HOME.to_string(), owner.clone());
    }
    labels
}

/// The container for `spec`, attached to its cluster network at `node_ip`, run with `security`.
pub fn container_config(
    spec: &MachineSpec,
    security: SecurityProfile,
    node_ip: Ipv4Addr,
) -> Result<ContainerCreateBody, DriverError> {
    let image = spec
        .image
        .clone()
        .ok_or_else(|| DriverError::InvalidState {
            what: format!("machine `{}`", spec.name),
            state: "without an image".into(),
            action: "creating a container".into(),
        })?;
    let network = network_name(spec.cluster.as_str());

    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = format!("{}/{}", port.node_port, port.protocol);
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(port.host_ip.to_string()),
                host_port: Some(port.host_port.to_string()),
            });
    }

    let mut mounts: Vec<Mount> = node_volumes(spec.name.as_str())
        .into_iter()
        .map(|(name, path)| Mount {
            target: Some(path.to_string()),
            source: Some(name),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        })
        .collect();
    // Host folders: bind mounts, private propagation (hostPath volumes of pods in the node
    // bind from the node's own mount table, so nothing needs to propagate back to the host).
    mounts.extend(spec.mounts.iter().map(|m| Mount {
        target: Some(m.node.clone()),
        source: Some(m.host.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(m.read_only),
        ..Default::default()
    }));

    let mut host = HostConfig {
        port_bindings: Some(bindings),
        mounts: Some(mounts),
        tmpfs: Some(HashMap::from([
            ("/run".to_string(), String::new()),
            ("/var/run".to_string(), String::new()),
        ])),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        // k3s must be PID 1: it evacuates the root cgroup and reaps zombies itself.
        init: Some(false),
        network_mode: Some(network.clone()),
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        security_opt: Some(vec![
            "seccomp=unconfined".into(),
            "apparmor=unconfined".into(),
        ]),
        ..Default::default()
    };
    if let Some(cpus) = spec.cpus {
        host.nano_cpus = Some((cpus * 1e9).round() as i64);
    }
    if let Some(mib) = spec.memory_mib {
        let bytes = i64::try_from(mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        host.memory = Some(bytes);
        host.memory_swap = Some(bytes);
    }
    match security {
        SecurityProfile::Privileged => host.privileged = Some(true),
        SecurityProfile::Capabilities | SecurityProfile::ReducedCapabilities => {
            host.cap_add = Some(security.cap_add());
            // `--security-opt systempaths=unconfined`: nothing masked or read-only in /proc.
            host.masked_paths = Some(Vec::new());
            host.readonly_paths = Some(Vec::new());
            host.devices = Some(kmsg_device());
        }
    }

    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(node_ip.to_string()),
            ..Default::default()
        }),
        aliases: Some(vec![spec.hostname.clone(), spec.name.to_string()]),
        ..Default::default()
    };

    let (entrypoint, cmd, env) = match &spec.service {
        Some(service) => (
            Some(vec![service.program.clone()]),
            Some(service.args.clone()),
            Some(
                service
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
        ),
        None => (None, None, None),
    };

    Ok(ContainerCreateBody {
        hostname: Some(spec.hostname.clone()),
        image: Some(image),
        entrypoint,
        cmd,
        env,
        labels: Some(container_labels(spec, security)),
        exposed_ports: Some(exposed),
        host_config: Some(host),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network, endpoint)])),
        }),
        ..Default::default()
    })
}

/// `/dev/kmsg` for the kubelet, when this host has one (a remote daemon or Docker Desktop's VM
/// may not, and Docker refuses a device that is missing).
fn kmsg_device() -> Vec<DeviceMapping> {
    if cfg!(target_os = "linux") && std::path::Path::new("/dev/kmsg").exists() {
        vec![DeviceMapping {
            path_on_host: Some("/dev/kmsg".into()),
            path_in_container: Some("/dev/kmsg".into()),
            cgroup_permissions: Some("rwm".into()),
        }]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use timonel_driver::{ClusterName, NodeRole, PortMapping, ServiceSpec};

    fn spec() -> MachineSpec {
        let cluster: ClusterName = "dev".parse().unwrap();
        let mut spec = MachineSpec::new(cluster.machine(2), cluster, NodeRole::Agent, 2);
        spec.image = Some("timonel/k3s:v1.31.2-k3s1".into());
        spec.hostname = "dev-m02".into();
        spec.cpus = Some(1.5);
        spec.memory_mib = Some(2048);
        spec.ports = vec![PortMapping {
            host_ip: IpAddr::from([127, 0, 0, 1]),
            host_port: 40123,
            node_port: 6443,
            protocol: "tcp".into(),
        }];
        spec.service = Some(ServiceSpec {
            program: "/bin/k3s".into(),
            args: vec!["agent".into(), "--node-ip=10.201.0.3".into()],
            env: vec![("K3S_TOKEN".into(), "secret".into())],
        });
        spec
    }

    #[test]
    fn privileged_config_from_spec() {
        let c =
            container_config(&spec(), SecurityProfile::Privileged, [10, 201, 0, 3].into()).unwrap();
        assert_eq!(c.image.as_deref(), Some("timonel/k3s:v1.31.2-k3s1"));
        assert_eq!(c.hostname.as_deref(), Some("dev-m02"));
        assert_eq!(c.entrypoint, Some(vec!["/bin/k3s".to_string()]));
        assert_eq!(
            c.cmd,
            Some(vec![
                "agent".to_string(),
                "--node-ip=10.201.0.3".to_string()
            ])
        );
        assert_eq!(c.env, Some(vec!["K3S_TOKEN=secret".to_string()]));
        let labels = c.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_CLUSTER], "dev");
        assert_eq!(labels[LABEL_NODE], "dev-m02");
        assert_eq!(labels[LABEL_ROLE], "agent");
        assert_eq!(labels[LABEL_SECURITY], "privileged");
        assert!(!labels.contains_key(crate::LABEL_HOME));
        let mut owned = spec();
        owned.owner = Some("0123abcd".into());
        assert_eq!(
            container_labels(&owned, SecurityProfile::Privileged)[crate::LABEL_HOME],
            "0123abcd"
        );
        // The home is not a setting: the same node from another home is not "different".
        assert_eq!(spec_digest(&owned), spec_digest(&spec()));
        assert_eq!(c.exposed_ports, Some(vec!["6443/tcp".to_string()]));

        let h = c.host_config.as_ref().unwrap();
        assert_eq!(h.privileged, Some(true));
        assert_eq!(h.cap_add, None);
        assert_eq!(h.init, Some(false));
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.memory, Some(2048 * 1024 * 1024));
        assert_eq!(h.network_mode.as_deref(), Some("timonel-dev"));
        assert_eq!(
            h.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let tmpfs = h.tmpfs.as_ref().unwrap();
        assert!(tmpfs.contains_key("/run") && tmpfs.contains_key("/var/run"));
        let binding = &h.port_bindings.as_ref().unwrap()["6443/tcp"]
            .as_ref()
            .unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("40123"));
        let mounts: Vec<(String, String)> = h
            .mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.source.clone().unwrap(), m.target.clone().unwrap()))
            .collect();
        assert!(mounts.contains(&("timonel-dev-m02-k3s".into(), "/var/lib/rancher/k3s".into())));
        assert!(mounts.contains(&("timonel-dev-m02-node".into(), "/etc/rancher/node".into())));
        assert_eq!(mounts.len(), 5);

        let endpoints = c.networking_config.unwrap().endpoints_config.unwrap();
        let ip = endpoints["timonel-dev"].ipam_config.as_ref().unwrap();
        assert_eq!(ip.ipv4_address.as_deref(), Some("10.201.0.3"));
    }

    #[cfg(unix)]
    #[test]
    fn host_folders_are_bind_mounts_and_part_of_the_digest() {
        let mut s = spec();
        let before = spec_digest(&s);
        s.mounts = vec![
            "/srv/src:/src:ro".parse().unwrap(),
            "/srv/data:/data".parse().unwrap(),
        ];
        assert_ne!(spec_digest(&s), before);
        let c = container_config(&s, SecurityProfile::Privileged, [10, 0, 0, 2].into()).unwrap();
        let binds: Vec<_> = c
            .host_config
            .unwrap()
            .mounts
            .unwrap()
            .into_iter()
            .filter(|m| m.typ == Some(MountType::BIND))
            .map(|m| (m.source.unwrap(), m.target.unwrap(), m.read_only))
            .collect();
        assert_eq!(
            binds,
            vec![
                ("/srv/src".into(), "/src".into(), Some(true)),
                ("/srv/data".into(), "/data".into(), Some(false)),
            ]
        );
    }

    #[test]
    fn capability_profile_drops_privileged() {
        let c = container_config(
            &spec(),
            SecurityProfile::Capabilities,
            [10, 201, 0, 3].into(),
        )
        .unwrap();
        let h = c.host_config.unwrap();
        assert_eq!(h.privileged, None);
        let caps = h.cap_add.unwrap();
        assert!(caps.contains(&"SYS_ADMIN".to_string()));
        assert!(caps.contains(&"SYS_RESOURCE".to_string()));
        assert!(h
            .security_opt
            .unwrap()
            .contains(&"seccomp=unconfined".to_string()));
        assert_eq!(c.labels.unwrap()[LABEL_SECURITY], "capabilities");
        let reduced = SecurityProfile::ReducedCapabilities.cap_add();
        assert!(!reduced.contains(&"SYS_RESOURCE".to_string()));
        assert!(reduced.contains(&"NET_ADMIN".to_string()));
    }

    #[test]
    fn no_image_no_container_and_forced_profiles() {
        let mut s = spec();
        s.image = None;
        assert!(container_config(&s, SecurityProfile::Privileged, [10, 0, 0, 2].into()).is_err());
        let mut s = spec();
        assert_eq!(SecurityProfile::forced(&s).unwrap(), None);
        s.options
            .insert(OPTION_SECURITY.into(), "capabilities".into());
        assert_eq!(
            SecurityProfile::forced(&s).unwrap(),
            Some(SecurityProfile::Capabilities)
        );
        s.options.insert(OPTION_SECURITY.into(), "yolo".into());
        assert!(SecurityProfile::forced(&s).is_err());
    }

    #[test]
    fn spec_digest_follows_the_settings_not_the_files() {
        let a = spec();
        let mut b = spec();
        b.files
            .push(timonel_driver::FilePlacement::bytes("/x", 0o644, "y"));
        assert_eq!(spec_digest(&a), spec_digest(&b));
        b.cpus = Some(2.0);
        assert_ne!(spec_digest(&a), spec_digest(&b));
    }
}
