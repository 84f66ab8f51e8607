//! How many PowerShell processes `state`, `ip` and `endpoint` spawn for one running VM, counted
//! by the simulator (`tests/simulators/powershell`, one `calls.log` line per process).
//! Prints one JSON object; used by `scripts/bench.sh`.
//!
//! cargo run -p timonel-driver-hyperv --example hyperv_process_count

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use timonel_driver::{
    ClusterName, Driver, HostRunner, MachineSpec, NodeRole, SilentReporter, VmDisk,
};
use timonel_driver_hyperv::{HyperVDriver, Timing};

const SIMULATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/simulators/powershell/powershell-sim.py"
);

fn calls(state: &Path) -> usize {
    std::fs::read_to_string(state.join("calls.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("sim-state");
    std::fs::create_dir_all(&state)?;
    std::fs::write(state.join("scenario.json"), "{}")?;
    let powershell = dir.path().join("powershell");
    std::fs::write(
        &powershell,
        format!(
            "#!/bin/sh\nTIMONEL_PS_SIM_STATE='{}' exec python3 '{SIMULATOR}' \"$@\"\n",
            state.display()
        ),
    )?;
    std::fs::set_permissions(&powershell, std::fs::Permissions::from_mode(0o755))?;
    let base_image = dir.path().join("base.vhdx");
    std::fs::write(&base_image, vec![0u8; 4096])?;
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir)?;
    let seed_iso = node_dir.join("seed.iso");
    std::fs::write(&seed_iso, b"cidata")?;

    let cluster: ClusterName = "bench".parse()?;
    let mut spec = MachineSpec::new(cluster.machine(1), cluster, NodeRole::Server, 1);
    spec.cpus = Some(2.0);
    spec.memory_mib = Some(2048);
    spec.vm_disk = Some(VmDisk {
        base_image,
        size_mib: 20480,
        seed_iso,
        state_dir: node_dir,
    });
    let driver = HyperVDriver::with_runner(Arc::new(HostRunner))
        .with_powershell(powershell.to_string_lossy())
        .with_timing(Timing {
            ip_timeout: Duration::from_secs(20),
            poll_interval: Duration::from_millis(10),
            file_release_timeout: Duration::from_secs(2),
        });
    driver.create(&spec, &SilentReporter).await?;
    driver.start(&spec.name).await?;

    let before = calls(&state);
    driver.state(&spec.name).await?;
    let state_calls = calls(&state) - before;
    let before = calls(&state);
    driver.ip(&spec.name).await?;
    let ip_calls = calls(&state) - before;
    let before = calls(&state);
    driver.endpoint(&spec.name, 6443).await?;
    let endpoint_calls = calls(&state) - before;
    driver.delete(&spec.name).await?;
    println!(
        "{{\"driver\":\"hyperv\",\"state\":{state_calls},\"ip\":{ip_calls},\"endpoint\":{endpoint_calls}}}"
    );
    Ok(())
}
