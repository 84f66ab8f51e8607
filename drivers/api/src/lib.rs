//! The driver interface of timonel.
//!
//! A driver owns the lifecycle of nodes (containers or VMs); it never touches the terminal.
//! Everything a driver runs on the host or inside a node goes through a [`Runner`], so that
//! tests can replay recorded outputs with [`ScriptedRunner`](scripted::ScriptedRunner).

pub mod access;
pub mod capability;
#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod driver;
pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
#[cfg(any(test, feature = "testing"))]
pub mod forwarder;
pub mod mount;
pub mod name;
pub mod net;
pub mod runner;
#[cfg(any(test, feature = "testing"))]
pub mod scripted;
pub mod state;
pub mod wait;

pub use access::{FilePlacement, FileSource, NodeAccess};
pub use capability::{
    local_host, ApiBalancer, BalancerSpec, BalancerStatus, DiskImages, DiskSource, DiskTool,
    FollowLogs, HostCapacity, HostResources, LogStream, MachineFacts, NodeImageSource, NodeImages,
    Preflight,
};
pub use driver::{
    Availability, Capabilities, Driver, DriverKind, MachineSpec, NodeKind, NodeRole, PortMapping,
    Reporter, ServiceSpec, SilentReporter, VmDisk,
};
pub use error::{error_chain, CommandError, DriverError, Hint};
pub use mount::{GuestMount, HostFolders, Mount, MountError};
pub use name::{ClusterName, MachineName, NameError};
pub use runner::{Cmd, HostRunner, Output, Runner};
pub use state::{MachineState, StopMode};
pub use wait::{poll_backoff, poll_until, WaitError};
