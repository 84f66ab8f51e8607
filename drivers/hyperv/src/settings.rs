//! What a VM is created with: memory and processors as Hyper-V accepts them, and the Notes that
//! mark it as timonel's.

use timonel_driver::{ClusterName, MachineName};

/// Hyper-V refuses odd MB values: round up to an even number.
pub fn even_memory_mib(mib: u64) -> u64 {
    mib.max(2).div_ceil(2) * 2
}

/// Whole virtual processors, at least one.
pub fn whole_cpus(cpus: f64) -> u32 {
    if cpus.is_finite() && cpus > 1.0 {
        cpus.ceil().min(f64::from(u16::MAX)) as u32
    } else {
        1
    }
}

/// The Notes that mark a VM as timonel's; `delete_cluster` finds VMs by them.
pub fn vm_notes(cluster: &ClusterName, machine: &MachineName) -> String {
    format!("timonel:cluster={cluster} timonel:machine={machine} (created by timonel; removed by `timonel delete -p {cluster}`)")
}

pub(crate) fn has_marker(notes: &str, machine: &MachineName) -> bool {
    let want = format!("timonel:machine={machine}");
    notes.split_whitespace().any(|w| w == want)
}
