//! Optional capabilities: what some drivers can do and the generic code asks for through
//! [`Driver::as_node_images`](crate::Driver::as_node_images) and its siblings, instead of
//! knowing the concrete driver.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;

use crate::driver::Reporter;
use crate::error::DriverError;
use crate::name::MachineName;

/// Drivers whose nodes run an image built locally from the distribution's verified binary.
#[async_trait]
pub trait NodeImages: Send + Sync {
    /// The image nodes of `version` run, built from `binary` when the backend lacks it.
    async fn ensure_node_image(
        &self,
        binary: &Path,
        version: &str,
        report: &dyn Reporter,
    ) -> Result<String, DriverError>;
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
