//! The KVM driver where libvirt is not linked (not Linux): every call says so.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use timonel_driver::{
    Availability, Capabilities, ClusterName, Driver, DriverError, DriverKind, MachineName,
    MachineSpec, MachineState, NodeKind, Reporter, Runner, StopMode,
};

use crate::options::Accel;

/// Where a node's address comes from (see the Linux driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    Lease,
    Static,
}

/// The KVM driver on a platform without libvirt.
#[derive(Debug, Clone)]
pub struct KvmDriver {
    uri: String,
}

impl KvmDriver {
    pub fn new(uri: impl Into<String>) -> Self {
        Self { uri: uri.into() }
    }
    pub fn uri(&self) -> &str {
        &self.uri
    }
    pub fn with_runner(self, _runner: Arc<dyn Runner>) -> Self {
        self
    }
    pub fn with_accel(self, _accel: Accel) -> Self {
        self
    }
    pub fn with_ip_source(self, _source: IpSource) -> Self {
        self
    }
    pub fn with_ip_timeout(self, _timeout: Duration) -> Self {
        self
    }
    fn unavailable() -> DriverError {
        DriverError::NotAvailable {
            driver: "kvm".to_string(),
            reason: "KVM/libvirt is only supported on Linux".to_string(),
            fix: "use `--driver docker`, or hyperv on Windows".to_string(),
        }
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
    async fn probe(&self) -> Availability {
        Availability::Unusable {
            reason: "KVM/libvirt is only supported on Linux".to_string(),
            fix: "use `--driver docker`, or hyperv on Windows".to_string(),
        }
    }
    async fn create(&self, _: &MachineSpec, _: &dyn Reporter) -> Result<(), DriverError> {
        Err(Self::unavailable())
    }
    async fn start(&self, _: &MachineName) -> Result<(), DriverError> {
        Err(Self::unavailable())
    }
    async fn stop(&self, _: &MachineName, _: StopMode) -> Result<(), DriverError> {
        Err(Self::unavailable())
    }
    async fn pause(&self, _: &MachineName) -> Result<(), DriverError> {
        Err(Self::unavailable())
    }
    async fn unpause(&self, _: &MachineName) -> Result<(), DriverError> {
        Err(Self::unavailable())
    }
    async fn delete(&self, _: &MachineName) -> Result<(), DriverError> {
        Err(Self::unavailable())
    }
    async fn delete_cluster(&self, _: &ClusterName) -> Result<Vec<String>, DriverError> {
        Err(Self::unavailable())
    }
    async fn state(&self, _: &MachineName) -> Result<MachineState, DriverError> {
        Err(Self::unavailable())
    }
    async fn ip(&self, _: &MachineName) -> Result<IpAddr, DriverError> {
        Err(Self::unavailable())
    }
    async fn endpoint(&self, _: &MachineName, _: u16) -> Result<SocketAddr, DriverError> {
        Err(Self::unavailable())
    }
}
