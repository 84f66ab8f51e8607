//! Optional capabilities: what some drivers can do and the generic code asks for through
//! [`Driver::as_node_images`](crate::Driver::as_node_images) and its siblings, instead of
//! knowing the concrete driver.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;

use crate::driver::Reporter;
use crate::error::DriverError;
use crate::name::{ClusterName, MachineName};
use crate::state::MachineState;

/// What a node image is built from: the distribution's verified files.
#[derive(Debug, Clone, Copy)]
pub struct NodeImageSource<'a> {
    pub version: &'a str,
    pub binary: &'a Path,
    /// The binary's sha256 as the artifact cache verified it; hashed again when `None`.
    pub binary_sha256: Option<&'a str>,
    /// The airgap images tarball, carried in the image so that no node copies it.
    pub airgap: Option<&'a Path>,
    /// The tarball's sha256 as the artifact cache verified it; hashed again when `None`.
    pub airgap_sha256: Option<&'a str>,
}

/// Drivers whose nodes run an image built locally from the distribution's verified binary.
#[async_trait]
pub trait NodeImages: Send + Sync {
    /// The image nodes of `source.version` run, built from the source's files when the backend
    /// lacks it or has one built from other files. An image built with the airgap tarball has
    /// it in the nodes' images folder already: the nodes need no copy of it.
    async fn ensure_node_image(
        &self,
        source: &NodeImageSource<'_>,
        report: &dyn Reporter,
    ) -> Result<String, DriverError>;

    /// Learns what the first create of a node like `spec` would otherwise find out before it
    /// makes anything (the Docker driver: which privileges the engine accepts), so that
    /// `start` can run it beside the download and the image build. Needs no node image, makes
    /// nothing that outlives the call, prints nothing. Its failure is not final: the create
    /// asks again and reports what it finds in its own words.
    async fn learn_ahead(&self, _spec: &crate::driver::MachineSpec) -> Result<(), DriverError> {
        Ok(())
    }
}

/// What a preflight learnt of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    /// `uname -m` (`x86_64`, `aarch64`, …): picks the distribution's binary.
    pub arch: String,
    /// The operating system, for people (`Debian GNU/Linux 12 (bookworm)`).
    pub os: String,
    /// Things worth telling that do not stop the install.
    pub warnings: Vec<String>,
}

/// Drivers whose nodes are machines that must be checked before anything changes on any.
#[async_trait]
pub trait Preflight: Send + Sync {
    /// Checks the machines of `nodes` (every node the driver knows when empty). Every problem on
    /// every machine comes back in one error.
    async fn preflight(
        &self,
        nodes: &[MachineName],
    ) -> Result<BTreeMap<MachineName, MachineFacts>, DriverError>;
}

/// The load balancer in front of a cluster's API servers (several servers): where it is
/// published on the host and where it sends connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerSpec {
    pub cluster: ClusterName,
    /// The home that owns the cluster (labels, as `MachineSpec::owner`).
    pub owner: Option<String>,
    pub host_ip: IpAddr,
    pub host_port: u16,
    /// The servers' API addresses on the cluster network.
    pub backends: Vec<SocketAddr>,
}

/// A cluster's load balancer as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerStatus {
    pub state: MachineState,
    /// The host port it is published on.
    pub host_port: Option<u16>,
    /// The backends it was last given.
    pub backends: Vec<SocketAddr>,
}

/// Drivers that put a load balancer in front of the API servers of a cluster with several.
/// It belongs to the cluster: `delete_cluster` removes it with the nodes.
#[async_trait]
pub trait ApiBalancer: Send + Sync {
    /// Whether one can be made here (its program is found and fits), checked before anything
    /// is created.
    async fn balancer_ready(&self) -> Result<(), DriverError>;
    /// Creates the balancer when missing, starts it when stopped, and gives it `spec`'s
    /// backends.
    async fn ensure_balancer(
        &self,
        spec: &BalancerSpec,
        report: &dyn Reporter,
    ) -> Result<(), DriverError>;
    /// Replaces the backends, without a restart. Ok when the cluster has no balancer.
    async fn set_backends(
        &self,
        cluster: &ClusterName,
        backends: &[SocketAddr],
    ) -> Result<(), DriverError>;
    /// Stops it (it keeps its port for the next start). Ok when there is none.
    async fn stop_balancer(&self, cluster: &ClusterName) -> Result<(), DriverError>;
    /// `None` when the cluster has no balancer.
    async fn balancer(&self, cluster: &ClusterName) -> Result<Option<BalancerStatus>, DriverError>;
}

/// The file a driver's disk tool reads (see [`DiskImages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSource {
    /// The bare disk, byte for byte (VirtualBox's `convertfromraw`).
    Raw,
    /// A fixed VHD: the bare disk and a 512-byte footer (Hyper-V's `Convert-VHD`).
    FixedVhd,
}

/// A hypervisor's tool that makes its disk format from a plain disk (see [`DiskImages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskTool {
    /// For messages (`Hyper-V's Convert-VHD`).
    pub name: &'static str,
    /// The formats it makes (`vhdx`, `vdi`), lowercase.
    pub formats: &'static [&'static str],
    /// What it reads.
    pub source: DiskSource,
}

/// Drivers whose hypervisor makes its own disk format from a plain disk with its own tool, so a
/// downloaded cloud image becomes the base disk without `qemu-img`. timonel writes the source
/// file (the cloud image's disk, as [`DiskTool::source`] says) and keeps the result in its cache.
#[async_trait]
pub trait DiskImages: Send + Sync {
    /// The tool.
    fn disk_tool(&self) -> DiskTool;
    /// Makes `dest`, which does not exist, in `format` (one of [`DiskTool::formats`]) from
    /// `source`. On an error nothing is left at `dest`.
    async fn make_disk(&self, source: &Path, dest: &Path, format: &str) -> Result<(), DriverError>;
}

/// A node's log as it is written: chunks of bytes until the node stops.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, DriverError>> + Send>>;

/// Drivers that can follow a node's log.
#[async_trait]
pub trait FollowLogs: Send + Sync {
    /// The log from its last `tail` lines (all when `None`) on, until the node stops.
    async fn follow_logs(
        &self,
        name: &MachineName,
        tail: Option<usize>,
    ) -> Result<LogStream, DriverError>;
}

/// What the machine that runs a driver's nodes has (the host, the Docker daemon's machine or VM,
/// the hypervisor), for the checks `start` and `node add` make before anything is created.
/// `None` where the backend cannot say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCapacity {
    /// What was measured, for messages (`the Docker daemon's host (docker-desktop)`).
    pub source: String,
    /// Logical CPUs.
    pub cpus: Option<u32>,
    /// Total memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// Free disk where the nodes' disks go, in bytes.
    pub free_disk_bytes: Option<u64>,
}

/// Drivers that can tell what their nodes' host has.
#[async_trait]
pub trait HostResources: Send + Sync {
    /// The CPUs, memory and (where known) free disk of the machine the nodes run on.
    async fn host_resources(&self) -> Result<HostCapacity, DriverError>;
}

/// This machine's CPUs and memory (memory from `/proc/meminfo`, so only on Linux; `None`
/// elsewhere), for drivers whose hypervisor runs here.
pub fn local_host(source: &str) -> HostCapacity {
    HostCapacity {
        source: source.to_string(),
        cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        memory_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| mem_total(&t)),
        free_disk_bytes: None,
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        let text = "MemTotal:       16314504 kB\nMemFree:          123 kB\n";
        assert_eq!(mem_total(text), Some(16_314_504 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert!(local_host("here").cpus.unwrap_or(0) >= 1);
    }
}
