//! The KVM driver on Linux, through libvirt.

mod conn;
mod network;
mod node;
mod pause;
mod probe;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{
    poll_until, Availability, Capabilities, ClusterName, Cmd, Driver, DriverError, DriverKind,
    HostRunner, MachineName, MachineSpec, MachineState, NodeKind, Reporter, Runner, StopMode,
};
use virt::sys;

use self::conn::{domain, find_domain, lv, SharedConnect, LIBVIRT_FIX};
use crate::net::domain_name;
use crate::options::{env_accel, requested_accel, resolve_accel, Accel};
use crate::xml::{parse_interfaces, parse_node_metadata, NodeMetadata};

/// Where a node's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    /// The network's DHCP leases (then ARP), polled until the guest has taken its address.
    Lease,
    /// The static DHCP entry, without asking the guest (libvirt's test driver has no leases).
    Static,
}

/// The KVM driver.
pub struct KvmDriver {
    conn: SharedConnect,
    runner: Arc<dyn Runner>,
    accel: Option<Accel>,
    ip_source: IpSource,
    ip_timeout: Duration,
    /// Serializes network changes (address reservations) of this process.
    net_lock: tokio::sync::Mutex<()>,
    /// What libvirt's capabilities say, read once per process: libvirtd answers from its
    /// cache in milliseconds, but re-probes QEMU (seconds: 8 s on the development machines,
    /// whose nested KVM hangs) whenever it deems its cache stale.
    caps: tokio::sync::OnceCell<probe::CapsFacts>,
}

impl std::fmt::Debug for KvmDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmDriver")
            .field("uri", &self.conn.uri())
            .field("accel", &self.accel)
            .finish()
    }
}

impl KvmDriver {
    /// A driver for the libvirt connection `uri` (`qemu:///system`, `qemu:///session`,
    /// `test:///default`). Nothing is opened until the first call.
    pub fn new(uri: impl Into<String>) -> Self {
        let uri = uri.into();
        // libvirt prints every error to stderr by default; timonel reports them itself.
        virt::error::clear_error_callback();
        Self {
            ip_source: if uri.starts_with("test:") {
                IpSource::Static
            } else {
                IpSource::Lease
            },
            conn: SharedConnect::new(&uri),
            runner: Arc::new(HostRunner),
            accel: None,
            ip_timeout: Duration::from_secs(180),
            net_lock: tokio::sync::Mutex::new(()),
            caps: tokio::sync::OnceCell::new(),
        }
    }

    /// The capabilities' facts, read from libvirt on the first call of this process.
    pub(crate) async fn caps_facts(&self) -> Result<probe::CapsFacts, DriverError> {
        self.caps
            .get_or_try_init(|| async {
                self.conn
                    .run(|c| {
                        let caps = c
                            .capabilities()
                            .map_err(|e| lv("reading capabilities", e))?;
                        Ok(probe::parse_caps(&caps))
                    })
                    .await
            })
            .await
            .copied()
    }

    pub fn uri(&self) -> &str {
        self.conn.uri()
    }

    /// The runner for host commands (`qemu-img`).
    pub fn with_runner(mut self, runner: Arc<dyn Runner>) -> Self {
        self.runner = runner;
        self
    }

    /// The accelerator when a spec's `kvm.accel` does not say (overrides the environment).
    pub fn with_accel(mut self, accel: Accel) -> Self {
        self.accel = Some(accel);
        self
    }

    pub fn with_ip_source(mut self, source: IpSource) -> Self {
        self.ip_source = source;
        self
    }

    /// How long `ip` waits for the guest's DHCP lease.
    pub fn with_ip_timeout(mut self, timeout: Duration) -> Self {
        self.ip_timeout = timeout;
        self
    }

    fn accel_for(&self, spec: Option<&MachineSpec>) -> Result<Accel, DriverError> {
        let (env, force) = env_accel();
        requested_accel(
            spec.and_then(|s| s.options.get(crate::options::OPT_ACCEL).map(String::as_str)),
            self.accel,
            env.as_deref(),
            force.as_deref(),
        )
        .map_err(|message| DriverError::Parse {
            what: format!("`{}`", crate::options::OPT_ACCEL),
            message,
        })
    }

    /// The domain's timonel metadata and its (MAC, network).
    async fn describe(&self, name: &str) -> Result<(NodeMetadata, String, String), DriverError> {
        let dom_name = name.to_string();
        self.conn
            .run(move |c| {
                let dom = domain(c, &dom_name)?;
                let xml = dom.xml_desc(0).map_err(|e| lv("reading the domain", e))?;
                let meta = parse_node_metadata(&xml)
                    .map_err(|e| DriverError::backend("reading the domain", e))?
                    .ok_or_else(|| DriverError::Backend {
                        op: format!("using domain `{dom_name}`"),
                        message: "it was not created by timonel".to_string(),
                        hint: Some(
                            "pick another node name, or remove the domain with `virsh undefine`"
                                .to_string(),
                        ),
                    })?;
                let (mac, net) = parse_interfaces(&xml)
                    .map_err(|e| DriverError::backend("reading the domain", e))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| DriverError::backend("reading the domain", "it has no NIC"))?;
                Ok((meta, mac, net))
            })
            .await
    }

    async fn raw_state(&self, dom_name: &str) -> Result<MachineState, DriverError> {
        let dom_name = dom_name.to_string();
        self.conn
            .run(move |c| match find_domain(c, &dom_name)? {
                None => Ok(MachineState::NotCreated),
                Some(d) => pause::state_of(&d),
            })
            .await
    }

    /// One look at the guest's address: leases first, then the ARP table.
    async fn try_ip(
        &self,
        dom_name: &str,
        mac: &str,
    ) -> Result<Result<IpAddr, String>, DriverError> {
        let (dom_name, mac) = (dom_name.to_string(), mac.to_string());
        self.conn
            .run(move |c| {
                let dom = domain(c, &dom_name)?;
                if !dom.is_active().map_err(|e| lv("reading the domain", e))? {
                    return Err(DriverError::InvalidState {
                        what: format!("machine `{dom_name}`"),
                        state: "stopped".to_string(),
                        action: "ip".to_string(),
                    });
                }
                for source in [
                    sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
                    sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
                ] {
                    let Ok(ifaces) = dom.interface_addresses(source, 0) else {
                        continue;
                    };
                    let found = ifaces
                        .iter()
                        .filter(|i| {
                            i.hwaddr
                                .as_deref()
                                .is_some_and(|h| h.eq_ignore_ascii_case(&mac))
                        })
                        .flat_map(|i| i.addrs.iter())
                        .filter(|a| a.typed == i64::from(sys::VIR_IP_ADDR_TYPE_IPV4))
                        .find_map(|a| a.addr.parse::<IpAddr>().ok());
                    if let Some(ip) = found {
                        return Ok(Ok(ip));
                    }
                }
                Ok(Err("no DHCP lease or ARP entry yet".to_string()))
            })
            .await
    }
}

#[async_trait]
impl Driver for KvmDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Kvm
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            nodes: NodeKind::Vm,
            needs_admin: false,
            disk_format: Some("qcow2".to_string()),
        }
    }

    fn as_host_resources(&self) -> Option<&dyn timonel_driver::HostResources> {
        Some(self)
    }

    /// virtio-9p shares (`<filesystem>`), mounted by the guest: they work under TCG too, and
    /// need no daemon beside QEMU (virtiofs would need virtiofsd and shared guest memory).
    fn host_folders(&self) -> timonel_driver::HostFolders {
        timonel_driver::HostFolders::Guest(timonel_driver::GuestMount::virtio_9p())
    }

    async fn probe(&self) -> Availability {
        let facts = async {
            let version = self
                .conn
                .run(|c| {
                    c.lib_version()
                        .map_err(|e| lv("reading the libvirt version", e))
                })
                .await?;
            Ok::<_, DriverError>((version, self.caps_facts().await?))
        }
        .await;
        let (version, facts) = match facts {
            Ok(f) => f,
            Err(DriverError::NotAvailable { reason, fix, .. }) => {
                return Availability::Unusable { reason, fix }
            }
            Err(e) => {
                return Availability::Unusable {
                    reason: e.to_string(),
                    fix: LIBVIRT_FIX.to_string(),
                }
            }
        };
        let version = format!(
            "libvirt {}.{}.{}",
            version / 1_000_000,
            (version / 1000) % 1000,
            version % 1000
        );
        let mut notes = Vec::new();
        if !self.conn.is_test() {
            if !facts.qemu_x86_64 {
                return Availability::Unusable {
                    reason: "libvirt offers no x86_64 QEMU emulator".to_string(),
                    fix:
                        "install QEMU (`sudo apt-get install qemu-system-x86`) and restart libvirtd"
                            .to_string(),
                };
            }
            match self
                .runner
                .run(
                    &Cmd::new("qemu-img")
                        .arg("--version")
                        .timeout(Duration::from_secs(20)),
                )
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    return Availability::Unusable {
                        reason: format!("`qemu-img` is needed for the node disks: {e}"),
                        fix: "install it (`sudo apt-get install qemu-utils`)".to_string(),
                    }
                }
            }
            let kvm_chosen = match self.accel_for(None).map(|a| resolve_accel(a, facts.kvm)) {
                Ok(Ok((t, note))) => {
                    notes.extend(note.map(str::to_string));
                    t == crate::xml::DomainType::Kvm
                }
                Ok(Err(reason)) | Err(DriverError::Parse { message: reason, .. }) => {
                    return Availability::Unusable {
                        reason,
                        fix: format!(
                            "set {}=tcg to use software emulation, or fix /dev/kvm access (add yourself to the `kvm` group)",
                            crate::options::ENV_ACCEL
                        ),
                    }
                }
                Err(e) => {
                    return Availability::Unusable {
                        reason: e.to_string(),
                        fix: String::new(),
                    }
                }
            };
            // Not when TCG is asked for already.
            if kvm_chosen && probe::running_under_hypervisor() {
                notes.push(format!(
                    "running inside a VM: if nodes hang at boot (nested KVM), set {}=tcg",
                    crate::options::ENV_ACCEL
                ));
            }
        }
        Availability::Ready { version, notes }
    }

    async fn create(&self, spec: &MachineSpec, report: &dyn Reporter) -> Result<(), DriverError> {
        node::create(self, spec, report).await
    }

    async fn start(&self, name: &MachineName) -> Result<(), DriverError> {
        let dom_name = domain_name(name.as_str());
        let (_, _, net_name) = self.describe(&dom_name).await?;
        self.conn
            .run(move |c| {
                let dom = domain(c, &dom_name)?;
                if let Some(net) = conn::find_network(c, &net_name)? {
                    network::start_network(&net, &net_name)?;
                } else {
                    return Err(DriverError::NotFound {
                        what: format!("network `{net_name}` of machine `{dom_name}`"),
                    });
                }
                if !dom.is_active().map_err(|e| lv("reading the domain", e))? {
                    dom.create()
                        .map_err(|e| lv(&format!("starting `{dom_name}`"), e))?;
                }
                Ok(())
            })
            .await
    }

    async fn stop(&self, name: &MachineName, how: StopMode) -> Result<(), DriverError> {
        node::stop(self, &domain_name(name.as_str()), how).await
    }

    async fn pause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.set_paused(&domain_name(name.as_str()), true).await
    }

    async fn unpause(&self, name: &MachineName) -> Result<(), DriverError> {
        self.set_paused(&domain_name(name.as_str()), false).await
    }

    async fn delete(&self, name: &MachineName) -> Result<(), DriverError> {
        node::delete(self, &domain_name(name.as_str()))
            .await
            .map(|_| ())
    }

    async fn delete_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>, DriverError> {
        node::delete_cluster(self, cluster.as_str()).await
    }

    async fn state(&self, name: &MachineName) -> Result<MachineState, DriverError> {
        self.raw_state(&domain_name(name.as_str())).await
    }

    async fn ip(&self, name: &MachineName) -> Result<IpAddr, DriverError> {
        let dom_name = domain_name(name.as_str());
        let state = self.raw_state(&dom_name).await?;
        match state {
            MachineState::NotCreated => {
                return Err(DriverError::NotFound {
                    what: format!("machine `{dom_name}`"),
                })
            }
            MachineState::Running => {}
            other => {
                return Err(DriverError::InvalidState {
                    what: format!("machine `{dom_name}`"),
                    state: other.to_string(),
                    action: "ip".to_string(),
                })
            }
        }
        let (_, mac, net_name) = self.describe(&dom_name).await?;
        if self.ip_source == IpSource::Static {
            let mac2 = mac.clone();
            return self
                .conn
                .run(move |c| {
                    let net =
                        conn::find_network(c, &net_name)?.ok_or_else(|| DriverError::NotFound {
                            what: format!("network `{net_name}`"),
                        })?;
                    network::dhcp_host_ip(&net, &mac2)?
                        .map(IpAddr::V4)
                        .ok_or_else(|| DriverError::NotFound {
                            what: format!("a DHCP entry for `{mac2}`"),
                        })
                })
                .await;
        }
        let what = format!("the IP address of `{dom_name}`");
        poll_until(&what, self.ip_timeout, Duration::from_secs(2), || {
            self.try_ip(&dom_name, &mac)
        })
        .await
        .map_err(DriverError::from)
    }

    async fn endpoint(&self, name: &MachineName, port: u16) -> Result<SocketAddr, DriverError> {
        Ok(SocketAddr::new(self.ip(name).await?, port))
    }
}

/// The hypervisor runs here: this machine's CPUs and memory.
#[async_trait]
impl timonel_driver::HostResources for KvmDriver {
    async fn host_resources(&self) -> Result<timonel_driver::HostCapacity, DriverError> {
        Ok(timonel_driver::local_host(
            "this machine (the libvirt host)",
        ))
    }
}
