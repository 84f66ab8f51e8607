//! timonel's kvm driver as timonel sees it: a [`KvmDriver`] that forwards every call to the
//! `timonel-kvm` helper process, which links libvirt and runs the real driver
//! (`timonel-driver-kvm`). timonel itself therefore never loads libvirt: commands that do not
//! touch kvm start fast, and timonel builds where libvirt's headers are not installed.
//!
//! The two speak the line protocol of [`protocol`] over the helper's stdin and stdout; errors
//! cross it as [`wire_error::WireError`] and come back as the same
//! [`DriverError`](timonel_driver::DriverError). The helper's side is [`server::serve`], generic
//! over any [`Driver`](timonel_driver::Driver). See docs/architecture.md, "The kvm helper".

mod connection;
mod driver;
pub mod locate;
pub mod protocol;
pub mod server;
pub mod wire_error;

pub use driver::KvmDriver;
pub use locate::{ENV_HELPER, HELPER_NAME};

/// The libvirt connection used unless the user says otherwise (`TIMONEL_KVM_URI`).
pub const DEFAULT_URI: &str = "qemu:///system";
