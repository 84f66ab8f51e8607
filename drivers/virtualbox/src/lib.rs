//! timonel's VirtualBox driver: nodes are VirtualBox VMs driven through `VBoxManage`.
//!
//! Every call goes through an injected [`Runner`](timonel_driver::Runner) with `LANG=C`; outputs
//! are read by pure parsers ([`parse`]); failures are classified from VBoxManage's `error:` lines
//! into typed [`DriverError`](timonel_driver::DriverError)s with hints ([`error`]).
//!
//! A node is a VM with a per-node disk cloned from the base image, the cloud-init seed ISO on a
//! SATA DVD drive, NIC 1 on NAT with the spec's ports forwarded on 127.0.0.1, and NIC 2 on a
//! host-only network in 192.168.56.0/21 whose guest address `ip` reads from the guest property
//! `/VirtualBox/GuestInfo/Net/1/V4/IP`.

mod create;
pub mod disk;
mod driver;
pub mod error;
mod lifecycle;
pub mod locate;
pub mod network;
pub mod parse;
mod pause;
pub mod state;
pub mod vboxmanage;

pub use create::{cpus_for, modifyvm_args, nat_rule};
pub use driver::{
    Timings, VirtualBoxDriver, CLUSTER_KEY, CONTROLLER, DESCRIPTION_PREFIX, IP_PROPERTY,
};
pub use locate::{locate_vboxmanage, ENV_VBOXMANAGE};
pub use network::{HostNetwork, HostNetworkMode};
pub use vboxmanage::RetryPolicy;
