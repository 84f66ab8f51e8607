//! What `start` was asked for.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use timonel_driver::{DriverKind, PortMapping};

use crate::artifact::Sources;
use crate::distro::k3s;
use crate::distro::ready::WaitFor;
use crate::profile::SshSettings;

/// What `start` was asked for.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub driver: Option<DriverKind>,
    pub version: Option<String>,
    /// Total nodes (servers included).
    pub nodes: u32,
    /// Servers (control-plane nodes); more than one uses embedded etcd.
    pub control_planes: u32,
    pub cpus: Option<f64>,
    pub memory_mib: Option<u64>,
    pub wait: WaitFor,
    pub wait_timeout: Duration,
    pub keep_context: bool,
    pub kubeconfig: Option<PathBuf>,
    /// Only the profile's standalone kubeconfig: no kubeconfig of the user's is read or
    /// written (`timonel run`).
    pub standalone: bool,
    pub disable: Vec<String>,
    /// `KEY=VALUE` for the distribution's service in every node.
    pub env: Vec<String>,
    pub node_image: Option<String>,
    /// PEM certificates every node trusts.
    pub ca_certs: Vec<String>,
    /// docker.io registry mirrors.
    pub registry_mirrors: Vec<String>,
    /// Extra k3s arguments, checked (`--k3s-arg`).
    pub k3s_args: crate::distro::k3s_args::K3sArgs,
    /// VM drivers: a local base image (qcow2/VHDX/VMDK) instead of the default cloud image.
    pub vm_image: Option<PathBuf>,
    /// VM drivers: disk size per node.
    pub disk_mib: Option<u64>,
    /// hyperv driver: the virtual switch the VMs connect to (`--hyperv-virtual-switch`).
    pub hyperv_switch: Option<String>,
    pub apiserver_port: Option<u16>,
    pub listen_address: IpAddr,
    pub ports: Vec<PortMapping>,
    /// Host folders every node sees, checked (absolute, existing folders; node paths k3s does
    /// not own).
    pub mounts: Vec<timonel_driver::Mount>,
    pub keep_on_failure: bool,
    pub preload: bool,
    pub sources: Sources,
    /// The ssh driver's machines and login settings.
    pub ssh: Option<SshStart>,
}

/// `start --driver ssh`: the machines (one per node, servers first) and how to log in.
#[derive(Debug, Clone)]
pub struct SshStart {
    pub machines: Vec<timonel_driver_ssh::SshHost>,
    pub key_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub accept_new_host_keys: bool,
    pub adopt: bool,
}

impl SshStart {
    /// The profile's ssh settings, with a fresh cluster identity.
    pub fn settings(&self) -> SshSettings {
        SshSettings {
            cluster_id: k3s::new_token()[..32].to_string(),
            key_file: self.key_file.as_deref().map(absolute),
            known_hosts: self.known_hosts.as_deref().map(absolute),
            accept_new_host_keys: self.accept_new_host_keys,
            adopt: self.adopt,
        }
    }
}

/// `path` made absolute against the current folder (profiles outlive the shell's folder).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
