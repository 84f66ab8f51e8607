//! VM nodes (kvm, hyperv, virtualbox): a disk made from the verified base image, a cloud-init
//! seed carrying the profile's SSH key, and the distribution installed over SSH with a systemd
//! unit (what k3s's install.sh would write). The driver only reports where SSH answers; SSH is
//! done here, once, for every VM driver.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{
    ClusterName, Driver, DriverError, HostFolders, MachineSpec, NodeAccess, PortMapping, VmDisk,
};
use timonel_driver_vm::{options, CloudConfig, NicMatch, NoCloudSeed, SshKey};

use super::{endpoint_url, NodeOps, Prepare};
use crate::cluster::error::{Error, Result};
use crate::distro::{k3s, InstallPlan};
use crate::error::UserError;
use crate::home::Home;
use crate::profile::{NodeRecord, Profile};

/// Default VM disk size.
pub const DEFAULT_DISK_MIB: u64 = 20 * 1024;

/// `$TIMONEL_HOME/machines/<profile>/<node>`: a node's disk, seed and console log. Outside the
/// private profile folder, because the hypervisor (e.g. libvirt's qemu user) must read it.
pub fn machine_dir(home: &Home, profile: &ClusterName, node: &NodeRecord) -> PathBuf {
    home.root()
        .join("machines")
        .join(profile.as_str())
        .join(node.name.as_str())
}

/// The profile's SSH key folder.
pub fn key_dir(home: &Home, profile: &ClusterName) -> PathBuf {
    home.profile_dir(profile).join("ssh")
}

pub(super) struct Vms {
    pub driver: Arc<dyn Driver>,
    pub home: Home,
}

impl Vms {
    fn user(profile: &Profile) -> String {
        profile
            .ssh_user
            .clone()
            .unwrap_or_else(|| options::DEFAULT_SSH_USER.to_string())
    }
}

#[async_trait]
impl NodeOps for Vms {
    fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// Adds disk, seed, SSH options and port forwards; the container-only parts (files,
    /// service) are taken out: [`NodeOps::install`] places them over SSH.
    fn prepare(
        &self,
        profile: &Profile,
        node: &NodeRecord,
        spec: &mut MachineSpec,
        _: Prepare<'_>,
    ) -> Result<()> {
        let base = profile
            .vm_image
            .clone()
            .ok_or_else(|| Error::internal("the profile has no VM base image"))?;
        let dir = machine_dir(&self.home, &profile.name, node);
        make_readable_dir(&dir)?;
        // The hypervisor's user (libvirt's qemu) must reach the disk and the base image
        // through the private home: pass-through only, no listing.
        crate::fsutil::let_others_traverse(self.home.root(), &[dir.as_path(), base.as_path()])
            .map_err(|e| Error::io("cannot open the VM's folders to the hypervisor", e))?;
        let keys = key_dir(&self.home, &profile.name);
        crate::fsutil::create_private_dir(&keys)
            .map_err(|e| Error::io(format!("cannot create `{}`", keys.display()), e))?;
        let key = SshKey::ensure(&keys, &format!("timonel-{}", profile.name))?;
        let seed = dir.join("seed.iso");
        if !seed.exists() {
            let config = CloudConfig::new(node.name.as_str()).authorized_key(key.public_openssh());
            NoCloudSeed::new(
                profile.name.as_str(),
                node.name.as_str(),
                &config,
                Some(NicMatch::Name("e*".to_string())),
            )
            .write_iso(&seed)?;
        }
        spec.vm_disk = Some(VmDisk {
            base_image: base,
            size_mib: profile.disk_mib.unwrap_or(DEFAULT_DISK_MIB),
            seed_iso: seed,
            state_dir: dir,
        });
        spec.options
            .insert(options::SSH_KEY_DIR.to_string(), keys.display().to_string());
        spec.options
            .insert(options::SSH_USER.to_string(), Self::user(profile));
        spec.files.clear();
        spec.service = None;
        // NAT'd VMs (VirtualBox) reach SSH and the API through forwards on the host.
        if let Some(port) = node.ssh_port {
            spec.ports.push(PortMapping {
                host_ip: std::net::IpAddr::from([127, 0, 0, 1]),
                host_port: port,
                node_port: 22,
                protocol: "tcp".into(),
            });
        }
        Ok(())
    }

    fn installs(&self) -> bool {
        true
    }

    async fn install(
        &self,
        profile: &Profile,
        node: &NodeRecord,
        plan: &InstallPlan,
        binary: Option<&Path>,
        timeout: Duration,
    ) -> Result<()> {
        let binary = binary.ok_or_else(|| {
            Error::internal(format!(
                "node `{}` is new and there is no k3s binary to install",
                node.name
            ))
        })?;
        let access = self.access(profile, node, timeout).await?;
        self.mount_folders(profile, node, access.as_ref()).await?;
        let mut files = plan.files.clone();
        files.extend(k3s::service_files(plan, binary, node.role));
        access.copy_in(&files).await?;
        access
            .run(&k3s::start_service(node.role))
            .await
            .map_err(DriverError::from)?;
        Ok(())
    }

    async fn access(
        &self,
        profile: &Profile,
        node: &NodeRecord,
        timeout: Duration,
    ) -> Result<Arc<dyn NodeAccess>> {
        let keys = key_dir(&self.home, &profile.name);
        let access = timonel_driver_vm::vm_access(
            self.driver.as_ref(),
            &node.name,
            &keys,
            &Self::user(profile),
            timeout,
        )
        .await?;
        Ok(Arc::new(access))
    }

    async fn logs(&self, profile: &Profile, node: &NodeRecord, tail: usize) -> Result<String> {
        let access = self.access(profile, node, Duration::from_secs(60)).await?;
        let out = access
            .run(&k3s::journal(node.role, tail))
            .await
            .map_err(DriverError::from)?;
        Ok(out.stdout)
    }

    async fn api_url(&self, node: &NodeRecord) -> Result<Option<String>> {
        Ok(Some(endpoint_url(self.driver.as_ref(), node).await?))
    }

    async fn remove(&self, profile: &Profile, node: &NodeRecord) -> Result<()> {
        self.driver.delete(&node.name).await?;
        remove_dir(&machine_dir(&self.home, &profile.name, node))
    }

    async fn remove_cluster(&self, cluster: &ClusterName) -> Result<Vec<String>> {
        let removed = self.driver.delete_cluster(cluster).await?;
        // Disks and seeds live outside the profile folder.
        remove_dir(&self.home.root().join("machines").join(cluster.as_str()))?;
        Ok(removed)
    }
}

impl Vms {
    /// Mounts the profile's host folders in a new node (kept in its /etc/fstab for every
    /// boot), before k3s starts, so hostPath volumes find them.
    async fn mount_folders(
        &self,
        profile: &Profile,
        node: &NodeRecord,
        access: &dyn NodeAccess,
    ) -> Result<()> {
        if profile.mounts.is_empty() {
            return Ok(());
        }
        let HostFolders::Guest(guest) = self.driver.host_folders() else {
            return Err(Error::internal(format!(
                "the {} driver does not let its VMs mount host folders",
                self.driver.kind()
            )));
        };
        let cmd = timonel_driver_vm::mounts::mount_command(&guest, &profile.mounts);
        match access.run(&cmd).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(timonel_driver_vm::mounts::MISSING_MODULES) => {
                Err(UserError::new(
                    format!(
                        "cannot mount the host folders (--mount) in node {}: {}",
                        node.name, guest.missing_modules
                    ),
                    "boot an image whose kernel has it (--vm-image), or start without --mount",
                )
                .into())
            }
            Err(e) => Err(DriverError::from(e).into()),
        }
    }
}

/// The node's folder, readable by the hypervisor's user along its path.
fn make_readable_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for d in dir.ancestors().take(3) {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
    }
    Ok(())
}

/// Removes `dir` and what it holds; a missing folder is fine.
fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove `{}`", dir.display()), e)),
    }
}
