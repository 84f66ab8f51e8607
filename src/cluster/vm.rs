//! VM nodes (kvm, hyperv, virtualbox): a disk made from the verified base image, a cloud-init
//! seed carrying the profile's SSH key, SSH access, and the distribution installed over SSH
//! with a systemd unit (what k3s's install.sh would write).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use timonel_driver::{
    Cmd, Driver, DriverError, FilePlacement, MachineSpec, NodeAccess, NodeRole, PortMapping, VmDisk,
};
use timonel_driver_vm::{options, CloudConfig, NicMatch, NoCloudSeed, SshKey, SshTarget};

use crate::distro::InstallPlan;
use crate::home::Home;
use crate::profile::{NodeRecord, Profile};

/// Default VM disk size.
pub const DEFAULT_DISK_MIB: u64 = 20 * 1024;
/// Where the binary goes on a VM, as install.sh puts it.
pub const VM_BINARY_PATH: &str = "/usr/local/bin/k3s";

/// `$TIMONEL_HOME/machines/<profile>/<node>`: a node's disk, seed and console log. Outside the
/// private profile folder, because the hypervisor (e.g. libvirt's qemu user) must read it.
pub fn machine_dir(home: &Home, profile: &Profile, node: &NodeRecord) -> PathBuf {
    home.root()
        .join("machines")
        .join(profile.name.as_str())
        .join(node.name.as_str())
}

/// The profile's SSH key folder.
pub fn key_dir(home: &Home, profile: &Profile) -> PathBuf {
    home.profile_dir(&profile.name).join("ssh")
}

/// Adds what a VM node needs to its spec: disk, seed, SSH options and port forwards. The
/// container-only parts (files, service) are taken out; [`install`] places them over SSH.
pub fn prepare(
    home: &Home,
    profile: &Profile,
    node: &NodeRecord,
    spec: &mut MachineSpec,
) -> anyhow::Result<()> {
    let base = profile
        .vm_image
        .clone()
        .context("the profile has no VM base image")?;
    let dir = machine_dir(home, profile, node);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for d in [
            dir.as_path(),
            dir.parent().unwrap_or(&dir),
            dir.parent().and_then(Path::parent).unwrap_or(&dir),
        ] {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
    }
    crate::fsutil::let_others_traverse(home.root(), &[dir.as_path(), base.as_path()])?;
    let keys = key_dir(home, profile);
    crate::fsutil::create_private_dir(&keys)?;
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
    spec.options.insert(
        options::SSH_USER.to_string(),
        profile
            .ssh_user
            .clone()
            .unwrap_or_else(|| options::DEFAULT_SSH_USER.to_string()),
    );
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

/// SSH access to a running VM node: the driver's own, else through its SSH endpoint.
pub async fn access(
    home: &Home,
    profile: &Profile,
    driver: &dyn Driver,
    node: &NodeRecord,
    timeout: Duration,
) -> anyhow::Result<Arc<dyn NodeAccess>> {
    match driver.access(&node.name).await {
        Ok(a) => Ok(a),
        Err(DriverError::Unsupported { .. }) => {
            let addr = driver.endpoint(&node.name, 22).await?;
            let keys = key_dir(home, profile);
            let key = SshKey::load(&keys)?;
            let user = profile
                .ssh_user
                .clone()
                .unwrap_or_else(|| options::DEFAULT_SSH_USER.to_string());
            let target = SshTarget::new(
                addr.ip().to_string(),
                addr.port(),
                user,
                key,
                timonel_driver_vm::host_key_path(&keys, node.name.as_str()),
            );
            let access = timonel_driver_vm::wait_for_ssh(target, timeout).await?;
            Ok(Arc::new(access))
        }
        Err(e) => Err(e.into()),
    }
}

/// The binary and the systemd unit that runs the plan's service (what install.sh would write).
pub fn service_files(plan: &InstallPlan, binary: &Path, role: NodeRole) -> Vec<FilePlacement> {
    let unit_name = match role {
        NodeRole::Server => "k3s",
        NodeRole::Agent => "k3s-agent",
    };
    vec![
        FilePlacement::host_file(VM_BINARY_PATH, 0o755, binary),
        FilePlacement::bytes(
            format!("/etc/systemd/system/{unit_name}.service"),
            0o644,
            crate::distro::k3s::systemd_unit(&plan.service, VM_BINARY_PATH).into_bytes(),
        ),
    ]
}

/// The last `tail` lines (0: all) of the k3s service's journal on a VM node, over SSH.
pub async fn journal(
    access: &dyn NodeAccess,
    role: NodeRole,
    tail: usize,
) -> anyhow::Result<String> {
    let unit = match role {
        NodeRole::Server => "k3s",
        NodeRole::Agent => "k3s-agent",
    };
    let lines = if tail == 0 {
        "all".to_string()
    } else {
        tail.to_string()
    };
    let out = access
        .run(
            &Cmd::new("journalctl")
                .args(["-u", unit, "-n", &lines, "--no-pager", "-o", "cat"])
                .timeout(Duration::from_secs(60)),
        )
        .await?;
    Ok(out.stdout)
}

/// Installs the distribution on a VM node: binary, config, airgap images, a systemd unit, then
/// enables and starts the service (without blocking on its readiness: timonel waits itself).
pub async fn install(
    access: &dyn NodeAccess,
    plan: &InstallPlan,
    binary: &Path,
    role: NodeRole,
) -> anyhow::Result<()> {
    let unit_name = match role {
        NodeRole::Server => "k3s",
        NodeRole::Agent => "k3s-agent",
    };
    let mut files = plan.files.clone();
    files.extend(service_files(plan, binary, role));
    access.copy_in(&files).await?;
    access
        .run(
            &Cmd::new("sh")
                .arg("-c")
                .arg(format!(
                    "systemctl daemon-reload && systemctl enable {unit_name} && systemctl restart --no-block {unit_name}"
                ))
                .timeout(Duration::from_secs(120)),
        )
        .await?;
    Ok(())
}

/// The verified base image for `driver`'s VMs: `--vm-image PATH` as given, else the default
/// cloud image of the catalog, fetched and verified through the artifact cache.
pub async fn base_image(
    cache: &crate::artifact::ArtifactCache,
    sources: &crate::artifact::Sources,
    given: Option<&Path>,
    driver: timonel_driver::DriverKind,
    report: &dyn timonel_driver::Reporter,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        let path = std::fs::canonicalize(path).map_err(|e| {
            crate::error::UserError::new(
                format!("--vm-image `{}` cannot be read: {e}", path.display()),
                "give the path of a qcow2 (kvm), VHDX (hyperv) or VMDK/VDI (virtualbox) disk image",
            )
        })?;
        return Ok(path);
    }
    let catalog = timonel_driver_vm::VmImageCatalog::builtin()?;
    let image = catalog.get(timonel_driver_vm::catalog::DEFAULT_IMAGE)?;
    let file = image
        .for_driver(driver.as_str())
        .with_context(|| format!("the default cloud image has no disk for the {driver} driver"))?;
    Ok(crate::artifact::ensure_cloud_image(cache, sources, &file, report).await?)
}
