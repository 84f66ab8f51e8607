//! start, stop, delete, ip, endpoint, delete_cluster.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use timonel_driver::{poll_until, DriverError, MachineState, StopMode, WaitError};

use crate::create::cluster_of;
use crate::driver::{machine, VirtualBoxDriver, CLUSTER_KEY, CONTROLLER, IP_PROPERTY};
use crate::network::{list_hostonly_ifs, list_hostonly_nets};
use crate::parse::{parse_guestproperty, parse_human_nat_rules, parse_list_vms, NatRule, VmInfo};
use crate::state::{classify_vm_state, map_vm_state, VmStateKind};

fn kind_of(info: &VmInfo) -> VmStateKind {
    classify_vm_state(info.vm_state())
}

impl VirtualBoxDriver {
    /// Waits until the VM leaves passing states (`starting`, `stopping`, snapshot work).
    async fn settled(&self, name: &str, timeout: Duration) -> Result<VmInfo, DriverError> {
        poll_until(
            &format!("{} to settle", machine(name)),
            timeout,
            self.timings.poll_interval,
            || async {
                let info = self.existing(name).await?;
                Ok(match kind_of(&info) {
                    VmStateKind::Starting | VmStateKind::Stopping | VmStateKind::Transitional => {
                        Err(info.vm_state().unwrap_or("").to_string())
                    }
                    _ => Ok(info),
                })
            },
        )
        .await
        .map_err(DriverError::from)
    }

    async fn controlvm(&self, name: &str, action: &str) -> Result<(), DriverError> {
        self.vbox
            .call(["controlvm", name, action])
            .await
            .map(|_| ())
            .map_err(|e| e.into_driver(&machine(name), action))
    }

    /// `controlvm poweroff`; a VM already off is fine.
    async fn power_off(&self, name: &str) -> Result<(), DriverError> {
        match self.controlvm(name, "poweroff").await {
            Err(DriverError::InvalidState { .. }) => Ok(()),
            other => other,
        }
    }

    pub(crate) async fn start_machine(&self, name: &str) -> Result<(), DriverError> {
        let mut info = self.existing(name).await?;
        loop {
            match kind_of(&info) {
                VmStateKind::Running => return Ok(()),
                VmStateKind::Paused => return self.controlvm(name, "resume").await,
                VmStateKind::Off | VmStateKind::Saved => {
                    if kind_of(&info) == VmStateKind::Off {
                        self.forget_last_address(name).await;
                    }
                    return self
                        .vbox
                        .call(["startvm", name, "--type", "headless"])
                        .await
                        .map(|_| ())
                        .map_err(|e| e.into_driver(&machine(name), "start"));
                }
                VmStateKind::Starting | VmStateKind::Stopping | VmStateKind::Transitional => {
                    info = self.settled(name, self.timings.settle_timeout).await?;
                }
                VmStateKind::Error | VmStateKind::Unknown => {
                    return Err(DriverError::InvalidState {
                        what: machine(name),
                        state: map_vm_state(info.vm_state()).to_string(),
                        action: "start".into(),
                    })
                }
            }
        }
    }

    /// Deletes the address the guest reported in its last run (`guestproperty set` without a
    /// value), before a cold boot: VirtualBox keeps it, and the restarted guest may get another
    /// lease, so until its VBoxService writes the new one the old value would send timonel to an
    /// address that is no longer this node's. A VM resumed from a saved state keeps its lease and
    /// its property. A failure here only costs that protection, so it is logged, not fatal.
    async fn forget_last_address(&self, name: &str) {
        if let Err(e) = self
            .vbox
            .call(["guestproperty", "set", name, IP_PROPERTY])
            .await
        {
            let e = e.into_driver(&machine(name), "clear its last address");
            tracing::warn!(
                machine = name,
                "could not clear the stale {IP_PROPERTY}: {e}"
            );
        }
    }

    pub(crate) async fn stop_machine(&self, name: &str, how: StopMode) -> Result<(), DriverError> {
        let mut info = self.existing(name).await?;
        loop {
            match (kind_of(&info), how) {
                (VmStateKind::Off, _) => return Ok(()),
                (VmStateKind::Saved, StopMode::Force) => {
                    return self
                        .vbox
                        .call(["discardstate", name])
                        .await
                        .map(|_| ())
                        .map_err(|e| e.into_driver(&machine(name), "discard the saved state"))
                }
                // Not running already; the saved state is kept for the next start.
                (VmStateKind::Saved, StopMode::Graceful { .. }) => return Ok(()),
                (VmStateKind::Starting | VmStateKind::Stopping | VmStateKind::Transitional, _) => {
                    info = self.settled(name, self.timings.settle_timeout).await?;
                }
                (_, StopMode::Force) => return self.power_off(name).await,
                (VmStateKind::Paused, StopMode::Graceful { .. }) => {
                    // A paused VM refuses the power button.
                    self.controlvm(name, "resume").await?;
                    info = self.existing(name).await?;
                }
                (VmStateKind::Running, StopMode::Graceful { timeout }) => {
                    return self.acpi_shutdown(name, timeout).await;
                }
                (VmStateKind::Error | VmStateKind::Unknown, _) => {
                    return self.power_off(name).await
                }
            }
        }
    }

    /// The power button, then polling until off; past the deadline, `poweroff` with a warning.
    /// A VM that is already stopping or off by the time the button is pressed (the guest shut
    /// down between the look and the press) refuses the button with `Invalid machine state:
    /// Stopping` or `Machine '…' is not currently running`: then it is only waited for.
    async fn acpi_shutdown(&self, name: &str, timeout: Duration) -> Result<(), DriverError> {
        match self.controlvm(name, "acpipowerbutton").await {
            Ok(()) => {}
            Err(DriverError::InvalidState { state, .. }) => {
                tracing::debug!(machine = name, %state, "already shutting down; waiting for it");
            }
            Err(e) => return Err(e),
        }
        let waited = poll_until(
            &format!("{} to shut down", machine(name)),
            timeout,
            self.timings.poll_interval,
            || async {
                let info = self.existing(name).await?;
                Ok(match kind_of(&info) {
                    VmStateKind::Off | VmStateKind::Saved => Ok(()),
                    _ => Err(info.vm_state().unwrap_or("").to_string()),
                })
            },
        )
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(WaitError::Timeout { last, .. }) => {
                tracing::warn!(
                    machine = name,
                    state = %last,
                    "the guest ignored the ACPI power button for {timeout:?}; powering it off"
                );
                self.power_off(name).await
            }
            Err(WaitError::Failed(e)) => Err(e),
        }
    }

    /// Powers off, unregisters with `--delete` (disk, settings, logs), then removes the seed
    /// copy and the VM's folder. The NAT rules go with the VM; host-only interfaces stay.
    pub(crate) async fn delete_machine(&self, key: &str, info: &VmInfo) -> Result<(), DriverError> {
        let name = info.name().unwrap_or(key).to_string();
        if !info.inaccessible() && cluster_of(info).is_none() {
            return Err(DriverError::Backend {
                op: format!("delete {}", machine(&name)),
                message: "it was not created by timonel".into(),
                hint: Some("delete it in VirtualBox yourself, or use another profile name".into()),
            });
        }
        if !matches!(kind_of(info), VmStateKind::Off | VmStateKind::Saved) {
            self.power_off(key).await?;
        }
        match self.vbox.call(["unregistervm", key, "--delete"]).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into_driver(&machine(&name), "delete")),
        }
        let seed = info.medium(CONTROLLER, 1, 0).map(str::to_string);
        let disk = info.medium(CONTROLLER, 0, 0).map(str::to_string);
        if let Some(seed) = seed.filter(|s| file_named(s, &format!("{name}-seed.iso"))) {
            let _ = self.vbox.call(["closemedium", "dvd", &seed]).await;
            remove_file(Path::new(&seed)).await?;
        }
        if let Some(disk) = disk.filter(|d| file_named(d, &format!("{name}-disk.vdi"))) {
            remove_file(Path::new(&disk)).await?;
        }
        if let Some(folder) = info.cfg_file().and_then(|c| Path::new(c).parent()) {
            if folder.file_name().is_some_and(|f| f == name.as_str()) && folder.exists() {
                tokio::fs::remove_dir_all(folder).await.map_err(|e| {
                    DriverError::io(format!("cannot remove `{}`", folder.display()), e)
                })?;
            }
        }
        Ok(())
    }

    pub(crate) async fn delete_cluster_machines(
        &self,
        cluster: &str,
    ) -> Result<Vec<String>, DriverError> {
        let out = self
            .vbox
            .call(["list", "vms"])
            .await
            .map_err(|e| e.into_driver("virtualbox machines", "list"))?;
        let mut removed = Vec::new();
        for vm in parse_list_vms(&out.stdout)? {
            let marker = match self
                .vbox
                .call(["getextradata", vm.uuid.as_str(), CLUSTER_KEY])
                .await
            {
                Ok(out) => parse_guestproperty(&out.stdout)?,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into_driver(&machine(&vm.name), "read its marker")),
            };
            if marker.as_deref() != Some(cluster) {
                continue;
            }
            let Some(info) = self.info(&vm.uuid).await? else {
                continue;
            };
            self.delete_machine(&vm.uuid, &info).await?;
            removed.push(format!("deleted {}", machine(&vm.name)));
        }
        Ok(removed)
    }

    /// Polls the VM's state, then `guestproperty get <vm> .../Net/1/V4/IP`, until the guest
    /// reports its host-only address, up to `timeout`.
    ///
    /// The state comes first because VirtualBox keeps guest properties after the VM powers off:
    /// a stopped VM still "has" the address of its last run, which is nobody's address now. A
    /// property equal to the host's own address on the host-only network is not the guest's
    /// either, and is waited past.
    pub(crate) async fn wait_for_ip(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<IpAddr, DriverError> {
        poll_until(
            &format!("the address of {}", machine(name)),
            timeout,
            self.timings.poll_interval,
            || async {
                let info = self.existing(name).await?;
                let state = info.vm_state().unwrap_or("").to_string();
                match kind_of(&info) {
                    VmStateKind::Running => {}
                    VmStateKind::Starting => return Ok(Err(format!("{state}, no address yet"))),
                    _ => {
                        return Err(DriverError::InvalidState {
                            what: machine(name),
                            state: map_vm_state(info.vm_state()).to_string(),
                            action: "reading its address".into(),
                        })
                    }
                }
                let seen = match self
                    .vbox
                    .call(["guestproperty", "get", name, IP_PROPERTY])
                    .await
                {
                    Ok(out) => parse_guestproperty(&out.stdout)?,
                    Err(e) => return Err(e.into_driver(&machine(name), "read its address")),
                };
                let reported = seen
                    .as_deref()
                    .and_then(|v| v.trim().parse::<Ipv4Addr>().ok())
                    .filter(|ip| !ip.is_unspecified());
                let Some(ip) = reported else {
                    return Ok(Err(format!(
                        "{state}, no address yet ({})",
                        seen.unwrap_or_else(|| "No value set!".into())
                    )));
                };
                if self.host_side_address(&info).await? == Some(ip) {
                    return Ok(Err(format!(
                        "{state}; {IP_PROPERTY} is {ip}, the host's own address on the host-only \
                         network, not the guest's"
                    )));
                }
                Ok(Ok(IpAddr::V4(ip)))
            },
        )
        .await
        .map_err(DriverError::from)
    }

    /// The host's own address on the host-only network of NIC 2, looked up once per network
    /// (`list hostonlyifs`, or `list hostonlynets` where the host takes the network's first
    /// address).
    async fn host_side_address(&self, info: &VmInfo) -> Result<Option<Ipv4Addr>, DriverError> {
        let Some(nic) = info.nics.get(&2) else {
            return Ok(None);
        };
        let Some(network) = nic.attachment.clone() else {
            return Ok(None);
        };
        let key = format!("{}:{network}", nic.kind);
        if let Some(known) = self.host_addresses().get(&key) {
            return Ok(*known);
        }
        let found = match nic.kind.as_str() {
            "hostonly" => list_hostonly_ifs(&self.vbox)
                .await?
                .into_iter()
                .find(|i| i.name == network)
                .and_then(|i| i.ip),
            "hostonlynetwork" => list_hostonly_nets(&self.vbox)
                .await?
                .into_iter()
                .find(|n| n.name == network)
                .and_then(|n| n.host_address()),
            _ => None,
        };
        self.host_addresses().insert(key, found);
        Ok(found)
    }

    /// 127.0.0.1:<host port> for a forwarded port, else `<ip>:<port>`.
    pub(crate) async fn endpoint_of(
        &self,
        name: &str,
        port: u16,
    ) -> Result<SocketAddr, DriverError> {
        let info = self.existing(name).await?;
        let rules = self.nat_rules(name, &info).await?;
        let forwarded = rules
            .iter()
            .find(|r| r.guest_port == port && r.protocol.eq_ignore_ascii_case("tcp"));
        if let Some(rule) = forwarded {
            let host: IpAddr = rule
                .host_ip
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            return Ok(SocketAddr::new(host, rule.host_port));
        }
        if map_vm_state(info.vm_state()) != MachineState::Running {
            return Err(DriverError::InvalidState {
                what: machine(name),
                state: map_vm_state(info.vm_state()).to_string(),
                action: format!("reaching port {port} (not forwarded)"),
            });
        }
        Ok(SocketAddr::new(
            self.wait_for_ip(name, self.timings.ip_timeout).await?,
            port,
        ))
    }
}

impl VirtualBoxDriver {
    /// The port forwards of NIC 1. VirtualBox 7.0.0 leaves the `Forwarding(i)` lines out of
    /// `showvminfo --machinereadable`; when a NAT adapter shows none, they are read from the
    /// human-readable `showvminfo` (`NIC 1 Rule(0):   name = …, protocol = …, …`), which that
    /// release still prints.
    async fn nat_rules(&self, name: &str, info: &VmInfo) -> Result<Vec<NatRule>, DriverError> {
        let Some(nat) = info.nics.get(&1).filter(|n| n.kind == "nat") else {
            return Ok(Vec::new());
        };
        if !nat.forwarding.is_empty() {
            return Ok(nat.forwarding.clone());
        }
        let out = self
            .vbox
            .call(["showvminfo", name])
            .await
            .map_err(|e| e.into_driver(&machine(name), "read its port forwards"))?;
        Ok(parse_human_nat_rules(&out.stdout)
            .remove(&1)
            .unwrap_or_default())
    }
}

fn file_named(path: &str, name: &str) -> bool {
    Path::new(path).file_name().is_some_and(|f| f == name)
}

async fn remove_file(path: &Path) -> Result<(), DriverError> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DriverError::io(
            format!("cannot remove `{}`", path.display()),
            e,
        )),
        _ => Ok(()),
    }
}
