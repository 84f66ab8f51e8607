//! timonel's KVM driver: VMs under libvirt (`qemu:///system` by default) with QEMU, hardware
//! accelerated by KVM or emulated by TCG.
//!
//! Each node is a libvirt domain `timonel-<node>` with a qcow2 overlay on the verified base
//! image, the cloud-init NoCloud seed as a cdrom, and a NIC on the profile's NAT network
//! `timonel-<cluster>` whose DHCP server gives the node's MAC a fixed address. The domain's
//! `<metadata>` records the cluster, the node's state directory and how to log in, so every
//! later command (and `delete_cluster` after a crash) works from libvirt alone.
//!
//! Calls into libvirt (the `virt` crate, a C library) run on `spawn_blocking`. The `virt`
//! dependency exists only on Linux; elsewhere [`KvmDriver`] is a stub that says so.
//!
//! timonel does not link this crate: it starts the `timonel-kvm` program of this crate
//! (src/bin/timonel-kvm.rs) and talks to it through `timonel-driver-kvm-proxy`.

pub mod net;
pub mod options;
pub mod xml;

#[cfg(target_os = "linux")]
mod libvirt;
#[cfg(target_os = "linux")]
pub use libvirt::{IpSource, KvmDriver};

#[cfg(not(target_os = "linux"))]
mod stub;
#[cfg(not(target_os = "linux"))]
pub use stub::{IpSource, KvmDriver};

pub use options::Accel;

use timonel_driver::MachineState;

/// The libvirt connection used unless the user says otherwise (`TIMONEL_KVM_URI`).
pub use timonel_driver_kvm_proxy::DEFAULT_URI;

/// File names in a node's state directory.
pub const OVERLAY_FILE: &str = "disk.qcow2";
pub const CONSOLE_LOG_FILE: &str = "console.log";

/// Maps libvirt's `virDomainState` to a [`MachineState`].
pub fn map_domain_state(raw: u32) -> MachineState {
    match raw {
        1 => MachineState::Running,
        // Blocked on a resource: still running.
        2 => MachineState::Running,
        3 => MachineState::Paused,
        4 => MachineState::Stopping,
        5 => MachineState::Stopped,
        6 => MachineState::Error {
            raw: "crashed".to_string(),
        },
        7 => MachineState::Suspended,
        0 => MachineState::Unknown {
            raw: "nostate".to_string(),
        },
        other => MachineState::Unknown {
            raw: format!("state {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libvirt_state_maps() {
        assert_eq!(
            map_domain_state(0),
            MachineState::Unknown {
                raw: "nostate".into()
            }
        );
        assert_eq!(map_domain_state(1), MachineState::Running);
        assert_eq!(map_domain_state(2), MachineState::Running);
        assert_eq!(map_domain_state(3), MachineState::Paused);
        assert_eq!(map_domain_state(4), MachineState::Stopping);
        assert_eq!(map_domain_state(5), MachineState::Stopped);
        assert_eq!(
            map_domain_state(6),
            MachineState::Error {
                raw: "crashed".into()
            }
        );
        assert_eq!(map_domain_state(7), MachineState::Suspended);
        assert!(matches!(map_domain_state(42), MachineState::Unknown { .. }));
    }
}
