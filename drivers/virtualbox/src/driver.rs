//! [`VirtualBoxDriver`]: the [`Driver`] trait over VBoxManage.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{
    Availability, Capabilities, ClusterName, Driver, DriverError, DriverKind, HostRunner,
    MachineName, MachineSpec, MachineState, NodeKind, Reporter, Runner, StopMode,
};
use tokio::sync::{Mutex, OnceCell};

use crate::error::{ErrorKind, KERNEL_MODULE_HINT, NOT_INSTALLED_FIX};
use crate::locate::locate_vboxmanage;
use crate::network::HostNetworkMode;
use crate::parse::{parse_showvminfo, parse_version, VBoxVersion, VmInfo, SUPPORTED};
use crate::state::map_vm_state;
use crate::vboxmanage::{RetryPolicy, VBoxManage};

/// The intervals and deadlines of the driver's waits; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long `ip` waits for the guest to report its host-only address.
    pub ip_timeout: Duration,
    /// The pause between two looks at a VM (state, address).
    pub poll_interval: Duration,
    /// How long to wait for a VM in a passing state (`starting`, `stopping`, snapshots) to settle.
    pub settle_timeout: Duration,
    /// How long to look for a host-only interface that `hostonlyif create` failed to report.
    pub relist_timeout: Duration,
    /// Retries of transient VBoxManage errors (session locks, "object is not ready").
    pub retry: RetryPolicy,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            ip_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            settle_timeout: Duration::from_secs(60),
            relist_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// The extradata key that marks a VM as timonel's, with the cluster's name as its value.
pub const CLUSTER_KEY: &str = "timonel/cluster";
/// The start of the description of every VM timonel creates.
pub const DESCRIPTION_PREFIX: &str = "timonel cluster=";
/// The guest property holding the address of the guest's second interface (the host-only NIC).
pub const IP_PROPERTY: &str = "/VirtualBox/GuestInfo/Net/1/V4/IP";
/// The storage controller timonel adds: the disk on port 0, the seed ISO on port 1.
pub const CONTROLLER: &str = "SATA";

/// Nodes as VirtualBox VMs, driven by VBoxManage.
pub struct VirtualBoxDriver {
    pub(crate) vbox: VBoxManage,
    pub(crate) timings: Timings,
    pub(crate) host_network: HostNetworkMode,
    version: OnceCell<VBoxVersion>,
    /// Parallel creates must not each make a host-only interface.
    pub(crate) network_lock: Mutex<()>,
    /// The host's own address on each host-only network seen (`hostonly:vboxnet0`), so `ip`
    /// lists the networks once.
    host_addresses: std::sync::Mutex<HashMap<String, Option<Ipv4Addr>>>,
}

impl VirtualBoxDriver {
    /// Runs `program` (VBoxManage) through `runner`.
    pub fn with_runner(runner: Arc<dyn Runner>, program: PathBuf) -> Self {
        Self {
            vbox: VBoxManage::new(runner, program),
            timings: Timings::default(),
            host_network: HostNetworkMode::Auto,
            version: OnceCell::new(),
            network_lock: Mutex::new(()),
            host_addresses: std::sync::Mutex::default(),
        }
    }

    /// The host's VBoxManage (`TIMONEL_VBOXMANAGE`, `PATH`, the install locations). When none is
    /// found, `probe` says so and how to fix it.
    pub fn new() -> Self {
        let program = locate_vboxmanage().unwrap_or_else(|| {
            PathBuf::from(if cfg!(windows) {
                "VBoxManage.exe"
            } else {
                "VBoxManage"
            })
        });
        Self::with_runner(Arc::new(HostRunner), program)
    }

    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.vbox.retry = timings.retry;
        self.timings = timings;
        self
    }

    pub fn with_host_network(mut self, mode: HostNetworkMode) -> Self {
        self.host_network = mode;
        self
    }

    pub(crate) fn host_addresses(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Option<Ipv4Addr>>> {
        self.host_addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The VBoxManage this driver runs.
    pub fn program(&self) -> &PathBuf {
        self.vbox.program()
    }

    /// Reads and checks the version (once): 6.1 and 7.x are supported.
    async fn read_version(&self) -> Result<VBoxVersion, Availability> {
        let out = match self.vbox.call(["--version"]).await {
            Ok(out) => out,
            Err(e) => {
                return Err(match (&e.spawn, e.kind()) {
                    (Some(timonel_driver::CommandError::NotFound { .. }), _) => {
                        Availability::Unusable {
                            reason: format!("`{}` was not found", self.program().display()),
                            fix: NOT_INSTALLED_FIX.into(),
                        }
                    }
                    (_, Some(ErrorKind::KernelModule)) => Availability::Unusable {
                        reason: "the VirtualBox kernel module is not loaded".into(),
                        fix: KERNEL_MODULE_HINT.into(),
                    },
                    _ => Availability::Unusable {
                        reason: format!(
                            "`VBoxManage --version` failed: {}",
                            e.error
                                .map(|x| x.message)
                                .unwrap_or_else(|| e.stderr.trim().to_string())
                        ),
                        fix: "reinstall VirtualBox".into(),
                    },
                });
            }
        };
        let version = parse_version(&out.stdout).map_err(|e| Availability::Unusable {
            reason: e.to_string(),
            fix: "reinstall VirtualBox".into(),
        })?;
        if version.kernel_module_missing() {
            return Err(Availability::Unusable {
                reason: format!(
                    "VirtualBox {version} is installed but its kernel module (vboxdrv) is not loaded"
                ),
                fix: KERNEL_MODULE_HINT.into(),
            });
        }
        if let Some(reason) = version.unsupported_reason() {
            return Err(Availability::Unusable {
                reason,
                fix: "install VirtualBox 7 from https://www.virtualbox.org/wiki/Downloads (6.1 \
                      works too), or use another driver (`--driver docker`)"
                    .into(),
            });
        }
        Ok(version)
    }

    /// The checked version, read once.
    pub(crate) async fn version(&self) -> Result<VBoxVersion, DriverError> {
        self.version
            .get_or_try_init(|| async {
                self.read_version().await.map_err(|a| match a {
                    Availability::Unusable { reason, fix } => DriverError::NotAvailable {
                        driver: "virtualbox".into(),
                        reason,
                        fix,
                    },
                    Availability::Ready { version, .. } => DriverError::backend("probe", version),
                })
            })
            .await
            .cloned()
    }

    /// `showvminfo --machinereadable`, or `None` when no such VM is registered.
    pub(crate) async fn info(&self, key: &str) -> Result<Option<VmInfo>, DriverError> {
        match self
            .vbox
            .call(["showvminfo", key, "--machinereadable"])
            .await
        {
            Ok(out) => Ok(Some(parse_showvminfo(&out.stdout)?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into_driver(&machine(key), "read the machine's state")),
        }
    }

    /// Like [`info`](Self::info), but a missing VM is a typed `NotFound`.
    pub(crate) async fn existing(&self, key: &str) -> Result<VmInfo, DriverError> {
        self.info(key)
            .await?
            .ok_or_else(|| DriverError::NotFound { what: machine(key) })
    }
}

impl Default for VirtualBoxDriver {
    fn default() -> Self {
        Self::new()
    }
}

/// ``virtualbox machine `name` ``, for messages.
pub(crate) fn machine(name: &str) -> String {
    format!("virtualbox machine `{name}`")
}

#[async_trait]
impl Driver for VirtualBoxDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Virtualbox
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            nodes: NodeKind::Vm,
            needs_admin: false,
            disk_format: Some("vmdk".into()),
        }
    }

    fn as_host_resources(&self) -> Option<&dyn timonel_driver::HostResources> {
        Some(self)
    }

    /// A base VDI is made by `VBoxManage convertfromraw` (crate::disk): no `qemu-img`.
    fn as_disk_images(&self) -> Option<&dyn timonel_driver::DiskImages> {
        Some(self)
    }

    /// Shared folders (`sharedfolder add`), mounted in the guest with `vboxsf`, which the
    /// guest's kernel must have (the Guest Additions, or a kernel that ships the driver).
    fn host_folders(&self) -> timonel_driver::HostFolders {
        timonel_driver::HostFolders::Guest(timonel_driver::GuestMount::vboxsf())
    }

    async fn probe(&self) -> Availability {
        match self.read_version().await {
            Ok(version) => {
                let mut notes = Vec::new();
                if version.newer_than_tested() {
                    notes.push(format!(
                        "VirtualBox {version} is newer than timonel was tested with ({SUPPORTED})"
                    ));
                }
                let shown = format!("VirtualBox {version}");
                let _ = self.version.set(version);
                Availability::Ready {
                    version: shown,
                    notes,
                }
            }
            Err(unusable) => unusable,
        }
    }

    async fn create(&self, spec: &MachineSpec, report: &dyn Reporter) -> Result<(), DriverError> {
        self.create_machine(spec, report).await
    }

    async fn start(&self, name: &MachineName) -> Result<(), DriverError> {
        self.start_machine(name.as_str()).await
    }

    async fn stop(&self, name: &MachineName, how: StopMode) -> Result<(), DriverError> {
        self.stop_machine(name.as_str(), how).await
    }

    async fn pause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.set_paused(name.as_str(), true).await
    }

    async fn unpause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.set_paused(name.as_str(), false).await
    }

    async fn delete(&self, name: &MachineName) -> Result<(), DriverError> {
        match self.info(name.as_str()).await? {
            None => Ok(()),
            Some(info) => self.delete_machine(name.as_str(), &info).await,
        }
    }

    async fn delete_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>, DriverError> {
        self.delete_cluster_machines(cluster.as_str()).await
    }

    /// One `showvminfo`.
    async fn state(&self, name: &MachineName) -> Result<MachineState, DriverError> {
        Ok(match self.info(name.as_str()).await? {
            None => MachineState::NotCreated,
            Some(info) if info.inaccessible() => MachineState::Unknown {
                raw: "inaccessible".into(),
            },
            Some(info) => map_vm_state(info.vm_state()),
        })
    }

    /// One `guestproperty get` once the guest has reported its address.
    async fn ip(&self, name: &MachineName) -> Result<IpAddr, DriverError> {
        self.wait_for_ip(name.as_str(), self.timings.ip_timeout)
            .await
    }

    async fn wait_ip(&self, name: &MachineName, timeout: Duration) -> Result<IpAddr, DriverError> {
        self.wait_for_ip(name.as_str(), timeout).await
    }

    async fn endpoint(&self, name: &MachineName, port: u16) -> Result<SocketAddr, DriverError> {
        self.endpoint_of(name.as_str(), port).await
    }
}

/// The hypervisor runs here: this machine's CPUs and memory.
#[async_trait]
impl timonel_driver::HostResources for VirtualBoxDriver {
    async fn host_resources(&self) -> Result<timonel_driver::HostCapacity, DriverError> {
        Ok(timonel_driver::local_host(
            "this machine (the VirtualBox host)",
        ))
    }
}
