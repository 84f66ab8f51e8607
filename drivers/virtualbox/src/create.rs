//! `create`: a per-node disk cloned from the base image, the seed ISO, the VM with NAT port
//! forwards on NIC 1 and the host-only network on NIC 2, marked as timonel's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use timonel_driver::{DriverError, MachineSpec, NodeRole, PortMapping, Reporter};

use crate::driver::{machine, VirtualBoxDriver, CLUSTER_KEY, CONTROLLER, DESCRIPTION_PREFIX};
use crate::error::ErrorKind;
use crate::network::{ensure_host_network, HostNetwork};
use crate::parse::VmInfo;
use crate::vboxmanage::Spelling;

/// Copying a large disk takes a while.
const DISK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_CPUS: u32 = 2;
const DEFAULT_MEMORY_MIB: u64 = 2048;

/// The CPU count for VirtualBox: whole CPUs, 1 to 32.
pub fn cpus_for(spec: &MachineSpec) -> u32 {
    spec.cpus
        .filter(|c| c.is_finite() && *c > 0.0)
        .map_or(DEFAULT_CPUS, |c| c.ceil() as u32)
        .clamp(1, 32)
}

pub fn memory_for(spec: &MachineSpec) -> u64 {
    spec.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB)
}

/// The description marking a VM as timonel's.
pub fn description_for(spec: &MachineSpec) -> String {
    format!(
        "{DESCRIPTION_PREFIX}{}\nrole={} index={}\ncreated by timonel; `timonel delete -p {}` removes it",
        spec.cluster, spec.role, spec.index, spec.cluster
    )
}

/// The cluster a VM's description names, if timonel made it.
pub fn cluster_of(info: &VmInfo) -> Option<&str> {
    let first = info.description()?.lines().next()?;
    first.strip_prefix(DESCRIPTION_PREFIX)
}

/// `name,proto,hostip,hostport,guestip,guestport`, always on a host address (never all
/// interfaces: 0.0.0.0 becomes 127.0.0.1).
pub fn nat_rule(p: &PortMapping) -> String {
    let host_ip = if p.host_ip.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        p.host_ip.to_string()
    };
    let proto = if p.protocol.is_empty() {
        "tcp"
    } else {
        p.protocol.as_str()
    };
    format!(
        "{proto}-{}-{},{proto},{host_ip},{},,{}",
        p.node_port, p.host_port, p.host_port, p.node_port
    )
}

/// The `modifyvm` arguments that configure a new VM, spelled for the VirtualBox version.
pub fn modifyvm_args(spec: &MachineSpec, spelling: Spelling, network: &HostNetwork) -> Vec<String> {
    let s = spelling;
    let mut a: Vec<String> = vec!["modifyvm".into(), spec.name.to_string()];
    let mut push = |k: &str, v: &str| {
        a.push(k.to_string());
        a.push(v.to_string());
    };
    push(s.pick("--ostype", "--os-type"), "Linux_64");
    push("--cpus", &cpus_for(spec).to_string());
    push("--memory", &memory_for(spec).to_string());
    push("--acpi", "on");
    push("--ioapic", "on");
    push(s.pick("--rtcuseutc", "--rtc-use-utc"), "on");
    push("--boot1", "disk");
    push("--boot2", "dvd");
    push("--boot3", "none");
    push("--boot4", "none");
    push("--description", &description_for(spec));
    push("--nic1", "nat");
    push(&s.nic("--nictype", "--nic-type", 1), "virtio");
    push(&s.nic("--cableconnected", "--cable-connected", 1), "on");
    if s.kebab {
        // 7.x: the guest reaches the host's loopback through 10.0.2.2 only with this.
        push("--nat-localhostreachable1", "on");
    }
    for p in &spec.ports {
        push(&s.nic("--natpf", "--nat-pf", 1), &nat_rule(p));
    }
    match network {
        HostNetwork::Interface(name) => {
            push("--nic2", "hostonly");
            push(&s.nic("--hostonlyadapter", "--host-only-adapter", 2), name);
        }
        HostNetwork::Network(name) => {
            push("--nic2", "hostonlynet");
            push("--host-only-net2", name);
        }
    }
    push(&s.nic("--nictype", "--nic-type", 2), "virtio");
    push(&s.nic("--cableconnected", "--cable-connected", 2), "on");
    a
}

/// `sharedfolder add` for each host folder, named as the guest mounts it (`timonel<i>`),
/// persistent, not auto-mounted (the guest mounts it itself, at the node folder, from
/// /etc/fstab); `--readonly` makes VirtualBox refuse the guest's writes.
pub fn shared_folder_args(spec: &MachineSpec) -> Vec<Vec<String>> {
    spec.mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut a: Vec<String> = [
                "sharedfolder",
                "add",
                spec.name.as_str(),
                "--name",
                &timonel_driver::Mount::tag(i),
                "--hostpath",
                &m.host.to_string_lossy(),
            ]
            .map(String::from)
            .to_vec();
            if m.read_only {
                a.push("--readonly".into());
            }
            a
        })
        .collect()
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> DriverError {
    move |e| DriverError::io(what, e)
}

impl VirtualBoxDriver {
    pub(crate) async fn create_machine(
        &self,
        spec: &MachineSpec,
        report: &dyn Reporter,
    ) -> Result<(), DriverError> {
        let name = spec.name.as_str();
        let what = machine(name);
        let disk = spec.vm_disk.as_ref().ok_or_else(|| {
            DriverError::backend(
                format!("create {what}"),
                "a VirtualBox node needs a VM disk (base image and seed ISO)",
            )
        })?;
        if !spec.ports.iter().any(|p| p.node_port == 22) {
            return Err(DriverError::backend(
                format!("create {what}"),
                "the spec forwards no host port to ssh (node port 22)",
            ));
        }
        if spec.role == NodeRole::Server && !spec.ports.iter().any(|p| p.node_port == 6443) {
            report.warn(&format!(
                "{what} forwards no host port to the API server (6443)"
            ));
        }
        if let Some(info) = self.info(name).await? {
            return check_existing(spec, &info);
        }
        let version = self.version().await?;
        let spelling = Spelling {
            kebab: version.kebab_options(),
        };
        let network = {
            let _only_one = self.network_lock.lock().await;
            ensure_host_network(
                &self.vbox,
                &version,
                self.host_network,
                self.timings.relist_timeout,
                self.timings.poll_interval,
                report,
            )
            .await?
        };
        tokio::fs::create_dir_all(&disk.state_dir)
            .await
            .map_err(io(format!("cannot create `{}`", disk.state_dir.display())))?;
        let disk_path = disk.state_dir.join(format!("{name}-disk.vdi"));
        let seed_path = disk.state_dir.join(format!("{name}-seed.iso"));
        report.step(&format!("creating the disk of {what}"));
        self.prepare_disk(&disk.base_image, &disk_path, disk.size_mib)
            .await?;
        self.prepare_seed(&disk.seed_iso, &seed_path).await?;
        self.register(name, &disk.state_dir).await?;
        if let Err(e) = self
            .configure(spec, spelling, &network, &disk_path, &seed_path)
            .await
        {
            // Leave nothing half-made behind: the next create starts clean.
            let _ = self.vbox.call(["unregistervm", name, "--delete"]).await;
            return Err(e);
        }
        Ok(())
    }

    async fn prepare_disk(
        &self,
        base: &Path,
        disk: &Path,
        size_mib: u64,
    ) -> Result<(), DriverError> {
        let disk_s = disk.to_string_lossy().to_string();
        if disk.exists() {
            // A leftover of an interrupted create: drop it from the media registry too.
            let _ = self
                .vbox
                .call(["closemedium", "disk", &disk_s, "--delete"])
                .await;
            if disk.exists() {
                tokio::fs::remove_file(disk)
                    .await
                    .map_err(io(format!("cannot remove `{disk_s}`")))?;
            }
        }
        let base_s = base.to_string_lossy().to_string();
        let clone = self
            .vbox
            .cmd(["clonemedium", "disk", &base_s, &disk_s, "--format", "VDI"])
            .timeout(DISK_TIMEOUT);
        self.vbox
            .run(clone)
            .await
            .map_err(|e| e.into_driver(&format!("disk `{disk_s}`"), "clone the base image"))?;
        if size_mib > 0 {
            let resize = self
                .vbox
                .cmd([
                    "modifymedium",
                    "disk",
                    &disk_s,
                    "--resize",
                    &size_mib.to_string(),
                ])
                .timeout(DISK_TIMEOUT);
            self.vbox
                .run(resize)
                .await
                .map_err(|e| e.into_driver(&format!("disk `{disk_s}`"), "resize the disk"))?;
        }
        Ok(())
    }

    async fn prepare_seed(&self, source: &Path, seed: &Path) -> Result<(), DriverError> {
        if seed.exists() {
            let seed_s = seed.to_string_lossy().to_string();
            let _ = self.vbox.call(["closemedium", "dvd", &seed_s]).await;
        }
        tokio::fs::copy(source, seed).await.map_err(io(format!(
            "cannot copy the seed ISO `{}` to `{}`",
            source.display(),
            seed.display()
        )))?;
        Ok(())
    }

    /// `createvm --register`; a stale settings file of an unregistered VM is removed once.
    async fn register(&self, name: &str, base: &Path) -> Result<(), DriverError> {
        let base_s = base.to_string_lossy().to_string();
        let args = [
            "createvm",
            "--name",
            name,
            "--basefolder",
            &base_s,
            "--register",
        ];
        match self.vbox.call(args).await {
            Ok(_) => Ok(()),
            Err(e) if e.is(&ErrorKind::AlreadyExists) => {
                let stale: PathBuf = base.join(name).join(format!("{name}.vbox"));
                tracing::warn!(file = %stale.display(), "removing the settings file of an unregistered VM");
                for f in [stale.clone(), stale.with_extension("vbox-prev")] {
                    if f.exists() {
                        tokio::fs::remove_file(&f)
                            .await
                            .map_err(io(format!("cannot remove `{}`", f.display())))?;
                    }
                }
                self.vbox
                    .call(args)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.into_driver(&machine(name), "create"))
            }
            Err(e) => Err(e.into_driver(&machine(name), "create")),
        }
    }

    async fn configure(
        &self,
        spec: &MachineSpec,
        spelling: Spelling,
        network: &HostNetwork,
        disk: &Path,
        seed: &Path,
    ) -> Result<(), DriverError> {
        let name = spec.name.as_str();
        let what = machine(name);
        let fail = |op: &'static str| {
            let what = what.clone();
            move |e: crate::error::CallError| e.into_driver(&what, op)
        };
        self.vbox
            .call(modifyvm_args(spec, spelling, network))
            .await
            .map_err(fail("configure"))?;
        self.vbox
            .call([
                "storagectl",
                name,
                "--name",
                CONTROLLER,
                "--add",
                "sata",
                "--controller",
                "IntelAhci",
            ])
            .await
            .map_err(fail("add a storage controller"))?;
        for (port, kind, medium) in [("0", "hdd", disk), ("1", "dvddrive", seed)] {
            let medium = medium.to_string_lossy().to_string();
            self.vbox
                .call([
                    "storageattach",
                    name,
                    "--storagectl",
                    CONTROLLER,
                    "--port",
                    port,
                    "--device",
                    "0",
                    "--type",
                    kind,
                    "--medium",
                    &medium,
                ])
                .await
                .map_err(fail("attach storage"))?;
        }
        for args in shared_folder_args(spec) {
            self.vbox
                .call(args)
                .await
                .map_err(fail("share a host folder"))?;
        }
        self.vbox
            .call(["setextradata", name, CLUSTER_KEY, spec.cluster.as_str()])
            .await
            .map_err(fail("mark as timonel's"))?;
        Ok(())
    }
}

/// Creating an existing VM with the same spec is Ok; anything else is `AlreadyExists`.
fn check_existing(spec: &MachineSpec, info: &VmInfo) -> Result<(), DriverError> {
    let what = machine(spec.name.as_str());
    let mismatch = |why: String| DriverError::AlreadyExists {
        what: what.clone(),
        hint: Some(format!(
            "{why}; delete it first (`timonel delete -p {}`) or pick another profile name",
            spec.cluster
        )),
    };
    match cluster_of(info) {
        Some(c) if c == spec.cluster.as_str() => {}
        Some(c) => return Err(mismatch(format!("it belongs to cluster `{c}`"))),
        None => return Err(mismatch("it was not created by timonel".into())),
    }
    if info.cpus() != Some(cpus_for(spec)) || info.memory_mib() != Some(memory_for(spec)) {
        return Err(mismatch(format!(
            "it has {} CPUs and {} MiB, the spec asks for {} and {}",
            info.cpus().unwrap_or(0),
            info.memory_mib().unwrap_or(0),
            cpus_for(spec),
            memory_for(spec)
        )));
    }
    Ok(())
}
