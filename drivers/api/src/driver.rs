//! The [`Driver`] trait: the lifecycle of one kind of node (container or VM).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::access::{FilePlacement, NodeAccess};
use crate::error::DriverError;
use crate::name::{ClusterName, MachineName};
use crate::state::{MachineState, StopMode};

/// The kinds of driver timonel knows, in the order `start` probes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Docker,
    Kvm,
    Hyperv,
    Virtualbox,
    Ssh,
    /// The in-memory driver of the `testing` feature ([`crate::fake::FakeDriver`]).
    Fake,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Kvm => "kvm",
            Self::Hyperv => "hyperv",
            Self::Virtualbox => "virtualbox",
            Self::Ssh => "ssh",
            Self::Fake => "fake",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a driver can be used on this host right now. Never an error: an unusable driver says
/// why and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Availability {
    Ready {
        /// The backend's version (`Docker 20.10.24`, `libvirt 9.0.0`, `VirtualBox 7.0.14`).
        version: String,
        /// Things worth telling the user that do not stop the driver (e.g. "KVM unavailable,
        /// using TCG: slow").
        notes: Vec<String>,
    },
    Unusable {
        reason: String,
        fix: String,
    },
}

impl Availability {
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. })
    }
}

/// The kinds of node a driver makes. The cluster layer picks, once, how a node of each kind is
/// prepared, provisioned and reached (see `src/cluster/node/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeKind {
    /// Containers: files are placed before the first start and the service is the container's
    /// command; commands run through the driver's own access (e.g. `docker exec`).
    #[default]
    Container,
    /// VMs booted from a disk and a cloud-init seed: the driver reports an SSH endpoint, the
    /// host side installs the distribution over SSH with a systemd unit.
    Vm,
    /// Machines that already exist (the SSH driver): `create` places the spec's files (binary
    /// and unit included) and enables the unit; `delete` uninstalls. No disks, no seeds.
    Machine,
}

/// What a driver can do, so callers ask for a capability rather than for the driver's kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// What a node of this driver is.
    pub nodes: NodeKind,
    /// Creating nodes needs administrator rights (Hyper-V).
    pub needs_admin: bool,
    /// The VM disk format the driver wants (`qcow2`, `vhdx`, `vmdk`), for VM drivers.
    pub disk_format: Option<String>,
}

/// The role of a node in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Server,
    Agent,
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Server => "server",
            Self::Agent => "agent",
        })
    }
}

/// A port of a node made reachable from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub node_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// The process that runs the distribution in the node. Container drivers make it the container's
/// command; VM drivers write a service unit for it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The disks of a VM node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDisk {
    /// The verified base image (qcow2, VHDX, VMDK), shared by every node; never written to.
    pub base_image: PathBuf,
    /// The size the node's disk is grown to.
    pub size_mib: u64,
    /// The cloud-init NoCloud seed (ISO labelled `cidata`).
    pub seed_iso: PathBuf,
    /// Where the driver keeps this node's own files (overlay disk, converted disks).
    pub state_dir: PathBuf,
}

/// Everything a driver needs to create one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineSpec {
    pub name: MachineName,
    pub cluster: ClusterName,
    pub role: NodeRole,
    /// 1-based position of the node in the cluster, for stable addresses.
    pub index: u32,
    /// The node's hostname (and Kubernetes node name).
    pub hostname: String,
    pub cpus: Option<f64>,
    pub memory_mib: Option<u64>,
    /// Container drivers: the image to run. VM drivers: unused.
    pub image: Option<String>,
    /// VM drivers: the disks.
    pub vm_disk: Option<VmDisk>,
    pub ports: Vec<PortMapping>,
    /// Container drivers: files placed before the first start.
    pub files: Vec<FilePlacement>,
    /// Container drivers: the container's command.
    pub service: Option<ServiceSpec>,
    /// Host folders the node sees (`--mount`), in the profile's order (a VM driver shares the
    /// `i`th as [`crate::Mount::tag`]`(i)`). Drivers whose [`Driver::host_folders`] is
    /// `Unsupported` are never given any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::mount::Mount>,
    /// Driver-specific settings (`docker.network`, `hyperv.switch`, …).
    pub options: BTreeMap<String, String>,
    /// The identity of the timonel home that creates the node. Drivers whose backend several
    /// homes share (a Docker daemon) label what they create with it; it is not a setting of the
    /// node (it does not make a spec differ).
    pub owner: Option<String>,
}

impl MachineSpec {
    pub fn new(name: MachineName, cluster: ClusterName, role: NodeRole, index: u32) -> Self {
        Self {
            hostname: name.to_string(),
            name,
            cluster,
            role,
            index,
            cpus: None,
            memory_mib: None,
            image: None,
            vm_disk: None,
            ports: Vec::new(),
            files: Vec::new(),
            service: None,
            mounts: Vec::new(),
            options: BTreeMap::new(),
            owner: None,
        }
    }
}

/// How drivers report progress. Only the CLI knows how it is shown.
pub trait Reporter: Send + Sync {
    /// A step started (`creating network`, `importing image`).
    fn step(&self, message: &str);
    /// Bytes moved so far, of `total` when known.
    fn progress(&self, done: u64, total: Option<u64>);
    /// Something the user should know that does not stop the operation.
    fn warn(&self, message: &str);
}

/// A [`Reporter`] that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct SilentReporter;

impl Reporter for SilentReporter {
    fn step(&self, _: &str) {}
    fn progress(&self, _: u64, _: Option<u64>) {}
    fn warn(&self, _: &str) {}
}

/// The lifecycle of nodes of one kind. Idempotent where it can be.
#[async_trait]
pub trait Driver: Send + Sync {
    fn kind(&self) -> DriverKind;
    fn capabilities(&self) -> Capabilities;
    /// Whether the driver can be used here. Never an error.
    async fn probe(&self) -> Availability;
    /// Creates the node. Creating an existing node with the same spec is Ok.
    async fn create(&self, spec: &MachineSpec, report: &dyn Reporter) -> Result<(), DriverError>;
    async fn start(&self, name: &MachineName) -> Result<(), DriverError>;
    async fn stop(&self, name: &MachineName, how: StopMode) -> Result<(), DriverError>;
    /// Deletes the node and what belongs to it alone. Deleting a missing node is Ok.
    async fn delete(&self, name: &MachineName) -> Result<(), DriverError>;
    /// Deletes every resource labelled with `cluster` (nodes, networks, volumes, disks), even when
    /// timonel's own record of them is gone. Returns a line per resource removed.
    async fn delete_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>, DriverError>;
    /// `NotCreated` when the node does not exist.
    async fn state(&self, name: &MachineName) -> Result<MachineState, DriverError>;
    /// The node's address on its network. A typed error while the node is stopped.
    async fn ip(&self, name: &MachineName) -> Result<IpAddr, DriverError>;
    /// The address of a node that was just started, waiting at most `timeout` for a guest
    /// that is still booting to report one (`start --wait-timeout`). Drivers that know the
    /// address at once (containers, static DHCP entries) need not override it.
    async fn wait_ip(&self, name: &MachineName, timeout: Duration) -> Result<IpAddr, DriverError> {
        let _ = timeout;
        self.ip(name).await
    }
    /// The host-reachable address of a node port (127.0.0.1:<published> for containers and NAT VMs).
    async fn endpoint(&self, name: &MachineName, port: u16) -> Result<SocketAddr, DriverError>;
    /// Commands and files in the running node, for drivers that reach their nodes themselves
    /// (containers, existing machines). VM drivers only report [`Driver::endpoint`] of port 22:
    /// the host side does SSH, once, for all of them.
    async fn access(&self, name: &MachineName) -> Result<Arc<dyn NodeAccess>, DriverError> {
        let _ = name;
        Err(DriverError::Unsupported {
            driver: self.kind().to_string(),
            what: "node access through the driver (its nodes are reached over SSH)".to_string(),
        })
    }
    /// Freezes the running node in place: its processes get no CPU until [`Driver::unpause`],
    /// and its memory, disks, addresses and ports stay as they are (Docker pause, libvirt
    /// suspend, VirtualBox `controlvm pause`, Hyper-V `Suspend-VM`). Pausing a paused node is
    /// Ok; a node that is not running is [`DriverError::InvalidState`].
    async fn pause(&self, name: &MachineName) -> Result<(), DriverError> {
        let _ = name;
        Err(DriverError::Unsupported {
            driver: self.kind().to_string(),
            what: "pausing nodes".to_string(),
        })
    }
    /// Thaws a paused node: it runs on from where it was, without a restart. Unpausing a running
    /// node is Ok; a node that is neither is [`DriverError::InvalidState`].
    async fn unpause(&self, name: &MachineName) -> Result<(), DriverError> {
        let _ = name;
        Err(DriverError::Unsupported {
            driver: self.kind().to_string(),
            what: "unpausing nodes".to_string(),
        })
    }
    /// The last `tail` lines of the distribution's log in the node (container output, or the
    /// service's journal on VMs).
    async fn logs(&self, name: &MachineName, tail: usize) -> Result<String, DriverError> {
        let _ = (name, tail);
        Err(DriverError::Unsupported {
            driver: self.kind().to_string(),
            what: "reading node logs".to_string(),
        })
    }

    /// How host folders (`--mount`) reach this driver's nodes. `start` refuses mounts with the
    /// reason when they cannot.
    fn host_folders(&self) -> crate::mount::HostFolders {
        crate::mount::HostFolders::Unsupported {
            why: format!("the {} driver cannot share host folders", self.kind()),
            instead: "drop --mount".to_string(),
        }
    }

    /// Container nodes built from the distribution's binary, when the driver builds images.
    fn as_node_images(&self) -> Option<&dyn crate::capability::NodeImages> {
        None
    }
    /// Checks of the machines before anything changes on them, when the driver has them.
    fn as_preflight(&self) -> Option<&dyn crate::capability::Preflight> {
        None
    }
    /// Following a node's log as it is written, when the driver can.
    fn as_follow_logs(&self) -> Option<&dyn crate::capability::FollowLogs> {
        None
    }
    /// What the nodes' host has (CPUs, memory, disk), when the driver can tell.
    fn as_host_resources(&self) -> Option<&dyn crate::capability::HostResources> {
        None
    }
    /// A load balancer in front of the API servers of a cluster with several, when the driver
    /// makes one.
    fn as_api_balancer(&self) -> Option<&dyn crate::capability::ApiBalancer> {
        None
    }
    /// Making the base disk from a cloud image with the hypervisor's own tool, when it has one.
    fn as_disk_images(&self) -> Option<&dyn crate::capability::DiskImages> {
        None
    }
}
